//! `reid-prune prune`: remove channels for real (once or iteratively, retraining) into a run folder.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint, or torchvision/timm weights with --arch.
    #[arg(long)]
    checkpoint: PathBuf,
    /// For plain torchvision/timm weights: the architecture they hold (checked).
    #[arg(long)]
    arch: Option<String>,
    /// The pruning method: a criterion (cut, then retrain) or a training-time method.
    #[arg(long, value_parser = super::method_values())]
    criterion: String,
    /// Fraction of the target to remove, in (0, 1): 0.5 halves the FLOPs.
    #[arg(long, default_value_t = 0.5)]
    level: f64,
    /// What the level is a fraction of.
    #[arg(long, value_enum, default_value = "flops")]
    target: reid_prune::strategy::TargetKind,
    /// layerwise: the same rate in every layer (the paper's); global: one ranking across layers.
    #[arg(long, value_enum, default_value = "layerwise")]
    allocation: reid_prune::strategy::Allocation,
    /// Minimum kept fraction of each layer's width.
    #[arg(long, default_value_t = 1.0 / 16.0)]
    floor: f64,
    /// Keep every layer's width a multiple of this (layerwise allocation): 8 or 16 suit the
    /// channel blocking of ONNX Runtime, oneDNN and tensor cores; 1 keeps any width.
    #[arg(long, default_value_t = 1)]
    round_to: usize,
    /// Also prune the residual streams (each stage's block outputs with its downsample and
    /// every reader), not only the convs inside the blocks.
    #[arg(long)]
    residual_groups: bool,
    /// Input HEIGHTxWIDTH the FLOPs are counted at (and data is scored at).
    #[arg(long, default_value = "256x128")]
    input: reid_run::InputSize,
    /// Dataset for data-driven criteria and retraining.
    #[arg(long)]
    dataset: Option<String>,
    /// The dataset's folder.
    #[arg(long)]
    root: Option<PathBuf>,
    /// A batch file (tensors x, labels) for data-driven criteria.
    #[arg(long)]
    batch: Option<PathBuf>,
    /// Iterative pruning: remove the level in steps of this size (e.g. 0.05).
    #[arg(long)]
    step: Option<f64>,
    /// Retraining epochs after each cut (needs --dataset and --root).
    #[arg(long, default_value_t = 0)]
    retrain_epochs: usize,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
    /// Seed of the random criterion, scoring images and retraining.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The run folder to write (not the checkpoint's own folder).
    #[arg(long)]
    out: PathBuf,
    /// Replace the run `--out` already holds (refused otherwise).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = reid_prune::prune_run::PruneConfig {
        checkpoint: a.checkpoint,
        arch: a.arch,
        criterion: a.criterion,
        level: a.level,
        target: a.target,
        allocation: a.allocation,
        floor: a.floor,
        round_to: a.round_to,
        residual_groups: a.residual_groups,
        input: a.input,
        dataset: a.dataset,
        root: a.root,
        batch: a.batch,
        step: a.step,
        retrain_epochs: a.retrain_epochs,
        device: a.device,
        seed: a.seed,
        out: a.out,
        overwrite: a.overwrite,
        ..Default::default()
    };
    let o = reid_prune::prune_run::run_prune(&cfg, true)?;
    println!(
        "backbone GFLOPs {:.3} -> {:.3} ({:.1}%), params {:.2} M -> {:.2} M, {:.1}% of prunable channels kept",
        2.0 * o.macs_before as f64 / 1e9,
        2.0 * o.macs_after as f64 / 1e9,
        100.0 * o.macs_after as f64 / o.macs_before as f64,
        o.params_before as f64 / 1e6,
        o.params_after as f64 / 1e6,
        100.0 * o.kept_channel_fraction
    );
    println!("pruned model: {}", o.model.display());
    Ok(())
}
