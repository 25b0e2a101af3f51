//! One writer per folder: a grid step, a run folder (`train`, `prune`, `export`, `reid-eval`)
//! or a generated dataset is claimed with an exclusive lock on `<folder>/.lock`, held for as
//! long as the writer runs; a second writer is refused (or, in a grid, puts the step off).
//!
//! The lock is an advisory `flock` (released by the kernel when its holder dies, kill -9 and OOM
//! included), and the file says who holds it (pid, host, start time) with its modification time
//! as a heartbeat refreshed every few seconds. On file systems where `flock` is local to each
//! machine (NFS mounted `nolock`), the heartbeat still keeps two hosts apart: a claim naming
//! another host whose heartbeat is fresh is respected, a stale one is taken over with a message.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::RunFileError;

type Result<T> = std::result::Result<T, RunFileError>;

/// The lock file's name inside a claimed folder.
pub const LOCK_FILE: &str = ".lock";

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> RunFileError + '_ {
    move |source| RunFileError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// How often a held lock's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// A claim from another host whose heartbeat is older than this is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// Who holds a step (the lock file's content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix seconds when the claim was made.
    pub started: u64,
}

impl Holder {
    fn me() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            started: unix_now(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = unix_now().saturating_sub(self.started);
        write!(f, "pid {} on {} (claimed {age} s ago)", self.pid, self.host)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else "localhost").
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A held claim; dropping it releases the folder.
pub struct StepLock {
    file: File,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    heartbeat: Option<JoinHandle<()>>,
}

/// The outcome of [`try_claim`].
pub enum Claim {
    Held(StepLock),
    /// Another live process holds the step.
    Busy(Option<Holder>),
}

/// Try to claim the folder `dir` (created if needed) without waiting.
pub fn try_claim(dir: &Path) -> Result<Claim> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Claim::Busy(read_holder(&path))),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    // We hold the kernel lock. A claim left in the file is either released (empty), from a dead
    // process of this host (the kernel lock would still be held otherwise), or from another host
    // that the lock does not reach: respect the latter while its heartbeat is fresh.
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(&path))?;
    if let Ok(prev) = serde_json::from_str::<Holder>(&text) {
        let me = Holder::me();
        let age = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or(Duration::MAX);
        if prev.host != me.host && age < STALE_AFTER {
            return Ok(Claim::Busy(Some(prev)));
        }
        eprintln!(
            "{}: taking over a stale claim by {prev} (last heartbeat {} s ago{})",
            dir.display(),
            age.as_secs(),
            if prev.host == me.host {
                ", process gone"
            } else {
                ""
            }
        );
    }
    let holder = serde_json::to_string(&Holder::me()).unwrap_or_default();
    (|| {
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(holder.as_bytes())?;
        file.sync_all()
    })()
    .map_err(io_err(&path))?;
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let stop = stop.clone();
        let beat = file.try_clone().map_err(io_err(&path))?;
        std::thread::Builder::new()
            .name("step-lock-heartbeat".into())
            .spawn(move || {
                let tick = Duration::from_millis(200);
                let mut since = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    since += tick;
                    if since >= HEARTBEAT {
                        since = Duration::ZERO;
                        let _ = beat.set_modified(SystemTime::now());
                    }
                }
            })
            .map_err(io_err(&path))?
    };
    Ok(Claim::Held(StepLock {
        file,
        path,
        stop,
        heartbeat: Some(heartbeat),
    }))
}

/// Who computes the step in `dir` now, without claiming or writing anything: a process of this
/// host holding the kernel lock, or another host's claim with a fresh heartbeat. `None` when
/// nobody does (never started, finished, or its process died).
pub fn running_holder(dir: &Path) -> Option<Holder> {
    let path = dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    let holder = read_holder(&path);
    match file.try_lock_shared() {
        // nobody holds the kernel lock: only another host's fresh claim counts
        Ok(()) => {
            let _ = file.unlock();
            let age = file.metadata().ok()?.modified().ok()?.elapsed().ok()?;
            holder.filter(|h| h.host != host_name() && age < STALE_AFTER)
        }
        Err(_) => Some(holder.unwrap_or(Holder {
            pid: 0,
            host: "unknown".into(),
            started: 0,
        })),
    }
}

/// The claim written in a lock file, if it is readable.
pub fn read_holder(path: &Path) -> Option<Holder> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

