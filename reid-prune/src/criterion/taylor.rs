//! Taylor criterion (Molchanov et al. 2017): with H the post-ReLU output of the BN after the conv,
//! t[n, c] = |mean over (h, w) of (∂L/∂H · H)[n, c]| for each image n, and the score is the mean
//! of t over images. L is the mean cross-entropy of the network's classifier on the batch.

use candle_core::{DType, Tensor};
use reid_model::{ActivationTrace, PrunableConv, ReidNet};

use super::{ChannelScores, Criterion, ScoreData};
use crate::error::{PruneError, Result};

pub struct Taylor;

/// t[n, c] from H and ∂L/∂H, both [N, C, spatial] row-major; returns (t as N×C, mean over n).
pub fn taylor_from_tensors(h: &[f64], g: &[f64], n: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let s = h.len() / (n * c).max(1);
    let mut t = vec![0f64; n * c];
    for (i, ti) in t.iter_mut().enumerate() {
        let (hh, gg) = (&h[i * s..(i + 1) * s], &g[i * s..(i + 1) * s]);
        *ti = (hh.iter().zip(gg).map(|(a, b)| a * b).sum::<f64>() / s as f64).abs();
    }
    let scores = (0..c)
        .map(|ch| (0..n).map(|i| t[i * c + ch]).sum::<f64>() / n as f64)
        .collect();
    (t, scores)
}

impl Criterion for Taylor {
    fn name(&self) -> &'static str {
        "taylor"
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
        let data = data.filter(|d| !d.batches.is_empty()).ok_or_else(|| {
            PruneError::Request("taylor needs data: give a batch or a dataset".into())
        })?;
        // Eval-mode forward over detached weights: only the probes downstream carry gradients.
        let eval = net.inference_copy()?;
        let mut sums: ChannelScores = layers
            .iter()
            .map(|l| (l.conv.clone(), vec![0f64; l.width]))
            .collect();
        let mut images = 0usize;
        for (x, labels) in &data.batches {
            let labels = labels
                .as_ref()
                .ok_or_else(|| PruneError::Request("taylor needs labels for the loss".into()))?;
            let mut trace = ActivationTrace::new(layers.iter().map(|l| l.conv.clone()), true);
            let out = eval.forward_traced(x, false, &mut trace)?;
            let logits = out.logits.ok_or_else(|| {
                PruneError::Request("taylor needs a classifier for the loss".into())
            })?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels.to_dtype(DType::U32)?)?;
            let grads = loss.backward()?;
            let n = x.dim(0)?;
            for l in layers {
                let h = &trace.activations[&l.conv];
                let g = trace.gradient(&grads, &l.conv).ok_or_else(|| {
                    PruneError::Request(format!("no gradient reached {}", l.conv))
                })?;
                let flat = |t: &Tensor| -> Result<Vec<f64>> {
                    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
                };
                let (t, _) = taylor_from_tensors(&flat(h)?, &flat(&g)?, n, l.width);
                let acc = sums.get_mut(&l.conv).expect("layer present");
                for i in 0..n {
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += t[i * l.width + c];
                    }
                }
            }
            images += n;
        }
        for v in sums.values_mut() {
            v.iter_mut().for_each(|s| *s /= images as f64);
        }
        Ok(sums)
    }
}

/// Divide each layer's scores by their L2 norm (for ranking across layers).
pub fn l2_normalise(scores: &mut ChannelScores) {
    for v in scores.values_mut() {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
}
