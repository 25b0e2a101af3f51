//! The subcommands of `reid-prune`, one module each (`Args` + `run`).

pub mod data;
pub mod experiment;
pub mod export;
pub mod flops;
pub mod prune;
pub mod scores;
pub mod sensitivity;
pub mod signals;
pub mod slurm;
pub mod synth;
pub mod train;

pub use reid_prune::method::method_values;

use std::path::Path;

/// Run `work` as the one writer of `dir` (its `.lock` held throughout, a second writer refused
/// with the holder's name). A folder that did not exist before and holds nothing but the lock
/// when `work` fails is removed: a refused run leaves nothing behind.
pub fn as_folder_writer<T>(
    dir: &Path,
    what: &str,
    work: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "--out {} is a file; expected the folder {what} writes",
            dir.display()
        );
    }
    refuse_grid_folder(dir, what)?;
    let existed = dir.exists();
    let lock = reid_run::lock::claim_folder(dir, what)?;
    let result = work();
    drop(lock);
    if result.is_err() && !existed && holds_only_the_lock(dir) {
        let _ = std::fs::remove_file(dir.join(reid_run::lock::LOCK_FILE));
        let _ = std::fs::remove_dir(dir);
    }
    result
}

/// A grid's folder (done, or running before its experiment.toml is written) is the grid's: a
/// single run written at its top would sit beside an experiment.toml, summary and claims that
/// do not describe it.
pub fn refuse_grid_folder(dir: &Path, what: &str) -> anyhow::Result<()> {
    if dir.join(reid_run::metrics::EXPERIMENT_FILE).is_file() || reid_run::lock::grid_running(dir) {
        anyhow::bail!(
            "{} is an experiment grid's folder (it holds {}, or a grid runs there); give {what} \
             a folder of its own",
            dir.display(),
            reid_run::metrics::EXPERIMENT_FILE
        );
    }
    Ok(())
}

/// Whether `dir` is a folder with nothing in it but (at most) its writer's `.lock`.
pub fn holds_only_the_lock(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| e.file_name() == reid_run::lock::LOCK_FILE)
    })
}
