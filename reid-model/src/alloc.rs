//! The allocator our binaries use. candle allocates a fresh buffer for every op; with glibc,
//! large buffers are mmap'ed and returned to the OS each time, so every op pays page faults
//! (about 20 % of a training step). mimalloc keeps freed pages for reuse, like PyTorch's caching
//! allocator, and returns what stayed unused for a second (`PURGE_DELAY_MS`): keeping freed
//! pages forever made a full ResNet-50 training step peak at 3.7 GB against 3.0 GB (PyTorch:
//! 2.3 GB), and an idle process held its largest step's memory. Figures: BENCHMARKS.md.

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory unused for this long goes back to the OS (mimalloc's default is 10 ms: a page
/// fault storm on every op; never (-1): a higher peak and no memory returned).
pub const PURGE_DELAY_MS: i64 = 1000;

/// Declare mimalloc as the global allocator of a binary: `reid_model::use_fast_allocator!();`
#[macro_export]
macro_rules! use_fast_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::MiMalloc = $crate::alloc::MiMalloc;
    };
}

/// Set the purge delay (call first thing in `main`). `MIMALLOC_PURGE_DELAY` in the environment,
/// when set, wins.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}
