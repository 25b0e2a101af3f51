//! Feature extraction from image folders with a ReidNet (eval mode, BN folded, no autograd graph).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use reid_data::{ImageBatch, Preprocess};
use reid_model::checkpoint::write_atomic;
use reid_model::{load_weights, LoadOptions, ReidNet};

/// Which feature to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureKind {
    /// Global-average-pooled backbone output.
    Pool,
    /// BNNeck output (equals `pool` when the net has no neck).
    Neck,
}

/// Load an eval-only net from a reid checkpoint (architecture in its metadata) or from plain
/// torchvision/timm weights (architecture inferred from tensor shapes; `fc.*` ignored).
/// `arch`, when given, must agree with what the file holds.
pub fn load_model_for_inference(
    weights: &Path,
    arch: Option<&str>,
    last_stride: usize,
    device: &Device,
) -> Result<ReidNet> {
    let opts = LoadOptions::inference(last_stride).expecting(arch);
    Ok(load_weights(weights, &opts, device)?.net)
}

fn progress(len: usize, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Extract one feature row per image (in `paths` order) → [N, D] f32.
pub fn extract_features(
    net: &ReidNet,
    paths: &[PathBuf],
    pre: &Preprocess,
    batch_size: usize,
    kind: FeatureKind,
    show_progress: bool,
) -> Result<Tensor> {
    extract_features_with(net, paths, pre, batch_size, kind, false, show_progress)
}

/// As [`extract_features`]; with `flip`, the feature of the horizontally mirrored image is added
/// (the usual test-time augmentation).
pub fn extract_features_with(
    net: &ReidNet,
    paths: &[PathBuf],
    pre: &Preprocess,
    batch_size: usize,
    kind: FeatureKind,
    flip: bool,
    show_progress: bool,
) -> Result<Tensor> {
    if paths.is_empty() {
        bail!("no images to extract features from");
    }
    // Folding BN into the convs is exact up to rounding and saves a pass per layer.
    let folded;
    let net = if net.is_folded() {
        net
    } else {
        folded = net.fold_bn()?;
        &folded
    };
    let pb = if show_progress {
        progress(paths.len(), "extract")
    } else {
        ProgressBar::hidden()
    };
    let mut rows = Vec::with_capacity(paths.len().div_ceil(batch_size.max(1)));
    for chunk in paths.chunks(batch_size.max(1)) {
        let batch = ImageBatch::load(chunk, pre)?;
        let x = Tensor::from_vec(
            batch.data,
            (batch.len, 3, batch.height, batch.width),
            net.device(),
        )?;
        let pick = |x: &Tensor| -> Result<Tensor> {
            let out = net.forward_t(x, false)?;
            Ok(match kind {
                FeatureKind::Pool => out.pooled,
                FeatureKind::Neck => out.neck,
            })
        };
        let mut f = pick(&x)?;
        if flip {
            let w = batch.width;
            let rev = Tensor::from_vec((0..w as u32).rev().collect::<Vec<_>>(), w, net.device())?;
            f = (f + pick(&x.index_select(&rev, 3)?)?)?;
        }
        // finite weights can still overflow on the way through: a NaN feature would reach
        // the distances (and be blamed there) or a feature file
        let dim = f.dim(1)?;
        let values = f.flatten_all()?.to_vec1::<f32>()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            let bad = values
                .chunks(dim.max(1))
                .filter(|r| r.iter().any(|v| !v.is_finite()));
            bail!(
                "{}: the model's feature is NaN or infinite ({} of this batch's {} images): its \
                 weights overflow on real images (a corrupt or diverged model); nothing was written",
                chunk[i / dim.max(1)].display(),
                bad.count(),
                chunk.len()
            );
        }
        rows.push(f);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Tensor::cat(&rows, 0)?.to_device(&Device::Cpu)?)
}

/// Write `features` [N, D] with the image file names (JSON list) in the metadata; atomic.
pub fn save_features(
    path: &Path,
    features: &Tensor,
    names: &[String],
    kind: FeatureKind,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("files".to_string(), serde_json::to_string(names)?);
    meta.insert(
        "reid.feature".to_string(),
        format!("{kind:?}").to_lowercase(),
    );
    let features = features.contiguous()?;
    let bytes = safetensors::serialize([("features", &features)], Some(meta))
        .with_context(|| format!("serialising features for {}", path.display()))?;
    let bytes = reid_run::canonical::safetensors(bytes)
        .map_err(|e| anyhow::anyhow!("serialising features for {}: {e}", path.display()))?;
    write_atomic(path, &bytes)?;
    Ok(())
}
