//! A training run on disk: dataset → P×K (or shuffled) batches → [`Trainer`] → run folder
//! (`model.safetensors`, `trainer_state.safetensors`, `config.toml`, `log.jsonl`, `metrics.json`).
//! Checkpoints are written atomically after every epoch and on Ctrl-C; `resume` continues from
//! the last one (same epoch and batch), reaching the same weights as an uninterrupted run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::{Task, TrainConfig, Trainer};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use reid_data::datasets::{load, ReidDataset};
use reid_data::loader::{epoch_batches, Augment, Prefetcher, Sampling};
use reid_data::Preprocess;
use reid_eval::Metrics;
use reid_model::checkpoint::{
    checkpoint_bytes, checkpoint_with_extra, load_checkpoint, read_safetensors,
    remove_stale_temp_files, save_checkpoint, write_atomic, Provenance, META_ARCH,
};
use reid_model::complexity::complexity;
use reid_model::hub::{load_imagenet, HeadOptions};
use reid_model::{ArchSpec, Neck, ReidNet};
use serde::{Deserialize, Serialize};

/// A full, serialisable training run (saved as `config.toml` in the run folder).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub dataset: String,
    pub root: PathBuf,
    pub arch: String,
    pub width_mult: f64,
    /// HEIGHTxWIDTH
    pub input: reid_run::InputSize,
    /// PxK for re-ID batches.
    pub batch_pk: reid_run::PkBatch,
    /// Batch size for classification.
    pub batch_size: usize,
    pub last_stride: usize,
    pub seed: u64,
    pub device: reid_run::DeviceSpec,
    pub out: PathBuf,
    /// ImageNet weights (hub id or path) to start from.
    pub pretrained: Option<String>,
    /// A reid-prune checkpoint to start from (its classifier is replaced when the classes differ).
    pub init_checkpoint: Option<PathBuf>,
    pub augment: Augment,
    /// From-scratch training: start every residual block as the identity (γ = 0 in its last BN).
    pub zero_init_residual: bool,
    /// Evaluate on query/gallery after training (re-ID datasets).
    pub evaluate: bool,
    /// Stop (as Ctrl-C would: checkpoint, then exit) after this many batches. For tests.
    pub stop_after_batches: Option<usize>,
    /// Also checkpoint inside an epoch once this many seconds passed since the last checkpoint,
    /// so a crash in a long epoch loses minutes, not the epoch.
    pub checkpoint_interval_s: f64,
    /// Resume even when this config differs from the run folder's `config.toml` (which is
    /// then replaced). Not saved.
    #[serde(skip)]
    pub allow_config_change: bool,
    /// Start afresh in an output folder that holds another run (refused otherwise); the old
    /// run's files all go. Not saved.
    #[serde(skip)]
    pub overwrite: bool,
    /// Resume although the data under `root` changed since the checkpoint (refused otherwise,
    /// naming what changed); the change is recorded in the model's provenance
    /// (`resumed_over_changed_data`, kept by every later checkpoint). Not saved.
    #[serde(skip)]
    pub allow_data_change: bool,
    pub train: TrainConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dataset: "market1501".into(),
            root: PathBuf::from("data"),
            arch: "resnet50".into(),
            width_mult: 1.0,
            input: reid_run::InputSize::new(256, 128),
            batch_pk: reid_run::PkBatch::new(16, 4),
            batch_size: 64,
            last_stride: 1,
            seed: 0,
            device: reid_run::DeviceSpec::Cpu,
            out: PathBuf::from("runs/train"),
            pretrained: None,
            init_checkpoint: None,
            augment: Augment::default(),
            zero_init_residual: true,
            evaluate: true,
            stop_after_batches: None,
            checkpoint_interval_s: 300.0,
            allow_config_change: false,
            overwrite: false,
            allow_data_change: false,
            train: TrainConfig::default(),
        }
    }
}

impl RunConfig {
    /// Fields that do not change what a run computes (where it writes, how often it
    /// checkpoints, where a test stops it, whether it evaluates after training).
    pub const FREE_FIELDS: [&'static str; 4] = [
        "out",
        "checkpoint_interval_s",
        "stop_after_batches",
        "evaluate",
    ];

    /// Fields a run from `init_checkpoint` does not read: the network comes from the file.
    pub const FROM_CHECKPOINT_UNREAD: [&'static str; 5] = [
        "arch",
        "width_mult",
        "last_stride",
        "pretrained",
        "zero_init_residual",
    ];

    /// What this run computes (see [`reid_run::step_key`]): the config without
    /// [`Self::FREE_FIELDS`], the device as its kind, without the batch setting its task does
    /// not read (`batch_pk` for classification, `batch_size` for re-ID) and, when it starts from
    /// a checkpoint, without [`Self::FROM_CHECKPOINT_UNREAD`].
    pub fn result_view(&self) -> Result<serde_json::Value> {
        let unused = match self.train.task {
            Task::Classify => "batch_pk",
            Task::Reid => "batch_size",
        };
        let mut drop = Self::FREE_FIELDS.to_vec();
        drop.push(unused);
        if self.init_checkpoint.is_some() {
            drop.extend(Self::FROM_CHECKPOINT_UNREAD);
        }
        let mut v = reid_run::step_key::view_without(self, &drop)?;
        v["device"] = self.device.kind().into();
        Ok(v)
    }

    /// The config as the run will happen: validated, the network of a starting checkpoint
    /// recorded, a contradiction with ImageNet weights refused. Reads the weights' headers only
    /// (and ImageNet weights' shapes): callers check with it before they write anything.
    pub fn resolve(&self) -> Result<RunConfig> {
        if self.out.exists() && !self.out.is_dir() {
            bail!(
                "out = {} (--out) is a file; expected the run folder to write",
                self.out.display()
            );
        }
        self.validate()
            .with_context(|| format!("run config for {}", self.out.display()))?;
        let c = effective_config(self)?;
        // a batch the machine cannot hold is refused before it is allocated
        let spec = match &c.init_checkpoint {
            Some(ck) => reid_model::checkpoint::read_arch_spec(ck)?,
            None => ArchSpec::resnet_with(
                ArchSpec::from_name(&c.arch, 0)?.depth,
                0,
                c.width_mult,
                c.last_stride,
                Neck::BnNeck,
            )?,
        };
        let (h, w) = c.input.hw();
        let batch = match c.train.task {
            Task::Reid => c.batch_pk.p * c.batch_pk.k,
            Task::Classify => c.batch_size,
        };
        let cost = complexity(&spec, h, w)?;
        reid_model::complexity::check_fits(&cost, batch, true).with_context(|| {
            format!(
                "input {} (--input), batch {batch}, width_mult {} (--width-mult)",
                c.input, c.width_mult
            )
        })?;
        Ok(c)
    }

