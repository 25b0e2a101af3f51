//! One pruning run on disk: load a model, score its channels, plan, cut, optionally retrain
//! (prune once, or iteratively in steps), and write a run folder with the pruned checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{refuse, Context, EngineFailure, PruneError, Result};
use candle_core::{Device, Tensor};
use reid_data::datasets::load as load_dataset;
use reid_data::loader::{epoch_batches, Augment, Sampling};
use reid_data::Preprocess;
use reid_model::checkpoint::{
    file_sha256, load_checkpoint, read_safetensors, save_checkpoint, Provenance,
};
use reid_model::complexity::complexity;
use reid_model::{load_weights, ArchSpec, LoadOptions, ReidNet};
use serde::{Deserialize, Serialize};

use crate::criterion::ScoreData;
use crate::strategy::{plan_with_groups, Allocation, PruneTarget, TargetKind};
use crate::surgery::apply;
use reid_train::{run_training, run_training_with, RunConfig, DATA_CHANGES};

/// A pruning run. The same type is the `prune` command's flags (clap) and the config saved in the
/// run folder (serde); the flags' defaults are [`PruneConfig::default`]'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct PruneConfig {
    /// A reid-prune checkpoint, or torchvision/timm weights (check them with --arch).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// For plain torchvision/timm weights: the architecture they hold (checked).
    #[arg(long)]
    pub arch: Option<String>,
    /// The pruning method: a criterion (cut, then retrain) or a training-time method.
    #[arg(long, value_parser = crate::method::method_values(), default_value_t = defaults().criterion)]
    pub criterion: String,
    /// Fraction of the target to remove, in (0, 1): 0.5 halves the FLOPs.
    #[arg(long, default_value_t = defaults().level)]
    pub level: f64,
    /// What the level is a fraction of.
    #[arg(long, value_enum, default_value_t = defaults().target)]
    pub target: TargetKind,
    /// layerwise: the same rate in every layer (the paper's); global: one ranking across layers.
    #[arg(long, value_enum, default_value_t = defaults().allocation)]
    pub allocation: Allocation,
    /// Minimum kept fraction of each layer's width.
    #[arg(long, default_value_t = defaults().floor)]
    pub floor: f64,
    /// Keep every layer's width a multiple of this (layerwise allocation): 8 or 16 suit the
    /// channel blocking of ONNX Runtime, oneDNN and tensor cores; 1 keeps any width.
    #[arg(long, default_value_t = defaults().round_to)]
    pub round_to: usize,
    /// Input HEIGHTxWIDTH the FLOPs are counted at (and data is scored at). The command line's
    /// `--input` is the prune command's own flag: when it is not given, the size the checkpoint
    /// was trained at ([`trained_input`]), else 256x128.
    #[arg(skip = defaults().input)]
    pub input: reid_run::InputSize,
    /// Dataset for data-driven criteria and retraining.
    #[arg(long)]
    pub dataset: Option<String>,
    /// The dataset's folder.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// A batch file (tensors x, labels) for data-driven criteria.
    #[arg(long)]
    pub batch: Option<PathBuf>,
    /// Images used to score channels (data-driven criteria).
    #[arg(long, default_value_t = defaults().score_images)]
    pub score_images: usize,
    /// Iterative pruning: remove the level in steps of this size (e.g. 0.05).
    #[arg(long)]
    pub step: Option<f64>,
    /// Retraining epochs after each cut (needs --dataset and --root).
    #[arg(long, default_value_t = defaults().retrain_epochs)]
    pub retrain_epochs: usize,
    /// Base learning rate of retraining.
    #[arg(long, default_value_t = defaults().retrain_lr)]
    pub retrain_lr: f64,
    /// PxK identities x images per re-ID retraining batch.
    #[arg(long, default_value_t = defaults().batch_pk)]
    pub batch_pk: reid_run::PkBatch,
    /// Retraining task: reid on a re-ID dataset, classify on a source (imagefolder) set.
    #[arg(long, value_enum, default_value_t = defaults().retrain_task)]
    pub retrain_task: reid_train::Task,
    /// Images a batch of classification retraining.
    #[arg(long, default_value_t = defaults().batch_size)]
    pub batch_size: usize,
    /// Augmentation of retraining (config files only).
    #[arg(skip = defaults().retrain_augment)]
    pub retrain_augment: Augment,
    /// Seed of the random criterion, scoring images and retraining.
    #[arg(long, default_value_t = defaults().seed)]
    pub seed: u64,
    /// cpu or cuda:N
    #[arg(long, default_value_t = defaults().device)]
    pub device: reid_run::DeviceSpec,
    /// The run folder to write (not the checkpoint's own folder).
    #[arg(long)]
    pub out: PathBuf,
    /// α of the auto-balanced regulariser.
    #[arg(long, default_value_t = defaults().balance_alpha)]
    pub balance_alpha: f64,
    /// Also prune the residual streams (each stage's block outputs with its downsample and
    /// every reader), not only the convs inside the blocks.
    #[arg(long)]
    pub residual_groups: bool,
    /// Checkpoint retraining inside its epochs at least this often (seconds).
    #[arg(long = "checkpoint-interval", default_value_t = defaults().checkpoint_interval_s)]
    pub checkpoint_interval_s: f64,
    /// Replace the run `--out` already holds (refused otherwise). Not saved.
    #[serde(skip)]
    #[arg(long)]
    pub overwrite: bool,
    /// With --resume: continue the retraining although the dataset changed since its
    /// checkpoint (refused otherwise, naming what changed); recorded in config.toml and in the
    /// model's provenance (`resumed_over_changed_data`).
    #[serde(default, skip_serializing_if = "is_false")]
    #[arg(long)]
    pub allow_data_change: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn defaults() -> PruneConfig {
    PruneConfig::default()
}

