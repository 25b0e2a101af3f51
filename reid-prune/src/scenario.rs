//! The experiment grid of the paper (Fig. 3): scenarios S1–S4 × criteria × compression levels,
//! with the unpruned model and shallower baselines, evaluated on the target and cross-domain.
//!
//! Every step (pre-train, fine-tune, prune + retrain, evaluate) lives in a folder named by a hash
//! of what it computes and of its parent, under `<out>/steps/`; a finished step has a `DONE`
//! marker and is never recomputed, so an interrupted grid resumes where it stopped and steps
//! shared by scenarios (the source-pruned model of S1 and S2, the fine-tuned model of S3) run once.
//! Each grid cell gets a run folder `<out>/<scenario>/<criterion>-<level>/` (its format: the `reid-run` crate).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use reid_model::checkpoint::{file_sha256, load_checkpoint, write_atomic};
use reid_model::complexity::complexity;
use reid_model::train::schedule::{Decay, Schedule};

use reid_model::train::Task;
use serde::{Deserialize, Serialize};

use crate::prune_run::{run_prune_resumable, PruneConfig};
use crate::strategy::{Allocation, TargetKind};
use crate::training::{evaluate_on, run_training, RunConfig};
use reid_run::lock::{try_claim, Claim};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    pub dataset: String,
    pub root: PathBuf,
    /// Label of this data in `metrics.json` and the report (default: the dataset's name).
    /// Synthetic domains use a loader format of a real dataset, and must not be reported
    /// under that dataset's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl DataRef {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.dataset)
    }
    /// What a step's result depends on: the data, not its label.
    fn identity(&self) -> DataRef {
        DataRef {
            name: None,
            ..self.clone()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    pub out: PathBuf,
    pub device: reid_run::DeviceSpec,
    /// Seed of every step (initialisation, sampling, augmentation).
    pub seed: u64,
    /// The key cells (the unpruned model, the baselines, every scenario × criterion at the
    /// smallest level) are trained again under each of these seeds besides `seed`; tables show
    /// mean ± sd over the seeds next to the bootstrap interval of the `seed` run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Seed of the source pre-training (default: `seed`). The other `seeds` start from this one
    /// pre-trained model, as every run of the paper starts from the same ImageNet weights: their
    /// spread is that of what a user trains (fine-tuning, pruning, retraining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrain_seed: Option<u64>,
    /// HEIGHTxWIDTH of every step.
    pub input: reid_run::InputSize,
    pub arch: String,
    pub width_mult: f64,
    /// Shallower baselines trained the same way (e.g. resnet18, resnet34).
    pub baselines: Vec<String>,
    /// Also train `arch` on the target from random initialisation (as many epochs as the
    /// fine-tuning): the row `scratch` shows what pre-training on the source is worth.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scratch: bool,
    /// ImageNet weights (hub id or path) instead of pre-training on `source`.
    pub pretrained: Option<String>,
    /// Pre-training / source-pruning data (classification, e.g. an imagefolder).
    pub source: DataRef,
    /// The re-ID target.
    pub target: DataRef,
    /// A second re-ID set every final model is also tested on.
    pub cross: Option<DataRef>,
    /// Several targets (the paper's Market-1501, DukeMTMC-reID, CUHK03-NP): the grid runs once
    /// per target in `out/<label>/`, sharing the source steps; without `cross`, each target's
    /// models are also tested on the next target in the list. Empty: `target` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<DataRef>,
    pub scenarios: Vec<Scenario>,
    /// Pruning methods by name (checked against the registry where the config is read).
    pub criteria: Vec<crate::method::MethodName>,
    /// Compression levels: name → fraction of FLOPs removed.
    pub levels: BTreeMap<String, f64>,
    pub allocation: Allocation,
    /// Kept widths in multiples of this (layerwise allocation): 8 or 16 suit the channel
    /// blocking of deployment runtimes (ONNX Runtime, oneDNN, tensor cores); 1 keeps any width.
    pub round_to: usize,
    /// Also prune the residual streams (not with psfp / auto-balanced, which are skipped then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub residual_groups: bool,
    /// Iterative pruning step (fraction of the level per step); None = prune once.
    pub prune_step: Option<f64>,
    pub pretrain_epochs: usize,
    pub finetune_epochs: usize,
    pub retrain_epochs: usize,
    pub batch_pk: reid_run::PkBatch,
    pub batch_size: usize,
    pub lr: f64,
    /// Training-time augmentation of every training step (Bag of Tricks by default; a short run
    /// learns more without random erasing).
    pub augment: reid_data::loader::Augment,
    /// Checkpoint a training step inside its epochs at least this often (seconds), so that a
    /// killed grid loses at most this much of a long step. Does not change any result.
    pub checkpoint_interval_s: f64,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            name: "experiment".into(),
            out: PathBuf::from("runs/experiment"),
            device: reid_run::DeviceSpec::Cpu,
            seed: 0,
            seeds: Vec::new(),
            pretrain_seed: None,
            input: reid_run::InputSize::new(256, 128),
            arch: "resnet50".into(),
            width_mult: 1.0,
            baselines: vec!["resnet18".into(), "resnet34".into()],
            scratch: false,
            pretrained: None,
            source: DataRef {
                dataset: "imagefolder".into(),
                root: PathBuf::from("data/source"),
                name: None,
            },
            target: DataRef {
                dataset: "market1501".into(),
                root: PathBuf::from("data"),
                name: None,
            },
            cross: None,
            targets: Vec::new(),
            scenarios: Scenario::ALL.to_vec(),
            criteria: crate::method::MethodName::list(&["l1", "taylor", "entropy"]),
            levels: BTreeMap::from([("C1".to_string(), 0.5), ("C2".to_string(), 2.0 / 3.0)]),
            allocation: Allocation::Layerwise,
            round_to: 1,
            residual_groups: false,
            prune_step: None,
            pretrain_epochs: 30,
            finetune_epochs: 60,
            retrain_epochs: 10,
            batch_pk: reid_run::PkBatch::new(16, 4),
            batch_size: 64,
            lr: 3.5e-4,
            augment: reid_data::loader::Augment::default(),
            checkpoint_interval_s: 300.0,
        }
    }
}

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