    /// Every number and size checked before anything is written (errors name the field).
    pub fn validate(&self) -> Result<()> {
        positive("width_mult", self.width_mult)?;
        if self.width_mult > MAX_WIDTH_MULT {
            bail!(
                "width_mult = {}: expected at most {MAX_WIDTH_MULT} (a {MAX_WIDTH_MULT}x-wide \
                 ResNet-50 already has ~{} M parameters)",
                self.width_mult,
                (25.6 * MAX_WIDTH_MULT * MAX_WIDTH_MULT) as u64
            );
        }
        if self.train.epochs > MAX_EPOCHS {
            bail!(
                "train.epochs = {}: expected at most {MAX_EPOCHS}",
                self.train.epochs
            );
        }
        positive("train.schedule.base_lr", self.train.schedule.base_lr)?;
        positive("checkpoint_interval_s", self.checkpoint_interval_s)?;
        check_batching(self.input, self.batch_pk, self.batch_size)?;
        // an input the network cannot train on is named here, not at the first batch (an unknown
        // architecture is named where the network is built)
        if let Ok(named) = reid_model::ArchSpec::from_name(&self.arch, 0) {
            let spec = reid_model::ArchSpec::resnet_with(
                named.depth,
                0,
                self.width_mult,
                self.last_stride,
                reid_model::Neck::None,
            )?;
            let (h, w) = self.input.hw();
            spec.check_input(h, w, true)
                .map_err(|e| anyhow::anyhow!("input = \"{}\" (--input): {e}", self.input))?;
        }
        let t = &self.train;
        for (name, v) in [
            ("train.label_smoothing", t.label_smoothing),
            ("train.triplet_weight", t.triplet_weight),
            ("train.center_loss_weight", t.center_loss_weight),
            ("train.backbone_lr_mult", t.backbone_lr_mult),
            ("train.optimizer.weight_decay", t.optimizer.weight_decay),
        ] {
            if !v.is_finite() || v < 0.0 {
                bail!("{name} = {v}: expected a finite number ≥ 0");
            }
        }
        if t.task == Task::Reid {
            let pk = self.batch_pk;
            // batch norm needs two values a channel, batch-hard triplet a positive and a
            // negative for every anchor
            let min = if t.triplet_weight > 0.0 { 2 } else { 1 };
            if pk.k < min || pk.p < min || pk.p * pk.k < 2 {
                bail!(
                    "batch_pk = {pk} (--batch-pk): expected P ≥ {min} identities and K ≥ {min} \
                     images an identity{} and at least 2 images a batch (batch norm), e.g. 16x4",
                    if min == 2 {
                        " (the batch-hard triplet loss needs a positive and a negative for every \
                         image)"
                    } else {
                        ""
                    }
                );
            }
        } else if self.batch_size < 2 {
            bail!(
                "batch_size = {} (--batch-size): expected at least 2 images a batch (batch norm \
                 needs two values a channel)",
                self.batch_size
            );
        }
        // every setting where its algorithm is defined (a negative warm-up factor trained
        // with a negative learning rate)
        let in_range = |name: &str, v: f64, range: std::ops::RangeInclusive<f64>, what: &str| {
            if v.is_finite() && range.contains(&v) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{name} = {v}: expected {what}"))
            }
        };
        let a = &self.augment;
        in_range(
            "augment.flip_p",
            a.flip_p.into(),
            0.0..=1.0,
            "a probability in [0, 1]",
        )?;
        in_range(
            "augment.erase_p",
            a.erase_p.into(),
            0.0..=1.0,
            "a probability in [0, 1]",
        )?;
        use crate::optim::OptimizerKind;
        match t.optimizer.kind {
            OptimizerKind::Sgd { momentum, .. } => in_range(
                "train.optimizer.momentum",
                momentum,
                0.0..=0.999_999,
                "a value in [0, 1)",
            )?,
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                in_range(
                    "train.optimizer.beta1",
                    beta1,
                    0.0..=0.999_999,
                    "a value in [0, 1)",
                )?;
                in_range(
                    "train.optimizer.beta2",
                    beta2,
                    0.0..=0.999_999_999,
                    "a value in [0, 1)",
                )?;
                in_range(
                    "train.optimizer.eps",
                    eps,
                    f64::MIN_POSITIVE..=1.0,
                    "a value in (0, 1]",
                )?;
            }
        }
        let sch = &t.schedule;
        in_range(
            "train.schedule.warmup_factor",
            sch.warmup_factor,
            f64::MIN_POSITIVE..=1.0,
            "a factor in (0, 1] of the base rate",
        )?;
        match &sch.decay {
            crate::schedule::Decay::Step { gamma, .. } => in_range(
                "train.schedule.decay.gamma",
                *gamma,
                f64::MIN_POSITIVE..=1.0,
                "a factor in (0, 1]",
            )?,
            crate::schedule::Decay::Cosine { min_lr } => in_range(
                "train.schedule.decay.min_lr",
                *min_lr,
                0.0..=sch.base_lr,
                "a rate from 0 to base_lr",
            )?,
        }
        in_range(
            "train.center_lr",
            t.center_lr,
            0.0..=f64::MAX,
            "a finite number ≥ 0",
        )?;
        if let Some(m) = t.triplet_margin {
            in_range(
                "train.triplet_margin",
                m,
                0.0..=f64::MAX,
                "a finite number ≥ 0 (or unset: soft margin)",
            )?;
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!(
                "train.label_smoothing = {}: expected a value in [0, 1)",
                t.label_smoothing
            );
        }
        Ok(())
    }
}

