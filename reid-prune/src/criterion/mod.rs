//! Channel-importance criteria (Torch-Pruning style: a criterion only scores; strategies decide
//! how many and where; surgery removes). Each criterion is one small type; higher = more important.

pub mod entropy;
pub mod fpgm;
pub mod lamp;
pub mod magnitude;
pub mod random;
pub mod taylor;

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use reid_model::{PrunableConv, ReidNet};

use crate::error::{PruneError, Result};

/// Per prunable conv (by name), one score per output channel.
pub type ChannelScores = BTreeMap<String, Vec<f64>>;

/// Data for feature-map criteria: image batches and, for loss-based criteria, their labels
/// (indices into the network's classifier).
#[derive(Clone, Debug, Default)]
pub struct ScoreData {
    pub batches: Vec<(Tensor, Option<Tensor>)>,
}

impl ScoreData {
    /// The data a data-driven criterion `name` needs, or the error saying so.
    pub fn required<'a>(data: Option<&'a ScoreData>, name: &str) -> Result<&'a ScoreData> {
        data.filter(|d| !d.batches.is_empty()).ok_or_else(|| {
            PruneError::Request(format!("{name} needs data: give a batch or a dataset"))
        })
    }
}

pub trait Criterion: Send + Sync {
    fn name(&self) -> &'static str;

    /// Whether [`Criterion::scores`] needs [`ScoreData`].
    fn needs_data(&self) -> bool {
        false
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        data: Option<&ScoreData>,
    ) -> Result<ChannelScores>;
}

/// A registered criterion: its name, what it is, and how it is built.
pub struct CriterionEntry {
    pub name: &'static str,
    pub about: &'static str,
    pub build: fn(seed: u64) -> Box<dyn Criterion>,
}

impl CriterionEntry {
    pub fn needs_data(&self) -> bool {
        (self.build)(0).needs_data()
    }
}

/// Every criterion. A new criterion is one file with its type and one line here; it is then a
/// pruning method too ([`crate::method::methods`]).
pub const CRITERIA: &[CriterionEntry] = &[
    CriterionEntry {
        name: "l1",
        about: "Li et al.: sum of |W_c|",
        build: |_| Box::new(magnitude::L1),
    },
    CriterionEntry {
        name: "l2",
        about: "sqrt(sum W_c^2)",
        build: |_| Box::new(magnitude::L2),
    },
    CriterionEntry {
        name: "fpgm",
        about: "He et al.: summed distance to the layer's other filters",
        build: |_| Box::new(fpgm::Fpgm),
    },
    CriterionEntry {
        name: "bn-gamma",
        about: "|gamma| of the BN after the conv (network slimming)",
        build: |_| Box::new(magnitude::BnGamma),
    },
    CriterionEntry {
        name: "taylor",
        about: "Molchanov et al.: |mean_hw(dL/dH * H)| averaged over images (needs data)",
        build: |_| Box::new(taylor::Taylor),
    },
    CriterionEntry {
        name: "entropy",
        about: "Luo & Wu: entropy of the channel's pooled activation over images (needs data)",
        build: |_| Box::new(entropy::Entropy::default()),
    },
    CriterionEntry {
        name: "random",
        about: "seeded random scores (control)",
        build: |seed| Box::new(random::Random { seed }),
    },
    CriterionEntry {
        name: "lamp",
        about: "Lee et al.: layer-adaptive magnitude, |W_c|^2 over the sum for the filters at least as large",
        build: |_| Box::new(lamp::Lamp),
    },
];

/// A criterion's registry entry by name.
pub fn criterion_entry(name: &str) -> Option<&'static CriterionEntry> {
    CRITERIA.iter().find(|c| c.name == name)
}

/// The criterion that ranks channels for the method `name` (for a training-time method, its
/// ranking rule: L1 for auto-balanced, L2 for psfp; see [`crate::method`]).
pub fn by_name(name: &str, seed: u64) -> Result<Box<dyn Criterion>> {
    let m = crate::method::method(name)?;
    Ok((m.criterion().build)(seed))
}