/// A name that becomes a folder or file name: one plain path component, so that nothing is
/// written outside the output folder.
pub fn check_path_name(field: &str, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        anyhow::bail!(
            "{field} = '{name}': it names a folder, so it must be a plain name (letters, digits, \
             '-', '_'; no '/', '\\', leading '.' or control characters)"
        );
    }
    Ok(())
}

impl ExperimentConfig {
    /// The run config of one of the grid's training steps (pre-training: `Classify` on the
    /// source; fine-tuning and retraining: `Reid` on a target).
    pub fn run_config(&self, data: &DataRef, task: Task, epochs: usize, out: &Path) -> RunConfig {
        let mut rc = RunConfig {
            dataset: data.dataset.clone(),
            root: data.root.clone(),
            arch: self.arch.clone(),
            width_mult: self.width_mult,
            input: self.input,
            batch_pk: self.batch_pk,
            batch_size: self.batch_size,
            seed: self.seed,
            device: self.device,
            out: out.to_path_buf(),
            evaluate: false,
            checkpoint_interval_s: self.checkpoint_interval_s,
            augment: self.augment,
            ..RunConfig::default()
        };
        rc.train.task = task;
        rc.train.epochs = epochs;
        rc.train.schedule = Schedule {
            base_lr: self.lr,
            warmup_epochs: (epochs / 5).min(10),
            warmup_factor: 0.1,
            decay: Decay::Cosine {
                min_lr: self.lr * 0.01,
            },
        };
        if task == Task::Classify {
            rc.train.label_smoothing = 0.1;
        }
        rc
    }

    /// Join the processes running this config in `out`, or refuse when a grid of another
    /// config runs there ([`reid_run::lock::claim_grid`]).
    pub fn claim_folder(&self) -> Result<reid_run::lock::GridClaim> {
        use sha2::{Digest, Sha256};
        // a single run's folder (train, prune, export) is that run's: the grid's files beside
        // its config.toml would mix two records
        let run_config = self.out.join(reid_run::metrics::CONFIG_FILE);
        if run_config.is_file() {
            anyhow::bail!(
                "out = {}: the folder holds a single run ({}); give the experiment another `out`",
                self.out.display(),
                run_config.display()
            );
        }
        // what the config computes: workers on other GPUs or checkpoint intervals join
        let table = toml::Table::try_from(self).context("serialising the experiment config")?;
        let text = toml::to_string(&reid_run::metrics::experiment_view(&table))
            .context("serialising the experiment config")?;
        let digest: String = Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(reid_run::lock::claim_grid(&self.out, &digest, &self.name)?)
    }