/// `h:mm:ss`, or `m:ss` under an hour (as fast-reid prints its ETA).
pub fn clock(secs: f64) -> String {
    let s = if secs.is_finite() {
        secs.max(0.0).round() as u64
    } else {
        0
    };
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// An epoch's progress line for a person (log.jsonl keeps the full numbers): loss to 4
/// digits, accuracy in %, speed, learning rate, the epoch's time and the time left at this
/// run's pace.
fn epoch_line(
    (epoch, epochs): (usize, usize),
    lr: f64,
    loss: f64,
    accuracy: f64,
    images_per_s: f64,
    wall_s: f64,
    left_s: f64,
) -> String {
    let left = if epoch < epochs {
        format!(", ~{} left", clock(left_s))
    } else {
        String::new()
    };
    format!(
        "epoch {epoch}/{epochs}: loss {}, accuracy {:.1} %, {} img/s, lr {lr:.2e}, {} s{left}",
        significant(loss),
        accuracy * 100.0,
        significant(images_per_s),
        significant(wall_s)
    )
}

/// `x` with 4 significant digits, no exponent (`3.214`, `12.35`, `280.5`, `98770`, `0.5000`).
pub fn significant(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let digits = x.abs().log10().floor() as i32 + 1;
    if digits > 4 {
        let unit = 10f64.powi(digits - 4);
        return format!("{:.0}", (x / unit).round() * unit);
    }
    let decimals = (4 - digits).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

/// Wider nets than this are refused before any allocation (`--width-mult 100` allocated until
/// the allocator aborted).
pub use reid_model::arch::MAX_WIDTH_MULT;
/// More epochs than this are a typo.
pub const MAX_EPOCHS: usize = 100_000;
/// Images a batch at most (P×K or batch size).
pub const MAX_BATCH_IMAGES: usize = 4096;

/// The input size, P×K batch and batch size every config with training carries.
pub fn check_batching(
    input: reid_run::InputSize,
    batch_pk: reid_run::PkBatch,
    batch_size: usize,
) -> Result<()> {
    input
        .validate()
        .map_err(|e| anyhow::anyhow!("input: {e}"))?;
    batch_pk
        .validate()
        .map_err(|e| anyhow::anyhow!("batch_pk: {e}"))?;
    if batch_size == 0 {
        bail!("batch_size = 0: expected at least 1 image a batch");
    }
    for (name, n) in [
        ("batch_pk", batch_pk.p.saturating_mul(batch_pk.k)),
        ("batch_size", batch_size),
    ] {
        if n > MAX_BATCH_IMAGES {
            bail!("{name}: {n} images a batch; expected at most {MAX_BATCH_IMAGES}");
        }
    }
    Ok(())
}

/// A field that must be a finite number > 0.
pub fn positive(name: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v <= 0.0 {
        bail!("{name} = {v}: expected a finite number > 0");
    }
    Ok(())
}

/// Where a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    pub model: PathBuf,
    /// False when stopped early (Ctrl-C or `stop_after_batches`); the checkpoint allows a resume.
    pub completed: bool,
    pub epochs: usize,
    pub final_loss: f64,
    pub wall_s: f64,
    pub metrics: Option<Metrics>,
    /// Optimiser steps taken by this call (a resumed run counts only its own).
    pub batches: usize,
}

const STATE_FILE: &str = "trainer_state.safetensors";

fn build_net(cfg: &RunConfig, num_classes: usize, device: &Device) -> Result<ReidNet> {
    if let Some(ck) = &cfg.init_checkpoint {
        let loaded = load_checkpoint(ck, device, true)
            .with_context(|| format!("loading {}", ck.display()))?;
        if loaded.net.spec().num_classes == num_classes {
            return Ok(loaded.net);
        }
        // New task: keep the backbone (and neck), give it a fresh classifier.
        let mut spec = loaded.net.spec().clone();
        spec.num_classes = num_classes;
        let tensors = loaded.net.state_dict_without_classifier()?;
        return Ok(ReidNet::from_tensors_trainable(
            &spec, &tensors, device, cfg.seed,
        )?);
    }
    if let Some(src) = &cfg.pretrained {
        let head = HeadOptions {
            num_classes,
            last_stride: cfg.last_stride,
            neck: Neck::BnNeck,
            seed: cfg.seed,
        };
        return Ok(load_imagenet(src, head, device)?.0);
    }
    let depth = ArchSpec::from_name(&cfg.arch, 0)?.depth;
    let spec = ArchSpec::resnet_with(
        depth,
        num_classes,
        cfg.width_mult,
        cfg.last_stride,
        Neck::BnNeck,
    )?;
    let init = reid_model::init::InitOptions {
        zero_init_residual: cfg.zero_init_residual,
    };
    Ok(ReidNet::new_with(&spec, device, cfg.seed, init)?)
}

/// A fresh run's first files, removed when it ends (fails) before any checkpoint exists.
struct FreshStart<'a> {
    out: &'a Path,
    armed: bool,
}

impl Drop for FreshStart<'_> {
    fn drop(&mut self) {
        if self.armed && !self.out.join(STATE_FILE).exists() {
            for f in ["config.toml", "log.jsonl"] {
                let _ = std::fs::remove_file(self.out.join(f));
            }
        }
    }
}

/// The new run stands: the one it replaced (`--overwrite`) goes for good, and so does one kept
/// aside by an interrupted replacement that this run (resumed) has now finished.
fn commit(replacement: Option<reid_run::metrics::Replacement>, out: &Path) -> Result<()> {
    if let Some(r) = replacement {
        r.commit()?;
    }
    reid_run::RunFolder::new(out).discard_replaced()?;
    Ok(())
}

/// The new run stopped unfinished but resumable: the run it replaces stays aside.
pub fn keep_aside(replacement: Option<reid_run::metrics::Replacement>, out: &Path) {
    if let Some(r) = replacement {
        eprintln!(
            "{}: the replaced run stays in {}/ until this one is resumed to its end",
            out.display(),
            reid_run::metrics::REPLACED_DIR
        );
        r.keep_aside();
    }
}

fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Where a checkpoint stands: the next batch to run, and the running sums of its epoch (so the
/// epoch's log line after a resume equals an uninterrupted run's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Position {
    epoch: usize,
    batch: usize,
    loss_sum: f64,
    correct: usize,
    images: usize,
    steps: usize,
}

impl Position {
    fn start_of(epoch: usize) -> Self {
        Self {
            epoch,
            ..Self::default()
        }
    }

    fn to_meta(self, optimizer_steps: usize) -> HashMap<String, String> {
        HashMap::from([
            ("epoch".to_string(), self.epoch.to_string()),
            ("batch".to_string(), self.batch.to_string()),
            ("steps".to_string(), optimizer_steps.to_string()),
            // f64's Display round-trips exactly
            ("epoch_loss_sum".to_string(), self.loss_sum.to_string()),
            ("epoch_correct".to_string(), self.correct.to_string()),
            ("epoch_images".to_string(), self.images.to_string()),
            ("epoch_steps".to_string(), self.steps.to_string()),
        ])
    }

