//! `reid-prune scores`: per-channel importance scores of a model's prunable convs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;

/// Per-channel importance scores of the prunable convs.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint or torchvision/timm weights.
    #[arg(long)]
    weights: PathBuf,
    /// For plain torchvision/timm weights: the architecture they hold (checked).
    #[arg(long)]
    arch: Option<String>,
    /// A criterion, or a training-time method (its ranking criterion is scored).
    #[arg(long, value_parser = super::method_values())]
    criterion: String,
    /// Only this conv (e.g. layer3.2.conv2).
    #[arg(long)]
    layer: Option<String>,
    /// Tensors x (and labels) for data-driven criteria.
    #[arg(long)]
    batch: Option<PathBuf>,
    /// One JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        weights,
        arch,
        criterion,
        layer,
        batch,
        json,
    } = a;
    let (net, _) = reid_prune::prune_run::load_any(&weights, arch.as_deref(), &Device::Cpu)?;
    let net = net.inference_copy()?;
    let mut layers = net.prunable_convs();
    if let Some(l) = &layer {
        layers.retain(|p| &p.conv == l);
        anyhow::ensure!(
            !layers.is_empty(),
            "unknown layer '{l}': give a prunable conv such as layer1.0.conv1"
        );
    }
    let method = reid_prune::method::method(&criterion)?;
    let crit = (method.criterion().build)(0);
    if method.ranks_by != method.name {
        eprintln!(
            "{criterion} acts while retraining; these are the scores it ranks channels by: {}",
            method.ranks_by
        );
    }
    let data = match &batch {
        Some(b) => {
            let f = reid_model::checkpoint::read_safetensors(b, &Device::Cpu)?;
            let x = f
                .tensors
                .get("x")
                .with_context(|| format!("{}: no tensor 'x'", b.display()))?
                .clone();
            Some(reid_prune::criterion::ScoreData {
                batches: vec![(x, f.tensors.get("labels").cloned())],
            })
        }
        None => None,
    };
    if crit.needs_data() && data.is_none() {
        anyhow::bail!(
            "criterion '{criterion}' needs data: give --batch B.safetensors (tensors x and labels)"
        );
    }
    let scores = crit.scores(&net, &layers, data.as_ref())?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "criterion": criterion, "scored_by": method.ranks_by, "layers": scores })
        );
    } else {
        for (l, s) in &scores {
            let order = reid_prune::criterion::rank_ascending(s);
            println!(
                "{l}: {} channels, least important first: {:?}",
                s.len(),
                &order[..order.len().min(8)]
            );
        }
    }
    Ok(())
}
