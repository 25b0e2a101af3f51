//! How many channels to remove and where: a [`PrunePlan`] from channel scores, a target
//! (fraction of channels, FLOPs or parameters removed) and an allocation rule.

use std::collections::BTreeMap;

use reid_model::complexity::complexity;
use reid_model::ArchSpec;
use serde::{Deserialize, Serialize};

use crate::criterion::{taylor::l2_normalise, ChannelScores};
use crate::error::{PruneError, Result};

/// What the level is a fraction of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Prunable channels.
    Channels,
    /// Backbone FLOPs at the input size.
    Flops,
    /// Backbone parameters.
    Params,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// The same rate in every prunable layer (the paper's).
    Layerwise,
    /// One ranking across layers on per-layer L2-normalised scores (Molchanov).
    Global,
}

/// Remove at least `level` (in (0, 1)) of `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneTarget {
    pub kind: TargetKind,
    pub level: f64,
    pub allocation: Allocation,
    /// A layer keeps at least this fraction of its original width (and at least 1 channel).
    pub floor: f64,
    /// Input height and width for FLOPs.
    pub input: (usize, usize),
}

impl PruneTarget {
    pub fn validate(&self) -> Result<()> {
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(PruneError::Request(format!(
                "level {} must be in (0, 1): the fraction of {:?} to remove",
                self.level, self.kind
            )));
        }
        if !(0.0..1.0).contains(&self.floor) {
            return Err(PruneError::Request(format!(
                "floor {} must be in [0, 1)",
                self.floor
            )));
        }
        Ok(())
    }
}

/// Channels kept per prunable conv (sorted indices into the current widths).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    pub keep: BTreeMap<String, Vec<usize>>,
}

impl PrunePlan {
    pub fn widths(&self) -> Vec<(String, usize)> {
        self.keep
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
}

/// The quantity the target counts, for a spec.
fn measure(spec: &ArchSpec, kind: TargetKind, input: (usize, usize)) -> Result<f64> {
    Ok(match kind {
        TargetKind::Channels => spec.prunable_convs().iter().map(|p| p.width as f64).sum(),
        TargetKind::Flops => complexity(spec, input.0, input.1)?.backbone.macs as f64,
        TargetKind::Params => complexity(spec, input.0, input.1)?.backbone.params as f64,
    })
}

/// Keep the `n` highest-scored channels (ties: lower index kept first, as a stable ascending rank
/// removes the lower-scored, lower-index channel first).
pub fn top_channels(scores: &[f64], n: usize) -> Vec<usize> {
    let order = crate::criterion::rank_ascending(scores);
    let mut keep: Vec<usize> = order[order.len() - n..].to_vec();
    keep.sort_unstable();
    keep
}

/// Plan the removal. `base` is the reference the level is measured against (the unpruned spec
/// for iterative pruning; `spec` itself otherwise).
pub fn plan(
    spec: &ArchSpec,
    base: &ArchSpec,
    scores: &ChannelScores,
    target: &PruneTarget,
) -> Result<PrunePlan> {
    target.validate()?;
    let layers = spec.prunable_convs();
    let base_widths: BTreeMap<String, usize> = base
        .prunable_convs()
        .into_iter()
        .map(|p| (p.conv, p.width))
        .collect();
    for l in &layers {
        match scores.get(&l.conv) {
            Some(s) if s.len() == l.width => {}
            Some(s) => {
                return Err(PruneError::Request(format!(
                    "{}: {} scores for {} channels",
                    l.conv,
                    s.len(),
                    l.width
                )))
            }
            None => {
                return Err(PruneError::Request(format!(
                    "no scores for layer {}",
                    l.conv
                )))
            }
        }
    }
    let floor = |conv: &str, w: usize| -> usize {
        let b = *base_widths.get(conv).unwrap_or(&w);
        ((b as f64 * target.floor).ceil() as usize).clamp(1, w)
    };
    let reference = measure(base, target.kind, target.input)?;
    let goal = reference * (1.0 - target.level);
    let eval = |widths: &[(String, usize)]| -> Result<f64> {
        measure(&spec.with_conv_widths(widths)?, target.kind, target.input)
    };
    let widths: Vec<(String, usize)> = match target.allocation {
        Allocation::Layerwise => {
            let at = |r: f64| -> Vec<(String, usize)> {
                layers
                    .iter()
                    .map(|l| {
                        let b = base_widths.get(&l.conv).copied().unwrap_or(l.width) as f64;
                        let w = ((b * (1.0 - r)).round() as usize)
                            .clamp(floor(&l.conv, l.width), l.width);
                        (l.conv.clone(), w)
                    })
                    .collect()
            };
            if eval(&at(1.0))? > goal {
                return Err(PruneError::Request(format!(
                    "level {} of {:?} is out of reach: the per-layer floor ({}) keeps {:.1}% of it",
                    target.level,
                    target.kind,
                    target.floor,
                    100.0 * eval(&at(1.0))? / reference
                )));
            }
            let (mut lo, mut hi) = (0.0f64, 1.0f64);
            for _ in 0..40 {
                let mid = 0.5 * (lo + hi);
                if eval(&at(mid))? <= goal {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            at(hi)
        }
        Allocation::Global => {
            let mut normalised = scores.clone();
            l2_normalise(&mut normalised);
            let mut all: Vec<(f64, usize, &str)> = layers
                .iter()
                .flat_map(|l| {
                    normalised[&l.conv]
                        .iter()
                        .enumerate()
                        .map(move |(c, &s)| (s, c, l.conv.as_str()))
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(b.2)).then(a.1.cmp(&b.1)));
            let mut w: BTreeMap<String, usize> =
                layers.iter().map(|l| (l.conv.clone(), l.width)).collect();
            let mut reached = false;
            for (_, _, conv) in all {
                let cur = w[conv];
                if cur <= floor(conv, spec_width(&layers, conv)) {
                    continue;
                }
                *w.get_mut(conv).expect("layer present") = cur - 1;
                let v: Vec<(String, usize)> = w.iter().map(|(k, v)| (k.clone(), *v)).collect();
                if eval(&v)? <= goal {
                    reached = true;
                    break;
                }
            }
            if !reached {
                return Err(PruneError::Request(format!(
                    "level {} of {:?} is out of reach with the per-layer floor {}",
                    target.level, target.kind, target.floor
                )));
            }
            w.into_iter().collect()
        }
    };
    // Within a layer the lowest-scored channels go (global: the same count, by raw score order).
    let keep = widths
        .into_iter()
        .map(|(conv, n)| {
            let k = top_channels(&scores[&conv], n);
            (conv, k)
        })
        .collect();
    Ok(PrunePlan { keep })
}

fn spec_width(layers: &[reid_model::PrunableConv], conv: &str) -> usize {
    layers
        .iter()
        .find(|l| l.conv == conv)
        .map(|l| l.width)
        .unwrap_or(1)
}
