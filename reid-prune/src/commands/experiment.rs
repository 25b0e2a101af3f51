//! The experiment grid: the default run, `reid-prune run --config`, `reid-prune plan --config`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Run an experiment grid (scenarios x criteria x levels, with baselines) from a TOML file.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The experiment config (TOML; `base = "other.toml"` starts from another file).
    #[arg(long)]
    config: PathBuf,
    /// Train the key cells (unpruned, baselines, every scenario × criterion at the smallest
    /// level) under N seeds: seed, seed + 1, … (overrides the config's `seeds`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    seeds: Option<u64>,
    /// Any field of the experiment config by its TOML path, laid over the file (repeatable):
    /// --set batch_pk=8x4 --set finetune_epochs=30
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<reid_prune::config_file::SetOverride>,
    /// One of several workers sharing the output folder (processes here, Slurm array tasks
    /// elsewhere): each claims the steps no other holds, waits for the ones others compute, and
    /// ends with the whole table; it names itself in its log and lists the steps it computed.
    #[arg(long)]
    worker: bool,
    /// Compute at most N steps, then exit 0 leaving the rest to other workers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_steps: Option<u64>,
}

/// List an experiment grid's steps (key, parents, state) without running anything.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The experiment config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// One JSON object a step, one per line, instead of the table.
    #[arg(long)]
    json: bool,
    /// Overrides as `run --set` takes them (the plan of that run).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<reid_prune::config_file::SetOverride>,
}

/// With no subcommand: the default experiment on the synthetic benchmark.
#[derive(clap::Args, Debug)]
pub struct DefaultArgs {
    /// A smoke run of the grid in about a minute on 2 cores (`--preset quick`).
    #[arg(long, conflicts_with = "preset")]
    quick: bool,
    /// Which synthetic experiment: quick (a smoke run, ~1 min), default (the paper's grid in
    /// miniature, ~33 min on 2 cores), large (twice the data, longer pre-training: ~1 h 40 min
    /// on 2 cores, projected).
    #[arg(long, value_enum)]
    preset: Option<reid_prune::default_run::PresetName>,
    /// Where the data and run folders go (default runs/<preset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Any field of the experiment by its TOML path, as `run --set` takes it (repeatable):
    /// --set finetune_epochs=20 --set 'scenarios=[]'
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<reid_prune::config_file::SetOverride>,
    /// Train the key cells (unpruned, baselines, every scenario × criterion at C1) under N
    /// seeds: 0, 1, … (tables add mean ± sd over seeds; the claims cover training variance).
    /// Default: the preset's (3; 1 for quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100))]
    seeds: Option<u64>,
    /// Train, score and evaluate on this device (cpu, cuda:N); a device that cannot be opened
    /// is an error before anything is written. Results differ from the CPU's in the last digits.
    #[arg(long, value_name = "DEVICE")]
    device: Option<reid_run::DeviceSpec>,
}

/// `--seeds N`: the experiment's seed and the N − 1 after it.
fn with_seeds(
    cfg: reid_prune::grid::ExperimentConfig,
    n: Option<u64>,
) -> reid_prune::grid::ExperimentConfig {
    match n {
        Some(n) => cfg.with_seed_count(n),
        None => cfg,
    }
}

pub fn run_default(a: DefaultArgs) -> Result<()> {
    use reid_prune::default_run::PresetName;
    let which = match (a.quick, a.preset) {
        (true, _) => PresetName::Quick,
        (false, p) => p.unwrap_or(PresetName::Default),
    };
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(which.name()));
    if let Some(d) = &a.device {
        // open it first: a missing GPU must not leave a half-made data folder behind
        reid_model::device::open_device(*d)?;
    }
    // the overrides are checked on the preset's config before any data is generated
    let mut cfg = reid_prune::default_run::configured(&out, which, &a.sets, a.seeds)?;
    if let Some(d) = a.device {
        cfg.device = d;
    }
    // the folder is this config's before its data is generated: a grid of another preset
    // running there keeps its images (the run below joins this claim)
    let _grid = cfg.claim_folder()?;
    reid_prune::default_run::generate_data(&out, which)?;
    run_experiment(cfg)
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = with_seeds(
        reid_prune::config_file::read_toml_with(&a.config, "experiment config", &a.sets)?,
        a.seeds,
    );
    let worker = a.worker.then(worker_name);
    if let Some(w) = &worker {
        eprintln!(
            "worker {w}: sharing {} with any other worker",
            cfg.out.display()
        );
    }
    run_experiment_as(cfg, worker, a.max_steps.map(|n| n as usize))
}

/// `<host>:<pid>`, with the Slurm job and array task when there is one.
fn worker_name() -> String {
    let host = reid_run::lock::host_name();
    let slurm = match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(j), Ok(t)) => format!(" (slurm {j}_{t})"),
        _ => String::new(),
    };
    format!("{host}:{}{slurm}", std::process::id())
}

pub fn plan(a: PlanArgs) -> Result<()> {
    plan_experiment(
        reid_prune::config_file::read_toml_with(&a.config, "experiment config", &a.sets)?,
        a.json,
    )
}