impl PruneConfig {
    /// Fields that do not change what a prune computes.
    pub const FREE_FIELDS: [&'static str; 2] = ["out", "checkpoint_interval_s"];

    /// What this prune computes (see [`reid_run::step_key`]): the config without
    /// [`Self::FREE_FIELDS`], the device as its kind, and without the batch setting its
    /// retraining task does not read.
    pub fn result_view(&self) -> Result<serde_json::Value> {
        let unused = match self.retrain_task {
            reid_train::Task::Classify => "batch_pk",
            reid_train::Task::Reid => "batch_size",
        };
        let mut drop = Self::FREE_FIELDS.to_vec();
        drop.push(unused);
        // a permission of the resume, not a setting of the computation: a resume that allows
        // a data change continues the run it was started as
        drop.push("allow_data_change");
        let mut v = reid_run::step_key::view_without(self, &drop)
            .context("the prune config as a step's work")?;
        v["device"] = self.device.kind().into();
        Ok(v)
    }
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            checkpoint: PathBuf::new(),
            arch: None,
            criterion: "l1".into(),
            level: 0.5,
            target: TargetKind::Flops,
            allocation: Allocation::Layerwise,
            floor: 1.0 / 16.0,
            round_to: 1,
            input: reid_run::InputSize::new(256, 128),
            dataset: None,
            root: None,
            batch: None,
            score_images: 256,
            step: None,
            retrain_epochs: 0,
            retrain_lr: 3.5e-4,
            batch_pk: reid_run::PkBatch::new(16, 4),
            retrain_task: reid_train::Task::Reid,
            batch_size: 64,
            retrain_augment: Augment::default(),
            seed: 0,
            device: reid_run::DeviceSpec::Cpu,
            out: PathBuf::from("runs/prune"),
            checkpoint_interval_s: 300.0,
            balance_alpha: 1e-3,
            residual_groups: false,
            overwrite: false,
            allow_data_change: false,
        }
    }
}

/// The input size a checkpoint records it was trained (or pruned) at, read from its header
/// alone; `None` where it records none (plain torchvision weights) or cannot be read (loading it
/// then names what is wrong).
pub fn trained_input(path: &Path) -> Option<reid_run::InputSize> {
    header_provenance(path)?.input
}

/// A checkpoint's provenance from its header alone (`None` where unreadable or absent).
/// Provenance key of a training-time method's retraining start (`unpruned.safetensors`): the
/// sha256 of the file the pruning step started from (its `parent` stays the start's own).
const PRUNE_START: &str = "prune_start";

fn header_provenance(path: &Path) -> Option<reid_model::checkpoint::Provenance> {
    let header = reid_run::header::read_safetensors_header(path).ok()?;
    let prov = header.metadata(reid_model::checkpoint::META_PROVENANCE)?;
    serde_json::from_str(prov).ok()
}

