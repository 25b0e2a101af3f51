//! Helpers of the fault suites (the `fault-injection` feature, dev-dependencies only).

use std::path::Path;
use std::process::Command;

/// Run `script` (sh) in a private mount namespace with a tmpfs of `size` (`64k`, `1m`) mounted
/// at `dir` (created): a full disk that vanishes with the namespace. Returns stdout + stderr,
/// or `None`, after saying why, where this machine does not allow it (not root, no `unshare`).
pub fn in_small_tmpfs(dir: &Path, size: &str, script: &str) -> Option<String> {
    std::fs::create_dir_all(dir).ok()?;
    let full = format!(
        "mount -t tmpfs -o size={size} tmpfs '{}' || exit 97\n{script}",
        dir.display()
    );
    let Ok(o) = Command::new("unshare")
        .args(["-m", "sh", "-c", &full])
        .output()
    else {
        eprintln!("skipped: no unshare on this machine");
        return None;
    };
    if o.status.code() == Some(97) || (!o.status.success() && o.stdout.is_empty()) {
        eprintln!(
            "skipped: cannot mount a tmpfs here ({})",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

/// From the output of a script that ran a command and then `echo "exit=$?"; find … ; echo
/// listed`: whether the command failed, and what `find` listed.
pub fn exit_and_listing(out: &str) -> (bool, &str) {
    let failed = !out.contains("exit=0");
    let listed = out
        .split("exit=")
        .nth(1)
        .and_then(|t| t.split("listed").next())
        .unwrap_or("");
    (failed, listed)
}
