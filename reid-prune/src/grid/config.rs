//! The experiment's schema (`experiment.toml`, `base =` and `--set` resolved by `config_file`),
//! its validation before anything runs, and the run configs of its training steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use reid_train::schedule::{Decay, Schedule};
use reid_train::Task;
use serde::{Deserialize, Serialize};

use crate::strategy::Allocation;
use reid_run::Scenario;
use reid_train::RunConfig;

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
    pub(crate) fn identity(&self) -> DataRef {
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
        reid_train::positive("width_mult", self.width_mult)?;
        reid_train::positive("lr", self.lr)?;
        reid_train::positive("checkpoint_interval_s", self.checkpoint_interval_s)?;
        reid_train::check_batching(self.input, self.batch_pk, self.batch_size)?;
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
            let held = reid_train::pretrained_arch(src, 1)
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
                name: reid_run::config::target_grid_name(&self.name, t.label()),
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