/// A resumed prune starts from the checkpoint the interrupted one did: its first cut model
/// records that file's hash as its parent. Refused naming `--checkpoint` (the retraining's own
/// check named its internal start file and `--init`).
fn check_same_start(cfg: &PruneConfig, steps: usize, hash: &str) -> Result<()> {
    let first = if steps > 1 {
        cfg.out.join("step01")
    } else {
        cfg.out.clone()
    };
    // the cut records its start as its parent; a training-time method stopped before its cut,
    // in its retraining's start (`unpruned.safetensors`, PRUNE_START)
    let recorded = header_provenance(&first.join("pruned.safetensors"))
        .and_then(|p| p.parent)
        .or_else(|| {
            header_provenance(&first.join("unpruned.safetensors"))
                .and_then(|p| p.extra.get(PRUNE_START)?.as_str().map(String::from))
        });
    match recorded {
        Some(r) if r != hash => refuse!(
            "--checkpoint {} changed since this prune started (the run in {} was cut from \
             another file): put the original back to resume, or start again with --overwrite",
            cfg.checkpoint.display(),
            cfg.out.display()
        ),
        _ => Ok(()),
    }
}

/// Load a reid checkpoint, or plain torchvision/timm weights (any `fc` size becomes the classifier;
/// its bias, if any, is dropped), trainable.
pub fn load_any(path: &Path, arch: Option<&str>, device: &Device) -> Result<(ReidNet, Provenance)> {
    let loaded = load_weights(path, &LoadOptions::any_trainable().expecting(arch), device)?;
    Ok((loaded.net, loaded.provenance))
}

pub(crate) fn score_data(
    cfg: &PruneConfig,
    net: &ReidNet,
    device: &Device,
) -> Result<Option<ScoreData>> {
    if let Some(b) = &cfg.batch {
        let f = read_safetensors(b, device)?;
        let x = f
            .tensors
            .get("x")
            .with_context(|| format!("{}: no tensor 'x'", b.display()))?
            .clone();
        return Ok(Some(ScoreData {
            batches: vec![(x, f.tensors.get("labels").cloned())],
        }));
    }
    let (Some(name), Some(root)) = (&cfg.dataset, &cfg.root) else {
        return Ok(None);
    };
    let ds = load_dataset(name, root)?;
    let (h, w) = cfg.input.hw();
    let pre = Preprocess::imagenet(h, w);
    let plan = epoch_batches(
        &ds.train,
        Sampling::Shuffled {
            batch: 32.min(ds.train.len()),
        },
        cfg.seed,
        0,
    )?;
    let classes = net.spec().num_classes as i64;
    let mut batches = Vec::new();
    for (i, idx) in plan.iter().enumerate() {
        if i * 32 >= cfg.score_images {
            break;
        }
        let b = reid_data::loader::load_batch(
            &ds.train,
            idx,
            &pre,
            &Augment::none(),
            cfg.seed,
            i as u64,
        )?;
        let x = Tensor::from_vec(b.images, (b.len, 3, b.height, b.width), device)?;
        // labels only make sense when the classifier was trained on this dataset's identities
        let labels = if b.pids.iter().all(|&p| p < classes) {
            Some(Tensor::from_vec(
                b.pids.iter().map(|&p| p as u32).collect::<Vec<_>>(),
                b.len,
                device,
            )?)
        } else {
            None
        };
        batches.push((x, labels));
    }
    Ok(Some(ScoreData { batches }))
}

/// Retraining after (or, for auto-balanced, before) a cut: constant learning rate, as the paper.
fn retrain_config(cfg: &PruneConfig, start: &Path, out: &Path) -> RunConfig {
    let mut rc = RunConfig {
        dataset: cfg.dataset.clone().unwrap_or_default(),
        root: cfg.root.clone().unwrap_or_default(),
        input: cfg.input,
        batch_pk: cfg.batch_pk,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        device: cfg.device,
        out: out.to_path_buf(),
        init_checkpoint: Some(start.to_path_buf()),
        evaluate: false,
        checkpoint_interval_s: cfg.checkpoint_interval_s,
        augment: cfg.retrain_augment,
        // a prune replacing an earlier one replaces its retraining runs too
        overwrite: cfg.overwrite,
        allow_data_change: cfg.allow_data_change,
        ..RunConfig::default()
    };
    rc.train.epochs = cfg.retrain_epochs;
    rc.train.task = cfg.retrain_task;
    rc.train.schedule.base_lr = cfg.retrain_lr;
    rc.train.schedule.warmup_epochs = 0;
    rc.train.schedule.decay = reid_train::schedule::Decay::Step {
        milestones: vec![],
        gamma: 1.0,
    };
    rc
}

