//! Per-layer sensitivity (issue #39): each prunable conv pruned alone, at several ratios, by a
//! criterion, and the network evaluated without retraining on held-out training identities
//! (never the test split). Which layers lose least is what "prunability" means per layer. The
//! held-out identities are the last of the training split, which the checkpoint may have been
//! trained on: the drop from the unpruned network, not the level, is the measure. The record's
//! types are the contract crate's (`reid_run::sensitivity`); the report shows each as a table.
//! Not yet: a figure and `allocation = "sensitivity"`.

use std::collections::BTreeMap;

use candle_core::Device;
use reid_data::datasets::{ReidDataset, Sample};
use reid_data::Preprocess;
use reid_model::ReidNet;

use crate::error::{refuse, Context, PruneError, Result};
use crate::prune_run::PruneConfig;
use crate::strategy::{top_channels, PrunePlan};

pub use reid_run::sensitivity::{
    LayerSensitivity, Point, Sensitivity, SensitivityConfig, SENSITIVITY_FILE,
};

/// An evaluation split of `ds`'s training images: the last `fraction` of its identities (at
/// least 2), each identity's first image under each camera a query, its other images the
/// gallery. Test images are never read.
pub fn held_out_split(ds: &ReidDataset, fraction: f64) -> Result<(ReidDataset, Vec<i64>)> {
    let mut ids: Vec<i64> = ds.train.iter().map(|s| s.pid).collect();
    ids.sort_unstable();
    ids.dedup();
    let n = ((ids.len() as f64 * fraction).ceil() as usize).max(2);
    if n > ids.len() {
        refuse!(
            "{}: {} training identities; holding out {fraction} of them leaves fewer than 2",
            ds.root.display(),
            ids.len()
        );
    }
    let held: Vec<i64> = ids[ids.len() - n..].to_vec();
    let (mut query, mut gallery): (Vec<Sample>, Vec<Sample>) = (Vec::new(), Vec::new());
    let mut seen = std::collections::BTreeSet::new();
    for s in ds
        .train
        .iter()
        .filter(|s| held.binary_search(&s.pid).is_ok())
    {
        if seen.insert((s.pid, s.camid)) {
            query.push(s.clone());
        } else {
            gallery.push(s.clone());
        }
    }
    Ok((
        ReidDataset {
            name: format!("{} (held-out training identities)", ds.name),
            root: ds.root.clone(),
            train: Vec::new(),
            query,
            gallery,
        },
        held,
    ))
}

fn evaluate(net: &ReidNet, split: &ReidDataset, pre: &Preprocess) -> Result<(f64, f64, usize)> {
    let m = reid_eval::evaluate_dataset(net, split, pre, reid_eval::EvalOptions::default(), false)
        .map_err(crate::error::EngineFailure)
        .context("evaluating on the held-out identities")?;
    Ok((m.rank(1), m.map, m.num_valid_queries))
}

/// Measure every prunable conv of `cfg.checkpoint` at every ratio (`progress` is told each
/// layer as it is done).
pub fn run_sensitivity(
    cfg: &SensitivityConfig,
    mut progress: impl FnMut(&LayerSensitivity),
) -> Result<Sensitivity> {
    if cfg.ratios.is_empty() || cfg.ratios.iter().any(|r| !(*r > 0.0 && *r < 1.0)) {
        refuse!(
            "--ratios {:?}: expected fractions in (0, 1), e.g. 0.25,0.5,0.75",
            cfg.ratios
        );
    }
    if !(cfg.held_out > 0.0 && cfg.held_out < 1.0) {
        refuse!(
            "--held-out {}: expected a fraction of the training identities in (0, 1)",
            cfg.held_out
        );
    }
    cfg.input
        .validate()
        .map_err(|e| PruneError::Request(format!("--input: {e}")))?;
    let method = crate::method::method(&cfg.criterion)?;
    let criterion = (method.criterion().build)(cfg.seed);
    let device = Device::Cpu;
    let (net, _) = crate::prune_run::load_any(&cfg.checkpoint, None, &device)
        .with_context(|| format!("loading {}", cfg.checkpoint.display()))?;
    let ds = reid_data::datasets::load(&cfg.dataset, &cfg.root)?;
    let (split, held_out_ids) = held_out_split(&ds, cfg.held_out)?;
    let (h, w) = cfg.input.hw();
    let pre = Preprocess::imagenet(h, w);
    let data = if criterion.needs_data() {
        let pc = PruneConfig {
            dataset: Some(cfg.dataset.clone()),
            root: Some(cfg.root.clone()),
            input: cfg.input,
            seed: cfg.seed,
            ..PruneConfig::default()
        };
        crate::prune_run::score_data(&pc, &net, &device)?
    } else {
        None
    };
    let (scores, _) =
        crate::criterion::branch_and_group_scores(criterion.as_ref(), &net, data.as_ref(), false)?;
    let inference = net.inference_copy()?;
    let (rank1, map, queries) = evaluate(&inference, &split, &pre)?;
    if queries == 0 {
        refuse!(
            "{}: the held-out identities give no valid query (each needs images under two cameras)",
            cfg.root.display()
        );
    }
    let unpruned = Point {
        ratio: 0.0,
        kept: 0,
        rank1,
        map,
    };
    let mut layers = Vec::new();
    for layer in net.spec().prunable_convs() {
        let s = scores
            .get(&layer.conv)
            .with_context(|| format!("the criterion gave no scores for {}", layer.conv))?;
        let mut points = Vec::new();
        for &ratio in &cfg.ratios {
            let kept = ((layer.width as f64 * (1.0 - ratio)).round() as usize).max(1);
            let plan = PrunePlan {
                keep: BTreeMap::from([(layer.conv.clone(), top_channels(s, kept))]),
                groups: BTreeMap::new(),
            };
            let pruned = crate::surgery::apply(&net, &plan)?.inference_copy()?;
            let (rank1, map, _) = evaluate(&pruned, &split, &pre)?;
            points.push(Point {
                ratio,
                kept,
                rank1,
                map,
            });
        }
        let l = LayerSensitivity {
            conv: layer.conv.clone(),
            width: layer.width,
            points,
        };
        progress(&l);
        layers.push(l);
    }
    Ok(Sensitivity {
        config: cfg.clone(),
        held_out_ids,
        queries,
        unpruned,
        layers,
    })
}
