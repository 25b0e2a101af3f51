//! Weight-magnitude criteria: L1 (Li et al.), L2, and |γ| of the following BN (network slimming).

use candle_core::DType;
use reid_model::{PrunableConv, ReidNet};

use super::{filters, ChannelScores, Criterion};
use crate::error::{PruneError, Result};

fn per_filter(
    net: &ReidNet,
    layers: &[PrunableConv],
    f: impl Fn(&[f64]) -> f64,
) -> Result<ChannelScores> {
    let mut out = ChannelScores::new();
    for l in layers {
        let (n, w) = filters(net, &l.conv)?;
        let d = w.len() / n.max(1);
        out.insert(l.conv.clone(), w.chunks(d).map(&f).collect());
    }
    Ok(out)
}

pub struct L1;

impl Criterion for L1 {
    fn name(&self) -> &'static str {
        "l1"
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&super::ScoreData>,
    ) -> Result<ChannelScores> {
        per_filter(net, layers, |w| w.iter().map(|v| v.abs()).sum())
    }
}

pub struct L2;

impl Criterion for L2 {
    fn name(&self) -> &'static str {
        "l2"
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&super::ScoreData>,
    ) -> Result<ChannelScores> {
        per_filter(net, layers, |w| w.iter().map(|v| v * v).sum::<f64>().sqrt())
    }
}

pub struct BnGamma;

impl Criterion for BnGamma {
    fn name(&self) -> &'static str {
        "bn-gamma"
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&super::ScoreData>,
    ) -> Result<ChannelScores> {
        let mut out = ChannelScores::new();
        for l in layers {
            let unit = net
                .conv_unit(&l.conv)
                .ok_or_else(|| PruneError::Request(format!("no conv named '{}'", l.conv)))?;
            let bn = unit.bn.as_ref().ok_or_else(|| {
                PruneError::Request(format!(
                    "{}: BN is folded into the conv; score the unfolded model",
                    l.conv
                ))
            })?;
            let g: Vec<f64> = bn.weight.to_dtype(DType::F64)?.to_vec1()?;
            out.insert(l.conv.clone(), g.iter().map(|v| v.abs()).collect());
        }
        Ok(out)
    }
}
