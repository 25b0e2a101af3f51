//! The experiment grid of the paper (Fig. 3): scenarios S1–S4 × criteria × compression levels,
//! with the unpruned model and shallower baselines, evaluated on the target and cross-domain —
//! the application built on the pruning library (`criterion`, `method`, `strategy`, `surgery`,
//! `prune_run`, `training`).
//!
//! - [`config`]: the experiment's schema (`experiment.toml`), its validation and input checks;
//! - [`scenarios`]: one file per scenario (how a cell's model is made), registered in a list;
//! - [`step_key`]: what a step computes, hashed into its folder name;
//! - this module: the [`Runner`] (step cache, locks, seeds, planning, cells' run folders);
//! - [`summary`]: the claims judged on the cells and the text table;
//! - [`slurm`]: the grid as a Slurm job array.
//!
//! Every step (pre-train, fine-tune, prune + retrain, evaluate) lives in a folder named by a hash
//! of what it computes and of its parent, under `<out>/steps/`; a finished step has a `DONE`
//! marker and is never recomputed, so an interrupted grid resumes where it stopped and steps
//! shared by scenarios (the source-pruned model of S1 and S2, the fine-tuned model of S3) run once.
//! Each grid cell gets a run folder `<out>/<scenario>/<criterion>-<level>/` (its format: the `reid-run` crate).

pub mod config;
pub mod scenarios;
pub mod slurm;
pub mod summary;

pub use config::{check_path_name, DataRef, ExperimentConfig};
pub use summary::{judge_benchmark, judge_claims, render_table};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use reid_model::checkpoint::{file_sha256, load_checkpoint, write_atomic};
use reid_model::complexity::complexity;

use reid_train::Task;
use serde::{Deserialize, Serialize};

use crate::prune_run::{run_prune_resumable, PruneConfig};
use crate::strategy::TargetKind;
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

pub struct Runner {
    pub cfg: ExperimentConfig,
    /// Where finished steps are kept (shared by the grids of several targets).
    steps_dir: PathBuf,
    /// Opened when the grid runs (planning needs no device).
    device: Option<Device>,
    started: Instant,
    pub steps_reused: usize,
    /// Wait for steps another process is computing (otherwise [`StepBusy`] is returned).
    wait_for_others: bool,
    /// Planning: steps are listed here instead of being run.
    plan: Option<Vec<PlannedStep>>,
    /// Data fingerprints by dataset and root, read once a run.
    fingerprints: HashMap<(String, PathBuf), String>,
    /// The fingerprints of the experiment's data by role, recorded beside its config and in
    /// every cell (empty while planning).
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
}

/// A step's folder and key (the hash in its folder name).
#[derive(Clone, Debug)]
pub struct StepOut {
    pub dir: PathBuf,
    pub key: String,
}

impl StepOut {
    /// The model a training or pruning step writes.
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

/// Where a step stands, as `plan` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Finished (`DONE`): reused.
    Done,
    /// Being computed now (its lock is held: see [`PlannedStep::owner`]).
    Running,
    /// Started by a run that did not finish and nobody holds: the next worker resumes it from
    /// its checkpoint.
    Started,
    /// Not started, every parent finished: a worker can take it now.
    Ready,
    /// Not started, waiting for a parent.
    Waiting,
}

/// One step of a grid, listed without running it.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// Folder name under `steps/`: `<kind>-<key>`.
    pub name: String,
    pub kind: String,
    /// What it computes, in words (`prune l1 0.500 on source`).
    pub what: String,
    /// Folder names of the steps whose models it starts from.
    pub parents: Vec<String>,
    pub state: StepState,
    /// Who computes it, when it is running (`pid 123 on node7 (claimed 40 s ago)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Label of the per-query results in an eval step's folder.
const EVAL_QUERIES: &str = "queries";

/// A step another process is computing (see [`Runner::step`]).
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

