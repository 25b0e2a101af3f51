//! `reid-prune slurm`: the sbatch file of a grid as a Slurm job array of workers.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Write an sbatch job-array script running the grid with N workers (to stdout).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment config (TOML), read and checked now.
    #[arg(long)]
    config: PathBuf,
    /// Array tasks, one worker each (they share the config's output folder).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// CPUs of each task (the worker's threads).
    #[arg(long, default_value_t = 4)]
    cpus_per_task: usize,
    /// GPUs of each task; with any, the workers run on cuda:0 of their own GPUs.
    #[arg(long, default_value_t = 0)]
    gpus_per_task: usize,
    /// Slurm partition.
    #[arg(long)]
    partition: Option<String>,
    /// Wall-time limit of each task (HH:MM:SS or D-HH:MM:SS); a task stopped by it leaves its
    /// step to resume in another worker or a resubmission.
    #[arg(long)]
    time: Option<String>,
    /// Overrides passed to every worker (as `run --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("making {} absolute", p.display()))
}

pub fn run(a: Args) -> Result<()> {
    let overrides: Vec<reid_prune::config_file::SetOverride> = a
        .sets
        .iter()
        .map(|s| s.parse().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let cfg: reid_prune::grid::ExperimentConfig =
        reid_prune::config_file::read_toml_with(&a.config, "experiment config", &overrides)?;
    cfg.validate()
        .with_context(|| format!("experiment '{}'", cfg.name))?;
    let exe = std::env::current_exe().context("locating the reid-prune binary")?;
    let bin_dir = exe.parent().unwrap_or(Path::new("/"));
    let job = reid_prune::grid::slurm::SlurmJob {
        name: cfg.name.clone(),
        workers: a.workers,
        cpus_per_task: a.cpus_per_task,
        gpus_per_task: a.gpus_per_task,
        partition: a.partition,
        time: a.time,
        workdir: absolute(Path::new("."))?,
        config: absolute(&a.config)?,
        out: absolute(&cfg.out)?,
        reid_prune: exe.clone(),
        reid_report: bin_dir.join("reid-report"),
        sets: a.sets,
    };
    job.validate()?;
    if !job.reid_report.is_file() {
        eprintln!(
            "note: {} is not built yet (cargo build --release -p reid-report); the report job needs it",
            job.reid_report.display()
        );
    }
    // Slurm opens the log files before the task starts: their folder must exist.
    std::fs::create_dir_all(job.log_dir())
        .with_context(|| format!("creating the log folder {}", job.log_dir().display()))?;
    std::io::stdout()
        .lock()
        .write_all(job.script().as_bytes())?;
    eprintln!(
        "{} workers on {}; logs in {}; submit with: sbatch <this file>",
        job.workers,
        job.out.display(),
        job.log_dir().display()
    );
    Ok(())
}
