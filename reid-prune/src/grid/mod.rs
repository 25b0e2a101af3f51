//! The experiment grid of the paper (Fig. 3): scenarios S1–S4 × criteria × compression levels,
//! with the unpruned model and shallower baselines, evaluated on the target and cross-domain —
//! the application built on the pruning library (`criterion`, `method`, `strategy`, `surgery`,
//! `prune_run`, `training`).
//!
//! - [`config`]: the experiment's schema (`experiment.toml`), its validation and input checks;
//! - [`scenarios`]: one file per scenario (how a cell's model is made), registered in a list;
//! - [`graph`]: the grid as a graph of steps (what each computes, its key and parents, the
//!   cells' models and evaluations), built from the config alone; a plan is the graph read
//!   against the step folders;
//! - this module: the [`Runner`], which executes the graph (step cache, locks, workers, the
//!   cells' run folders);
//! - [`summary`]: the claims judged on the cells and the text table;
//! - [`slurm`]: the grid as a Slurm job array.
//!
//! Every step (pre-train, fine-tune, prune + retrain, evaluate) lives in a folder named by a hash
//! of what it computes and of its parent, under `<out>/steps/`; a finished step has a `DONE`
//! marker and is never recomputed, so an interrupted grid resumes where it stopped and steps
//! shared by scenarios (the source-pruned model of S1 and S2, the fine-tuned model of S3) run once.
//! Each grid cell gets a run folder `<out>/<scenario>/<criterion>-<level>/` (its format: the `reid-run` crate).

pub mod config;
pub mod graph;
pub mod scenarios;
pub mod slurm;
pub mod summary;

pub use config::{check_path_name, DataRef, ExperimentConfig};
pub use summary::{judge_benchmark, judge_claims, render_table};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use reid_model::checkpoint::{load_checkpoint, write_atomic};
use reid_model::complexity::complexity;

use serde::{Deserialize, Serialize};

use graph::{Action, Evals, Fingerprints, Row};
pub use graph::{PlannedStep, StepGraph, StepOut, StepState};

use crate::prune_run::{run_prune_resumable, PruneConfig};
use reid_run::lock::{try_claim, Claim};
use reid_train::{evaluate_on, run_training, RunConfig};

/// The paper's scenarios, a type of the contract crate (the report reads them from metrics).
pub use reid_run::Scenario;

/// One grid cell's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellResult {
    pub scenario: String,
    pub criterion: String,
    pub level: String,
    pub backbone: String,
    pub macs: u64,
    pub params: u64,
    pub target: reid_run::EvalEntry,
    pub cross: Option<reid_run::EvalEntry>,
    /// Per-query results on the target (for paired intervals between cells).
    #[serde(skip)]
    pub target_queries: reid_run::stats::PerQuery,
    pub latency_ms_batch1: f64,
    pub latency_ms_batch32: f64,
    pub folder: PathBuf,
    /// The same cell under the experiment's other seeds (key cells only), by seed.
    #[serde(default)]
    pub seed_evals: BTreeMap<u64, SeedEval>,
}

/// A key cell's model trained under another seed, evaluated as the cell is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedEval {
    pub target: reid_run::EvalEntry,
    pub cross: Option<reid_run::EvalEntry>,
    /// Per-query results (target, cross), for the claims' intervals over seeds and queries.
    #[serde(skip)]
    pub queries: (reid_run::stats::PerQuery, Option<reid_run::stats::PerQuery>),
}

impl CellResult {
    /// Target rank-1 over this cell's seed and its other seeds (None without other seeds).
    pub fn rank1_over_seeds(&self) -> Option<reid_run::stats::SeedSpread> {
        let values: Vec<f64> = std::iter::once(self.target.rank1)
            .chain(self.seed_evals.values().map(|e| e.target.rank1))
            .collect();
        reid_run::stats::SeedSpread::of(&values)
    }
}