    /// The key cells under `n` seeds: `seed` and the `n − 1` after it (`--seeds N`).
    pub fn with_seed_count(mut self, n: u64) -> Self {
        self.seeds = (self.seed..self.seed.saturating_add(n)).collect();
        self
    }

    /// Everything checked before the first step runs; errors name the field.
    pub fn validate(&self) -> Result<()> {
        check_path_name("name", &self.name)?;
        // each target's grid goes to out/<label>/: two targets with one label would share it
        let mut labels = std::collections::HashSet::new();
        for t in &self.targets {
            if !labels.insert(t.label()) {
                anyhow::bail!(
                    "targets: two targets are labelled '{}' (their grids would share \
                     {}/{0}/); give each a distinct `name`",
                    t.label(),
                    self.out.display()
                );
            }
        }
        crate::training::positive("width_mult", self.width_mult)?;
        crate::training::positive("lr", self.lr)?;
        crate::training::positive("checkpoint_interval_s", self.checkpoint_interval_s)?;
        crate::training::check_batching(self.input, self.batch_pk, self.batch_size)?;
        for arch in std::iter::once(&self.arch).chain(&self.baselines) {
            reid_model::ArchSpec::from_name(arch, 0)
                .with_context(|| format!("arch/baselines: '{arch}'"))?;
            check_path_name("baselines", arch)?;
        }
        for c in &self.criteria {
            check_path_name("criteria", c)?;
        }
        if self.levels.is_empty() {
            anyhow::bail!("levels: empty; expected e.g. C1 = 0.5");
        }
        for (name, &v) in &self.levels {
            check_path_name("levels", name)?;
            if !(v > 0.0 && v < 1.0) {
                anyhow::bail!(
                    "levels.{name} = {v}: expected the fraction of FLOPs to remove, in (0, 1)"
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.seeds.iter().find(|s| !seen.insert(**s)) {
            anyhow::bail!("seeds: {dup} is listed twice; expected distinct seeds");
        }
        if let Some(s) = self.prune_step {
            if !(s > 0.0 && s < 1.0) {
                anyhow::bail!("prune_step = {s}: expected a fraction in (0, 1)");
            }
            let most = self.levels.values().fold(0.0f64, |a, &b| a.max(b));
            if most / s > crate::prune_run::MAX_STEPS as f64 {
                anyhow::bail!(
                    "prune_step = {s}: {} steps to reach level {most}; at most {}",
                    (most / s).ceil(),
                    crate::prune_run::MAX_STEPS
                );
            }
        }
        if self.round_to == 0 || self.round_to > 256 {
            anyhow::bail!(
                "round_to = {}: expected a channel multiple from 1 to 256 (1 keeps any width)",
                self.round_to
            );
        }
        if self.round_to > 1 && self.allocation != Allocation::Layerwise {
            anyhow::bail!(
                "round_to = {} needs allocation = \"layerwise\" (a global ranking sets widths by score)",
                self.round_to
            );
        }
        for d in std::iter::once(&self.source)
            .chain(std::iter::once(&self.target))
            .chain(&self.cross)
            .chain(&self.targets)
        {
            check_path_name("dataset label", d.label())?;
        }
        // the training steps' own settings (augmentation, P×K for the triplet loss, …), as
        // each step will check them: refused here, before any step runs
        for (what, data, task, epochs) in [
            (
                "pre-training",
                &self.source,
                Task::Classify,
                self.pretrain_epochs,
            ),
            (
                "fine-tuning",
                &self.target,
                Task::Reid,
                self.finetune_epochs,
            ),
        ] {
            self.run_config(data, task, epochs, Path::new(""))
                .validate()
                .with_context(|| format!("the grid's {what} runs"))?;
        }
        Ok(())
    }

    /// The checks that read the disk, run before the first step (in well under a second for
    /// re-ID sets): every dataset the grid reads loads, with the splits it uses non-empty; the
    /// P×K batch fits each target's training identities; the output folder can be written.
    pub fn check_inputs(&self) -> Result<()> {
        let load = |what: &str, d: &DataRef| {
            reid_data::datasets::load(&d.dataset, &d.root).with_context(|| {
                format!(
                    "{what}: dataset = \"{}\", root = {}",
                    d.dataset,
                    d.root.display()
                )
            })
        };
        // (pre-training reads the source even from ImageNet weights: its classes size the head)
        let ds = load("source", &self.source)?;
        if ds.train.is_empty() {
            anyhow::bail!("source {}: no training images", ds.root.display());
        }
        let test_splits = |what: &str, ds: &reid_data::datasets::ReidDataset| {
            for (split, items) in [("query", &ds.query), ("gallery", &ds.gallery)] {
                if items.is_empty() {
                    anyhow::bail!("{what} {}: the {split} split is empty", ds.root.display());
                }
            }
            Ok(())
        };
        let (p, k) = (self.batch_pk.p, self.batch_pk.k);
        let targets: Vec<&DataRef> = if self.targets.is_empty() {
            vec![&self.target]
        } else {
            self.targets.iter().collect()
        };
        for t in targets {
            let ds = load("target", t)?;
            let ids = ds.num_train_pids();
            if ids < p {
                anyhow::bail!(
                    "batch_pk = \"{p}x{k}\": P = {p} identities a batch, but the target {} has {ids} \
                     training identities; use P ≤ {ids}",
                    ds.root.display()
                );
            }
            test_splits("target", &ds)?;
        }
        if let Some(c) = &self.cross {
            test_splits("cross", &load("cross", c)?)?;
        }
        if let Some(src) = &self.pretrained {
            // the grid's arch and width are recorded in every cell: they must be the weights'
            let held = crate::training::pretrained_arch(src, 1)
                .with_context(|| format!("pretrained = {src}"))?;
            if held.name() != self.arch || held.width_mult != self.width_mult {
                anyhow::bail!(
                    "arch = \"{}\", width_mult = {} but pretrained = {src} holds a {} at \
                     width_mult = {}: set arch and width_mult to the weights' network, or use \
                     other weights",
                    self.arch,
                    self.width_mult,
                    held.name(),
                    held.width_mult
                );
            }
        }
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("out = {}: cannot create it", self.out.display()))?;
        let probe = self
            .out
            .join(format!(".write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .with_context(|| format!("out = {}: cannot write in it", self.out.display()))?;
        std::fs::remove_file(&probe).ok();
        Ok(())
    }

    /// One grid per target: itself when `targets` is empty.
    pub fn per_target(&self) -> Vec<ExperimentConfig> {
        if self.targets.is_empty() {
            return vec![self.clone()];
        }
        let n = self.targets.len();
        self.targets
            .iter()
            .enumerate()
            .map(|(i, t)| ExperimentConfig {
                name: format!("{}-{}", self.name, t.label()),
                out: self.out.join(t.label()),
                target: t.clone(),
                cross: self
                    .cross
                    .clone()
                    .or_else(|| (n > 1).then(|| self.targets[(i + 1) % n].clone())),
                targets: Vec::new(),
                ..self.clone()
            })
            .collect()
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
            format!(", ~{} left", crate::training::clock(per * left as f64))
        };
        format!("step {k}/{}{eta}: ", total.max(k))
    }

    /// Run `f` in the folder of the step that computes `work` from `parents` unless it finished
    /// before. Its key is the hash of `work` (a result view, [`crate::step_key`]), the parents'
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
        let hash = crate::step_key::key_hash(&key);
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
                if !method.in_s4 && *scenario == Scenario::S4 {
                    self.log(&format!(
                        "S4 {criterion}: not applicable (the paper's Table 6 marks it N/A)"
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
                let level = *level;
                match scenario {
                    Scenario::S1 => {
                        let p = self.prune(pre, criterion, level, true)?;
                        self.finetune(&p)?
                    }
                    Scenario::S2 => {
                        // the FLOPs reduction split geometrically: (1 − h)² = 1 − level, h on
                        // the source, then h of what is left on the target
                        let half = 1.0 - (1.0 - level).sqrt();
                        let p = self.prune(pre, criterion, half, true)?;
                        let t = self.finetune(&p)?;
                        self.prune(&t, criterion, half, false)?
                    }
                    Scenario::S3 => self.prune(tuned, criterion, level, false)?,
                    Scenario::S4 => self.prune(pre, criterion, level, false)?,
                }
            }
        })
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

/// The paper's claims ([`reid_run::claims`]) judged on a grid's cells at its smallest level
/// (None when the grid has none of the cells they compare).
pub fn judge_claims(
    cfg: &ExperimentConfig,
    cells: &[CellResult],
) -> Result<Option<reid_run::claims::ClaimsTable>> {
    let Some(level) = cfg
        .levels
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(name, _)| name.clone())
    else {
        return Ok(None);
    };
    let metrics = cell_metrics(cells)?;
    Ok(reid_run::claims::judge(&claim_runs(&metrics), &level))
}

/// Whether the grid's benchmark behaves like re-ID ([`reid_run::claims::judge_benchmark`]):
/// larger baselines at or above smaller ones, pre-training above training from scratch.
pub fn judge_benchmark(cells: &[CellResult]) -> Result<Option<reid_run::claims::ClaimsTable>> {
    let metrics = cell_metrics(cells)?;
    Ok(reid_run::claims::judge_benchmark(&claim_runs(&metrics)))
}

fn cell_metrics(cells: &[CellResult]) -> Result<Vec<(PathBuf, reid_run::RunMetrics)>> {
    cells
        .iter()
        .map(|c| {
            let m = reid_run::RunFolder::new(&c.folder)
                .read_metrics()?
                .with_context(|| format!("{}: no metrics.json", c.folder.display()))?;
            Ok((c.folder.clone(), m))
        })
        .collect()
}

fn claim_runs(metrics: &[(PathBuf, reid_run::RunMetrics)]) -> Vec<reid_run::claims::ClaimRun<'_>> {
    metrics
        .iter()
        .map(|(dir, m)| reid_run::claims::ClaimRun { dir, metrics: m })
        .collect()
}

/// The summary table (Table 6 layout): one row per cell, rank-1 with its 95 % interval over
/// query identities, and the paired difference to the first row (the unpruned model) with its
/// own interval: a cell whose interval holds 0 is not distinguishable from it at this size.
/// With other seeds, key cells also show rank-1 as mean ± sd over the seeds.
pub fn render_table(cells: &[CellResult], cross: Option<&str>) -> String {
    use reid_run::stats::{paired_bootstrap, RESAMPLES};
    let base = cells.first();
    let pct = |v: f64| v * 100.0;
    let ci = |e: &reid_run::EvalEntry, m: &str| {
        e.ci95
            .get(m)
            .map(|i| format!("[{:.1}, {:.1}]", pct(i.lo), pct(i.hi)))
            .unwrap_or_default()
    };
    let mut s = format!(
        "{:<9} {:<13} {:<5} {:>7} {:>8} {:>7} {:>7} {:>14} {:>22} {:>9} {:>8}\n",
        "scenario",
        "criterion",
        "level",
        "GFLOPs",
        "params M",
        "mAP",
        "R-1",
        "R-1 95% CI",
        "ΔR-1 vs row 1 [95%]",
        if cross.is_some() { "R-1 cross" } else { "" },
        "speed-up"
    );
    let seeded = cells.iter().any(|c| !c.seed_evals.is_empty());
    if seeded {
        s.insert_str(s.len() - 1, "  R-1 over seeds");
    }
    for (i, c) in cells.iter().enumerate() {
        let speed = base
            .map(|b| b.latency_ms_batch32 / c.latency_ms_batch32)
            .unwrap_or(1.0);
        let delta = match base {
            Some(b) if i > 0 => {
                match paired_bootstrap(&c.target_queries, &b.target_queries, "rank1", RESAMPLES, 0)
                {
                    Ok(d) => format!(
                        "{:+.1} [{:+.1}, {:+.1}]",
                        pct(c.target.rank1 - b.target.rank1),
                        pct(d.lo),
                        pct(d.hi)
                    ),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "{:<9} {:<13} {:<5} {:>7.3} {:>8.2} {:>7.2} {:>7.2} {:>14} {:>22} {:>9} {:>7.2}x\n",
            c.scenario,
            c.criterion,
            c.level,
            2.0 * c.macs as f64 / 1e9,
            c.params as f64 / 1e6,
            pct(c.target.map),
            pct(c.target.rank1),
            ci(&c.target, "rank1"),
            delta,
            c.cross
                .as_ref()
                .map(|v| format!("{:.2}", pct(v.rank1)))
                .unwrap_or_default(),
            speed
        ));
        if seeded {
            if let Some(sp) = c.rank1_over_seeds() {
                let row = format!("  {:.2} ± {:.2} ({} seeds)", pct(sp.mean), pct(sp.sd), sp.n);
                s.insert_str(s.len() - 1, &row);
            }
        }
    }
    s
}