    /// From a state file's metadata; the epoch sums are absent in older files (then 0).
    fn from_meta(path: &Path, meta: &HashMap<String, String>) -> Result<(Self, usize)> {
        fn field<T: std::str::FromStr + Default>(
            path: &Path,
            meta: &HashMap<String, String>,
            k: &str,
            required: bool,
        ) -> Result<T> {
            match meta.get(k) {
                Some(v) => v.parse().map_err(|_| {
                    anyhow::anyhow!("{}: metadata '{k}' = '{v}' is not a number", path.display())
                }),
                None if required => bail!("{}: no '{k}' in the metadata", path.display()),
                None => Ok(T::default()),
            }
        }
        let loss_sum: f64 = field(path, meta, "epoch_loss_sum", false)?;
        if !loss_sum.is_finite() {
            bail!(
                "{}: metadata 'epoch_loss_sum' is {loss_sum}",
                path.display()
            );
        }
        Ok((
            Self {
                epoch: field(path, meta, "epoch", true)?,
                batch: field(path, meta, "batch", true)?,
                loss_sum,
                correct: field(path, meta, "epoch_correct", false)?,
                images: field(path, meta, "epoch_images", false)?,
                steps: field(path, meta, "epoch_steps", false)?,
            },
            field(path, meta, "steps", true)?,
        ))
    }
}

/// The state's key of [`DataStamp::fingerprint`].
const DATA_LIST_FINGERPRINT: &str = "data_list_fingerprint";

/// Prefix of the optimiser's tensors in the state file (the net's tensors keep their names).
const OPTIM_PREFIX: &str = "optim.";

/// The data a run trains on, as its checkpoints record it: a resume over other data would
/// continue a run that never happened (a 12-class head on 11 identities, relabelled targets).
#[derive(Clone, Debug, PartialEq)]
struct DataStamp {
    /// [`reid_data::datasets::fingerprint`] of the images the dataset lists; `None` in a state
    /// written before it was recorded (session 17), whose counts alone are compared.
    fingerprint: Option<String>,
    train_images: usize,
    train_ids: usize,
}

impl DataStamp {
    fn of(ds: &ReidDataset) -> Result<Self> {
        Ok(Self {
            fingerprint: Some(
                reid_data::datasets::fingerprint(ds)
                    .with_context(|| format!("reading {}", ds.root.display()))?,
            ),
            train_images: ds.train.len(),
            train_ids: ds.num_train_pids(),
        })
    }

    fn to_meta(&self, meta: &mut HashMap<String, String>) {
        if let Some(f) = &self.fingerprint {
            meta.insert(DATA_LIST_FINGERPRINT.into(), f.clone());
        }
        meta.insert("data_train_images".into(), self.train_images.to_string());
        meta.insert("data_train_ids".into(), self.train_ids.to_string());
    }

    /// `None` for state files written before the data was recorded.
    fn from_meta(meta: &HashMap<String, String>) -> Option<Self> {
        Some(Self {
            // the key of the fingerprint of every file under the root (before session 17)
            // is not compared: it measured something else
            fingerprint: meta.get(DATA_LIST_FINGERPRINT).cloned(),
            train_images: meta.get("data_train_images")?.parse().ok()?,
            train_ids: meta.get("data_train_ids")?.parse().ok()?,
        })
    }

    /// What changed from `self` (the checkpoint's) to `now`, in words.
    fn changes(&self, now: &Self) -> Option<String> {
        let same_files = self.fingerprint.is_none() || self.fingerprint == now.fingerprint;
        if same_files && self.train_images == now.train_images && self.train_ids == now.train_ids {
            return None;
        }
        let mut what = vec![];
        if self.train_images != now.train_images {
            what.push(format!(
                "training images {} → {}",
                self.train_images, now.train_images
            ));
        }
        if self.train_ids != now.train_ids {
            what.push(format!(
                "training identities {} → {}",
                self.train_ids, now.train_ids
            ));
        }
        if what.is_empty() {
            what.push("files replaced or modified (same counts)".into());
        }
        Some(what.join(", "))
    }
}

/// Save a resumable checkpoint. `trainer_state.safetensors` holds the weights *and* the
/// optimiser state in one atomically written file, so a crash between two writes can never
/// pair a model of one step with the optimiser of another; `model.safetensors` (the run's
/// result) is written after it.
fn save_state(
    out: &Path,
    net: &ReidNet,
    trainer: &Trainer,
    prov: &Provenance,
    data: &DataStamp,
    config: &str,
    pos: Position,
) -> Result<()> {
    let mut p = prov.clone();
    p.epoch = Some(pos.epoch);
    let optim: Vec<(String, Tensor)> = trainer
        .state_tensors()?
        .into_iter()
        .map(|(k, t)| (format!("{OPTIM_PREFIX}{k}"), t))
        .collect();
    let mut meta = pos.to_meta(trainer.optimizer.step_count);
    data.to_meta(&mut meta);
    meta.insert(META_RUN_CONFIG.into(), config.to_string());
    let bytes = checkpoint_bytes(net, &p, &optim, meta)?;
    write_atomic(&out.join(STATE_FILE), &bytes)?;
    save_checkpoint(net, &out.join("model.safetensors"), &p)?;
    Ok(())
}

/// What a state file holds besides the net, optimiser and position.
struct HeldState {
    /// The run's config as [`RunConfig::result_view`] saw it (absent in older state files).
    config: Option<serde_json::Value>,
    /// Provenance entries a resume carries on (e.g. `resumed_over_changed_data`).
    carried: BTreeMap<String, serde_json::Value>,
    /// The sha256 of the checkpoint the run started from (`--init`), as the state records it.
    parent: Option<String>,
}

/// The provenance entry of the data changes a resume was allowed to continue over.
pub const DATA_CHANGES: &str = "resumed_over_changed_data";

/// Provenance entries that describe the run's history, kept by every later checkpoint of it.
const CARRIED: [&str; 1] = [DATA_CHANGES];