/// Every step of an experiment (all its targets' grids, shared steps once), without running or
/// writing anything; `silent` keeps the grids' notes off stderr.
pub fn planned_steps(all: &ExperimentConfig, silent: bool) -> Result<Vec<PlannedStep>> {
    let shared_steps = all.out.join("steps");
    let mut seen = std::collections::HashSet::new();
    let mut steps = Vec::new();
    for cfg in all.per_target() {
        let mut runner = Runner::new(cfg)?.with_steps_dir(shared_steps.clone());
        if silent {
            runner = runner.silent();
        }
        let plan = runner.plan()?;
        steps.extend(plan.into_iter().filter(|s| seen.insert(s.name.clone())));
    }
    Ok(steps)
}

/// A several-target experiment's whole config at the top of its folder (each target's grid
/// writes its own in `out/<label>/`), before any grid runs: the report then tells a cell left
/// there by a single-target config, or the grid of a target since removed, from the current
/// ones. Nothing for a single target (its grid writes that file).
/// Returns the claim on the folder (hold it while the grids run).
pub fn record_several_targets(all: &ExperimentConfig) -> Result<Option<reid_run::lock::GridClaim>> {
    if all.targets.is_empty() {
        return Ok(None);
    }
    let claim = all.claim_folder()?;
    write_atomic(
        &all.out.join(reid_run::metrics::EXPERIMENT_FILE),
        toml::to_string_pretty(all)?.as_bytes(),
    )?;
    Ok(Some(claim))
}

/// Executes a grid's [`StepGraph`]: claims, computes or reuses its steps, writes its cells.
pub struct Runner {
    pub cfg: ExperimentConfig,
    /// Where finished steps are kept (shared by the grids of several targets).
    steps_dir: PathBuf,
    /// Opened when the grid runs (planning needs no device).
    device: Option<Device>,
    started: Instant,
    /// Finished steps this process found done (each counted once).
    pub steps_reused: usize,
    /// Wait for steps another process is computing (otherwise [`StepBusy`] is returned).
    wait_for_others: bool,
    /// The graph's steps this process saw finished (computed or reused).
    finished: HashSet<usize>,
    /// The fingerprints of the experiment's data by role, recorded beside its config and in
    /// every cell.
    data_record: BTreeMap<String, String>,
    /// This process's share of the output folder while the grid runs.
    grid_claim: Option<reid_run::lock::GridClaim>,
    /// Steps to compute in the whole experiment and how many earlier grids computed: a step's
    /// line says "step k/N" and the time left at this grid's pace.
    progress: Option<(usize, usize)>,
    /// No progress lines (a planning pass before the run).
    silent: bool,
    /// Compute at most this many steps, then stop with [`StepBudgetSpent`] (a worker's
    /// `--max-steps`: finished steps stay for the next worker).
    max_steps: Option<usize>,
    /// Folder names of the steps this process computed, in order.
    pub computed: Vec<String>,
    /// Seconds spent computing steps of each kind, and how many (for the time left).
    kind_cost: BTreeMap<&'static str, (f64, usize)>,
    /// The graph's steps not finished when the run began and not reached since.
    pending: HashSet<usize>,
}

/// Seconds left: each step still to compute in this grid (of the kinds `kinds`) at the measured
/// mean time of its kind, and `elsewhere` steps of the experiment's other grids at the mean of
/// all. `None` until every kind still to run has been timed once: a pre-training's time stands
/// for no evaluation's, and an estimate from it read 20 minutes for a one-minute grid.
fn time_left(
    kinds: &[&str],
    elsewhere: usize,
    cost: &BTreeMap<&'static str, (f64, usize)>,
) -> Option<f64> {
    let mean = |kind: &str| cost.get(kind).map(|&(t, n)| t / n as f64);
    let here = kinds.iter().map(|k| mean(k)).sum::<Option<f64>>()?;
    let (spent, n) = cost
        .values()
        .fold((0.0, 0), |(s, c), &(t, m)| (s + t, c + m));
    if n == 0 {
        return None;
    }
    Some(here + elsewhere as f64 * spent / n as f64)
}

/// Label of the per-query results in an eval step's folder.
const EVAL_QUERIES: &str = "queries";

/// A step another process is computing (see [`Runner::run`]).
#[derive(Debug, thiserror::Error)]
#[error("step {step} is being computed by {holder}")]
pub struct StepBusy {
    pub step: String,
    pub holder: String,
}