/// Fraction of `of`'s prunable-conv channels that `spec` keeps.
pub fn channel_fraction(spec: &ArchSpec, of: &ArchSpec) -> f64 {
    let count = |a: &ArchSpec| a.prunable_convs().iter().map(|l| l.width).sum::<usize>();
    count(spec) as f64 / count(of).max(1) as f64
}

/// The unpruned architecture of `spec`'s depth, width multiplier and last stride.
pub fn unpruned_arch(spec: &ArchSpec) -> Result<ArchSpec> {
    Ok(spec.unpruned()?)
}

/// Outcome of a pruning run.
#[derive(Debug)]
pub struct PruneOutcome {
    pub model: PathBuf,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub kept_channel_fraction: f64,
}

/// The provenance entry that says what a pruned model's `epoch` counts.
pub const EPOCH_IS: &str = "epoch_is";

/// Prune `cfg.checkpoint` into `cfg.out`.
/// Most steps of an iterative prune (`--step`).
pub const MAX_STEPS: usize = 100;

pub fn run_prune(cfg: &PruneConfig, show_progress: bool) -> Result<PruneOutcome> {
    run_prune_resumable(cfg, show_progress, false)
}

/// [`run_prune`]; with `resume`, the retraining runs of an interrupted run of the same config
/// in `cfg.out` continue from their last checkpoints (scoring and cuts are recomputed: they are
/// deterministic), so the result equals an uninterrupted run's.
pub fn run_prune_resumable(
    cfg: &PruneConfig,
    show_progress: bool,
    resume: bool,
) -> Result<PruneOutcome> {
    run_prune_until(cfg, show_progress, resume, Arc::new(AtomicBool::new(false)))
}