/// The net, optimiser and position saved by [`save_state`] (or, for state files written before
/// the weights moved into them, the net from `model.safetensors`).
fn load_state(
    out: &Path,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<(ReidNet, Trainer, Position, Option<DataStamp>, HeldState)> {
    let state_path = out.join(STATE_FILE);
    let st = read_safetensors(&state_path, device)?;
    let (net, optim, meta, prov) = if st.metadata.contains_key(META_ARCH) {
        let ck = checkpoint_with_extra(st, device, true, OPTIM_PREFIX)
            .with_context(|| format!("resuming from {}", state_path.display()))?;
        (
            ck.checkpoint.net,
            ck.extra,
            ck.metadata,
            ck.checkpoint.provenance,
        )
    } else {
        let ck = load_checkpoint(&out.join("model.safetensors"), device, true)
            .with_context(|| format!("resuming from {}", out.display()))?;
        (ck.net, st.tensors, st.metadata, ck.provenance)
    };
    let config = match meta.get(META_RUN_CONFIG) {
        Some(text) => Some(serde_json::from_str(text).with_context(|| {
            format!(
                "{}: metadata '{META_RUN_CONFIG}' is not JSON",
                state_path.display()
            )
        })?),
        None => None,
    };
    let parent = prov.parent.clone();
    let carried = prov
        .extra
        .into_iter()
        .filter(|(k, _)| CARRIED.contains(&k.as_str()))
        .collect();
    let (pos, steps) = Position::from_meta(&state_path, &meta)?;
    let mut trainer = Trainer::new(&net, cfg.clone())?;
    trainer
        .load_state(&optim, steps)
        .with_context(|| format!("{}: optimiser state", state_path.display()))?;
    Ok((
        net,
        trainer,
        pos,
        DataStamp::from_meta(&meta),
        HeldState {
            config,
            carried,
            parent,
        },
    ))
}

/// The state file's copy of the run's config (so that a resume is checked against the run
/// even when config.toml is gone).
const META_RUN_CONFIG: &str = "run_config";

/// With a starting checkpoint, the run trains that checkpoint's architecture whatever `arch`
/// says (the grid passes its main arch to every fine-tune): record that one. ImageNet weights
/// fix the network too, but there a config that names another one is refused: it would be
/// recorded beside a network it does not describe.
fn effective_config(cfg: &RunConfig) -> Result<RunConfig> {
    let mut c = cfg.clone();
    if let Some(ck) = &cfg.init_checkpoint {
        if let Some(src) = &cfg.pretrained {
            bail!(
                "init_checkpoint = {} (--init) and pretrained = {src} (--pretrained) both give \
                 the starting network: keep one",
                ck.display()
            );
        }
        let spec = reid_model::checkpoint::read_arch_spec(ck)
            .with_context(|| format!("init checkpoint {}", ck.display()))?;
        c.arch = spec.name();
        c.width_mult = spec.width_mult;
        c.last_stride = spec.last_stride;
    } else if let Some(src) = &cfg.pretrained {
        let held = pretrained_arch(src, cfg.last_stride)?;
        if held.name() != cfg.arch || cfg.width_mult != held.width_mult {
            bail!(
                "the run config says arch = {}, width_mult = {} but pretrained = {src} \
                 (--pretrained) holds a {} at width_mult = {}: give --arch {} --width-mult {} \
                 (the network these weights make), or other weights",
                cfg.arch,
                cfg.width_mult,
                held.name(),
                held.width_mult,
                held.name(),
                held.width_mult
            );
        }
    }
    Ok(c)
}

/// The backbone that ImageNet weights (hub id or file) make, with its width multiplier when its
/// widths are a uniform one's (torchvision's nets: 1; a pruned state dict keeps 1).
pub fn pretrained_arch(src: &str, last_stride: usize) -> Result<ArchSpec> {
    let path = reid_model::hub::resolve_weights(src)?;
    let shapes = reid_model::checkpoint::read_safetensors_shapes(&path)?;
    let mut spec = reid_model::hub::infer_backbone_spec_from_shapes(&path, &shapes, last_stride)?;
    let w = spec.stem_width as f64 / 64.0;
    if let Ok(uniform) = ArchSpec::resnet_with(spec.depth, 0, w, last_stride, Neck::None) {
        if uniform.stages == spec.stages {
            spec.width_mult = w;
        }
    }
    Ok(spec)
}

/// Resuming under another config would continue a run that did not happen (and its config.toml
/// and metrics would describe neither): refuse, naming every changed field.
fn check_same_config(
    out: &Path,
    cfg: &RunConfig,
    in_state: Option<&serde_json::Value>,
) -> Result<()> {
    let path = out.join("config.toml");
    // the state's own copy first: config.toml can be edited or removed
    let (stored, source) = match in_state {
        Some(v) => (v.clone(), "its checkpoint"),
        None => {
            let Ok(text) = std::fs::read_to_string(&path) else {
                bail!(
                    "cannot resume {}: neither its checkpoint nor a config.toml says which \
                     config it ran under; restore config.toml, or allow the resume explicitly \
                     (train --allow-config-change)",
                    out.display()
                );
            };
            let stored: RunConfig = toml::from_str(&text)
                .with_context(|| format!("{}: not a valid run config", path.display()))?;
            (stored.result_view()?, "its config.toml")
        }
    };
    let changed = reid_run::step_key::changed_fields(&stored, &cfg.result_view()?);
    if !changed.is_empty() {
        bail!(
            "cannot resume {}: this run's config differs from {source}'s in {}. Resume with \
             the stored settings, or allow the change explicitly (train \
             --allow-config-change) to continue under the new ones",
            out.display(),
            changed.join(", ")
        );
    }
    Ok(())
}

/// After a resume at the start of `epoch` (0-based), keep the log lines of the epochs before it:
/// lines of epochs that were logged but not checkpointed are run again and logged again.
fn trim_log(path: &Path, epoch: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["epoch"].as_u64())
                .is_some_and(|e| e as usize <= epoch)
        })
        .collect();
    if kept.len() != text.lines().count() {
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        write_atomic(path, body.as_bytes())?;
    }
    Ok(())
}

/// Extract query/gallery features (BNNeck, cosine) and evaluate.
pub fn evaluate_on(
    net: &ReidNet,
    ds: &ReidDataset,
    pre: &Preprocess,
    progress: bool,
) -> Result<Metrics> {
    reid_eval::evaluate_dataset(
        &net.inference_copy()?,
        ds,
        pre,
        reid_eval::EvalOptions::default(),
        progress,
    )
}

/// Train (or resume) the run described by `cfg`.
pub fn run_training(
    cfg: &RunConfig,
    resume: bool,
    interrupt: Arc<AtomicBool>,
    show_progress: bool,
) -> Result<TrainOutcome> {
    run_training_with(cfg, resume, interrupt, show_progress, &NoHooks)
}

/// Code that runs at fixed points of a training, so that the loop stays small and a method
/// brings its own (fast-reid's `HookBase`): a term added to every step's loss, work after each
/// epoch. Every point has a default that does nothing.
pub trait TrainHook {
    /// An extra term of every step's loss (the auto-balanced regulariser).
    fn regularizer(&self) -> Option<&crate::Regularizer> {
        None
    }

