//! Atomic file writes and the cleanup of what a killed writer left.

use std::io::Write;
use std::path::Path;

use crate::{Result, RunFileError};

/// What [`write_atomic`]'s temporary names carry before the writer's pid.
pub const TEMP_MARK: &str = ".tmp-";

/// The folder a file path lies in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Write `bytes` to `path` atomically: a temporary file in the same folder with a name unique
/// to this process and call, created exclusively (a planted file or symlink of that name is
/// never followed), synced, renamed over `path`, and the folder synced so that the rename is
/// durable. On failure the temporary file is removed and `path` is unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let err = |source| RunFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(err)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file path",
            ))
        })?
        .to_string_lossy();
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{file_name}{TEMP_MARK}{}-{serial}",
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        fault::check("write")?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fault::check("rename")?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Test-only fault injection (the `fault-injection` feature, enabled by the test suites'
/// dev-dependencies): `REID_FAULT=rename:N` makes this process's N-th rename of
/// [`write_atomic`] and every later one fail with an I/O error (`write:N` the same for writes),
/// as a disk that went bad would. Without the feature this is a no-op.
mod fault {
    #[cfg(feature = "fault-injection")]
    pub fn check(stage: &str) -> std::io::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static WRITES: AtomicU64 = AtomicU64::new(0);
        static RENAMES: AtomicU64 = AtomicU64::new(0);
        let Ok(spec) = std::env::var("REID_FAULT") else {
            return Ok(());
        };
        let Some((what, n)) = spec.split_once(':') else {
            return Ok(());
        };
        if what != stage {
            return Ok(());
        }
        let counter = if stage == "write" { &WRITES } else { &RENAMES };
        let count = counter.fetch_add(1, Ordering::SeqCst) + 1;
        match n.parse::<u64>() {
            Ok(n) if count >= n => Err(std::io::Error::other(format!(
                "injected fault: {stage} #{count} (REID_FAULT={spec})"
            ))),
            _ => Ok(()),
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    #[inline(always)]
    pub fn check(_stage: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// Remove the temporary files [`write_atomic`] left in `dir` when its process was killed (the
/// pid in the name no longer runs on this host). Returns how many were removed.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(TEMP_MARK))
            .and_then(|(_, tail)| tail.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !pid_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a process with this pid runs on this host (always true where `/proc` is absent).
fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // a failing write (the target is a folder) leaves nothing behind
        let d = dir.path().join("sub");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("x"), b"").unwrap();
        assert!(write_atomic(&d, b"x").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(TEMP_MARK)), "{names:?}");
        // a dead writer's temp file goes, a live one's stays
        let dead = dir
            .path()
            .join(format!(".a.json{TEMP_MARK}{}-0", u32::MAX - 1));
        let live = dir
            .path()
            .join(format!(".a.json{TEMP_MARK}{}-9", std::process::id()));
        std::fs::write(&dead, b"").unwrap();
        std::fs::write(&live, b"").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()), 1);
        assert!(!dead.exists() && live.exists());
    }
}
