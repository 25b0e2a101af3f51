//! Evaluate a network on a dataset's query/gallery split: extract, then CMC / mAP / mINP.

use anyhow::{ensure, Result};
use reid_data::datasets::{ReidDataset, Sample};
use reid_data::Preprocess;
use reid_model::ReidNet;

use crate::distance::{evaluate_features, Metric};
use crate::extract::{extract_features_with, FeatureKind};
use crate::metrics::{ApKind, Labels, Metrics, DEFAULT_MAX_RANK};

/// How features are taken and compared.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    pub feature: FeatureKind,
    pub flip: bool,
    pub metric: Metric,
}

impl Default for EvalOptions {
    /// BNNeck feature, cosine distance (Bag of Tricks' test setting).
    fn default() -> Self {
        Self {
            feature: FeatureKind::Neck,
            flip: false,
            metric: Metric::Cosine,
        }
    }
}

/// Query/gallery features of `ds` under `net`, evaluated with the re-ID protocol.
pub fn evaluate_dataset(
    net: &ReidNet,
    ds: &ReidDataset,
    pre: &Preprocess,
    opts: EvalOptions,
    progress: bool,
) -> Result<Metrics> {
    ensure!(
        !ds.query.is_empty() && !ds.gallery.is_empty(),
        "{}: no query/gallery split to evaluate on",
        ds.root.display()
    );
    let paths = |v: &[Sample]| v.iter().map(|s| s.path.clone()).collect::<Vec<_>>();
    let extract = |v: &[Sample]| {
        extract_features_with(net, &paths(v), pre, 64, opts.feature, opts.flip, progress)
    };
    let (qf, gf) = (extract(&ds.query)?, extract(&ds.gallery)?);
    let labels = Labels {
        q_pids: ds.query.iter().map(|s| s.pid).collect(),
        q_camids: ds.query.iter().map(|s| s.camid).collect(),
        g_pids: ds.gallery.iter().map(|s| s.pid).collect(),
        g_camids: ds.gallery.iter().map(|s| s.camid).collect(),
    };
    Ok(evaluate_features(
        &qf,
        &gf,
        &labels,
        opts.metric,
        DEFAULT_MAX_RANK,
        ApKind::Exact,
        512,
    )?)
}