/// [`run_prune_resumable`], stopping at the next retraining checkpoint once `stop` is set (Ctrl-C,
/// SIGTERM) with [`PruneError::Stopped`]: its retraining runs saved their checkpoints and
/// `prune --resume` with the same config continues it; a run it replaces stays aside until then.
pub fn run_prune_until(
    cfg: &PruneConfig,
    show_progress: bool,
    resume: bool,
    stop: Arc<AtomicBool>,
) -> Result<PruneOutcome> {
    let method = crate::method::method(&cfg.criterion)?;
    if cfg.out.exists() && !cfg.out.is_dir() {
        refuse!(
            "--out {} is a file; expected the run folder to write",
            cfg.out.display()
        );
    }
    cfg.input
        .validate()
        .map_err(|e| PruneError::Request(format!("--input: {e}")))?;
    cfg.batch_pk
        .validate()
        .map_err(|e| PruneError::Request(format!("batch_pk: {e}")))?;
    check_settings(cfg)?;
    if cfg.allow_data_change && !resume {
        refuse!(
            "--allow-data-change lets a resumed prune's retraining continue over changed data: \
             give it with --resume"
        );
    }
    if cfg.residual_groups && !method.residual_groups {
        let ok: Vec<&str> = crate::method::methods()
            .iter()
            .filter(|m| m.residual_groups)
            .map(|m| m.name)
            .collect();
        refuse!(
            "--residual-groups is not combined with '{}' (its training-time rule acts on branch convs): \
             use {}",
            cfg.criterion,
            ok.join(", ")
        );
    }
    if method.training_time && cfg.retrain_epochs == 0 {
        refuse!(
            "{} prunes during retraining: give --dataset, --root and --retrain-epochs",
            cfg.criterion
        );
    }
    let rule = (method.rule)(cfg);
    let criterion = (method.criterion().build)(cfg.seed);
    let device = reid_model::device::open_device(cfg.device)?;
    let (h, w) = cfg.input.hw();
    let (mut net, parent_prov) = load_any(&cfg.checkpoint, cfg.arch.as_deref(), &device)
        .with_context(|| format!("loading {}", cfg.checkpoint.display()))?;
    let base: ArchSpec = net.spec().clone();
    if let Some(trained) = parent_prov.input.filter(|t| *t != cfg.input) {
        if cfg.retrain_epochs == 0 {
            // without retraining the model stays one of its trained size: scores and FLOPs at
            // another size would be recorded beside it
            refuse!(
                "--input {}: {} was trained at {trained} (its provenance); prune it at its \
                 size (leave --input out), or retrain it at the new size (--retrain-epochs)",
                cfg.input,
                cfg.checkpoint.display()
            );
        }
    }
    let target = PruneTarget {
        kind: cfg.target,
        level: cfg.level,
        allocation: cfg.allocation,
        floor: cfg.floor,
        round_to: cfg.round_to,
        input: (h, w),
    };
    target.validate()?;
    if cfg.retrain_epochs > 0 && (cfg.dataset.is_none() || cfg.root.is_none()) {
        refuse!("--retrain-epochs needs --dataset and --root");
    }
    let has_data = (cfg.dataset.is_some() && cfg.root.is_some()) || cfg.batch.is_some();
    if criterion.needs_data() && !has_data {
        refuse!(
            "criterion '{}' needs data: give --dataset and --root, or --batch",
            cfg.criterion
        );
    }
    // Never write into the folder the input model lives in: its model.safetensors would go.
    if let (Ok(out), Some(Ok(src))) = (
        cfg.out.canonicalize(),
        cfg.checkpoint.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".").canonicalize()
            } else {
                p.canonicalize()
            }
        }),
    ) {
        if out == src {
            refuse!(
                "--out {} is the folder of the checkpoint being pruned ({}): its model would be \
                 replaced; give another output folder",
                cfg.out.display(),
                cfg.checkpoint.display()
            );
        }
    }
    let steps = match cfg.step {
        Some(s) if s > 0.0 && s < cfg.level => (cfg.level / s).ceil(),
        Some(s) if s.is_nan() || s <= 0.0 => refuse!("--step {s} must be positive"),
        _ => 1.0,
    };
    if steps > MAX_STEPS as f64 {
        refuse!(
            "--step {}: {steps} pruning steps to reach --level {}; at most {MAX_STEPS} (each \
             step is a folder and, with retraining, a training run)",
            cfg.step.unwrap_or_default(),
            cfg.level
        );
    }
    let steps = steps as usize;
    // nor read a file of the output folder's run (through a link too): --overwrite or the
    // new run's own files would replace it while it is read
    if reid_run::RunFolder::new(&cfg.out).owns(&cfg.checkpoint) {
        refuse!(
            "--checkpoint {} is a file of the run in --out {}: the pruned run would replace it; \
             copy it elsewhere first, or give another --out",
            cfg.checkpoint.display(),
            cfg.out.display()
        );
    }
    if resume {
        if cfg.overwrite {
            refuse!("--resume continues the run in --out and --overwrite replaces it: give one");
        }
        check_resumed_config(cfg)?;
    }
    if !resume && !cfg.overwrite && reid_run::RunFolder::new(&cfg.out).holds_run() {
        refuse!(
            "--out {} holds another run (config.toml, model or metrics): pass --overwrite to \
             replace it, or give another --out",
            cfg.out.display()
        );
    }
    let existed = cfg.out.exists();
    // what the folder held before this run wrote into it (one writer a folder): an error takes
    // back the rest; a replaced run (--overwrite) is put back by its replacement instead
    let before = (!cfg.overwrite).then(|| folder_entries(&cfg.out));
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    // nothing of the replaced run (its steps and retraining folders included) stays beside
    // the new one; it waits aside until this run succeeds, and an error puts it back
    let replacement = if cfg.overwrite && !resume {
        Some(reid_run::RunFolder::new(&cfg.out).begin_replace()?)
    } else {
        None
    };
    reid_run::remove_stale_temp_files(&cfg.out);
    let stopped = || PruneError::Stopped(cfg.out.clone());
    // before anything is written: a refused resume keeps the interrupted run's log
    let parent_hash = file_sha256(&cfg.checkpoint)?;
    if resume {
        check_same_start(cfg, steps, &parent_hash)?;
    }
    let outcome = (|| -> Result<PruneOutcome> {
        reid_run::RunFolder::new(&cfg.out).write_config(cfg)?;
        let log_path = cfg.out.join("log.jsonl");
        let mut log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut current_parent = cfg.checkpoint.clone();
        // the data changes that resumed retraining runs were allowed to continue over (their
        // models' provenance), carried into this run's model
        let mut data_changes: Vec<serde_json::Value> = Vec::new();
        if let (Some(name), Some(root)) = (&cfg.dataset, &cfg.root) {
            // Pruning on a dataset whose classes the classifier was not trained on (e.g. ImageNet
            // weights pruned on re-ID data): give it a fresh classifier over the dataset's identities.
            let classes = load_dataset(name, root)?.num_train_pids();
            if classes != net.spec().num_classes {
                let mut spec = net.spec().clone();
                spec.num_classes = classes;
                let t = net.state_dict_without_classifier()?;
                net = ReidNet::from_tensors_trainable(&spec, &t, &device, cfg.seed)?;
            }
        }
        for step in 0..steps {
            if stop.load(Ordering::SeqCst) {
                return Err(stopped());
            }
            let level = cfg.level * (step + 1) as f64 / steps as f64;
            let data = if criterion.needs_data() {
                score_data(cfg, &net, &device)?
            } else {
                None
            };
            if criterion.needs_data() && data.is_none() {
                refuse!(
                    "criterion '{}' needs data: give --dataset and --root, or --batch",
                    cfg.criterion
                );
            }
            let (scores, groups) = crate::criterion::branch_and_group_scores(
                criterion.as_ref(),
                &net,
                data.as_ref(),
                cfg.residual_groups,
            )?;
            // scoring on data can be long: a signal during it stops before the cut
            if stop.load(Ordering::SeqCst) {
                return Err(stopped());
            }
            let p = plan_with_groups(
                net.spec(),
                &base,
                &scores,
                groups.as_ref(),
                &PruneTarget { level, ..target },
            )?;
            let step_dir = if steps > 1 {
                cfg.out.join(format!("step{:02}", step + 1))
            } else {
                cfg.out.clone()
            };
            std::fs::create_dir_all(&step_dir)
                .with_context(|| format!("creating {}", step_dir.display()))?;
            reid_run::remove_stale_temp_files(&step_dir);
            // the file this step starts from: the parent of what it writes, checked on --resume
            let start_hash = if step == 0 {
                parent_hash.clone() // `--checkpoint`, hashed once above
            } else {
                file_sha256(&current_parent)?
            };
            // the method's rule before the cut (training-time methods retrain here)
            let mut retrain = |start: &ReidNet,
                               folder: &str,
                               hooks: &dyn reid_train::TrainHook|
             -> Result<ReidNet> {
                let path = step_dir.join("unpruned.safetensors");
                let mut start_prov = parent_prov.clone();
                // a run begun by an earlier version (no PRUNE_START) resumes with the file as it
                // began: rewritten otherwise, its retraining would see another start
                let legacy = resume
                    && header_provenance(&path).is_some_and(|p| !p.extra.contains_key(PRUNE_START));
                if !legacy {
                    start_prov
                        .extra
                        .insert(PRUNE_START.into(), start_hash.clone().into());
                }
                save_checkpoint(start, &path, &start_prov)?;
                let rc = retrain_config(cfg, &path, &step_dir.join(folder));
                let o = run_training_with(&rc, resume, stop.clone(), show_progress, hooks)
                    .map_err(EngineFailure)?;
                if !o.completed {
                    return Err(stopped());
                }
                let ck = load_checkpoint(&o.model, &device, true)?;
                data_changes.extend(ck.provenance.extra.get(DATA_CHANGES).cloned());
                Ok(ck.net)
            };
            let (before, p) = rule.before_cut(net, &scores, p, &mut retrain)?;
            net = before;
            net = apply(&net, &p)?;
            let mut prov = parent_prov.clone();
            prov.parent = Some(start_hash);
            // this run's seed (criterion, scoring images, classifier), not the parent's
            prov.seed = Some(cfg.seed);
            prov.input = Some(cfg.input);
            prov.criterion = Some(cfg.criterion.clone());
            prov.ratio = Some(level);
            prov.target = Some(format!("{:?}", cfg.target).to_lowercase());
            // cut, not trained by this run
            prov.epoch = None;
            prov.extra.remove(EPOCH_IS);
            let pruned_path = step_dir.join("pruned.safetensors");
            save_checkpoint(&net, &pruned_path, &prov)?;
            let mut model_path = pruned_path.clone();
            if cfg.retrain_epochs > 0 && rule.retrains_after_cut() {
                let rc = retrain_config(cfg, &pruned_path, &step_dir.join("retrain"));
                let o = run_training(&rc, resume, stop.clone(), show_progress)
                    .map_err(EngineFailure)?;
                if !o.completed {
                    return Err(stopped());
                }
                let ck = load_checkpoint(&o.model, &device, true)?;
                data_changes.extend(ck.provenance.extra.get(DATA_CHANGES).cloned());
                net = ck.net;
                model_path = o.model;
            }
            let c = complexity(net.spec(), h, w)?;
            writeln!(
                log,
                "{}",
                serde_json::json!({"step": step + 1, "level": level, "macs": c.backbone.macs, "params": c.backbone.params,
                               "widths": p.widths().into_iter().collect::<std::collections::BTreeMap<_, _>>()})
            )
            .with_context(|| format!("writing {}", log_path.display()))?;
            if show_progress {
                eprintln!(
                    "step {}/{steps}: level {level:.3}, backbone GFLOPs {:.3}",
                    step + 1,
                    2.0 * c.backbone.macs as f64 / 1e9
                );
            }
            current_parent = model_path;
        }
        // The final model of the run, with the full provenance.
        let mut prov = parent_prov;
        prov.parent = Some(parent_hash.clone());
        prov.input = Some(cfg.input);
        // the seed this prune (and its retraining) ran with; the parent's is in the parent
        prov.seed = Some(cfg.seed);
        if cfg.retrain_epochs > 0 {
            // retrained: the data and epochs are this run's, not the parent's
            prov.dataset = cfg.dataset.clone();
            prov.epoch = Some(cfg.retrain_epochs);
            prov.extra.insert(
                EPOCH_IS.into(),
                if steps > 1 {
                    "retraining epochs of this prune's last step"
                } else {
                    "retraining epochs of this prune"
                }
                .into(),
            );
        } else {
            // not trained by this run: the parent's epoch count would read as this model's
            prov.epoch = None;
            prov.extra.remove(EPOCH_IS);
        }
        if !data_changes.is_empty() {
            // as a training run records them: one change as it is, several in order
            let all = if data_changes.len() == 1 {
                data_changes.remove(0)
            } else {
                serde_json::Value::Array(data_changes)
            };
            prov.extra.insert(DATA_CHANGES.into(), all);
        }
        prov.criterion = Some(cfg.criterion.clone());
        prov.ratio = Some(cfg.level);
        prov.target = Some(format!("{:?}", cfg.target).to_lowercase());
        let model = cfg.out.join("model.safetensors");
        save_checkpoint(&net, &model, &prov)?;
        let before = complexity(&base, h, w)?;
        let after = complexity(net.spec(), h, w)?;
        // of the model this run started from (this run's own cut)
        let kept_fraction = channel_fraction(net.spec(), &base);
        let run = reid_run::RunFolder::new(&cfg.out);
        run.write_metrics(&reid_run::RunMetrics {
            criterion: cfg.criterion.clone(),
            level: cfg.level.to_string(),
            target: Some(format!("{:?}", cfg.target).to_lowercase()),
            backbone: net.spec().name(),
            parent: Some(parent_hash),
            macs: after.backbone.macs,
            params: after.backbone.params,
            macs_before: Some(before.backbone.macs),
            params_before: Some(before.backbone.params),
            kept_channel_fraction: Some(kept_fraction),
            tool_version: Some(env!("CARGO_PKG_VERSION").into()),
            ..Default::default()
        })?;
        Ok(PruneOutcome {
            model,
            macs_before: before.backbone.macs,
            macs_after: after.backbone.macs,
            params_before: before.backbone.params,
            params_after: after.backbone.params,
            kept_channel_fraction: kept_fraction,
        })
    })();
    match outcome {
        Ok(o) => {
            if let Some(r) = replacement {
                r.commit()?;
            }
            reid_run::RunFolder::new(&cfg.out).discard_replaced()?;
            Ok(o)
        }
        Err(e) => {
            if e.is_stopped() {
                reid_train::keep_aside(replacement, &cfg.out);
            } else {
                // dropping the replacement puts the old run back
                drop(replacement);
                if let Some(before) = &before {
                    take_back_first_files(&cfg.out, before, existed);
                }
            }
            Err(e)
        }
    }
}

