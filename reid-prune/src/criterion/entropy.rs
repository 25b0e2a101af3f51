//! Entropy criterion (Luo & Wu 2017): v[n, c] = global average pool of H (the post-ReLU BN
//! output) for each image; per channel, the values of all images go into `bins` equal-width bins
//! on [min_c, max_c] (numpy.histogram's edges and rules), and the score is −Σ p ln p.

use candle_core::DType;
use reid_model::{ActivationTrace, PrunableConv, ReidNet};

use super::{ChannelScores, Criterion, ScoreData};
use crate::error::Result;

pub struct Entropy {
    pub bins: usize,
}

impl Default for Entropy {
    fn default() -> Self {
        Self { bins: 10 }
    }
}

/// numpy.histogram counts of `values` in `bins` equal bins on [min, max] (last bin closed).
pub fn histogram(values: &[f64], bins: usize) -> Vec<usize> {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let mut counts = vec![0usize; bins];
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        counts[0] = values.len();
        return counts;
    }
    let step = (hi - lo) / bins as f64;
    let edge = |k: usize| if k == bins { hi } else { lo + k as f64 * step };
    let norm = bins as f64 / (hi - lo);
    for &v in values {
        let mut k = (((v - lo) * norm) as usize).min(bins - 1);
        // numpy's corrections against the actual edges
        if k > 0 && v < edge(k) {
            k -= 1;
        }
        if k + 1 < bins && v >= edge(k + 1) {
            k += 1;
        }
        counts[k] += 1;
    }
    counts
}

/// −Σ p ln p over the non-empty bins (0 when all values are equal).
pub fn entropy_of_counts(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    if n == 0 || counts.iter().filter(|&&c| c > 0).count() <= 1 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum()
}

/// Per channel entropy from pooled values v[n, c] (row-major N × C).
pub fn entropy_from_gap(
    gap: &[f64],
    n: usize,
    c: usize,
    bins: usize,
) -> (Vec<Vec<usize>>, Vec<f64>) {
    let mut counts = Vec::with_capacity(c);
    let mut scores = Vec::with_capacity(c);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n).map(|i| gap[i * c + ch]).collect();
        let h = histogram(&vals, bins);
        scores.push(entropy_of_counts(&h));
        counts.push(h);
    }
    (counts, scores)
}

impl Criterion for Entropy {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn scores(
        &self,
        net: &ReidNet,
        layers: &[PrunableConv],
        data: Option<&ScoreData>,
    ) -> Result<ChannelScores> {
        let data = ScoreData::required(data, "entropy")?;
        let eval = net.inference_copy()?;
        let mut gaps: ChannelScores = layers
            .iter()
            .map(|l| (l.conv.clone(), Vec::new()))
            .collect();
        let mut n = 0;
        for (x, _) in &data.batches {
            let mut trace = ActivationTrace::new(layers.iter().map(|l| l.conv.clone()), false);
            eval.forward_traced(x, false, &mut trace)?;
            for l in layers {
                let gap = reid_model::kernels::global_avg_pool(&trace.activations[&l.conv])?;
                let v: Vec<f64> = gap.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                gaps.get_mut(&l.conv).expect("layer present").extend(v);
            }
            n += x.dim(0)?;
        }
        Ok(layers
            .iter()
            .map(|l| {
                (
                    l.conv.clone(),
                    entropy_from_gap(&gaps[&l.conv], n, l.width, self.bins).1,
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_histogram_rules() {
        // edges 0, 0.5, 1.0 with 2 bins; the max lands in the last (closed) bin
        assert_eq!(histogram(&[0.0, 0.25, 0.5, 1.0], 2), vec![2, 2]);
        assert_eq!(histogram(&[3.0, 3.0], 10)[0], 2);
        assert_eq!(entropy_of_counts(&[2, 2]), 2.0f64.ln());
        assert_eq!(entropy_of_counts(&[4, 0]), 0.0);
    }
}