/// This process computed its `--max-steps` steps; the grid goes on in other workers.
#[derive(Debug, thiserror::Error)]
#[error("computed {0} steps (--max-steps); the rest of the grid is left to other workers")]
pub struct StepBudgetSpent(pub usize);

/// How often a waiting process looks at a step another one is computing.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The fingerprint of each dataset `cfg` reads ([`reid_data::datasets::fingerprint`]), read
/// once. A root that is not there is `absent` (a plan of a grid whose data is not made yet; a
/// run checks its inputs first); a dataset that does not load is an error, or `unreadable`
/// when `for_plan` (a plan lists the steps over a dataset being made or unpacked).
fn fingerprints(cfg: &ExperimentConfig, for_plan: bool) -> Result<Fingerprints> {
    let mut out = Fingerprints::new();
    for d in [&cfg.source, &cfg.target]
        .into_iter()
        .chain(cfg.cross.as_ref())
    {
        let key = (d.dataset.clone(), d.root.clone());
        if out.contains_key(&key) {
            continue;
        }
        let f = if !d.root.exists() {
            "absent".to_string()
        } else {
            match reid_data::datasets::load(&d.dataset, &d.root)
                .and_then(|ds| reid_data::datasets::fingerprint(&ds))
            {
                Ok(f) => f,
                Err(_) if for_plan => "unreadable".into(),
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "reading the {} dataset in {}",
                        d.dataset,
                        d.root.display()
                    )))
                }
            }
        };
        out.insert(key, f);
    }
    Ok(out)
}

impl Runner {
    pub fn new(cfg: ExperimentConfig) -> Result<Self> {
        Ok(Self {
            steps_dir: cfg.out.join("steps"),
            cfg,
            device: None,
            started: Instant::now(),
            steps_reused: 0,
            wait_for_others: true,
            finished: HashSet::new(),
            data_record: BTreeMap::new(),
            grid_claim: None,
            max_steps: None,
            computed: Vec::new(),
            progress: None,
            silent: false,
            kind_cost: BTreeMap::new(),
            pending: HashSet::new(),
        })
    }

    /// Number the steps this runner computes: `total` to compute in the experiment, `offset`
    /// computed by earlier grids of it.
    pub fn with_progress(mut self, total: usize, offset: usize) -> Self {
        self.progress = Some((total, offset));
        self
    }

    /// Print nothing (a planning pass whose listing is not shown).
    pub fn silent(mut self) -> Self {
        self.silent = true;
        self
    }

    /// Steps this process computed (reused ones not counted).
    pub fn steps_run(&self) -> usize {
        self.computed.len()
    }

    /// Stop after computing `n` steps ([`StepBudgetSpent`]); reused steps do not count.
    pub fn with_max_steps(mut self, n: Option<usize>) -> Self {
        self.max_steps = n;
        self
    }

    /// Keep finished steps in `dir` instead of `out/steps` (grids of one experiment share it).
    pub fn with_steps_dir(mut self, dir: PathBuf) -> Self {
        self.steps_dir = dir;
        self
    }

    /// The grid's graph, its notes logged.
    fn graph(&self, fingerprints: &Fingerprints) -> Result<StepGraph> {
        let graph = StepGraph::build(&self.cfg, fingerprints, &self.steps_dir)?;
        for note in &graph.notes {
            self.log(note);
        }
        Ok(graph)
    }

    /// The grid's steps with their keys, parents and state, without running anything: the
    /// graph [`Runner::run`] executes, read against the step folders (nothing is written).
    pub fn plan(&mut self) -> Result<Vec<PlannedStep>> {
        self.cfg
            .validate()
            .with_context(|| format!("experiment '{}'", self.cfg.name))?;
        let graph = self.graph(&fingerprints(&self.cfg, true)?)?;
        Ok(graph.planned())
    }

    fn device(&self) -> Result<Device> {
        self.device
            .clone()
            .context("the grid's device is opened when it runs, not when it is planned")
    }

