//! Process-wide behaviour shared by the binaries.

/// Let a closed stdout end the program quietly, as for any Unix tool (`reid-prune … | head -n1`):
/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics instead. Call first in `main`.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// candle runs its element-wise ops on a thread pool of its own, beside rayon's (our kernels
/// and gemm). Its idle workers spin 25 000 rounds before they sleep, so on a few cores they
/// take the cores that rayon's working threads need between two candle ops. Measured effect:
/// BENCHMARKS.md ("Two thread pools"). This sets candle's spin limit (`CANDLE_BARRIER_POOL_SPIN_LIMIT`,
/// read when its pool starts) unless the environment already does; call first in `main`.
pub fn tune_thread_pools() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        // Before any thread exists (first thing in main), so nothing reads the environment
        // concurrently.
        std::env::set_var(VAR, CANDLE_SPIN_LIMIT.to_string());
    }
}

/// Spin rounds of candle's idle workers before they sleep (its default: 25 000).
pub const CANDLE_SPIN_LIMIT: u32 = 100;

/// A memory field of `/proc/self/status` in MB (`"VmRSS:"` resident now, `"VmHWM:"` its peak);
/// NaN where it cannot be read. For the memory benchmarks.
pub fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
