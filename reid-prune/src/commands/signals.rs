//! Ctrl-C and SIGTERM for commands that stop cleanly: the first signal asks the work to stop at
//! its next checkpoint, a second one ends the process at once; either way the exit status is
//! the shell's convention for that signal (130, 143), so `train && prune` never goes on with an
//! unfinished model.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // async-signal-safe: an atomic swap and _exit only
    if RECEIVED.swap(sig, Ordering::SeqCst) != 0 {
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Install the handlers; `stop` is set (and the user told what happens) when a signal arrives.
pub fn install(stop: Arc<AtomicBool>, what_happens: &'static str) -> anyhow::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only touches an atomic and calls _exit.
        if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
            anyhow::bail!("cannot install a handler for signal {sig}");
        }
    }
    std::thread::Builder::new()
        .name("signal-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(50));
            let sig = RECEIVED.load(Ordering::SeqCst);
            if sig != 0 {
                eprintln!("\n{}: {what_happens} (again to kill)", name(sig));
                stop.store(true, Ordering::SeqCst);
                return;
            }
        })?;
    Ok(())
}

/// The exit status for the signal received, if one was.
pub fn exit_status() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(128 + sig),
    }
}

fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "interrupt",
        libc::SIGTERM => "terminate",
        _ => "signal",
    }
}