fn plan_experiment(all: reid_prune::grid::ExperimentConfig, json: bool) -> Result<()> {
    use reid_prune::grid::StepState;
    all.validate()
        .with_context(|| format!("experiment '{}'", all.name))?;
    let shared_steps = all.out.join("steps");
    let steps = reid_prune::grid::planned_steps(&all, false)?;
    let mut out = std::io::stdout().lock();
    for s in &steps {
        if json {
            writeln!(out, "{}", serde_json::to_string(s)?)?;
        } else {
            writeln!(
                out,
                "{:<8} {:<25} {:<32} {}{}",
                format!("{:?}", s.state).to_lowercase(),
                s.name,
                s.what,
                s.parents.join(" "),
                s.owner
                    .as_deref()
                    .map(|o| format!("  [{o}]"))
                    .unwrap_or_default()
            )?;
        }
    }
    if !json {
        let n = |st: StepState| steps.iter().filter(|s| s.state == st).count();
        writeln!(
            out,
            "{} steps: {} done, {} running, {} started (resumable), {} ready, {} waiting (folders under {})",
            steps.len(),
            n(StepState::Done),
            n(StepState::Running),
            n(StepState::Started),
            n(StepState::Ready),
            n(StepState::Waiting),
            shared_steps.display()
        )?;
    }
    Ok(())
}

fn run_experiment(all: reid_prune::grid::ExperimentConfig) -> Result<()> {
    run_experiment_as(all, None, None)
}

fn run_experiment_as(
    all: reid_prune::grid::ExperimentConfig,
    worker: Option<String>,
    max_steps: Option<usize>,
) -> Result<()> {
    all.validate()
        .with_context(|| format!("experiment '{}'", all.name))?;
    // every target's data before the first grid runs, not after it
    all.check_inputs()
        .with_context(|| format!("experiment '{}'", all.name))?;
    let _claim = reid_prune::grid::record_several_targets(&all)?;
    // the steps left to compute, for "step k/N" (a worker shares them with others: no count)
    let to_compute = match worker {
        None => Some(
            reid_prune::grid::planned_steps(&all, true)?
                .iter()
                .filter(|s| s.state != reid_prune::grid::StepState::Done)
                .count(),
        ),
        Some(_) => None,
    };
    let grids = all.per_target();
    let shared_steps = all.out.join("steps");
    let mut computed: Vec<String> = Vec::new();
    for cfg in grids {
        let start = std::time::Instant::now();
        let cross = cfg.cross.as_ref().map(|c| c.label().to_string());
        let budget = max_steps.map(|m| m.saturating_sub(computed.len()));
        let mut runner = reid_prune::grid::Runner::new(cfg.clone())?
            .with_steps_dir(shared_steps.clone())
            .with_max_steps(budget);
        if let Some(total) = to_compute {
            runner = runner.with_progress(total, computed.len());
        }
        let result = runner.run();
        computed.extend(runner.computed.iter().cloned());
        let cells = match result {
            Err(e)
                if e.downcast_ref::<reid_prune::grid::StepBudgetSpent>()
                    .is_some() =>
            {
                report_worker(worker.as_deref(), &computed);
                println!("stopped: {e}");
                return Ok(());
            }
            r => r?,
        };
        let table = reid_prune::grid::render_table(&cells, cross.as_deref());
        reid_model::checkpoint::write_atomic(&cfg.out.join("summary.txt"), table.as_bytes())?;
        println!(
            "\n{} on {} ({}), mAP and R-1 in %{}; speed-up = measured batch-32 latency of the first row / this row:",
            cfg.name,
            cfg.target.label(),
            cfg.input,
            cross
                .as_deref()
                .map(|c| format!(", cross-domain R-1 on {c}"))
                .unwrap_or_default()
        );
        print!("{table}");
        let mut text = String::new();
        for table in [
            reid_prune::grid::judge_claims(&cfg, &cells)?,
            reid_prune::grid::judge_benchmark(&cells)?,
        ]
        .into_iter()
        .flatten()
        {
            text.push_str(&format!("\n{}{}\n", table.to_text(), table.note));
        }
        if !text.is_empty() {
            reid_model::checkpoint::write_atomic(
                &cfg.out.join("claims.txt"),
                text.trim_start().as_bytes(),
            )?;
            print!("{text}");
        }
        println!(
            "\n{} steps run, {} reused, {:.0} s. Run folders: {}/<scenario>/<criterion>-<level>/ (summary.txt there too)",
            runner.steps_run(),
            runner.steps_reused,
            start.elapsed().as_secs_f64(),
            cfg.out.display()
        );
    }
    report_worker(worker.as_deref(), &computed);
    Ok(())
}

/// A worker's last line: the steps it computed (each step is computed by one worker only).
fn report_worker(worker: Option<&str>, computed: &[String]) {
    if let Some(w) = worker {
        println!(
            "worker {w} computed {} steps: {}",
            computed.len(),
            if computed.is_empty() {
                "none".to_string()
            } else {
                computed.join(" ")
            }
        );
    }
}
