//! LAMP (Lee et al., ICLR 2021, "Layer-adaptive sparsity for the magnitude-based pruning"),
//! on filters as Torch-Pruning's `LAMPImportance`: with u the squared L2 norms of a layer's
//! filters in ascending order, filter i scores u_i / Σ_{j ≥ i} u_j. The largest filter of every
//! layer scores 1, so scores compare across layers (global allocation); within one layer the
//! order is the L2 order, so layer-wise allocation cuts what `l2` cuts.

use reid_model::{PrunableConv, ReidNet};

use super::{filters, rank_ascending, ChannelScores, Criterion, ScoreData};
use crate::error::Result;

pub struct Lamp;

/// LAMP scores of one layer from its filters' squared norms.
pub fn lamp_scores(sq_norms: &[f64]) -> Vec<f64> {
    let order = rank_ascending(sq_norms);
    let mut out = vec![0.0; sq_norms.len()];
    let mut tail: f64 = sq_norms.iter().sum();
    for &c in &order {
        out[c] = if tail > 0.0 { sq_norms[c] / tail } else { 0.0 };
        tail -= sq_norms[c];
    }
    out
}

impl Criterion for Lamp {
    fn name(&self) -> &'static str {
        "lamp"
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&ScoreData>,
    ) -> Result<ChannelScores> {
        let mut out = ChannelScores::new();
        for l in layers {
            let (n, w) = filters(net, &l.conv)?;
            let d = w.len() / n.max(1);
            let sq: Vec<f64> = w.chunks(d).map(|f| f.iter().map(|v| v * v).sum()).collect();
            out.insert(l.conv.clone(), lamp_scores(&sq));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_layer() {
        // sorted 1, 2, 4: 1/7, 2/6, 4/4
        let s = lamp_scores(&[1.0, 4.0, 2.0]);
        let want = [1.0 / 7.0, 1.0, 2.0 / 6.0];
        for (a, b) in s.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{s:?}");
        }
        // the order within a layer is the magnitude order
        assert_eq!(rank_ascending(&s), rank_ascending(&[1.0, 4.0, 2.0]));
        assert_eq!(lamp_scores(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