    /// After every finished epoch (0-based), before its checkpoint: soft pruning zeroes
    /// filters here, so the checkpoint holds what the next epoch starts from.
    fn after_epoch(&self, _net: &ReidNet, _epoch: usize) -> Result<()> {
        Ok(())
    }
}

/// A training with nothing hooked in.
pub struct NoHooks;

impl TrainHook for NoHooks {}

/// [`run_training`] with `hooks` at their points (e.g. a training-time pruning method's).
pub fn run_training_with(
    cfg: &RunConfig,
    resume: bool,
    interrupt: Arc<AtomicBool>,
    show_progress: bool,
    hooks: &dyn TrainHook,
) -> Result<TrainOutcome> {
    // What is recorded (config.toml) and compared on resume is the run as it happens.
    let cfg = &cfg.resolve()?;
    let device = reid_model::device::open_device(cfg.device)?;
    let (h, w) = cfg.input.hw();
    let ds = load(&cfg.dataset, &cfg.root).with_context(|| {
        format!(
            "loading dataset {} from {}",
            cfg.dataset,
            cfg.root.display()
        )
    })?;
    if ds.train.is_empty() {
        bail!("{}: the training split is empty", ds.root.display());
    }
    if cfg.evaluate && cfg.train.task == Task::Reid {
        // named before any training, not after hours of it
        for (split, items) in [("query", &ds.query), ("gallery", &ds.gallery)] {
            if items.is_empty() {
                bail!(
                    "{}: the {split} split is empty, so the run could not be evaluated after \
                     training (set evaluate = false to train without evaluation)",
                    ds.root.display()
                );
            }
        }
    }
    let num_classes = ds.num_train_pids();
    let data = DataStamp::of(&ds)?;
    let sampling = match cfg.train.task {
        Task::Reid => {
            let (p, k) = (cfg.batch_pk.p, cfg.batch_pk.k);
            Sampling::IdentityPk { p, k }
        }
        Task::Classify => Sampling::Shuffled {
            batch: cfg.batch_size,
        },
    };
    if cfg.train.task == Task::Reid && cfg.batch_pk.p > num_classes {
        bail!(
            "batch_pk = {} (--batch-pk): P = {} identities a batch, but {} has {num_classes} \
             training identities; use P ≤ {num_classes}",
            cfg.batch_pk,
            cfg.batch_pk.p,
            ds.root.display()
        );
    }
    let out = &cfg.out;
    let folder = reid_run::RunFolder::new(out);
    let state_path = out.join(STATE_FILE);
    let from_state = resume && state_path.is_file();
    if cfg.overwrite {
        // --overwrite must not take away the files this run starts from
        for (flag, input) in [
            ("--init", cfg.init_checkpoint.clone()),
            ("--pretrained", cfg.pretrained.as_ref().map(PathBuf::from)),
        ] {
            if let Some(p) = input.filter(|p| folder.owns(p)) {
                bail!(
                    "{flag} {} is a file of the run in {} that --overwrite replaces: copy it \
                     elsewhere first, or give another --out",
                    p.display(),
                    out.display()
                );
            }
        }
    }
    if resume && !from_state && !cfg.overwrite {
        // a finished run of another kind (a prune, an evaluation) is not a training to continue
        if let Some(f) = ["model.safetensors", "metrics.json"]
            .iter()
            .find(|f| out.join(f).exists())
        {
            bail!(
                "cannot resume {}: it holds a {f} but no training checkpoint ({STATE_FILE}), so \
                 it is not an unfinished training run; pass --overwrite to replace it, or give \
                 another --out",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating run folder {}", out.display()))?;
    // the replaced run waits aside until this one succeeds; an error puts it back
    let replacement = if cfg.overwrite && !from_state {
        Some(folder.begin_replace()?)
    } else {
        None
    };
    let removed = remove_stale_temp_files(out);
    if removed > 0 {
        eprintln!(
            "{}: removed {removed} temporary file(s) left by a killed run",
            out.display()
        );
    }
    // the starting checkpoint's hash: the provenance's parent, and checked on a resume
    let init_sha = cfg
        .init_checkpoint
        .as_deref()
        .map(reid_model::checkpoint::file_sha256)
        .transpose()?;
    // a resume over changed data that the user allowed: recorded in the model's provenance
    let mut data_change: Option<String> = None;
    // what an earlier resume recorded in the provenance, carried on
    let mut carried: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let (net, mut trainer, resumed) = if from_state {
        let (net, trainer, pos, stamp, held) = load_state(out, &cfg.train, &device)?;
        if !cfg.allow_config_change {
            check_same_config(out, cfg, held.config.as_ref())?;
        }
        // whatever the config says, a resume continues the state's network
        let spec = net.spec();
        if spec.name() != cfg.arch
            || spec.width_mult != cfg.width_mult
            || spec.last_stride != cfg.last_stride
        {
            bail!(
                "cannot resume {}: its checkpoint holds a {} at width_mult = {}, last_stride = \
                 {} and this run's config says arch = {}, width_mult = {}, last_stride = {}; a \
                 resume cannot change the network",
                out.display(),
                spec.name(),
                spec.width_mult,
                spec.last_stride,
                cfg.arch,
                cfg.width_mult,
                cfg.last_stride
            );
        }
        // the starting checkpoint replaced since: the recorded parent would not be the start
        if let (Some(ck), Some(was), Some(now)) = (&cfg.init_checkpoint, &held.parent, &init_sha) {
            if now != was {
                bail!(
                    "cannot resume {}: init_checkpoint {} (--init) changed since the run started \
                     from it (sha256 {}… then, {}… now); restore it, or start afresh \
                     (--overwrite)",
                    out.display(),
                    ck.display(),
                    was.get(..12).unwrap_or(was),
                    now.get(..12).unwrap_or(now)
                );
            }
        }
        carried = held.carried;
        if let Some(change) = stamp.as_ref().and_then(|s| s.changes(&data)) {
            if !cfg.allow_data_change {
                bail!(
                    "cannot resume {}: the data under {} changed since its checkpoint ({change}). \
                     Restore the data, start afresh (--overwrite), or continue knowingly \
                     (--allow-data-change; the change is recorded in the model's provenance)",
                    out.display(),
                    cfg.root.display()
                );
            }
            if net.spec().num_classes != num_classes {
                bail!(
                    "cannot resume {}: its classifier has {} classes and the data now has {} \
                     training identities ({change}); a resume cannot change the head: start \
                     afresh (--overwrite)",
                    out.display(),
                    net.spec().num_classes,
                    num_classes
                );
            }
            eprintln!("{}: resuming over changed data ({change})", out.display());
            data_change = Some(change);
        }
        eprintln!(
            "resuming {}: epoch {}/{} at batch {} ({} optimiser steps done)",
            out.display(),
            (pos.epoch + 1).min(cfg.train.epochs.max(1)),
            cfg.train.epochs,
            pos.batch,
            trainer.optimizer.step_count
        );
        trim_log(&out.join("log.jsonl"), pos.epoch)?;
        (net, trainer, pos)
    } else {
        if !resume && !cfg.overwrite && reid_run::RunFolder::new(out).holds_run() {
            bail!(
                "{} holds another run (config.toml, model or metrics): pass --resume to continue \
                 it, --overwrite to replace it, or give another --out",
                out.display()
            );
        }
        // (a new folder is no news: a grid resumes every step it starts)
        if resume && out.join("log.jsonl").is_file() {
            eprintln!(
                "no checkpoint in {} to resume from: starting fresh",
                out.display()
            );
        }
        // a fresh start: lines of an earlier (replaced or never checkpointed) run go
        trim_log(&out.join("log.jsonl"), 0)?;
        let net = build_net(cfg, num_classes, &device)?;
        let trainer = Trainer::new(&net, cfg.train.clone())?;
        (net, trainer, Position::start_of(0))
    };
    let (start_epoch, start_batch) = (resumed.epoch, resumed.batch);
    if from_state && start_epoch >= cfg.train.epochs {
        if let Some(m) = folder.read_metrics()? {
            // a finished run resumed: nothing to train, and its record stays as it is
            eprintln!(
                "{}: the run is already complete ({} epochs); nothing to do",
                out.display(),
                cfg.train.epochs
            );
            let t = m.train.unwrap_or_default();
            return Ok(TrainOutcome {
                model: out.join("model.safetensors"),
                completed: true,
                epochs: cfg.train.epochs,
                final_loss: t.final_loss.unwrap_or(f64::NAN),
                wall_s: t.wall_s.unwrap_or(0.0),
                metrics: None,
                batches: 0,
            });
        }
    }
    let config_view = serde_json::to_string(&cfg.result_view()?)?;
    let config_text = toml::to_string_pretty(cfg).context("serialising the run config")?;
    write_text_atomic(&out.join("config.toml"), &config_text)?;
    // a fresh run that fails before its first checkpoint takes its config.toml and log back, so
    // that the corrected rerun is not refused as "holds another run"
    let fresh = FreshStart {
        out,
        armed: !from_state,
    };
    let mut prov = Provenance::new();
    prov.dataset = Some(ds.name.clone());
    prov.seed = Some(cfg.seed);
    prov.input = Some(cfg.input);
    prov.source_weights = cfg.pretrained.clone();
    prov.extra.extend(carried);
    if let Some(change) = &data_change {
        // every allowed change stays on record, in order
        let entry = serde_json::json!({ "change": change, "fingerprint": data.fingerprint });
        let all = match prov.extra.remove(DATA_CHANGES) {
            Some(serde_json::Value::Array(mut earlier)) => {
                earlier.push(entry);
                serde_json::Value::Array(earlier)
            }
            Some(earlier) => serde_json::Value::Array(vec![earlier, entry]),
            None => entry,
        };
        prov.extra.insert(DATA_CHANGES.into(), all);
    }
    prov.parent = init_sha;
    if from_state {
        // model.safetensors is written after the trainer state: a run that died between the
        // two left an older model. It is the state's network, so it is written again from it.
        let mut p = prov.clone();
        p.epoch = Some(resumed.epoch);
        save_checkpoint(&net, &out.join("model.safetensors"), &p)?;
    }

    let pre = Preprocess::imagenet(h, w);
    let train = Arc::new(ds.train.clone());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("log.jsonl"))
        .with_context(|| format!("opening {}", out.join("log.jsonl").display()))?;
    let started = Instant::now();
    let mut last_save = Instant::now();
    let epochs = cfg.train.epochs;
    let mut batches_done = 0usize;
    let mut final_loss = f64::NAN;
    // the epochs this process ran whole, for the time left
    let (mut timed_epochs, mut timed_s) = (0usize, 0.0f64);
    for epoch in start_epoch..epochs {
        let lr = cfg.train.schedule.lr(epoch, epochs);
        let plan = epoch_batches(&train, sampling, cfg.seed, epoch)?;
        let first = if epoch == start_epoch { start_batch } else { 0 };
        let total = plan.len();
        let pb = if show_progress {
            ProgressBar::new(total as u64)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")?
                .progress_chars("=> "),
        );
        pb.set_prefix(format!("{}/{epochs}", epoch + 1));
        pb.set_position(first as u64);
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut images, mut steps) = if epoch == start_epoch {
            (
                resumed.loss_sum,
                resumed.correct,
                resumed.images,
                resumed.steps,
            )
        } else {
            (0.0, 0usize, 0usize, 0usize)
        };
        // Augmentation streams follow the batch's index in the epoch, so a resumed epoch sees
        // exactly the pixels an uninterrupted one would.
        let loader = Prefetcher::start(
            train.clone(),
            plan,
            first,
            pre,
            cfg.augment,
            cfg.seed,
            epoch,
            3,
        );
        for (i, batch) in loader.enumerate() {
            let b = first + i;
            let batch = batch?;
            let x = Tensor::from_vec(
                batch.images,
                (batch.len, 3, batch.height, batch.width),
                &device,
            )?;
            let s = trainer
                .step(&net, &x, &batch.pids, lr, hooks.regularizer())
                .with_context(|| {
                    // only a checkpoint that exists is promised
                    let kept = if state_path.is_file() {
                        format!("last good checkpoint kept in {}", out.display())
                    } else {
                        "no checkpoint was written yet".to_string()
                    };
                    format!("epoch {} batch {}: {kept}", epoch + 1, b + 1)
                })?;
            loss_sum += s.loss;
            correct += s.correct;
            images += s.images;
            steps += 1;
            batches_done += 1;
            final_loss = s.loss;
            pb.set_message(format!(
                "loss {:.3} acc {:.1}% {:.1} img/s",
                loss_sum / steps as f64,
                100.0 * correct as f64 / images.max(1) as f64,
                images as f64 / t0.elapsed().as_secs_f64()
            ));
            pb.inc(1);
            let position = Position {
                epoch,
                batch: b + 1,
                loss_sum,
                correct,
                images,
                steps,
            };
            let stop = interrupt.load(Ordering::SeqCst)
                || cfg.stop_after_batches.is_some_and(|n| batches_done >= n);
            if !stop
                && b + 1 < total
                && last_save.elapsed().as_secs_f64() >= cfg.checkpoint_interval_s
            {
                save_state(out, &net, &trainer, &prov, &data, &config_view, position)?;
                last_save = Instant::now();
            }
            if stop && b + 1 < total {
                pb.abandon();
                save_state(out, &net, &trainer, &prov, &data, &config_view, position)?;
                keep_aside(replacement, out);
                return Ok(TrainOutcome {
                    model: out.join("model.safetensors"),
                    completed: false,
                    epochs: epoch,
                    final_loss,
                    wall_s: started.elapsed().as_secs_f64(),
                    metrics: None,
                    batches: batches_done,
                });
            }
        }
        pb.finish_and_clear();
        let wall = t0.elapsed().as_secs_f64();
        let line = serde_json::json!({
            "epoch": epoch + 1, "lr": lr, "loss": loss_sum / steps.max(1) as f64,
            "accuracy": correct as f64 / images.max(1) as f64, "images_per_s": images as f64 / wall, "wall_s": wall,
        });
        writeln!(log, "{line}").with_context(|| "writing log.jsonl")?;
        hooks.after_epoch(&net, epoch)?;
        save_state(
            out,
            &net,
            &trainer,
            &prov,
            &data,
            &config_view,
            Position::start_of(epoch + 1),
        )?;
        last_save = Instant::now();
        if show_progress {
            timed_epochs += 1;
            timed_s += wall;
            let left = timed_s / timed_epochs as f64 * (epochs - epoch - 1) as f64;
            eprintln!(
                "{}",
                epoch_line(
                    (epoch + 1, epochs),
                    lr,
                    loss_sum / steps.max(1) as f64,
                    correct as f64 / images.max(1) as f64,
                    images as f64 / wall,
                    wall,
                    left,
                )
            );
        }
        let stop = interrupt.load(Ordering::SeqCst)
            || cfg.stop_after_batches.is_some_and(|n| batches_done >= n);
        if stop && epoch + 1 < epochs {
            keep_aside(replacement, out);
            return Ok(TrainOutcome {
                model: out.join("model.safetensors"),
                completed: false,
                epochs: epoch + 1,
                final_loss,
                wall_s: started.elapsed().as_secs_f64(),
                metrics: None,
                batches: batches_done,
            });
        }
    }
    if !out.join("model.safetensors").is_file() {
        // zero epochs (e.g. ImageNet weights used as they are): the run's model is the start
        save_state(
            out,
            &net,
            &trainer,
            &prov,
            &data,
            &config_view,
            Position::start_of(epochs),
        )?;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let metrics = if cfg.evaluate && cfg.train.task == Task::Reid {
        Some(evaluate_on(&net, &ds, &pre, show_progress)?)
    } else {
        None
    };
    let c = complexity(net.spec(), h, w)?;
    reid_run::RunFolder::new(out).write_metrics(&reid_run::RunMetrics {
        experiment: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        backbone: net.spec().name(),
        macs: c.backbone.macs,
        params: c.backbone.params,
        train: Some(reid_run::TrainSummary {
            epochs: Some(epochs as u64),
            wall_s: Some(wall_s),
            final_loss: Some(final_loss).filter(|l| l.is_finite()),
        }),
        eval: metrics
            .iter()
            .map(|m| (ds.name.clone(), m.eval_entry()))
            .collect(),
        tool_version: Some(env!("CARGO_PKG_VERSION").into()),
        // what it trained on, by content: `reid-eval` tells that data from other data under
        // the same name whatever path it is given by
        data: data
            .fingerprint
            .iter()
            .map(|f| (reid_run::metrics::TRAIN_DATA.to_string(), f.clone()))
            .collect(),
        ..Default::default()
    })?;
    // this model's per-query results only: none of an earlier model's under other labels
    reid_run::RunFolder::new(out).reset_per_query()?;
    if let Some(m) = &metrics {
        let run = reid_run::RunFolder::new(out);
        run.write_per_query(&ds.name, &m.per_query)?;
        run.write_ranks(&ds.name, &reid_eval::dataset_eval::ranks_of(m, &ds))?;
    }
    commit(replacement, out)?;
    drop(fresh);
    Ok(TrainOutcome {
        model: out.join("model.safetensors"),
        completed: true,
        epochs,
        final_loss,
        wall_s,
        metrics,
        batches: batches_done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An input the network cannot train on is refused by the config's check, naming the flag
    /// (it failed at the first batch, after the run folder was claimed).
    #[test]
    fn an_input_too_small_to_train_is_refused_by_the_config_check() {
        let rc = RunConfig {
            input: reid_run::InputSize::new(32, 16),
            ..RunConfig::default()
        };
        let e = format!("{:#}", rc.validate().unwrap_err());
        assert!(e.contains("--input") && e.contains("too small"), "{e}");
        let ok = RunConfig {
            input: reid_run::InputSize::new(64, 32),
            ..RunConfig::default()
        };
        ok.validate().unwrap();
    }

    /// A person reads the epoch line: 4 significant digits, accuracy in %, the time left
    /// (none after the last epoch), not 17-digit JSON floats.
    #[test]
    fn epoch_lines_and_clocks_read_at_a_glance() {
        assert_eq!(clock(0.4), "0:00");
        assert_eq!(clock(75.0), "1:15");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(f64::NAN), "0:00");
        assert_eq!(
            epoch_line(
                (3, 10),
                1e-3,
                3.2136929750442507,
                0.55625,
                280.4964487010809,
                1.140834408,
                8.2
            ),
            "epoch 3/10: loss 3.214, accuracy 55.6 %, 280.5 img/s, lr 1.00e-3, 1.141 s, ~0:08 left"
        );
        assert_eq!(
            epoch_line((10, 10), 3.5e-4, 0.5, 1.0, 99.6, 2.0, 0.0),
            "epoch 10/10: loss 0.5000, accuracy 100.0 %, 99.60 img/s, lr 3.50e-4, 2.000 s"
        );
        // no number of an epoch line shows more than 4 significant digits, whatever its size
        for (x, want) in [
            (12.3456, "12.35"),
            (1234.56, "1235"),
            (98765.4, "98770"),
            (0.012345, "0.01235"),
        ] {
            assert_eq!(significant(x), want);
        }
    }
}