/// What scores each residual group's channels: weight criteria score the convs that write
/// into the stream (the stem or downsample, and each block's last conv); data criteria score the
/// stream itself where it is read: the output of every block it runs through (and the stem's
/// pooled output for the first stream), traced as `layerS.B.out` / `stem`.
fn group_members(criterion: &dyn Criterion, net: &ReidNet) -> Vec<(String, Vec<PrunableConv>)> {
    // a stream's projection shortcut is read where the block's output is: not a point of its own
    let shortcuts: std::collections::HashSet<String> = net
        .spec()
        .convs()
        .into_iter()
        .filter(|c| c.role == reid_model::arch::ConvRole::Shortcut)
        .map(|c| c.name)
        .collect();
    net.spec()
        .residual_groups()
        .into_iter()
        .map(|g| {
            let member = |conv: String, bn: String| PrunableConv {
                conv,
                bn,
                consumer: String::new(),
                stage: 0,
                block: 0,
                index: 0,
                width: g.width,
            };
            let members = if criterion.needs_data() {
                g.producers
                    .iter()
                    .filter(|(conv, _)| !shortcuts.contains(conv))
                    .map(|(conv, bn)| {
                        let point = match conv.rsplit_once('.') {
                            Some((block, _)) => format!("{block}.out"),
                            None => "stem".to_string(),
                        };
                        member(point, bn.clone())
                    })
                    .collect()
            } else {
                g.producers
                    .iter()
                    .map(|(conv, bn)| member(conv.clone(), bn.clone()))
                    .collect()
            };
            (g.name, members)
        })
        .collect()
}

/// Each group's score (Torch-Pruning's group importance): the mean of its members' per-layer
/// L2-normalised scores, taken out of `scores`.
fn combine_groups(
    members: &[(String, Vec<PrunableConv>)],
    scores: &mut ChannelScores,
) -> Result<ChannelScores> {
    let mut out = ChannelScores::new();
    for (name, m) in members {
        let mut per = ChannelScores::new();
        for x in m {
            let v = scores.remove(&x.conv).ok_or_else(|| {
                PruneError::Request(format!("no scores for {} of group {name}", x.conv))
            })?;
            per.insert(x.conv.clone(), v);
        }
        taylor::l2_normalise(&mut per);
        let width = m.first().map(|x| x.width).unwrap_or(0);
        let mut mean = vec![0.0; width];
        for v in per.values() {
            for (a, x) in mean.iter_mut().zip(v) {
                *a += x / m.len() as f64;
            }
        }
        out.insert(name.clone(), mean);
    }
    Ok(out)
}

/// Scores of every residual group's channels (see [`group_members`] for what is scored).
pub fn group_scores(
    criterion: &dyn Criterion,
    net: &ReidNet,
    data: Option<&ScoreData>,
) -> Result<ChannelScores> {
    let members = group_members(criterion, net);
    let all: Vec<PrunableConv> = members.iter().flat_map(|(_, m)| m.clone()).collect();
    let mut scores = criterion.scores(net, &all, data)?;
    combine_groups(&members, &mut scores)
}

/// The prunable convs' scores and, with `groups`, the residual groups' scores, from one
/// criterion call (one pass over the data for data criteria).
pub fn branch_and_group_scores(
    criterion: &dyn Criterion,
    net: &ReidNet,
    data: Option<&ScoreData>,
    groups: bool,
) -> Result<(ChannelScores, Option<ChannelScores>)> {
    let mut layers = net.prunable_convs();
    if !groups {
        return Ok((criterion.scores(net, &layers, data)?, None));
    }
    let members = group_members(criterion, net);
    layers.extend(members.iter().flat_map(|(_, m)| m.clone()));
    let mut scores = criterion.scores(net, &layers, data)?;
    let g = combine_groups(&members, &mut scores)?;
    Ok((scores, Some(g)))
}

/// Output filters of a conv as f64 rows [out, in·k·k].
pub(crate) fn filters(net: &ReidNet, conv: &str) -> Result<(usize, Vec<f64>)> {
    let unit = net
        .conv_unit(conv)
        .ok_or_else(|| PruneError::Request(format!("no conv named '{conv}' in this network")))?;
    let w = &unit.conv.weight;
    let out = w.dim(0)?;
    Ok((out, w.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?))
}

/// Indices sorted by ascending score; ties by lower index (numpy's stable argsort).
pub fn rank_ascending(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx
}
