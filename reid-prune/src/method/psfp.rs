//! Progressive soft filter pruning (He et al. 2018, as used by the paper): while retraining, at
//! the end of every epoch the filters with the lowest L2 norm are set to zero (with their BN
//! scale and shift) but keep training, so they may recover; the zeroed fraction grows each epoch
//! on the paper's exponential schedule from 0 to the layer's final rate. A final ranking removes them for
//! real (surgery).

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use reid_model::ReidNet;

use crate::criterion::{rank_ascending, ChannelScores, Criterion};
use crate::error::{PruneError, Result};

/// PSFP's pruning-rate decay D: the rate reaches a quarter of its final value after a fraction
/// D of the epochs (He et al. 2018 use 1/8: most of the zeroing happens early, leaving the
/// rest of the epochs to recover).
pub const PSFP_DECAY: f64 = 0.125;

/// Fraction of the final rate after `epoch` of `epochs` finished epochs (0-based), on PSFP's
/// schedule P'(t) = a·e^{−k·t} + b with P'(0) = 0, P'(D·T) = P/4 and P'(T) = P (paper eqs.
/// 16–17). With n = 1/D and v = e^{−k·D·T} those give (1 − v) / (1 − vⁿ) = 1/4 and
/// P'(t)/P = (1 − v^{n·t/T}) / (1 − vⁿ); D = 1/4 is the linear limit.
pub fn progressive_fraction(epoch: usize, epochs: usize) -> f64 {
    progressive_fraction_with(epoch, epochs, PSFP_DECAY)
}

/// [`progressive_fraction`] with a chosen decay D in (0, 1).
pub fn progressive_fraction_with(epoch: usize, epochs: usize, decay: f64) -> f64 {
    let big_t = epochs.max(1) as f64;
    let t = ((epoch + 1) as f64).min(big_t);
    let n = 1.0 / decay.clamp(1e-3, 1.0 - 1e-3);
    // q(v) = (1 − v)/(1 − vⁿ) falls from 1 (v → 0) through 1/n (v = 1) to 0: bisection on ln v.
    let q = |v: f64| {
        if (v - 1.0).abs() < 1e-12 {
            1.0 / n
        } else {
            (1.0 - v) / (1.0 - v.powf(n))
        }
    };
    let (mut lo, mut hi) = (-60.0f64, 60.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if q(mid.exp()) > 0.25 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let v = (0.5 * (lo + hi)).exp();
    if (v - 1.0).abs() < 1e-9 {
        return t / big_t;
    }
    ((1.0 - v.powf(n * t / big_t)) / (1.0 - v.powf(n))).clamp(0.0, 1.0)
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
    let scores: ChannelScores = crate::criterion::magnitude::L2.scores(net, &layers, None)?;
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

/// Retraining hook: after every epoch, the lowest-L2 filters of each layer zeroed at that
/// epoch's rate.
struct SoftZeroing {
    rates: BTreeMap<String, f64>,
    epochs: usize,
}

impl reid_train::TrainHook for SoftZeroing {
    fn after_epoch(&self, net: &ReidNet, epoch: usize) -> anyhow::Result<()> {
        soft_prune(net, &self.rates, epoch, self.epochs)?;
        Ok(())
    }
}

/// The method's rule: retrain the unpruned network while soft-zeroing each layer's weakest
/// filters on the schedule (up to the plan's rate), then rank again by L2 on the trained
/// weights and cut (no retraining after the cut).
pub struct Psfp {
    pub epochs: usize,
}

pub(crate) fn rule(cfg: &crate::prune_run::PruneConfig) -> Box<dyn super::TrainingRule> {
    Box::new(Psfp {
        epochs: cfg.retrain_epochs,
    })
}

impl super::TrainingRule for Psfp {
    fn before_cut(
        &self,
        net: ReidNet,
        _scores: &ChannelScores,
        plan: crate::strategy::PrunePlan,
        retrain: &mut super::Retrain<'_>,
    ) -> Result<(ReidNet, crate::strategy::PrunePlan)> {
        let rates: BTreeMap<String, f64> = net
            .prunable_convs()
            .iter()
            .map(|l| {
                let kept = plan.keep.get(&l.conv).map_or(l.width, Vec::len);
                (l.conv.clone(), 1.0 - kept as f64 / l.width as f64)
            })
            .collect();
        let hook = SoftZeroing {
            rates,
            epochs: self.epochs,
        };
        let net = retrain(&net, "soft", &hook)?;
        let fresh = crate::criterion::magnitude::L2.scores(&net, &net.prunable_convs(), None)?;
        let keep = plan
            .keep
            .iter()
            .map(|(conv, k)| {
                let s = fresh
                    .get(conv)
                    .ok_or_else(|| PruneError::Request(format!("no L2 scores for {conv}")))?;
                Ok((conv.clone(), crate::strategy::top_channels(s, k.len())))
            })
            .collect::<Result<_>>()?;
        Ok((
            net,
            crate::strategy::PrunePlan {
                keep,
                groups: Default::default(),
            },
        ))
    }

    fn retrains_after_cut(&self) -> bool {
        false
    }

    fn fixed_settings(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"rate": "P/4 after D·T, P at T", "decay": PSFP_DECAY}))
    }
}