impl StepLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A writer's claim on a whole folder for one command (`train`, `prune`, `export`, `reid-eval`,
/// data generation): the same lock as a grid step's, so a command and a grid never write one
/// folder together.
pub type FolderLock = StepLock;

/// Claim `dir` for the writer `what` (a command's name, for the message) or refuse, naming the
/// holder: two writers in one folder would leave a record of neither run.
pub fn claim_folder(dir: &Path, what: &str) -> Result<FolderLock> {
    match try_claim(dir)? {
        Claim::Held(lock) => Ok(lock),
        Claim::Busy(holder) => Err(RunFileError::Invalid {
            path: dir.to_path_buf(),
            message: format!(
                "another process is writing here ({}): {what} refused, so that the folder holds \
                 one run. Wait for it to finish, or give another output folder",
                holder.map_or_else(|| "holder unknown".to_string(), |h| h.to_string())
            ),
        }),
    }
}

/// Claim `dir`, waiting while another process of this host holds it (`on_wait` is told who,
/// once): for work that a second process must not redo but may wait for, such as generating a
/// dataset that both then read.
pub fn claim_folder_waiting(
    dir: &Path,
    on_wait: impl FnOnce(Option<Holder>),
) -> Result<FolderLock> {
    let mut on_wait = Some(on_wait);
    loop {
        match try_claim(dir)? {
            Claim::Held(lock) => return Ok(lock),
            Claim::Busy(holder) => {
                if let Some(f) = on_wait.take() {
                    f(holder);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// The lock file of a grid's output folder, held shared by every process running the grid.
pub const GRID_LOCK_FILE: &str = ".grid.lock";
/// Taken exclusively for the moment a process joins or starts a grid (see [`claim_grid`]).
const GRID_JOIN_FILE: &str = ".grid.join";

/// Who started the grid running in a folder now, and under which config (the grid lock's content).
#[derive(Debug, Serialize, Deserialize)]
struct GridHolder {
    /// A digest of the experiment config the processes in the folder run.
    config: String,
    experiment: String,
    holder: Holder,
}

/// A process's share of a grid's output folder; dropping it leaves the grid.
pub struct GridClaim {
    _file: File,
}

/// Whether a grid runs in `dir` now: a process holds its [`GRID_LOCK_FILE`] (the file itself
/// stays after the grid ends, so its presence says nothing).
pub fn grid_running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(GRID_LOCK_FILE)) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Join the grid in `dir` or start one there: any number of processes may run one experiment
/// config together (Slurm workers: the step locks share its steps out), but a process with
/// another config is refused naming the one running, since the folder's `experiment.toml`,
/// summary and claims would otherwise describe one config and hold the other's cells.
///
/// Every grid process holds [`GRID_LOCK_FILE`] shared and enters through an exclusive lock on
/// a second file, so that the test "is anyone running, and under which config" and the joining
/// are one step. Like the step locks, a kernel `flock`: where it does not reach across machines
/// (NFS mounted `nolock`), grids on two hosts are not kept apart by this claim.
pub fn claim_grid(dir: &Path, config: &str, experiment: &str) -> Result<GridClaim> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let open = |name: &str| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))
            .map(|f| (f, path))
    };
    let (join, join_path) = open(GRID_JOIN_FILE)?;
    join.lock().map_err(io_err(&join_path))?;
    let (mut file, path) = open(GRID_LOCK_FILE)?;
    match file.try_lock() {
        // nobody runs a grid here: this config is the folder's now
        Ok(()) => {
            let me = serde_json::to_string(&GridHolder {
                config: config.into(),
                experiment: experiment.into(),
                holder: Holder::me(),
            })
            .unwrap_or_default();
            (|| {
                file.set_len(0)?;
                file.rewind()?;
                file.write_all(me.as_bytes())?;
                file.sync_all()?;
                // from exclusive to shared; nobody can come between (they wait on `join`)
                file.unlock()?;
                file.lock_shared()
            })()
            .map_err(io_err(&path))?;
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(io_err(&path))?;
            match serde_json::from_str::<GridHolder>(&text) {
                Ok(running) if running.config == config => {
                    file.lock_shared().map_err(io_err(&path))?;
                }
                running => {
                    let who = running.map_or_else(
                        |_| "a process whose config is unknown".to_string(),
                        |r| format!("experiment '{}', started by {}", r.experiment, r.holder),
                    );
                    return Err(RunFileError::Invalid {
                        path: dir.to_path_buf(),
                        message: format!(
                            "a grid with another config is running here ({who}): refused, so \
                             that the folder's experiment.toml, summary and claims describe one \
                             config. Wait for it to finish, or give this experiment another `out`"
                        ),
                    });
                }
            }
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    let _ = join.unlock();
    Ok(GridClaim { _file: file })
}

impl Drop for StepLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // An empty file is a released claim; the file stays (removing a lock file races with a
        // process that has opened it and waits to lock it).
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_is_joined_by_its_own_config_and_refused_to_another() {
        let tmp = tempfile::tempdir().unwrap();
        let a = claim_grid(tmp.path(), "cfg-a", "exp").unwrap();
        let b = claim_grid(tmp.path(), "cfg-a", "exp").unwrap();
        let err = claim_grid(tmp.path(), "cfg-b", "other").err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains(
                "a grid with another config is running here (experiment 'exp', started by pid "
            ) && msg.contains(&format!("pid {} on", std::process::id())),
            "{msg}"
        );
        // still refused while one process of the first config runs
        drop(a);
        assert!(claim_grid(tmp.path(), "cfg-b", "other").is_err());
        drop(b);
        let c = claim_grid(tmp.path(), "cfg-b", "other").unwrap();
        assert!(claim_grid(tmp.path(), "cfg-a", "exp").is_err());
        drop(c);
    }

    #[test]
    fn second_claim_is_busy_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("train-abc");
        let Claim::Held(first) = try_claim(&step).unwrap() else {
            panic!("the first claim must hold");
        };
        match try_claim(&step).unwrap() {
            Claim::Busy(Some(h)) => assert_eq!(h.pid, std::process::id()),
            Claim::Busy(None) => panic!("the holder must be named"),
            Claim::Held(_) => panic!("two holders of one step"),
        }
        drop(first);
        assert!(matches!(try_claim(&step).unwrap(), Claim::Held(_)));
    }

    #[test]
    fn a_folder_claim_is_refused_naming_the_holder_or_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = claim_folder(&data, "synth").unwrap();
        let e = claim_folder(&data, "synth").err().unwrap().to_string();
        assert!(
            e.contains(&format!("pid {}", std::process::id())) && e.contains("synth refused"),
            "{e}"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let data = data.clone();
            std::thread::spawn(move || {
                let lock = claim_folder_waiting(&data, |h| tx.send(h).unwrap()).unwrap();
                read_holder(lock.path()).unwrap().pid
            })
        };
        // the waiter was told who holds the folder, and waits while it does
        let told = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(told.map(|h| h.pid), Some(std::process::id()));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!waiter.is_finished(), "claimed a held folder");
        drop(first);
        assert_eq!(waiter.join().unwrap(), std::process::id());
    }

    #[test]
    fn a_running_holder_is_seen_without_claiming() {
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("eval-abc");
        assert_eq!(running_holder(&step), None, "no folder");
        let Claim::Held(lock) = try_claim(&step).unwrap() else {
            panic!("the first claim must hold");
        };
        assert_eq!(running_holder(&step).unwrap().pid, std::process::id());
        // looking did not take it
        assert!(matches!(try_claim(&step).unwrap(), Claim::Busy(_)));
        drop(lock);
        assert_eq!(running_holder(&step), None, "released");
    }

    #[test]
    fn fresh_claim_of_another_host_is_respected_and_a_stale_one_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("prune-abc");
        std::fs::create_dir_all(&step).unwrap();
        let other = Holder {
            pid: 1,
            host: format!("{}-elsewhere", host_name()),
            started: unix_now(),
        };
        let lock = step.join(".lock");
        std::fs::write(&lock, serde_json::to_string(&other).unwrap()).unwrap();
        match try_claim(&step).unwrap() {
            Claim::Busy(Some(h)) => assert_eq!(h, other),
            _ => panic!("a fresh claim of another host must be respected"),
        }
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let Claim::Held(held) = try_claim(&step).unwrap() else {
            panic!("a stale claim must be taken over");
        };
        assert_eq!(read_holder(held.path()).unwrap().pid, std::process::id());
    }
}
