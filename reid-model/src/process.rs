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