    fn log(&self, msg: &str) {
        if !self.silent {
            eprintln!("[{:>6.0} s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    /// "step k/N, ~m:ss left" for step `node` starting now (nothing without a known total):
    /// see [`time_left`].
    fn progress_note(&self, g: &StepGraph, node: usize) -> String {
        let Some((total, offset)) = self.progress else {
            return String::new();
        };
        let k = offset + self.computed.len() + 1;
        let kinds: Vec<&str> = self
            .pending
            .iter()
            .chain((!self.pending.contains(&node)).then_some(&node))
            .map(|&p| g.steps[p].kind)
            .collect();
        let elsewhere = total.saturating_sub(k - 1).saturating_sub(kinds.len());
        let eta = time_left(&kinds, elsewhere, &self.kind_cost)
            .map(|s| format!(", ~{} left", reid_train::clock(s)))
            .unwrap_or_default();
        format!("step {k}/{}{eta}: ", total.max(k))
    }

    /// Step `node` finished: reused when done before, otherwise its parents first, then itself.
    fn ensure(&mut self, g: &StepGraph, node: usize) -> Result<()> {
        if self.finished.contains(&node) {
            return Ok(());
        }
        // a finished step needs nothing above it (its parents' folders may be gone)
        if !g.steps[node].out.dir.join("DONE").is_file() {
            for &p in &g.steps[node].parents {
                self.ensure(g, p)?;
            }
        }
        self.step(g, node)?;
        self.finished.insert(node);
        self.pending.remove(&node);
        Ok(())
    }

    /// Run `s` in its folder unless it finished before. The folder is claimed first
    /// ([`reid_run::lock`]): while another process holds it, this waits for it (or, when
    /// `wait_for_others` is off, returns [`StepBusy`] so that the caller can do other work). An
    /// unfinished folder (a killed run) is not cleared: the step resumes from its last checkpoint.
    fn step(&mut self, g: &StepGraph, node: usize) -> Result<()> {
        let s = &g.steps[node];
        let dir = &s.out.dir;
        let mut announced = false;
        let _lock = loop {
            if dir.join("DONE").is_file() {
                self.steps_reused += 1;
                return Ok(());
            }
            if let Some(max) = self.max_steps.filter(|&m| self.computed.len() >= m) {
                return Err(StepBudgetSpent(max).into());
            }
            match try_claim(dir)? {
                Claim::Held(lock) => break lock,
                Claim::Busy(holder) => {
                    let who = holder
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "another process".into());
                    if !self.wait_for_others {
                        return Err(StepBusy {
                            step: s.name.clone(),
                            holder: who,
                        }
                        .into());
                    }
                    if !announced {
                        self.log(&format!("{}: waiting for {who}, which computes it", s.name));
                        announced = true;
                    }
                    std::thread::sleep(BUSY_POLL);
                }
            }
        };
        // Finished by another process between the check and the claim.
        if dir.join("DONE").is_file() {
            self.steps_reused += 1;
            return Ok(());
        }
        reid_run::remove_stale_temp_files(dir);
        let resuming = dir.join("step.json").is_file();
        write_atomic(
            &dir.join("step.json"),
            serde_json::to_string_pretty(&s.key)?.as_bytes(),
        )?;
        let note = self.progress_note(g, node);
        if resuming {
            self.log(&format!(
                "{note}{}: resuming the unfinished step in {}",
                s.what,
                dir.display()
            ));
        } else {
            self.log(&format!("{note}{}, for {} ({})", s.what, s.cell, s.name));
        }
        let started = Instant::now();
        self.act(&s.action, dir)
            .with_context(|| format!("step {} in {}", s.what, dir.display()))?;
        write_atomic(&dir.join("DONE"), b"")?;
        // a resumed step's time is part of one: it does not stand for its kind
        if !resuming {
            let c = self.kind_cost.entry(s.kind).or_insert((0.0, 0));
            *c = (c.0 + started.elapsed().as_secs_f64(), c.1 + 1);
        }
        self.computed.push(s.name.clone());
        Ok(())
    }

    /// What a step does, in its folder `dir`.
    fn act(&self, action: &Action, dir: &Path) -> Result<()> {
        match action {
            Action::Train(rc) => {
                let rc = RunConfig {
                    out: dir.to_path_buf(),
                    ..(**rc).clone()
                };
                run_training(&rc, true, Arc::new(AtomicBool::new(false)), true)?;
            }
            Action::Prune(pc) => {
                let pc = PruneConfig {
                    out: dir.to_path_buf(),
                    ..(**pc).clone()
                };
                run_prune_resumable(&pc, true, true)?;
            }
            Action::Eval { model, data } => {
                let (h, w) = self.cfg.input.hw();
                let net = load_checkpoint(model, &self.device()?, false)?.net;
                let ds = reid_data::datasets::load(&data.dataset, &data.root)?;
                let m = evaluate_on(&net, &ds, &reid_data::Preprocess::imagenet(h, w), false)?;
                let run = reid_run::RunFolder::new(dir);
                run.write_per_query(EVAL_QUERIES, &m.per_query)?;
                run.write_ranks(EVAL_QUERIES, &reid_eval::dataset_eval::ranks_of(&m, &ds))?;
                write_atomic(
                    &dir.join("eval.json"),
                    serde_json::to_string_pretty(&m.eval_entry())?.as_bytes(),
                )?;
            }
        }
        Ok(())
    }

    /// An evaluation step's results, computed or reused.
    fn evaluation(
        &mut self,
        g: &StepGraph,
        node: usize,
    ) -> Result<(reid_run::EvalEntry, reid_run::stats::PerQuery)> {
        self.ensure(g, node)?;
        let dir = &g.steps[node].out.dir;
        let path = dir.join("eval.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let entry = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an eval entry", path.display()))?;
        let queries = reid_run::RunFolder::new(dir)
            .read_per_query()?
            .remove(EVAL_QUERIES)
            .with_context(|| format!("{}: no per-query results", dir.display()))?;
        Ok((entry, queries))
    }

    /// A model's evaluations on the target and the cross set.
    fn evaluations(&mut self, g: &StepGraph, e: Evals) -> Result<SeedEval> {
        let (target, target_queries) = self.evaluation(g, e.target)?;
        let (cross, cross_queries) = match e.cross {
            Some(c) => {
                let (e, q) = self.evaluation(g, c)?;
                (Some(e), Some(q))
            }
            None => (None, None),
        };
        Ok(SeedEval {
            target,
            cross,
            queries: (target_queries, cross_queries),
        })
    }

    /// Measured inference latency (ms per batch) with BN folded, batch 1 and 32.
    fn latency(&self, model: &Path) -> Result<(f64, f64)> {
        let (h, w) = self.cfg.input.hw();
        let device = self.device()?;
        let net = load_checkpoint(model, &device, false)?.net.fold_bn()?;
        let mut out = [0.0; 2];
        for (i, b) in [1usize, 32].into_iter().enumerate() {
            let x = Tensor::randn(0f32, 1.0, (b, 3, h, w), &device)?;
            // small models run in milliseconds: warm up, then take the median of several runs
            for _ in 0..2 {
                net.forward_t(&x, false)?;
            }
            let mut t = Vec::new();
            for _ in 0..9 {
                let s = Instant::now();
                net.forward_t(&x, false)?;
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(|a, b| a.total_cmp(b));
            out[i] = t[t.len() / 2];
        }
        Ok((out[0], out[1]))
    }

    /// A row's model and evaluations computed (or reused), and its grid-cell run folder written.
    fn cell(&mut self, g: &StepGraph, row: &Row) -> Result<CellResult> {
        self.ensure(g, row.model)?;
        let SeedEval {
            target,
            cross,
            queries: (target_queries, cross_queries),
        } = self.evaluations(g, row.evals)?;
        let folder = self
            .cfg
            .out
            .join(&row.scenario)
            .join(format!("{}-{}", row.criterion, row.level));
        let model = &g.steps[row.model].out.model();
        let ck = load_checkpoint(model, &Device::Cpu, false)?;
        let (h, w) = self.cfg.input.hw();
        let c = complexity(ck.net.spec(), h, w)?;
        let (b1, b32) = self.latency(model)?;
        std::fs::create_dir_all(&folder)?;
        // a killed process's half-written temp files (the pid in their names is gone)
        reid_run::remove_stale_temp_files(&folder);
        // atomic: two grid processes may write the same cell folder
        let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
        write_atomic(&folder.join("model.safetensors"), &bytes)?;
        let mut eval = BTreeMap::from([(self.cfg.target.label().to_string(), target.clone())]);
        if let (Some(cd), Some(cv)) = (&self.cfg.cross, &cross) {
            // Marked as cross-domain, so that no report takes it for an in-domain result.
            eval.insert(format!("{}-cross", cd.label()), cv.clone());
        }
        let run = reid_run::RunFolder::new(&folder);
        run.write_metrics(&reid_run::RunMetrics {
            experiment: self.cfg.name.clone(),
            target_dataset: Some(self.cfg.target.label().to_string()),
            scenario: row.scenario.clone(),
            criterion: row.criterion.clone(),
            level: row.level.clone(),
            backbone: ck.net.spec().name(),
            parent: ck.provenance.parent.clone(),
            macs: c.backbone.macs,
            params: c.backbone.params,
            kept_channel_fraction: Some(crate::prune_run::channel_fraction(
                ck.net.spec(),
                &crate::prune_run::unpruned_arch(ck.net.spec())?,
            )),
            latency_ms: BTreeMap::from([(
                self.cfg.device.to_string(),
                reid_run::Latency {
                    batch1: Some(b1),
                    batch32: Some(b32),
                },
            )]),
            eval,
            tool_version: Some(env!("CARGO_PKG_VERSION").into()),
            data: self.data_record.clone(),
            ..Default::default()
        })?;
        run.write_config(&self.cfg)?;
        // this cell's model only: no earlier grid's seeds or re-ranked results beside it
        run.reset_per_query()?;
        run.write_per_query(self.cfg.target.label(), &target_queries)?;
        if let (Some(cd), Some(q)) = (&self.cfg.cross, &cross_queries) {
            run.write_per_query(&format!("{}-cross", cd.label()), q)?;
        }
        // the ranked lists beside them (an eval step finished before they were kept has none)
        let labelled = [(Some(row.evals.target), self.cfg.target.label().to_string())]
            .into_iter()
            .chain(
                self.cfg
                    .cross
                    .as_ref()
                    .map(|cd| (row.evals.cross, format!("{}-cross", cd.label()))),
            );
        for (node, label) in labelled {
            let Some(node) = node else { continue };
            if let Some(r) = reid_run::RunFolder::new(&g.steps[node].out.dir)
                .read_ranks()?
                .remove(EVAL_QUERIES)
            {
                run.write_ranks(&label, &r)?;
            }
        }
        Ok(CellResult {
            scenario: row.scenario.clone(),
            criterion: row.criterion.clone(),
            level: row.level.clone(),
            backbone: ck.net.spec().name(),
            macs: c.backbone.macs,
            params: c.backbone.params,
            target,
            cross,
            target_queries,
            latency_ms_batch1: b1,
            latency_ms_batch32: b32,
            folder,
            seed_evals: BTreeMap::new(),
        })
    }

    /// Run the whole grid; returns one result per cell (the fine-tuned unpruned model first, then
    /// the same model before fine-tuning, the shallower baselines, and the scenario cells).
    ///
    /// Several processes may run one grid together: a cell whose step another process is
    /// computing is put off, and this process goes on with the next cell; put-off cells are
    /// taken up again at the end (waiting for the steps still in progress).
    pub fn run(&mut self) -> Result<Vec<CellResult>> {
        let cfg = self.cfg.clone();
        // Every name and number is checked before the first step runs.
        cfg.validate()
            .with_context(|| format!("experiment '{}'", cfg.name))?;
        self.device = Some(
            reid_model::device::open_device(cfg.device)
                .with_context(|| format!("device = \"{}\"", cfg.device))?,
        );
        cfg.check_inputs()
            .with_context(|| format!("experiment '{}'", cfg.name))?;
        self.grid_claim = Some(cfg.claim_folder()?);
        reid_run::remove_stale_temp_files(&cfg.out);
        let fingerprints = fingerprints(&cfg, false)?;
        // the fingerprints of the data by role
        self.data_record = [("source", Some(&cfg.source)), ("target", Some(&cfg.target))]
            .into_iter()
            .chain([("cross", cfg.cross.as_ref())])
            .filter_map(|(role, d)| {
                let d = d?;
                let f = fingerprints.get(&(d.dataset.clone(), d.root.clone()))?;
                Some((role.to_string(), f.clone()))
            })
            .collect();
        write_atomic(
            &cfg.out.join(reid_run::metrics::EXPERIMENT_FILE),
            toml::to_string_pretty(&cfg)?.as_bytes(),
        )?;
        write_atomic(
            &cfg.out.join(reid_run::metrics::EXPERIMENT_DATA_FILE),
            serde_json::to_string_pretty(&self.data_record)?.as_bytes(),
        )?;
        let g = self.graph(&fingerprints)?;
        self.pending = (0..g.steps.len())
            .filter(|&n| !g.steps[n].out.dir.join("DONE").is_file())
            .collect();
        self.wait_for_others = true;
        let mut cells = vec![self.cell(&g, &g.rows[0])?];
        let mut done: Vec<Option<CellResult>> = vec![None; g.rows.len() - 1];
        for wait in [false, true] {
            self.wait_for_others = wait;
            for (i, row) in g.rows[1..].iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                match self.cell(&g, row) {
                    Ok(c) => done[i] = Some(c),
                    Err(e) if !wait && e.downcast_ref::<StepBusy>().is_some() => {
                        self.log(&format!("{e}: put off, going on with other cells"));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.wait_for_others = true;
        cells.extend(done.into_iter().flatten());
        self.other_seeds(&g, &mut cells)?;
        Ok(cells)
    }

    /// The key cells' evaluations under the experiment's other seeds, into the cells' results
    /// and `metrics.json` (`seed_evals`).
    fn other_seeds(&mut self, g: &StepGraph, cells: &mut [CellResult]) -> Result<()> {
        let seeds: Vec<u64> = g.rows[0].seed_evals.keys().copied().collect();
        for seed in seeds {
            self.log(&format!("seed {seed}: the key cells again"));
            for (row, cell) in g.rows.iter().zip(cells.iter_mut()) {
                if let Some(&e) = row.seed_evals.get(&seed) {
                    let evals = self.evaluations(g, e)?;
                    cell.seed_evals.insert(seed, evals);
                }
            }
        }
        for c in cells.iter().filter(|c| !c.seed_evals.is_empty()) {
            let run = reid_run::RunFolder::new(&c.folder);
            let mut m = run
                .read_metrics()?
                .with_context(|| format!("{}: metrics.json is missing", c.folder.display()))?;
            m.seed_evals = c
                .seed_evals
                .iter()
                .map(|(&seed, e)| {
                    let mut evals =
                        BTreeMap::from([(self.cfg.target.label().to_string(), e.target.clone())]);
                    if let (Some(cd), Some(cv)) = (&self.cfg.cross, &e.cross) {
                        evals.insert(format!("{}-cross", cd.label()), cv.clone());
                    }
                    (seed, evals)
                })
                .collect();
            run.write_metrics(&m)?;
            // each seed's per-query results beside the main run's (`<label>#seed<N>`)
            for (&seed, e) in &c.seed_evals {
                let label = self.cfg.target.label().to_string();
                run.write_per_query(&reid_run::stats::seed_label(&label, seed), &e.queries.0)?;
                if let (Some(cd), Some(q)) = (&self.cfg.cross, &e.queries.1) {
                    let cross = format!("{}-cross", cd.label());
                    run.write_per_query(&reid_run::stats::seed_label(&cross, seed), q)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_waits_for_every_kind_and_sums_each_at_its_own_mean() {
        let mut cost = BTreeMap::new();
        cost.insert("pretrain", (60.0, 1));
        // an evaluation not timed yet: no estimate rather than one at the pre-training's pace
        assert_eq!(time_left(&["eval", "pretrain"], 0, &cost), None);
        cost.insert("eval", (4.0, 2));
        assert_eq!(
            time_left(&["eval", "eval", "pretrain"], 0, &cost),
            Some(64.0)
        );
        // other grids' steps at the mean of all: (60 + 4) / 3 each
        let t = time_left(&["eval"], 3, &cost).unwrap();
        assert!((t - (2.0 + 64.0)).abs() < 1e-9, "{t}");
        assert_eq!(time_left(&[], 0, &BTreeMap::new()), None);
    }
}