/// Version of what the steps compute: bump it when a change alters a step's result (training
/// numerics, pruning rules), so that old finished steps are not reused. 2: the stem max pool's
/// gradient goes to the first maximum (session 2). 3: stride-1 conv input gradients as a
/// flipped-kernel conv, lane-wise BN reductions (float rounding), channels-last latency (session 3).
/// 4: Taylor scores from chunks of 8 images (float rounding can reorder near-ties; session 4).
/// 5: keys are the hash of each step's full resolved config and its parents' keys (session 5).
/// 6: keys hold the fingerprint of the data each step reads (session 6). 7: that fingerprint
/// covers the images the dataset lists, not every file under its root (session 17).
const STEP_ENGINE: u32 = 7;

impl Runner {
    pub fn new(cfg: ExperimentConfig) -> Result<Self> {
        Ok(Self {
            steps_dir: cfg.out.join("steps"),
            cfg,
            device: None,
            started: Instant::now(),
            steps_reused: 0,
            wait_for_others: true,
            plan: None,
            fingerprints: HashMap::new(),
            data_record: BTreeMap::new(),
            grid_claim: None,
            max_steps: None,
            computed: Vec::new(),
            progress: None,
            silent: false,
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

    /// The fingerprint of the images dataset `name` lists under `root`
    /// ([`reid_data::datasets::fingerprint`]; cached: the grid reads each dataset once).
    fn fingerprint(&mut self, name: &str, root: &Path) -> Result<String> {
        let key = (name.to_string(), root.to_path_buf());
        if let Some(f) = self.fingerprints.get(&key) {
            return Ok(f.clone());
        }
        if !root.exists() {
            // planning a grid whose data is not there yet (a run checks its inputs first)
            return Ok("absent".into());
        }
        let f = match reid_data::datasets::load(name, root)
            .and_then(|ds| reid_data::datasets::fingerprint(&ds))
        {
            Ok(f) => f,
            // a plan lists steps over a dataset being made or unpacked (a run refuses it first)
            Err(_) if self.plan.is_some() => return Ok("unreadable".into()),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading the {name} dataset in {}", root.display())))
            }
        };
        self.fingerprints.insert(key, f.clone());
        Ok(f)
    }

    /// The fingerprint of each dataset the grid reads, by role (`source`, `target`, `cross`).
    fn data_fingerprints(&mut self) -> Result<BTreeMap<String, String>> {
        let cfg = self.cfg.clone();
        let mut record = BTreeMap::new();
        for (role, d) in [("source", Some(&cfg.source)), ("target", Some(&cfg.target))]
            .into_iter()
            .chain([("cross", cfg.cross.as_ref())])
        {
            if let Some(d) = d {
                record.insert(role.to_string(), self.fingerprint(&d.dataset, &d.root)?);
            }
        }
        Ok(record)
    }

    /// The grid's steps with their keys, parents and state, without running anything (the
    /// same walk as [`Runner::run`]; nothing is written).
    pub fn plan(&mut self) -> Result<Vec<PlannedStep>> {
        self.plan = Some(Vec::new());
        let r = self.run();
        let plan = self.plan.take().unwrap_or_default();
        r?;
        // a step shared by several cells is listed once
        let mut seen = std::collections::HashSet::new();
        Ok(plan
            .into_iter()
            .filter(|s| seen.insert(s.name.clone()))
            .collect())
    }

    /// Keep finished steps in `dir` instead of `out/steps` (grids of one experiment share it).
    pub fn with_steps_dir(mut self, dir: PathBuf) -> Self {
        self.steps_dir = dir;
        self
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

    /// "step k/N, ~m:ss left" for the step starting now (nothing without a known total): the
    /// time left is this grid's mean time a computed step so far, times the steps left.
    fn progress_note(&self) -> String {
        let Some((total, offset)) = self.progress else {
            return String::new();
        };
        let k = offset + self.computed.len() + 1;
        let left = total.saturating_sub(k - 1);
        let eta = if self.computed.is_empty() {
            String::new()
        } else {
            let per = self.started.elapsed().as_secs_f64() / self.computed.len() as f64;
            format!(", ~{} left", reid_train::clock(per * left as f64))
        };
        format!("step {k}/{}{eta}: ", total.max(k))
    }

    /// Run `f` in the folder of the step that computes `work` from `parents` unless it finished
    /// before. Its key is the hash of `work` (a result view, [`reid_run::step_key`]), the parents'
    /// keys and [`STEP_ENGINE`]. The folder is claimed first ([`reid_run::lock`]): while
    /// another process holds it, this waits for it (or, when `wait_for_others` is off, returns
    /// [`StepBusy`] so that the caller can do other work). An unfinished folder (a killed run) is
    /// not cleared: `f` resumes from its last checkpoint.
    fn step(
        &mut self,
        kind: &str,
        what: String,
        work: serde_json::Value,
        parents: &[&StepOut],
        f: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<StepOut> {
        let key = serde_json::json!({
            "kind": kind,
            "work": work,
            "parents": parents.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            "engine": STEP_ENGINE,
        });
        let hash = reid_run::step_key::key_hash(&key);
        let name = format!("{kind}-{hash}");
        let dir = self.steps_dir.join(&name);
        let out = StepOut {
            dir: dir.clone(),
            key: hash,
        };
        if let Some(plan) = &mut self.plan {
            let done = dir.join("DONE").is_file();
            let owner = (!done)
                .then(|| reid_run::lock::running_holder(&dir))
                .flatten();
            let state = if done {
                StepState::Done
            } else if owner.is_some() {
                StepState::Running
            } else if dir.join("step.json").is_file() {
                StepState::Started
            } else if parents.iter().all(|p| p.dir.join("DONE").is_file()) {
                StepState::Ready
            } else {
                StepState::Waiting
            };
            plan.push(PlannedStep {
                name,
                kind: kind.to_string(),
                what,
                parents: parents
                    .iter()
                    .filter_map(|p| p.dir.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect(),
                state,
                owner: owner.map(|h| h.to_string()),
            });
            return Ok(out);
        }
        let mut announced = false;
        let _lock = loop {
            if dir.join("DONE").is_file() {
                self.steps_reused += 1;
                return Ok(out);
            }
            if let Some(max) = self.max_steps.filter(|&m| self.computed.len() >= m) {
                return Err(StepBudgetSpent(max).into());
            }
            match try_claim(&dir)? {
                Claim::Held(lock) => break lock,
                Claim::Busy(holder) => {
                    let who = holder
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| "another process".into());
                    if !self.wait_for_others {
                        return Err(StepBusy {
                            step: name,
                            holder: who,
                        }
                        .into());
                    }
                    if !announced {
                        self.log(&format!("{name}: waiting for {who}, which computes it"));
                        announced = true;
                    }
                    std::thread::sleep(BUSY_POLL);
                }
            }
        };
        // Finished by another process between the check and the claim.
        if dir.join("DONE").is_file() {
            self.steps_reused += 1;
            return Ok(out);
        }
        reid_run::remove_stale_temp_files(&dir);
        let resuming = dir.join("step.json").is_file();
        write_atomic(
            &dir.join("step.json"),
            serde_json::to_string_pretty(&key)?.as_bytes(),
        )?;
        let note = self.progress_note();
        if resuming {
            self.log(&format!(
                "{note}{what}: resuming the unfinished step in {}",
                dir.display()
            ));
        } else {
            self.log(&format!("{note}{what} ({name})"));
        }
        f(&dir).with_context(|| format!("step {what} in {}", dir.display()))?;
        write_atomic(&dir.join("DONE"), b"")?;
        self.computed.push(name);
        Ok(out)
    }

    fn train_config(&self, data: &DataRef, task: Task, epochs: usize, out: &Path) -> RunConfig {
        self.cfg.run_config(data, task, epochs, out)
    }

    /// A training step: `rc` resolved, its starting model (if any) the parent's.
    fn train(
        &mut self,
        kind: &str,
        what: String,
        mut rc: RunConfig,
        parent: Option<&StepOut>,
        extra: Option<serde_json::Value>,
    ) -> Result<StepOut> {
        rc.init_checkpoint = parent.map(StepOut::model);
        let mut work = rc.result_view()?;
        let data = self.fingerprint(&rc.dataset, &rc.root)?;
        if let serde_json::Value::Object(m) = &mut work {
            m.insert("data_fingerprint".into(), data.into());
            // the starting model is known by its parent's key (its path is where the steps live)
            m.remove("init_checkpoint");
            if let Some(e) = extra {
                m.insert("inputs".into(), e);
            }
        }
        let parents: Vec<&StepOut> = parent.into_iter().collect();
        self.step(kind, what, work, &parents, |dir| {
            rc.out = dir.to_path_buf();
            run_training(&rc, true, Arc::new(AtomicBool::new(false)), true)?;
            Ok(())
        })
    }

    /// Pre-train `arch` on the source (classification), or load ImageNet weights.
    pub fn pretrain(&mut self, arch: &str) -> Result<StepOut> {
        let mut rc = self.train_config(
            &self.cfg.source.clone(),
            Task::Classify,
            self.cfg.pretrain_epochs,
            Path::new(""),
        );
        rc.arch = arch.to_string();
        rc.seed = self.cfg.pretrain_seed.unwrap_or(self.cfg.seed);
        rc.pretrained = self
            .cfg
            .pretrained
            .clone()
            .filter(|_| arch == self.cfg.arch);
        // weights given as a file are known by their content, not their path
        let extra = match rc.pretrained.as_deref().map(Path::new) {
            Some(p) if p.is_file() => {
                Some(serde_json::json!({"pretrained_sha256": file_sha256(p)?}))
            }
            _ => None,
        };
        self.train("pretrain", format!("pretrain {arch}"), rc, None, extra)
    }

    /// Fine-tune `parent` on the target (re-ID).
    pub fn finetune(&mut self, parent: &StepOut) -> Result<StepOut> {
        self.train_on_target("finetune", "finetune on", Some(parent))
    }

    /// Train `arch` on the target from random initialisation, as long as a fine-tuning.
    pub fn from_scratch(&mut self) -> Result<StepOut> {
        self.train_on_target("scratch", "train from scratch on", None)
    }

    /// A fine-tuning-length re-ID training step on the target, from `parent` or from scratch.
    fn train_on_target(
        &mut self,
        kind: &str,
        what: &str,
        parent: Option<&StepOut>,
    ) -> Result<StepOut> {
        let rc = self.train_config(
            &self.cfg.target.clone(),
            Task::Reid,
            self.cfg.finetune_epochs,
            Path::new(""),
        );
        let what = format!("{what} {}", self.cfg.target.label());
        self.train(kind, what, rc, parent, None)
    }

    /// Prune `parent` to `level` on the source (classification retraining) or the target.
    pub fn prune(
        &mut self,
        parent: &StepOut,
        criterion: &str,
        level: f64,
        on_source: bool,
    ) -> Result<StepOut> {
        let data = if on_source {
            self.cfg.source.clone()
        } else {
            self.cfg.target.clone()
        };
        let pc = PruneConfig {
            checkpoint: parent.model(),
            criterion: criterion.to_string(),
            level,
            target: TargetKind::Flops,
            allocation: self.cfg.allocation,
            round_to: self.cfg.round_to,
            residual_groups: self.cfg.residual_groups,
            input: self.cfg.input,
            dataset: Some(data.dataset.clone()),
            root: Some(data.root.clone()),
            score_images: 128,
            step: self.cfg.prune_step,
            retrain_epochs: self.cfg.retrain_epochs,
            retrain_lr: self.cfg.lr,
            batch_pk: self.cfg.batch_pk,
            retrain_task: if on_source {
                Task::Classify
            } else {
                Task::Reid
            },
            batch_size: self.cfg.batch_size,
            retrain_augment: self.cfg.augment,
            seed: self.cfg.seed,
            device: self.cfg.device,
            checkpoint_interval_s: self.cfg.checkpoint_interval_s,
            ..PruneConfig::default()
        };
        let mut work = pc.result_view()?;
        let fingerprint = self.fingerprint(&data.dataset, &data.root)?;
        if let serde_json::Value::Object(m) = &mut work {
            m.insert("data_fingerprint".into(), fingerprint.into());
            m.remove("checkpoint"); // the parent's key stands for it
            if let Some(fixed) = (crate::method::method(criterion)?.rule)(&pc).fixed_settings() {
                m.insert("method_settings".into(), fixed);
            }
        }
        let what = format!(
            "prune {criterion} {level:.3} on {}",
            if on_source { "source" } else { "target" }
        );
        self.step("prune", what, work, &[parent], |dir| {
            run_prune_resumable(
                &PruneConfig {
                    out: dir.to_path_buf(),
                    ..pc
                },
                true,
                true,
            )?;
            Ok(())
        })
    }

    /// Evaluate a model on a re-ID set (cached beside the step).
    pub fn evaluate(
        &mut self,
        model: &StepOut,
        data: &DataRef,
    ) -> Result<(reid_run::EvalEntry, reid_run::stats::PerQuery)> {
        let work = serde_json::json!({
            "data": data.identity(),
            "data_fingerprint": self.fingerprint(&data.dataset, &data.root)?,
            "input": self.cfg.input,
        });
        let (h, w) = self.cfg.input.hw();
        let device = self.device.clone();
        let path = model.model();
        let data2 = data.clone();
        let what = format!("evaluate on {}", data.label());
        let dir = self.step("eval", what, work, &[model], move |dir| {
            let device = device.context("the grid's device is not open")?;
            let net = load_checkpoint(&path, &device, false)?.net;
            let ds = reid_data::datasets::load(&data2.dataset, &data2.root)?;
            let m = evaluate_on(&net, &ds, &reid_data::Preprocess::imagenet(h, w), false)?;
            reid_run::RunFolder::new(dir).write_per_query(EVAL_QUERIES, &m.per_query)?;
            write_atomic(
                &dir.join("eval.json"),
                serde_json::to_string_pretty(&m.eval_entry())?.as_bytes(),
            )?;
            Ok(())
        })?;
        if self.plan.is_some() {
            return Ok(Default::default());
        }
        let path = dir.dir.join("eval.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let entry = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an eval entry", path.display()))?;
        let queries = reid_run::RunFolder::new(&dir.dir)
            .read_per_query()?
            .remove(EVAL_QUERIES)
            .with_context(|| format!("{}: no per-query results", dir.dir.display()))?;
        Ok((entry, queries))
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

    /// Evaluate a final model and write its grid-cell run folder.
    fn cell(
        &mut self,
        scenario: &str,
        criterion: &str,
        level: &str,
        step: &StepOut,
    ) -> Result<CellResult> {
        let (target, target_queries) = self.evaluate(step, &self.cfg.target.clone())?;
        let (cross, cross_queries) = match self.cfg.cross.clone() {
            Some(c) => {
                let (e, q) = self.evaluate(step, &c)?;
                (Some(e), Some(q))
            }
            None => (None, None),
        };
        let folder = self
            .cfg
            .out
            .join(scenario)
            .join(format!("{criterion}-{level}"));
        if self.plan.is_some() {
            return Ok(CellResult {
                scenario: scenario.into(),
                criterion: criterion.into(),
                level: level.into(),
                backbone: String::new(),
                macs: 0,
                params: 0,
                target,
                cross,
                target_queries,
                latency_ms_batch1: f64::NAN,
                latency_ms_batch32: f64::NAN,
                folder,
                seed_evals: BTreeMap::new(),
            });
        }
        let model = &step.model();
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
            scenario: scenario.into(),
            criterion: criterion.into(),
            level: level.into(),
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
        Ok(CellResult {
            scenario: scenario.into(),
            criterion: criterion.into(),
            level: level.into(),
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
        if self.plan.is_none() {
            self.device = Some(
                reid_model::device::open_device(cfg.device)
                    .with_context(|| format!("device = \"{}\"", cfg.device))?,
            );
            cfg.check_inputs()
                .with_context(|| format!("experiment '{}'", cfg.name))?;
            self.grid_claim = Some(cfg.claim_folder()?);
            reid_run::remove_stale_temp_files(&cfg.out);
            self.data_record = self.data_fingerprints()?;
            write_atomic(
                &cfg.out.join(reid_run::metrics::EXPERIMENT_FILE),
                toml::to_string_pretty(&cfg)?.as_bytes(),
            )?;
            write_atomic(
                &cfg.out.join(reid_run::metrics::EXPERIMENT_DATA_FILE),
                serde_json::to_string_pretty(&self.data_record)?.as_bytes(),
            )?;
        }
        self.wait_for_others = true;
        let pre = self.pretrain(&cfg.arch)?;
        let tuned = self.finetune(&pre)?;
        let mut jobs = vec![Job::Source];
        jobs.extend(cfg.baselines.iter().cloned().map(Job::Baseline));
        if cfg.scratch {
            jobs.push(Job::Scratch);
        }
        for scenario in &cfg.scenarios {
            for criterion in &cfg.criteria {
                let method = criterion.entry();
                if method.not_in.contains(scenario) {
                    self.log(&format!(
                        "{scenario} {criterion}: not applicable (the paper's Table 6 marks it N/A)"
                    ));
                    continue;
                }
                if cfg.residual_groups && !method.residual_groups {
                    self.log(&format!(
                        "{scenario} {criterion}: skipped (its training-time rule acts on branch convs, not residual groups)"
                    ));
                    continue;
                }
                for (lname, &level) in &cfg.levels {
                    jobs.push(Job::Cell {
                        scenario: *scenario,
                        criterion: criterion.to_string(),
                        level_name: lname.clone(),
                        level,
                    });
                }
            }
        }
        let mut cells = vec![self.cell("baseline", &cfg.arch, "full", &tuned)?];
        let mut done: Vec<Option<CellResult>> = vec![None; jobs.len()];
        for wait in [false, true] {
            self.wait_for_others = wait;
            for (i, job) in jobs.iter().enumerate() {
                if done[i].is_some() {
                    continue;
                }
                match self.job(job, &pre, &tuned) {
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
        self.other_seeds(&jobs, &mut cells)?;
        Ok(cells)
    }

    /// The key cells again under each of `seeds` (besides `seed`): the unpruned model, the
    /// baselines and every scenario × criterion at the smallest level. Their evaluations go
    /// into the cells' results and `metrics.json` (`seed_evals`).
    fn other_seeds(&mut self, jobs: &[Job], cells: &mut [CellResult]) -> Result<()> {
        let cfg = self.cfg.clone();
        let seeds: Vec<u64> = cfg
            .seeds
            .iter()
            .copied()
            .filter(|&s| s != cfg.seed)
            .collect();
        if seeds.is_empty() {
            return Ok(());
        }
        let smallest = cfg.levels.values().copied().fold(f64::INFINITY, f64::min);
        // cells[0] is the unpruned model, cells[i + 1] is jobs[i]
        let key_jobs: Vec<(usize, &Job)> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| match j {
                Job::Source => false,
                Job::Baseline(_) | Job::Scratch => true,
                Job::Cell { level, .. } => *level == smallest,
            })
            .map(|(i, j)| (i + 1, j))
            .collect();
        for seed in seeds {
            self.log(&format!("seed {seed}: the key cells again"));
            self.cfg.seed = seed;
            // from the one pre-trained model of the experiment
            self.cfg.pretrain_seed = Some(cfg.pretrain_seed.unwrap_or(cfg.seed));
            let result = (|| -> Result<()> {
                let pre = self.pretrain(&cfg.arch)?;
                let tuned = self.finetune(&pre)?;
                let unpruned = self.seed_eval(&tuned)?;
                cells[0].seed_evals.insert(seed, unpruned);
                for &(i, job) in &key_jobs {
                    let model = self.job_model(job, &pre, &tuned)?;
                    let evals = self.seed_eval(&model)?;
                    cells[i].seed_evals.insert(seed, evals);
                }
                Ok(())
            })();
            self.cfg.seed = cfg.seed;
            self.cfg.pretrain_seed = cfg.pretrain_seed;
            result?;
        }
        if self.plan.is_some() {
            return Ok(());
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

    /// A model's evaluations on the target and the cross set.
    fn seed_eval(&mut self, step: &StepOut) -> Result<SeedEval> {
        let target = self.cfg.target.clone();
        let (target, target_queries) = self.evaluate(step, &target)?;
        let (cross, cross_queries) = match self.cfg.cross.clone() {
            Some(cd) => {
                let (e, q) = self.evaluate(step, &cd)?;
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

    fn job(&mut self, job: &Job, pre: &StepOut, tuned: &StepOut) -> Result<CellResult> {
        let arch = self.cfg.arch.clone();
        let model = self.job_model(job, pre, tuned)?;
        match job {
            // the source model before fine-tuning: how much the domain shift costs
            Job::Source => self.cell("source", &arch, "full", &model),
            Job::Baseline(b) => self.cell("baseline", b, "full", &model),
            Job::Scratch => self.cell("scratch", &arch, "full", &model),
            Job::Cell {
                scenario,
                criterion,
                level_name,
                ..
            } => self.cell(scenario.name(), criterion, level_name, &model),
        }
    }

    /// The final model of a row: its steps run (or reused).
    fn job_model(&mut self, job: &Job, pre: &StepOut, tuned: &StepOut) -> Result<StepOut> {
        Ok(match job {
            Job::Source => pre.clone(),
            Job::Scratch => self.from_scratch()?,
            Job::Baseline(b) => {
                let p = self.pretrain(b)?;
                self.finetune(&p)?
            }
            Job::Cell {
                scenario,
                criterion,
                level,
                ..
            } => {
                let mut steps = CellRun {
                    runner: self,
                    source: pre,
                    tuned,
                };
                scenarios::recipe(*scenario)?.model(&mut steps, criterion, *level)?
            }
        })
    }
}

/// A cell's steps as its scenario's recipe sees them.
struct CellRun<'a> {
    runner: &'a mut Runner,
    source: &'a StepOut,
    tuned: &'a StepOut,
}

impl scenarios::CellSteps for CellRun<'_> {
    fn source(&self) -> &StepOut {
        self.source
    }

    fn tuned(&self) -> &StepOut {
        self.tuned
    }

    fn prune(
        &mut self,
        from: &StepOut,
        criterion: &str,
        level: f64,
        on_source: bool,
    ) -> Result<StepOut> {
        self.runner.prune(from, criterion, level, on_source)
    }

    fn finetune(&mut self, from: &StepOut) -> Result<StepOut> {
        self.runner.finetune(from)
    }
}

/// One row of the grid after the unpruned model.
enum Job {
    Source,
    Baseline(String),
    /// `arch` trained on the target alone.
    Scratch,
    Cell {
        scenario: Scenario,
        criterion: String,
        level_name: String,
        level: f64,
    },
}
