//! `reid-prune train`: a training run (re-ID or source classification) into a run folder.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A TOML run config (every field optional; see `config.toml` in any run folder).
    #[arg(long)]
    config: Option<PathBuf>,
    /// reid (ID + triplet on P×K batches) or classify (source pre-training).
    #[arg(long, value_enum)]
    task: Option<reid_train::Task>,
    /// Dataset name (market1501, dukemtmc-reid, cuhk03-np, msmt17, imagefolder).
    #[arg(long)]
    dataset: Option<String>,
    /// The dataset's folder.
    #[arg(long)]
    root: Option<PathBuf>,
    /// resnet18, resnet34 or resnet50 (from scratch; with --pretrained, the weights' own by
    /// default, and another one is refused).
    #[arg(long)]
    arch: Option<String>,
    /// Width multiplier of every conv (0.25: a quarter-width network).
    #[arg(long)]
    width_mult: Option<f64>,
    /// HEIGHTxWIDTH
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Base learning rate (train.schedule.base_lr).
    #[arg(long)]
    lr: Option<f64>,
    /// Images a batch for classification (re-ID batches are --batch-pk).
    #[arg(long)]
    batch_size: Option<usize>,
    /// PxK identities x images per batch (re-ID).
    #[arg(long)]
    batch_pk: Option<reid_run::PkBatch>,
    /// Seed of initialisation, sampling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// cpu or cuda:N
    #[arg(long)]
    device: Option<reid_run::DeviceSpec>,
    /// The run folder to write.
    #[arg(long)]
    out: Option<PathBuf>,
    /// ImageNet weights: hub id (timm/resnet50.tv_in1k) or .safetensors path.
    #[arg(long)]
    pretrained: Option<String>,
    /// Start from a reid-prune checkpoint.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue from the run folder's last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Start afresh in a run folder that holds another run (refused otherwise).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Add the center loss on the pooled feature with this weight (Bag of Tricks: 0.0005).
    #[arg(long)]
    center_loss: Option<f64>,
    /// Train the head only (BNNeck and classifier); the backbone's learning rate is 0.
    #[arg(long)]
    freeze_backbone: bool,
    /// With --resume: continue although the config differs from the run folder's config.toml
    /// (refused otherwise, naming the changed fields).
    #[arg(long, requires = "resume")]
    allow_config_change: bool,
    /// With --resume: continue although the dataset changed since the checkpoint (refused
    /// otherwise, naming what changed); recorded in the model's provenance.
    #[arg(long, requires = "resume")]
    allow_data_change: bool,
    /// Checkpoint inside an epoch when this many seconds passed since the last checkpoint
    /// (default 300): a crash in a long epoch loses minutes, not the epoch.
    #[arg(long)]
    checkpoint_interval: Option<f64>,
    /// Any other field of the run config by its TOML path, laid over --config and under the
    /// flags above (repeatable): --set train.schedule.warmup_epochs=5 --set train.augment.erase_p=0
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<reid_prune::config_file::SetOverride>,
}

/// The network fields a starting checkpoint decides (what its `ArchSpec` holds and the run
/// config can also set), each with the flag of [`Args`] that sets it, if any.
const NETWORK_FIELDS: [(&str, Option<&str>); 3] = [
    ("arch", Some("--arch")),
    ("width_mult", Some("--width-mult")),
    ("last_stride", None),
];

/// Where the user gave each network field (the flag, `--set`, or the config file, by the
/// precedence they are applied in); a field given nowhere is absent.
fn network_fields_given(a: &Args, file: Option<&toml::Table>) -> Vec<(&'static str, String)> {
    NETWORK_FIELDS
        .iter()
        .filter_map(|&(field, flag)| {
            let by_flag = match field {
                "arch" => a.arch.is_some(),
                "width_mult" => a.width_mult.is_some(),
                _ => false,
            };
            let source = if by_flag {
                flag.map(str::to_string)
            } else if a.sets.iter().any(|s| s.key() == field) {
                Some(format!("--set {field}"))
            } else if file.is_some_and(|t| t.contains_key(field)) {
                a.config
                    .as_ref()
                    .map(|p| format!("the run config {}", p.display()))
            } else {
                None
            };
            source.map(|s| (field, s))
        })
        .collect()
}

