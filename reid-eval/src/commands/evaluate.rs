//! `reid-eval --checkpoint F --dataset NAME --root DIR`: extract, evaluate, merge into metrics.json.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use reid_data::Preprocess;
use reid_eval::{load_model_for_inference, FeatureKind, Metric};

use super::{print_metrics, RerankArgs};

/// `reid-eval --checkpoint F --dataset NAME --root DIR`: extract, evaluate, write metrics.json.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint (or torchvision/timm weights).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Dataset to evaluate on (may differ from the training one: cross-domain).
    #[arg(long)]
    dataset: Option<String>,
    /// The dataset's folder.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Network input HEIGHTxWIDTH.
    #[arg(long, default_value = "256x128")]
    input: reid_run::InputSize,
    /// Add the features of the horizontally flipped image.
    #[arg(long)]
    flip: bool,
    /// The feature to compare: neck (after BNNeck, the default at test time) or pool.
    #[arg(long, value_enum, default_value = "neck")]
    feature: FeatureKind,
    /// Distance between features.
    #[arg(long, value_enum, default_value = "cosine")]
    metric: Metric,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
    /// Where to write metrics.json (default: beside the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print JSON (fractions in [0, 1]) instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    rerank: RerankArgs,
}

/// The metrics.json to merge into, if there is one: it must be a valid one (checked before the
/// long extraction, and never silently replaced); otherwise the error names it.
fn existing_metrics(path: &std::path::Path) -> Result<Option<reid_run::RunMetrics>> {
    if !path.exists() {
        return Ok(None);
    }
    let m = reid_run::metrics::read_metrics(path)
        .context("fix or move it (results are merged into it)")?;
    Ok(Some(m))
}

pub fn run(a: Args) -> Result<()> {
    let (Some(ck), Some(name), Some(root)) = (a.checkpoint, a.dataset, a.root) else {
        bail!("give --checkpoint, --dataset and --root (or a subcommand: extract, score, bench; see --help)");
    };
    let device = reid_model::device::open_device(a.device)?;
    let (h, w) = a.input.hw();
    let net = load_model_for_inference(&ck, None, 2, &device)
        .with_context(|| format!("loading {}", ck.display()))?;
    let ds = reid_data::datasets::load(&name, &root)?;
    let pre = Preprocess::imagenet(h, w);
    let opts = reid_eval::EvalOptions {
        feature: a.feature,
        flip: a.flip,
        metric: a.metric,
        rerank: a.rerank.params(),
    };
    // An existing metrics.json is merged into, so it must be one we can merge into: checked
    // before the (long) extraction, and never silently replaced.
    let out = a.out.unwrap_or_else(|| ck.with_file_name("metrics.json"));
    let existing = existing_metrics(&out)?;
    let m = reid_eval::evaluate_dataset(&net, &ds, &pre, opts, true)?;
    // Re-ranked results sit beside the plain ones, under their own key.
    let key = if a.rerank.rerank {
        format!("{}+rerank", ds.name)
    } else {
        ds.name.clone()
    };
    let mut doc = match existing {
        Some(doc) => doc,
        None => {
            // a new run folder's metrics: the model's complexity at this input
            let c = reid_model::complexity::complexity(net.spec(), h, w)?;
            reid_run::RunMetrics {
                backbone: net.spec().name(),
                macs: c.backbone.macs,
                params: c.backbone.params,
                tool_version: Some(env!("CARGO_PKG_VERSION").into()),
                ..Default::default()
            }
        }
    };
    doc.eval.insert(key.clone(), m.eval_entry());
    reid_run::metrics::write_metrics(&out, &doc)?;
    // per-query results beside it: any interval can be recomputed without the model
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    reid_run::RunFolder::new(folder).write_per_query(&key, &m.per_query)?;
    print_metrics(&m, a.json)?;
    if !a.json {
        println!("metrics -> {}", out.display());
    }
    Ok(())
}
