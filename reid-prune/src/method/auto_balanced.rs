//! Auto-balanced filter pruning (Ding et al., AAAI 2018): channels are split by their L1 norm M
//! into a to-prune set P and a remaining set R (the plan), with threshold θ between the two.
//! While retraining, the loss gets α·S(P) + τ·S(R), S(X) = Σ_{c∈X} λ_c ‖W_c‖², with
//! λ = 1 + ln(θ/M) + ε on P and λ = −1 − ln(M/θ) + ε on R, and τ = −α·S(P)/S(R) (held constant):
//! P's weights decay while R's grow, moving the layer's capacity into the channels that stay.
//! Afterwards P is removed by surgery.

use candle_core::{Tensor, D};
use reid_model::ReidNet;

use crate::criterion::ChannelScores;
use crate::error::{PruneError, Result};
use crate::strategy::PrunePlan;

const EPS: f64 = 1e-6;

/// The per-channel coefficients of one layer.
struct LayerTerms {
    conv: String,
    lambda_p: Tensor,
    lambda_r: Tensor,
}

/// The balanced regulariser of a plan.
pub struct BalancedRegularizer {
    pub alpha: f64,
    layers: Vec<LayerTerms>,
}

impl BalancedRegularizer {
    /// Coefficients from the L1 scores `l1` and the plan's kept channels.
    pub fn new(net: &ReidNet, l1: &ChannelScores, plan: &PrunePlan, alpha: f64) -> Result<Self> {
        let mut layers = Vec::new();
        for (conv, keep) in &plan.keep {
            let m = l1
                .get(conv)
                .ok_or_else(|| PruneError::Request(format!("no L1 scores for {conv}")))?;
            let kept: std::collections::HashSet<usize> = keep.iter().copied().collect();
            if kept.len() == m.len() {
                continue; // nothing pruned in this layer
            }
            let max_p = (0..m.len())
                .filter(|c| !kept.contains(c))
                .map(|c| m[c])
                .fold(f64::MIN, f64::max);
            let min_r = keep.iter().map(|&c| m[c]).fold(f64::MAX, f64::min);
            let theta = 0.5 * (max_p + min_r).max(1e-12);
            let (mut lp, mut lr) = (vec![0f32; m.len()], vec![0f32; m.len()]);
            for (c, &mc) in m.iter().enumerate() {
                let mc = mc.max(1e-12);
                if kept.contains(&c) {
                    lr[c] = (-1.0 - (mc / theta).ln() + EPS) as f32;
                } else {
                    lp[c] = (1.0 + (theta / mc).ln() + EPS) as f32;
                }
            }
            let dev = net.device();
            layers.push(LayerTerms {
                conv: conv.clone(),
                lambda_p: Tensor::from_vec(lp, m.len(), dev)?,
                lambda_r: Tensor::from_vec(lr, m.len(), dev)?,
            });
        }
        Ok(Self { alpha, layers })
    }

    /// α·S(P) + τ·S(R) on the network being trained (τ is a constant of each step).
    pub fn loss(&self, net: &ReidNet) -> reid_model::Result<Tensor> {
        let mut sp: Option<Tensor> = None;
        let mut sr: Option<Tensor> = None;
        for l in &self.layers {
            let unit = net
                .conv_unit(&l.conv)
                .ok_or_else(|| reid_model::ModelError::Arch(format!("no conv {}", l.conv)))?;
            let w = &unit.conv.weight;
            let c = w.dim(0)?;
            let norms = w.reshape((c, ()))?.sqr()?.sum(D::Minus1)?;
            let p = (&norms * &l.lambda_p)?.sum_all()?;
            let r = (&norms * &l.lambda_r)?.sum_all()?;
            sp = Some(match sp {
                Some(a) => (a + p)?,
                None => p,
            });
            sr = Some(match sr {
                Some(a) => (a + r)?,
                None => r,
            });
        }
        let (Some(sp), Some(sr)) = (sp, sr) else {
            return Ok(Tensor::new(0f32, net.device())?);
        };
        let (vp, vr) = (sp.to_scalar::<f32>()? as f64, sr.to_scalar::<f32>()? as f64);
        let tau = if vr.abs() > 1e-20 {
            -self.alpha * vp / vr
        } else {
            0.0
        };
        Ok(((sp * self.alpha)? + (sr * tau)?)?)
    }
}

/// Retraining hook: the balanced regulariser in every step's loss.
struct Regularised(Box<reid_train::Regularizer>);

impl reid_train::TrainHook for Regularised {
    fn regularizer(&self) -> Option<&reid_train::Regularizer> {
        Some(&*self.0)
    }
}

/// The method's rule: retrain the unpruned network with the balanced regulariser of the plan,
/// then cut (no retraining after the cut).
pub struct AutoBalanced {
    pub alpha: f64,
}

pub(crate) fn rule(cfg: &crate::prune_run::PruneConfig) -> Box<dyn super::TrainingRule> {
    Box::new(AutoBalanced {
        alpha: cfg.balance_alpha,
    })
}

impl super::TrainingRule for AutoBalanced {
    fn before_cut(
        &self,
        net: ReidNet,
        scores: &ChannelScores,
        plan: PrunePlan,
        retrain: &mut super::Retrain<'_>,
    ) -> Result<(ReidNet, PrunePlan)> {
        let reg = BalancedRegularizer::new(&net, scores, &plan, self.alpha)?;
        let net = retrain(
            &net,
            "regularised",
            &Regularised(Box::new(move |n| reg.loss(n))),
        )?;
        Ok((net, plan))
    }

    fn retrains_after_cut(&self) -> bool {
        false
    }
}