/// Counts and rates that must be positive, and the retraining's settings, named by their flags
/// before anything is written (a count of 0 scored no image and failed only after the run
/// folder was claimed).
fn check_settings(cfg: &PruneConfig) -> Result<()> {
    if cfg.score_images == 0 {
        refuse!(
            "--score-images 0: expected at least 1 image to score channels on (default {})",
            defaults().score_images
        );
    }
    if cfg.batch_size == 0 {
        refuse!("--batch-size 0: expected at least 1 image a batch");
    }
    // read by auto-balanced only, but recorded in every config.toml: a NaN there is no record
    if !(cfg.balance_alpha.is_finite() && cfg.balance_alpha >= 0.0) {
        refuse!(
            "--balance-alpha {}: expected a finite number ≥ 0 (the weight of auto-balanced's \
             regulariser)",
            cfg.balance_alpha
        );
    }
    // 0 retraining epochs means no retraining: those settings are not read then
    if cfg.retrain_epochs == 0 {
        return Ok(());
    }
    if cfg.retrain_epochs > reid_train::MAX_EPOCHS {
        refuse!(
            "--retrain-epochs {}: expected at most {}",
            cfg.retrain_epochs,
            reid_train::MAX_EPOCHS
        );
    }
    for (flag, v) in [
        ("--retrain-lr", cfg.retrain_lr),
        ("--checkpoint-interval", cfg.checkpoint_interval_s),
    ] {
        if !v.is_finite() || v <= 0.0 {
            refuse!("{flag} {v}: expected a finite number > 0");
        }
    }
    // every other check of the training runs the retraining will start
    retrain_config(cfg, &cfg.checkpoint, &cfg.out)
        .validate()
        .map_err(EngineFailure)
        .context("the retraining settings")
}

