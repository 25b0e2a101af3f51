//! Evaluate a network on a dataset's query/gallery split: extract, then CMC / mAP / mINP.

use anyhow::{ensure, Result};
use reid_data::datasets::{ReidDataset, Sample};
use reid_data::Preprocess;
use reid_model::ReidNet;

use crate::distance::{evaluate_features, Metric};
use crate::extract::{extract_features_with, FeatureKind};
use crate::metrics::{evaluate_distmat, ApKind, Labels, Metrics, DEFAULT_MAX_RANK};
use crate::rerank::{rerank_features, RerankParams};

/// How features are taken and compared.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    pub feature: FeatureKind,
    pub flip: bool,
    pub metric: Metric,
    /// k-reciprocal re-ranking of the query × gallery distances.
    pub rerank: Option<RerankParams>,
}

impl Default for EvalOptions {
    /// BNNeck feature, cosine distance (Bag of Tricks' test setting).
    fn default() -> Self {
        Self {
            feature: FeatureKind::Neck,
            flip: false,
            metric: Metric::Cosine,
            rerank: None,
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
    evaluate_query_gallery(
        &qf,
        &gf,
        &labels,
        opts.metric,
        opts.rerank,
        DEFAULT_MAX_RANK,
        ApKind::Exact,
    )
}

/// Query/gallery features evaluated blockwise, or through re-ranking when asked.
pub fn evaluate_query_gallery(
    qf: &candle_core::Tensor,
    gf: &candle_core::Tensor,
    labels: &Labels,
    metric: Metric,
    rerank: Option<RerankParams>,
    max_rank: usize,
    ap_kind: ApKind,
) -> Result<Metrics> {
    labels.validate()?;
    Ok(match rerank {
        None => evaluate_features(qf, gf, labels, metric, max_rank, ap_kind, 512)?,
        Some(p) => {
            ensure!(
                qf.dim(0)? == labels.q_pids.len() && gf.dim(0)? == labels.g_pids.len(),
                "{} query / {} gallery features but {} / {} pids",
                qf.dim(0)?,
                gf.dim(0)?,
                labels.q_pids.len(),
                labels.g_pids.len()
            );
            let dist = rerank_features(qf, gf, metric, p, 1024)?;
            evaluate_distmat(&dist, labels, max_rank, ap_kind)?.0
        }
    })
}

/// The ranked lists of an evaluation of `ds` ([`Metrics::top`]), its images named relative to
/// the dataset's root (the folder a report finds them under again).
pub fn ranks_of(m: &Metrics, ds: &ReidDataset) -> reid_run::ranks::Ranks {
    let name = |s: &Sample| {
        s.path
            .strip_prefix(&ds.root)
            .unwrap_or(&s.path)
            .to_string_lossy()
            .into_owned()
    };
    let gallery: Vec<String> = ds.gallery.iter().map(name).collect();
    reid_run::ranks::Ranks::from_indices(
        |j| (gallery[j].as_str(), ds.gallery[j].pid),
        m.valid_queries.iter().zip(&m.top).map(|(&i, top)| {
            let q = &ds.query[i];
            (name(q), q.pid, top.clone())
        }),
    )
}
