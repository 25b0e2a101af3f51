//! Progressive soft filter pruning (He et al. 2018, as used by the paper): while retraining, at
//! the end of every epoch the filters with the lowest L2 norm are set to zero (with their BN
//! scale and shift) but keep training, so they may recover; the zeroed fraction grows each epoch
//! on an exponential schedule from 0 to the layer's final rate. A final ranking removes them for
//! real (surgery).

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use reid_model::ReidNet;

use crate::criterion::{rank_ascending, ChannelScores, Criterion};
use crate::error::{PruneError, Result};

/// Fraction of the final rate reached after `epoch` of `epochs` finished epochs (0-based):
/// r(e) = (1 − e^{−k(e+1)}) / (1 − e^{−kE}), fast early and flat late (k = 3/E).
pub fn progressive_fraction(epoch: usize, epochs: usize) -> f64 {
    let e = epochs.max(1) as f64;
    let k = 3.0 / e;
    ((1.0 - (-k * (epoch as f64 + 1.0)).exp()) / (1.0 - (-k * e).exp())).min(1.0)
}

/// Zero, in every layer of `final_rates` (conv → fraction of its channels to remove at the end),
/// the lowest-L2 filters for the schedule's rate at `epoch`.
pub fn soft_prune(
    net: &ReidNet,
    final_rates: &BTreeMap<String, f64>,
    epoch: usize,
    epochs: usize,
) -> Result<()> {
    let layers = net.prunable_convs();
    let scores: ChannelScores = super::magnitude::L2.scores(net, &layers, None)?;
    let frac = progressive_fraction(epoch, epochs);
    let params: BTreeMap<String, candle_core::Var> = net.named_parameters().into_iter().collect();
    for (conv, &rate) in final_rates {
        let layer = layers
            .iter()
            .find(|l| &l.conv == conv)
            .ok_or_else(|| PruneError::Request(format!("no prunable conv {conv}")))?;
        let n = ((layer.width as f64) * rate * frac).round() as usize;
        if n == 0 {
            continue;
        }
        let mut mask = vec![1f32; layer.width];
        for &c in rank_ascending(&scores[conv])
            .iter()
            .take(n.min(layer.width - 1))
        {
            mask[c] = 0.0;
        }
        let mask = Tensor::from_vec(mask, layer.width, net.device())?;
        for (name, shape_dims) in [
            (format!("{conv}.weight"), 4usize),
            (format!("{}.weight", layer.bn), 1),
            (format!("{}.bias", layer.bn), 1),
        ] {
            let var = params
                .get(&name)
                .ok_or_else(|| PruneError::Request(format!("{name} is not trainable")))?;
            let m = if shape_dims == 4 {
                mask.reshape((layer.width, 1, 1, 1))?
            } else {
                mask.clone()
            };
            var.set(&var.as_tensor().broadcast_mul(&m.to_dtype(DType::F32)?)?)?;
        }
    }
    Ok(())
}
