//! reid-process: what a binary of this workspace sets up for its whole process, first thing in
//! `main`, and what only a binary may decide. No library crate depends on this one (a library
//! never sets a global allocator or environment variables); the binaries of reid-prune,
//! reid-eval and reid-bench do.
//!
//! - [`alloc`]: mimalloc with a 1 s purge delay under a cache of large freed blocks by size
//!   class ([`block_cache`]), declared with [`use_fast_allocator!`] and started with
//!   [`alloc::configure`];
//! - [`threads`]: one rayon pool for a few cores (candle's own pool emptied), default SIGPIPE,
//!   and the resident-memory readings of the benchmarks.
//!
//! A binary's `main` starts with:
//! ```ignore
//! reid_process::use_fast_allocator!();
//! fn main() {
//!     reid_process::default_sigpipe();
//!     reid_process::alloc::configure();
//!     reid_process::tune_thread_pools();
//! }
//! ```

pub mod alloc;
pub mod block_cache;
pub mod threads;

pub use threads::{default_sigpipe, status_mb, tune_thread_pools, CANDLE_SPIN_LIMIT};
