//! FPGM (He et al., CVPR 2019), relaxed form: a filter's summed Euclidean distance to the other
//! filters of its layer; the smallest sums are nearest the geometric median (most redundant).

use reid_model::{PrunableConv, ReidNet};

use super::{filters, ChannelScores, Criterion};
use crate::error::Result;

pub struct Fpgm;

/// Σ_c' ‖W_c − W_c'‖₂ for each row of `w` (direct differences in f64, not the Gram shortcut).
pub fn fpgm_scores(n: usize, w: &[f64]) -> Vec<f64> {
    let d = w.len() / n.max(1);
    let rows: Vec<&[f64]> = w.chunks(d).collect();
    let mut dist = vec![0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = rows[i]
                .iter()
                .zip(rows[j])
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            let s = s.sqrt();
            dist[i * n + j] = s;
            dist[j * n + i] = s;
        }
    }
    dist.chunks(n).map(|r| r.iter().sum()).collect()
}

impl Criterion for Fpgm {
    fn name(&self) -> &'static str {
        "fpgm"
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&super::ScoreData>,
    ) -> Result<ChannelScores> {
        let mut out = ChannelScores::new();
        for l in layers {
            let (n, w) = filters(net, &l.conv)?;
            out.insert(l.conv.clone(), fpgm_scores(n, &w));
        }
        Ok(out)
    }
}
