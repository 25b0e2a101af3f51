//! The allocator our binaries use. candle allocates a fresh buffer for every op; with glibc,
//! large buffers are mmap'ed and returned to the OS each time, so every op pays page faults
//! (about 20 % of a training step). mimalloc keeps freed pages for reuse and returns what stayed
//! unused for a second (`PURGE_DELAY_MS`): keeping freed pages forever made a full ResNet-50
//! training step peak at 3.7 GB against 3.0 GB (PyTorch: 2.3 GB), and an idle process held its
//! largest step's memory. A second is shorter than a large step, though: a 256×128 step faulted
//! its whole working set in again every step. So [`CachingMiMalloc`] keeps large freed blocks
//! by size class for the next request of their class, which the next step makes, and returns
//! each once unused for twice its class's usual wait, at least 1 s and at most
//! `CACHE_KEEP_MS` ([`crate::block_cache`]). Figures: BENCHMARKS.md.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use libmimalloc_sys::{mi_free, mi_malloc_aligned, mi_zalloc_aligned};
pub use mimalloc::MiMalloc;

use crate::block_cache::{size_class, BlockCache, SizeClass};

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (same index in its v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory unused for this long goes back to the OS (mimalloc's default is 10 ms: a page
/// fault storm on every op; never (-1): a higher peak and no memory returned).
pub const PURGE_DELAY_MS: i64 = 1000;

/// The longest a large freed block is kept for its next request (ms): more than a 256×128
/// ResNet-50 step on 2 cores (~8 s). Each size class keeps its blocks for twice its recent
/// longest wait before reuse, at least a second (`block_cache::BlockCache::keep_ms`).
/// `REID_ALLOC_CACHE_KEEP_MS` overrides the cap; 0 keeps nothing.
pub const CACHE_KEEP_MS: u64 = 20_000;

static KEEP_MS: AtomicU64 = AtomicU64::new(CACHE_KEEP_MS);
static CACHE: Mutex<BlockCache> = Mutex::new(BlockCache::new());

/// Declare the caching mimalloc as the global allocator of a binary:
/// `reid_process::use_fast_allocator!();`
#[macro_export]
macro_rules! use_fast_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::alloc::CachingMiMalloc = $crate::alloc::CachingMiMalloc;
    };
}

/// Set the purge delay and the cache's keep time, and start the thread that returns blocks
/// kept too long (call first thing in `main`). `MIMALLOC_PURGE_DELAY` and
/// `REID_ALLOC_CACHE_KEEP_MS` in the environment, when set, win.
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
    if let Some(v) = std::env::var_os("REID_ALLOC_CACHE_KEEP_MS") {
        match v.to_str().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(ms) => set_cache_keep_ms(ms),
            // A tuning knob read before anything else runs: say so and go on with the default.
            None => eprintln!(
                "warning: REID_ALLOC_CACHE_KEEP_MS={v:?} is not a whole number of milliseconds; \
                 the allocator keeps blocks for at most {CACHE_KEEP_MS} ms (0 keeps none)"
            ),
        }
    }
    static SWEEPER: Once = Once::new();
    SWEEPER.call_once(|| {
        // A thread that cannot start leaves expiry to `release_unused`; nothing else changes.
        let _ = std::thread::Builder::new()
            .name("alloc-cache-sweep".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_millis(500));
                sweep(KEEP_MS.load(Ordering::Relaxed));
            });
    });
}

/// Set the cache's keep time (ms); 0 keeps nothing from now on (what is kept expires at the
/// sweeper's next pass).
pub fn set_cache_keep_ms(ms: u64) {
    KEEP_MS.store(ms, Ordering::Relaxed);
}

/// Return every kept block now (e.g. before a long idle phase).
pub fn release_unused() {
    sweep(0);
}

/// Bytes the cache holds in kept blocks.
pub fn cached_bytes() -> usize {
    cache().cached_bytes()
}

/// Return the blocks unused for longer than their class's keep time, capped at `max_keep_ms`
/// (all of them with 0).
fn sweep(max_keep_ms: u64) {
    let mut out = [std::ptr::null_mut(); 256];
    loop {
        let n = cache().expire(now_ms(), max_keep_ms, &mut out);
        for &p in &out[..n] {
            // SAFETY: a kept block came from mi_malloc_aligned / mi_zalloc_aligned and is owned
            // by the cache until expired.
            unsafe { mi_free(p.cast()) };
        }
        if n < out.len() {
            return;
        }
    }
}

fn cache() -> MutexGuard<'static, BlockCache> {
    // The cache's state is whole between calls (no panics inside), so a poisoned lock is usable.
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds of CLOCK_MONOTONIC (no allocation: the global allocator calls this).
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Kept blocks are allocated with this alignment (a page; for blocks ≥ 256 KiB it costs
/// nothing); requests needing more bypass the cache. gemm's packing buffers ask for 128 bytes:
/// with 64 here they were the step's last page faults.
const CACHE_ALIGN: usize = 4096;

fn cached_class(layout: Layout) -> Option<SizeClass> {
    if layout.align() > CACHE_ALIGN {
        return None;
    }
    size_class(layout.size())
}

/// mimalloc, with large freed blocks kept by size class for the next request of their class
/// (module docs). Small requests go straight to mimalloc.
pub struct CachingMiMalloc;

/// A block of `class` for a request of `size` bytes: a kept one (its first `size` bytes zeroed
/// when `zeroed`), else a fresh one from mimalloc (whose fresh pages are not zeroed twice).
fn class_block(class: SizeClass, size: usize, zeroed: bool) -> *mut u8 {
    match (cache().take(class, now_ms()), zeroed) {
        (Some(p), false) => p,
        (Some(p), true) => {
            // SAFETY: the kept block holds class.bytes ≥ size bytes and belongs to the caller.
            unsafe { std::ptr::write_bytes(p, 0, size) };
            p
        }
        // SAFETY: plain mimalloc allocations.
        (None, false) => unsafe { mi_malloc_aligned(class.bytes, CACHE_ALIGN).cast() },
        (None, true) => unsafe { mi_zalloc_aligned(class.bytes, CACHE_ALIGN).cast() },
    }
}

// SAFETY: every block handed out is either mimalloc's for the request's layout or a kept block
// of the request's class: at least the requested size, aligned to CACHE_ALIGN ≥ the request's
// alignment, and owned by nobody else (taken out of the cache under its lock).
unsafe impl GlobalAlloc for CachingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some(class) => class_block(class, layout.size(), false),
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match cached_class(layout) {
            Some(class) => class_block(class, layout.size(), true),
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match cached_class(layout) {
            Some(class) => {
                let keep = KEEP_MS.load(Ordering::Relaxed) > 0;
                if !(keep && cache().put(class, ptr, now_ms())) {
                    // SAFETY: a block of this class came from mi_malloc_aligned/mi_zalloc_aligned.
                    unsafe { mi_free(ptr.cast()) }
                }
            }
            // SAFETY: allocated by MiMalloc with this layout.
            None => unsafe { MiMalloc.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size > 0 and a valid layout for it.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (cached_class(layout), cached_class(new_layout)) {
            // SAFETY: both small: mimalloc's own realloc on its own block.
            (None, None) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            // The block's class already holds the new size.
            (Some(a), Some(b)) if a == b => ptr,
            _ => {
                // SAFETY: a fresh block, the old contents copied, the old block given back.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}