/// The names in `dir` (none when it does not exist).
fn folder_entries(dir: &Path) -> std::collections::HashSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// Whether a retraining checkpoint lies anywhere under `dir` (then `--resume` can go on).
fn holds_a_retraining_checkpoint(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if e.file_name() == "trainer_state.safetensors" {
            return true;
        }
        depth > 0
            && e.file_type().is_ok_and(|t| t.is_dir())
            && holds_a_retraining_checkpoint(&path, depth - 1)
    })
}

/// A prune that failed takes back what it wrote (config.toml, log.jsonl, its steps), as a
/// failed training does, so the corrected command is not refused as "holds another run";
/// unless a retraining checkpoint exists, which `--resume` continues. What the folder held
/// before stays, and so do the writer's lock (its holder removes it) and a folder that existed.
fn take_back_first_files(
    dir: &Path,
    before: &std::collections::HashSet<std::ffi::OsString>,
    existed: bool,
) {
    if holds_a_retraining_checkpoint(dir, 3) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if before.contains(&name)
            || name == reid_run::lock::LOCK_FILE
            || name == reid_run::metrics::REPLACED_DIR
        {
            continue;
        }
        let path = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
    if !existed {
        // fails while a lock is in it: the command that holds the lock removes the folder
        let _ = std::fs::remove_dir(dir);
    }
}

