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
    /// Layerwise allocation: every kept width a multiple of this (1 = any width). Runtimes
    /// block channels by 8 or 16 (ONNX Runtime's NCHWc, cuDNN's tensor cores), so 38 kept
    /// channels cost as much as 48 there; the level is still reached.
    #[serde(default = "one")]
    pub round_to: usize,
    /// Input height and width for FLOPs.
    pub input: (usize, usize),
}

fn one() -> usize {
    1
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
        if self.round_to == 0 || self.round_to > 256 {
            return Err(PruneError::Request(format!(
                "round_to {}: expected a channel multiple from 1 to 256 (8 or 16 for most runtimes)",
                self.round_to
            )));
        }
        if self.round_to > 1 && self.allocation != Allocation::Layerwise {
            return Err(PruneError::Request(
                "round_to works with the layerwise allocation (global ranking removes single channels)".into(),
            ));
        }
        Ok(())
    }
}

/// Channels kept per prunable conv, and per residual group when those are pruned too (sorted
/// indices into the current widths).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    pub keep: BTreeMap<String, Vec<usize>>,
    /// By [`reid_model::ResidualGroup::name`]; empty in the paper's branch-only mode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Vec<usize>>,
}

impl PrunePlan {
    pub fn widths(&self) -> Vec<(String, usize)> {
        self.keep
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
    pub fn group_widths(&self) -> Vec<(String, usize)> {
        self.groups
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect()
    }
    /// The spec after this plan.
    pub fn apply_to(&self, spec: &ArchSpec) -> Result<ArchSpec> {
        Ok(spec
            .with_conv_widths(&self.widths())?
            .with_group_widths(&self.group_widths())?)
    }
}

/// The quantity the target counts, for a spec.
fn measure(spec: &ArchSpec, kind: TargetKind, input: (usize, usize), groups: bool) -> Result<f64> {
    Ok(match kind {
        TargetKind::Channels => {
            let branch: usize = spec.prunable_convs().iter().map(|p| p.width).sum();
            let residual: usize = if groups {
                spec.residual_groups().iter().map(|g| g.width).sum()
            } else {
                0
            };
            (branch + residual) as f64
        }
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
    plan_with_groups(spec, base, scores, None, target)
}

/// One thing whose width the plan chooses: a branch conv or a residual group.
struct Unit {
    name: String,
    group: bool,
    width: usize,
    base_width: usize,
}

/// [`plan`], with residual groups pruned too when `group_scores` (one score per channel of
/// every [`reid_model::ResidualGroup`], by name) is given: the same rate in every group and
/// layer (layer-wise), or one ranking across all of them (global).
pub fn plan_with_groups(
    spec: &ArchSpec,
    base: &ArchSpec,
    scores: &ChannelScores,
    group_scores: Option<&ChannelScores>,
    target: &PruneTarget,
) -> Result<PrunePlan> {
    target.validate()?;
    let base_branch: BTreeMap<String, usize> = base
        .prunable_convs()
        .into_iter()
        .map(|p| (p.conv, p.width))
        .collect();
    let base_groups: BTreeMap<String, usize> = base
        .residual_groups()
        .into_iter()
        .map(|g| (g.name, g.width))
        .collect();
    let mut units: Vec<Unit> = spec
        .prunable_convs()
        .into_iter()
        .map(|l| Unit {
            base_width: base_branch.get(&l.conv).copied().unwrap_or(l.width),
            name: l.conv,
            group: false,
            width: l.width,
        })
        .collect();
    if group_scores.is_some() {
        units.extend(spec.residual_groups().into_iter().map(|g| Unit {
            base_width: base_groups.get(&g.name).copied().unwrap_or(g.width),
            name: g.name,
            group: true,
            width: g.width,
        }));
    }
    let empty = ChannelScores::new();
    let score_of = |u: &Unit| -> Option<&Vec<f64>> {
        if u.group {
            group_scores.unwrap_or(&empty).get(&u.name)
        } else {
            scores.get(&u.name)
        }
    };
    for u in &units {
        match score_of(u) {
            Some(s) if s.len() == u.width => {}
            Some(s) => {
                return Err(PruneError::Request(format!(
                    "{}: {} scores for {} channels",
                    u.name,
                    s.len(),
                    u.width
                )))
            }
            None => {
                return Err(PruneError::Request(format!(
                    "no scores for {} {}",
                    if u.group { "residual group" } else { "layer" },
                    u.name
                )))
            }
        }
    }
    let with_groups = group_scores.is_some();
    let floor = |u: &Unit| -> usize {
        ((u.base_width as f64 * target.floor).ceil() as usize).clamp(1, u.width)
    };
    let reference = measure(base, target.kind, target.input, with_groups)?;
    let goal = reference * (1.0 - target.level);
    let eval = |widths: &[usize]| -> Result<f64> {
        let (mut branch, mut groups) = (Vec::new(), Vec::new());
        for (u, &w) in units.iter().zip(widths) {
            if u.group { &mut groups } else { &mut branch }.push((u.name.clone(), w));
        }
        let s = spec.with_conv_widths(&branch)?.with_group_widths(&groups)?;
        measure(&s, target.kind, target.input, with_groups)
    };
    let widths: Vec<usize> = match target.allocation {
        Allocation::Layerwise => {
            let at = |r: f64| -> Vec<usize> {
                units
                    .iter()
                    .map(|u| {
                        let m = target.round_to;
                        let kept = u.base_width as f64 * (1.0 - r);
                        // the nearest multiple of m, at least m (or the whole layer if narrower)
                        let rounded = ((kept / m as f64).round() as usize * m).max(m);
                        rounded.clamp(floor(u), u.width)
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
            let mut normalised_groups = group_scores.cloned().unwrap_or_default();
            l2_normalise(&mut normalised_groups);
            let mut all: Vec<(f64, usize, usize)> = units
                .iter()
                .enumerate()
                .flat_map(|(ui, u)| {
                    let s = if u.group {
                        &normalised_groups[&u.name]
                    } else {
                        &normalised[&u.name]
                    };
                    s.iter().enumerate().map(move |(c, &v)| (v, ui, c))
                })
                .collect();
            all.sort_by(|a, b| {
                a.0.total_cmp(&b.0)
                    .then(units[a.1].name.cmp(&units[b.1].name))
                    .then(a.2.cmp(&b.2))
            });
            let mut w: Vec<usize> = units.iter().map(|u| u.width).collect();
            let mut reached = false;
            for (_, ui, _) in all {
                if w[ui] <= floor(&units[ui]) {
                    continue;
                }
                w[ui] -= 1;
                if eval(&w)? <= goal {
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
            w
        }
    };
    // Within a layer or group the lowest-scored channels go.
    let mut plan = PrunePlan::default();
    for (u, n) in units.iter().zip(widths) {
        let keep = top_channels(score_of(u).expect("checked above"), n);
        if u.group {
            plan.groups.insert(u.name.clone(), keep);
        } else {
            plan.keep.insert(u.name.clone(), keep);
        }
    }
    Ok(plan)
}