/// A run from a checkpoint trains the checkpoint's network: a network field given explicitly
/// with another value would be recorded beside a network it does not describe, so it is
/// refused naming both values (one given nowhere is taken from the checkpoint).
fn check_against_checkpoint(
    cfg: &reid_train::RunConfig,
    init: &std::path::Path,
    init_source: &str,
    given: &[(&'static str, String)],
) -> Result<()> {
    let held = reid_model::checkpoint::read_arch_spec(init)
        .with_context(|| format!("{init_source} {}", init.display()))?;
    for (field, source) in given {
        let (want, has) = match *field {
            "arch" => {
                let want = reid_model::ArchSpec::from_name(&cfg.arch, 0)
                    .with_context(|| format!("arch = {} ({source})", cfg.arch))?;
                if want.depth == held.depth {
                    continue;
                }
                (cfg.arch.clone(), held.name())
            }
            "width_mult" if cfg.width_mult == held.width_mult => continue,
            "width_mult" => (cfg.width_mult.to_string(), held.width_mult.to_string()),
            "last_stride" if cfg.last_stride == held.last_stride => continue,
            "last_stride" => (cfg.last_stride.to_string(), held.last_stride.to_string()),
            _ => continue,
        };
        anyhow::bail!(
            "{field} = {want} ({source}), but {init_source} {} holds a {} with {field} = {has}: \
             a run from a checkpoint trains the checkpoint's network; leave {field} out (it is \
             taken from the checkpoint) or give {has}",
            init.display(),
            held.name()
        );
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    use reid_train::{run_training, RunConfig};
    let cfg: RunConfig = match &a.config {
        Some(p) => reid_prune::config_file::read_toml(p, "run config")?,
        None => RunConfig::default(),
    };
    // the keys the file names (its bases included), as opposed to defaults
    let file_keys = match &a.config {
        Some(p) => Some(reid_prune::config_file::read_table(p)?),
        None => None,
    };
    let mut cfg = reid_prune::config_file::with_overrides(cfg, &a.sets)?;
    if let Some(v) = a.task {
        cfg.train.task = v;
    }
    if let (Some(init), Some(arch)) = (&a.init, &a.arch) {
        // an explicit --arch must agree with the checkpoint it starts from
        let held = reid_model::checkpoint::read_arch_spec(init)
            .with_context(|| format!("--init {}", init.display()))?;
        reid_model::weights::check_expected_arch(init, arch, &held)?;
    }
    let given = network_fields_given(&a, file_keys.as_ref());
    let arch_from_weights = a.init.is_none()
        && !given
            .iter()
            .any(|(f, _)| *f == "arch" || *f == "width_mult");
    let epochs_given = a.epochs.is_some();
    macro_rules! set {
        ($($f:ident => $field:expr),*) => { $(if let Some(v) = a.$f { $field = v; })* };
    }
    set!(dataset => cfg.dataset, root => cfg.root, arch => cfg.arch, width_mult => cfg.width_mult,
         input => cfg.input, epochs => cfg.train.epochs, batch_pk => cfg.batch_pk, seed => cfg.seed,
         device => cfg.device, out => cfg.out, center_loss => cfg.train.center_loss_weight,
         lr => cfg.train.schedule.base_lr, batch_size => cfg.batch_size,
         checkpoint_interval => cfg.checkpoint_interval_s);
    if a.freeze_backbone {
        cfg.train.backbone_lr_mult = 0.0;
    }
    if arch_from_weights {
        if let Some(src) = &a.pretrained {
            // the network is the weights': record theirs rather than the default
            let held = reid_train::pretrained_arch(src, cfg.last_stride)
                .with_context(|| format!("--pretrained {src}"))?;
            cfg.arch = held.name();
            cfg.width_mult = held.width_mult;
        }
    }
    cfg.allow_config_change = a.allow_config_change;
    cfg.allow_data_change = a.allow_data_change;
    cfg.overwrite = a.overwrite;
    if a.pretrained.is_some() {
        cfg.pretrained = a.pretrained;
    }
    if a.init.is_some() {
        cfg.init_checkpoint = a.init.clone();
    }
    if let Some(init) = &cfg.init_checkpoint {
        let source = if a.init.is_some() {
            "--init"
        } else {
            "init_checkpoint ="
        };
        check_against_checkpoint(&cfg, init, source, &given)?;
    }
    // Zero epochs keep the starting network as it is (ImageNet weights or a checkpoint,
    // evaluated on this dataset); from scratch they would record a random network as trained.
    if cfg.train.epochs == 0 && cfg.pretrained.is_none() && cfg.init_checkpoint.is_none() {
        anyhow::bail!(
            "{} 0: expected at least 1 epoch (0 epochs from scratch would record the random \
             initialisation as the trained model; 0 is for a starting network used as it is, \
             with --pretrained or --init)",
            if epochs_given {
                "--epochs"
            } else {
                "train.epochs ="
            }
        );
    }
    // refused before anything is written, the run folder included
    cfg.resolve()?;
    let interrupt = Arc::new(AtomicBool::new(false));
    super::signals::install(
        interrupt.clone(),
        "saving a checkpoint at the end of this batch",
    )?;
    // one writer a run folder, for the whole command
    let outcome = super::as_folder_writer(&cfg.out, "train", || {
        run_training(&cfg, a.resume, interrupt, true)
    })?;
    if !outcome.completed {
        eprintln!(
            "stopped before the end: checkpoint in {} (continue with --resume)",
            cfg.out.display()
        );
        // an unfinished run is not a success: `train && prune …` must not go on
        std::process::exit(super::signals::exit_status().unwrap_or(1));
    }
    println!(
        "trained {} epochs in {:.1} s; final loss {:.4}",
        outcome.epochs, outcome.wall_s, outcome.final_loss
    );
    if let Some(m) = &outcome.metrics {
        print!("{}", reid_eval::report::table(m));
    }
    println!("run folder: {}", cfg.out.display());
    Ok(())
}
