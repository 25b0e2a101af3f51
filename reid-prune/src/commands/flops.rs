//! `reid-prune flops`: MACs, FLOPs and parameters, per layer and in total.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use reid_model::complexity::complexity;
use reid_model::{ArchSpec, Neck};
use reid_prune::flops;

/// MACs, FLOPs and parameters of an architecture or checkpoint, per layer and in total.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// resnet18, resnet34, resnet50, resnet101 or resnet152.
    #[arg(long, default_value = "resnet50", conflicts_with = "checkpoint")]
    arch: String,
    /// A reid-prune checkpoint or torchvision/timm weights (the architecture is read from the file).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Input HEIGHTxWIDTH.
    #[arg(long, default_value = "256x128")]
    input: reid_run::InputSize,
    /// Width multiplier for --arch.
    #[arg(long, default_value_t = 1.0, conflicts_with = "checkpoint")]
    width_mult: f64,
    /// Classifier outputs for --arch (0 = feature extractor only).
    #[arg(long, default_value_t = 0, conflicts_with = "checkpoint")]
    num_classes: usize,
    /// Last stride for --arch (1 or 2).
    #[arg(long, default_value_t = 1, conflicts_with = "checkpoint")]
    last_stride: usize,
    /// Print one row per layer.
    #[arg(long)]
    layers: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        arch,
        checkpoint,
        input,
        width_mult,
        num_classes,
        last_stride,
        layers,
        json,
    } = a;
    if num_classes > 1_000_000 {
        bail!("--num-classes {num_classes}: at most 1000000 classifier outputs");
    }
    let (h, w) = input.hw();
    let spec = match &checkpoint {
        // a reid checkpoint or plain torchvision/timm weights (their architecture inferred)
        Some(p) => reid_prune::prune_run::load_any(p, None, &Device::Cpu)
            .with_context(|| format!("reading checkpoint {}", p.display()))?
            .0
            .spec()
            .clone(),
        None => {
            let depth = ArchSpec::from_name(&arch, 0)?.depth;
            ArchSpec::resnet_with(depth, num_classes, width_mult, last_stride, Neck::BnNeck)?
        }
    };
    let c = complexity(&spec, h, w)?;
    if checkpoint.is_some() && !json {
        print!("{}", flops::render_widths(&spec)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&flops::to_json(&c))?);
    } else {
        print!("{}", flops::render(&c, layers));
    }
    Ok(())
}
