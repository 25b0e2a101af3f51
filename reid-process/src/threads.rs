//! Thread pools and signals of a process that computes on few cores, and its memory readings.

/// Let a closed stdout end the program quietly, as for any Unix tool (`reid-prune … | head -n1`):
/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics instead. Call first in `main`.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Thread pools for a process that computes on few cores. Call first in `main`, before any
/// thread exists. Measured effect: BENCHMARKS.md ("One pool of threads").
///
/// - candle runs its element-wise ops on a barrier pool of its own, beside rayon's (our kernels
///   and gemm): with both, a 2-core machine ran four compute threads, and every switch between a
///   candle op and one of ours woke sleeping threads (a third of a small-map training step was
///   futex wake-ups and context switches). candle's pool gets no workers
///   (`CANDLE_NUM_THREADS=1`): its element-wise ops run on the calling thread; the heavy ones of
///   a training step are this crate's kernels, on rayon. Its spin limit is lowered too, for a
///   user who sets `CANDLE_NUM_THREADS` to more.
/// - The main thread becomes rayon's worker 0 (`use_current_thread`): a parallel op started from
///   it runs in place and shares the work, instead of waking the pool and sleeping until it is
///   done. Only with at least two threads: with one, the pool's only worker would be the main
///   thread, and a loader thread's parallel decode would wait for it while it waits for the
///   loader.
///
/// Either variable, when the environment sets it, is left as it is.
pub fn tune_thread_pools() {
    for (var, value) in [
        (
            "CANDLE_BARRIER_POOL_SPIN_LIMIT",
            CANDLE_SPIN_LIMIT.to_string(),
        ),
        ("CANDLE_NUM_THREADS", "1".to_string()),
    ] {
        if std::env::var_os(var).is_none() {
            // Before any thread exists (first thing in main), so nothing reads the environment
            // concurrently.
            std::env::set_var(var, value);
        }
    }
    let threads = candle_core::utils::get_num_threads();
    if threads >= 2 {
        // Fails only when the global pool already exists (a second call): then it stays.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global();
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
