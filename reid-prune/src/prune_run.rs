//! One pruning run on disk: load a model, score its channels, plan, cut, optionally retrain
//! (prune once, or iteratively in steps), and write a run folder with the pruned checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use reid_data::datasets::load as load_dataset;
use reid_data::loader::{epoch_batches, Augment, Sampling};
use reid_data::Preprocess;
use reid_model::checkpoint::{
    file_sha256, load_checkpoint, read_safetensors, save_checkpoint, Provenance, META_ARCH,
};
use reid_model::complexity::complexity;
use reid_model::hub::infer_backbone_spec;
use reid_model::{ArchSpec, ReidNet};
use serde::{Deserialize, Serialize};

use crate::criterion::ScoreData;
use crate::strategy::{plan_with_groups, Allocation, PruneTarget, TargetKind};
use crate::surgery::apply;
use crate::training::{run_training, run_training_with, RunConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneConfig {
    pub checkpoint: PathBuf,
    /// For plain torchvision/timm weights: the architecture they hold (checked).
    pub arch: Option<String>,
    pub criterion: String,
    /// Fraction of the target quantity to remove, in (0, 1).
    pub level: f64,
    pub target: TargetKind,
    pub allocation: Allocation,
    pub floor: f64,
    /// Kept widths in multiples of this (layerwise allocation; see `PruneTarget::round_to`).
    pub round_to: usize,
    pub input: reid_run::InputSize,
    /// Data for data-driven criteria and retraining.
    pub dataset: Option<String>,
    pub root: Option<PathBuf>,
    /// Or a batch file with tensors `x` (and `labels`).
    pub batch: Option<PathBuf>,
    /// Images used to score channels (data criteria).
    pub score_images: usize,
    /// Iterative pruning: remove the level in steps of this fraction (None = prune once).
    pub step: Option<f64>,
    /// Retraining epochs after each pruning step (needs a dataset).
    pub retrain_epochs: usize,
    /// Base learning rate of retraining.
    pub retrain_lr: f64,
    pub batch_pk: reid_run::PkBatch,
    /// Retraining task: re-ID on a re-ID dataset, classification on a source (imagefolder) set.
    pub retrain_task: reid_model::train::Task,
    /// Batch size of classification retraining.
    pub batch_size: usize,
    /// Augmentation of retraining.
    pub retrain_augment: Augment,
    pub seed: u64,
    pub device: reid_run::DeviceSpec,
    pub out: PathBuf,
    /// α of the auto-balanced regulariser.
    pub balance_alpha: f64,
    /// Also prune residual streams (block outputs, downsamples, their readers, the head).
    pub residual_groups: bool,
    /// Checkpoint retraining inside its epochs at least this often (seconds).
    pub checkpoint_interval_s: f64,
    /// Replace a run that `out` already holds (refused otherwise). Not saved.
    #[serde(skip)]
    pub overwrite: bool,
}

impl PruneConfig {
    /// Fields that do not change what a prune computes.
    pub const FREE_FIELDS: [&'static str; 2] = ["out", "checkpoint_interval_s"];

    /// What this prune computes (see [`crate::step_key`]): the config without
    /// [`Self::FREE_FIELDS`], the device as its kind, and without the batch setting its
    /// retraining task does not read.
    pub fn result_view(&self) -> Result<serde_json::Value> {
        let unused = match self.retrain_task {
            reid_model::train::Task::Classify => "batch_pk",
            reid_model::train::Task::Reid => "batch_size",
        };
        let mut drop = Self::FREE_FIELDS.to_vec();
        drop.push(unused);
        let mut v = crate::step_key::view_without(self, &drop)?;
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
            retrain_task: reid_model::train::Task::Reid,
            batch_size: 64,
            retrain_augment: Augment::default(),
            seed: 0,
            device: reid_run::DeviceSpec::Cpu,
            out: PathBuf::from("runs/prune"),
            checkpoint_interval_s: 300.0,
            balance_alpha: 1e-3,
            residual_groups: false,
            overwrite: false,
        }
    }
}

/// Load a reid checkpoint, or plain torchvision/timm weights (any `fc` size becomes the classifier;
/// its bias, if any, is dropped).
pub fn load_any(path: &Path, arch: Option<&str>, device: &Device) -> Result<(ReidNet, Provenance)> {
    let file = read_safetensors(path, device)?;
    // An --arch that contradicts the file is an error, never silently ignored.
    let check_arch = |held: &ArchSpec| -> Result<()> {
        if let Some(a) = arch {
            let want = ArchSpec::from_name(a, 0).with_context(|| format!("--arch {a}"))?;
            if want.depth != held.depth {
                bail!(
                    "{}: --arch {a} given, but the file holds a {}",
                    path.display(),
                    held.name()
                );
            }
        }
        Ok(())
    };
    if file.metadata.contains_key(META_ARCH) {
        drop(file);
        let ck = load_checkpoint(path, device, true)?;
        check_arch(ck.net.spec())?;
        return Ok((ck.net, ck.provenance));
    }
    let mut t: HashMap<String, Tensor> = file
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let fc = t.remove("fc.weight");
    t.remove("fc.bias");
    let mut spec = infer_backbone_spec(path, &t, 2)?;
    check_arch(&spec)?;
    if let Some(w) = fc {
        spec.num_classes = w.dim(0)?;
        t.insert("classifier.weight".into(), w);
    }
    let net = ReidNet::from_tensors_trainable(&spec, &t, device, 0)?;
    let mut prov = Provenance::new();
    prov.source_weights = Some(path.display().to_string());
    Ok((net, prov))
}

fn score_data(cfg: &PruneConfig, net: &ReidNet, device: &Device) -> Result<Option<ScoreData>> {
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
        ..RunConfig::default()
    };
    rc.train.epochs = cfg.retrain_epochs;
    rc.train.task = cfg.retrain_task;
    rc.train.schedule.base_lr = cfg.retrain_lr;
    rc.train.schedule.warmup_epochs = 0;
    rc.train.schedule.decay = reid_model::train::schedule::Decay::Step {
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
    let depth = ArchSpec::from_name(&spec.name(), 0)?.depth;
    Ok(ArchSpec::resnet_with(
        depth,
        0,
        spec.width_mult,
        spec.last_stride,
        reid_model::Neck::None,
    )?)
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

/// Prune `cfg.checkpoint` into `cfg.out`.
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
    let method = crate::method::method(&cfg.criterion)?;
    cfg.input.validate().map_err(|e| anyhow!("--input: {e}"))?;
    cfg.batch_pk
        .validate()
        .map_err(|e| anyhow!("batch_pk: {e}"))?;
    if cfg.residual_groups && !method.residual_groups {
        let ok: Vec<&str> = crate::method::methods()
            .iter()
            .filter(|m| m.residual_groups)
            .map(|m| m.name)
            .collect();
        bail!(
            "--residual-groups is not combined with '{}' (its training-time rule acts on branch convs): \
             use {}",
            cfg.criterion,
            ok.join(", ")
        );
    }
    if method.training_time && cfg.retrain_epochs == 0 {
        bail!(
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
        bail!("--retrain-epochs needs --dataset and --root");
    }
    let has_data = (cfg.dataset.is_some() && cfg.root.is_some()) || cfg.batch.is_some();
    if criterion.needs_data() && !has_data {
        bail!(
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
            bail!(
                "--out {} is the folder of the checkpoint being pruned ({}): its model would be \
                 replaced; give another output folder",
                cfg.out.display(),
                cfg.checkpoint.display()
            );
        }
    }
    if !resume && !cfg.overwrite && reid_run::RunFolder::new(&cfg.out).holds_run() {
        bail!(
            "--out {} holds another run (config.toml, model or metrics): pass --overwrite to \
             replace it, or give another --out",
            cfg.out.display()
        );
    }
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    reid_run::remove_stale_temp_files(&cfg.out);
    reid_run::RunFolder::new(&cfg.out).write_config(cfg)?;
    let mut log = std::fs::File::create(cfg.out.join("log.jsonl"))?;
    let parent_hash = file_sha256(&cfg.checkpoint)?;
    let steps = match cfg.step {
        Some(s) if s > 0.0 && s < cfg.level => (cfg.level / s).ceil() as usize,
        Some(s) if s <= 0.0 => bail!("--step {s} must be positive"),
        _ => 1,
    };
    let mut current_parent = cfg.checkpoint.clone();
    if let (Some(name), Some(root)) = (&cfg.dataset, &cfg.root) {
        // Pruning on a dataset whose classes the classifier was not trained on (e.g. ImageNet
        // weights pruned on re-ID data): give it a fresh classifier over the dataset's identities.
        let classes = load_dataset(name, root)?.num_train_pids();
        if classes != net.spec().num_classes {
            let mut spec = net.spec().clone();
            spec.num_classes = classes;
            let t: HashMap<String, Tensor> = net
                .state_dict()?
                .into_iter()
                .filter(|(k, _)| !k.starts_with("classifier."))
                .collect();
            net = ReidNet::from_tensors_trainable(&spec, &t, &device, cfg.seed)?;
        }
    }
    for step in 0..steps {
        let level = cfg.level * (step + 1) as f64 / steps as f64;
        let data = if criterion.needs_data() {
            score_data(cfg, &net, &device)?
        } else {
            None
        };
        if criterion.needs_data() && data.is_none() {
            bail!(
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
        std::fs::create_dir_all(&step_dir)?;
        reid_run::remove_stale_temp_files(&step_dir);
        // the method's rule before the cut (training-time methods retrain here)
        let mut retrain = |start: &ReidNet,
                           folder: &str,
                           penalty: Option<&reid_model::train::Regularizer>,
                           hook: Option<&crate::training::EpochHook>|
         -> Result<ReidNet> {
            let path = step_dir.join("unpruned.safetensors");
            save_checkpoint(start, &path, &parent_prov)?;
            let rc = retrain_config(cfg, &path, &step_dir.join(folder));
            let o = run_training_with(
                &rc,
                resume,
                Arc::new(AtomicBool::new(false)),
                show_progress,
                penalty,
                hook,
            )?;
            Ok(load_checkpoint(&o.model, &device, true)?.net)
        };
        let (before, p) = rule.before_cut(net, &scores, p, &mut retrain)?;
        net = before;
        net = apply(&net, &p)?;
        let mut prov = parent_prov.clone();
        prov.parent = Some(file_sha256(&current_parent)?);
        prov.criterion = Some(cfg.criterion.clone());
        prov.ratio = Some(level);
        prov.target = Some(format!("{:?}", cfg.target).to_lowercase());
        prov.epoch = None;
        let pruned_path = step_dir.join("pruned.safetensors");
        save_checkpoint(&net, &pruned_path, &prov)?;
        let mut model_path = pruned_path.clone();
        if cfg.retrain_epochs > 0 && rule.retrains_after_cut() {
            let rc = retrain_config(cfg, &pruned_path, &step_dir.join("retrain"));
            let o = run_training(&rc, resume, Arc::new(AtomicBool::new(false)), show_progress)?;
            net = load_checkpoint(&o.model, &device, true)?.net;
            model_path = o.model;
        }
        let c = complexity(net.spec(), h, w)?;
        writeln!(
            log,
            "{}",
            serde_json::json!({"step": step + 1, "level": level, "macs": c.backbone.macs, "params": c.backbone.params,
                               "widths": p.widths().into_iter().collect::<std::collections::BTreeMap<_, _>>()})
        )?;
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
}
