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