/// `--resume` continues only the run that was started: same result-changing settings as its
/// config.toml (where it writes and how often it checkpoints may change). A folder without one
/// holds nothing started (a grid step resumes such a folder by starting it).
fn check_resumed_config(cfg: &PruneConfig) -> Result<()> {
    let path = reid_run::RunFolder::new(&cfg.out).config_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let stored: PruneConfig = toml::from_str(&text)
        .with_context(|| format!("{}: not a valid prune config", path.display()))?;
    let changed = reid_run::step_key::changed_fields(&stored.result_view()?, &cfg.result_view()?);
    if !changed.is_empty() {
        refuse!(
            "--resume: the run in {} was started with other settings ({}); resume it with \
             its settings, or start a new run elsewhere",
            cfg.out.display(),
            changed.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: PruneConfig,
    }

    #[test]
    fn the_prune_flags_default_to_the_config_defaults() {
        let cli =
            Cli::try_parse_from(["prune", "--checkpoint", "m.safetensors", "--out", "o"]).unwrap();
        let want = PruneConfig {
            checkpoint: "m.safetensors".into(),
            out: "o".into(),
            ..PruneConfig::default()
        };
        assert_eq!(cli.config, want);
        let cli = Cli::try_parse_from([
            "prune",
            "--checkpoint",
            "m",
            "--out",
            "o",
            "--batch-pk",
            "8x4",
            "--criterion",
            "lamp",
            "--checkpoint-interval",
            "60",
        ])
        .unwrap();
        assert_eq!(cli.config.batch_pk, reid_run::PkBatch::new(8, 4));
        assert_eq!(cli.config.criterion, "lamp");
        assert_eq!(cli.config.checkpoint_interval_s, 60.0);
        let e = Cli::try_parse_from([
            "prune",
            "--checkpoint",
            "m",
            "--out",
            "o",
            "--criterion",
            "l3",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("l3") && e.contains("l1"), "{e}");
    }
}
