//! Taylor criterion (Molchanov et al. 2017): with H the post-ReLU output of the BN after the conv,
//! t[n, c] = |mean over (h, w) of (∂L/∂H · H)[n, c]| for each image n, and the score is the mean
//! of t over images. L is the mean cross-entropy of the network's classifier on the batch.

use candle_core::{DType, Tensor};
use reid_model::{ActivationTrace, PrunableConv, ReidNet};

use super::{ChannelScores, Criterion, ScoreData};
use crate::error::{PruneError, Result};

pub struct Taylor;

/// Images per forward/backward of the scoring pass (bounds its memory; the scores do not change).
const TAYLOR_CHUNK: usize = 8;

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
        let data = ScoreData::required(data, "taylor")?;
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
            let n = x.dim(0)?;
            // The backward of a whole batch holds every probed activation and its gradient at
            // once (9.6 GB for 32 images of a full ResNet-50 at 256×128), so the batch runs in
            // chunks. Eval-mode BN keeps images independent: with L the batch mean, each image's
            // ∂L/∂H is its chunk-mean gradient times m/n, and so is its t.
            for start in (0..n).step_by(TAYLOR_CHUNK) {
                let m = TAYLOR_CHUNK.min(n - start);
                let xc = x.narrow(0, start, m)?;
                let lc = labels.narrow(0, start, m)?;
                let mut trace = ActivationTrace::new(layers.iter().map(|l| l.conv.clone()), true);
                let out = eval.forward_traced(&xc, false, &mut trace)?;
                let logits = out.logits.ok_or_else(|| {
                    PruneError::Request("taylor needs a classifier for the loss".into())
                })?;
                let loss = candle_nn::loss::cross_entropy(&logits, &lc.to_dtype(DType::U32)?)?;
                let grads = loss.backward()?;
                let scale = m as f64 / n as f64;
                for l in layers {
                    let h = &trace.activations[&l.conv];
                    let g = trace.gradient(&grads, &l.conv).ok_or_else(|| {
                        PruneError::Request(format!("no gradient reached {}", l.conv))
                    })?;
                    let flat = |t: &Tensor| -> Result<Vec<f64>> {
                        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
                    };
                    let (t, _) = taylor_from_tensors(&flat(h)?, &flat(&g)?, m, l.width);
                    let acc = sums.get_mut(&l.conv).expect("layer present");
                    for i in 0..m {
                        for (c, a) in acc.iter_mut().enumerate() {
                            *a += t[i * l.width + c] * scale;
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use reid_model::{ArchSpec, Neck};

    /// The chunked pass gives the scores of one backward over the whole batch.
    #[test]
    fn chunked_scores_equal_one_pass_over_the_batch() {
        let dev = Device::Cpu;
        let spec = ArchSpec::resnet_with(18, 5, 0.125, 1, Neck::BnNeck).unwrap();
        let net = ReidNet::new(&spec, &dev, 3).unwrap();
        let n = TAYLOR_CHUNK + 5;
        let x = Tensor::randn(0f32, 1.0, (n, 3, 64, 32), &dev).unwrap();
        let labels = Tensor::from_vec((0..n as u32).map(|i| i % 5).collect(), n, &dev).unwrap();
        let layers = net.prunable_convs();
        let data = ScoreData {
            batches: vec![(x.clone(), Some(labels.clone()))],
        };
        let chunked = Taylor.scores(&net, &layers, Some(&data)).unwrap();

        let eval = net.inference_copy().unwrap();
        let mut trace = ActivationTrace::new(layers.iter().map(|l| l.conv.clone()), true);
        let out = eval.forward_traced(&x, false, &mut trace).unwrap();
        let loss = candle_nn::loss::cross_entropy(&out.logits.unwrap(), &labels).unwrap();
        let grads = loss.backward().unwrap();
        for l in &layers {
            let flat = |t: &Tensor| -> Vec<f64> {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let h = flat(&trace.activations[&l.conv]);
            let g = flat(&trace.gradient(&grads, &l.conv).unwrap());
            let (_, whole) = taylor_from_tensors(&h, &g, n, l.width);
            let max = whole.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, b) in chunked[&l.conv].iter().zip(&whole) {
                assert!(
                    (a - b).abs() <= 1e-5 * max.max(1e-12),
                    "{}: chunked {a} vs whole {b}",
                    l.conv
                );
            }
        }
    }
}
