//! Optimisers with checkpointable state (candle's SGD has no momentum and its AdamW state is
//! private): SGD with momentum / Nesterov and Adam / AdamW, weight decay skipped for BN
//! parameters and biases, per-parameter learning-rate multipliers (layer-wise rates, freezing).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    /// Adam with L2 weight decay added to the gradient (as torch.optim.Adam).
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// Decoupled weight decay (Loshchilov & Hutter).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    #[serde(flatten)]
    pub kind: OptimizerKind,
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    /// Bag of Tricks: Adam, weight decay 5e-4.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            weight_decay: 5e-4,
        }
    }
}

/// One parameter under optimisation.
pub struct ParamSlot {
    pub name: String,
    pub var: Var,
    /// Multiplies the scheduled learning rate (0 = frozen).
    pub lr_mult: f64,
    pub decay: bool,
}

/// BN weights/biases and biases get no weight decay (the usual re-ID recipe).
pub fn default_decay(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("bn") || name.contains("downsample.1"))
}

pub struct Optimizer {
    pub config: OptimizerConfig,
    pub params: Vec<ParamSlot>,
    /// First moment / momentum buffer and second moment, by parameter name.
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    pub step_count: usize,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: Vec<ParamSlot>) -> Self {
        Self {
            config,
            params,
            m: HashMap::new(),
            v: HashMap::new(),
            step_count: 0,
        }
    }

    /// One update at learning rate `lr` with the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_count += 1;
        let t = self.step_count as i32;
        let wd = self.config.weight_decay;
        for p in &self.params {
            if p.lr_mult == 0.0 {
                continue;
            }
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let lr = lr * p.lr_mult;
            // Detached: arithmetic on a `Var`'s own tensor records an autograd node, and a
            // momentum or moment buffer built from it would chain every earlier step's
            // gradients and temporaries into the optimiser state (memory growing per step).
            let w = &p.var.as_tensor().detach();
            let g = &g.detach();
            let decay = if p.decay { wd } else { 0.0 };
            let next = match self.config.kind {
                OptimizerKind::Sgd { momentum, nesterov } => {
                    let g = if decay > 0.0 {
                        (g + (w * decay)?)?
                    } else {
                        g.clone()
                    };
                    let update = if momentum > 0.0 {
                        let buf = match self.m.get(&p.name) {
                            Some(b) => ((b * momentum)? + &g)?,
                            None => g.clone(),
                        };
                        self.m.insert(p.name.clone(), buf.detach());
                        if nesterov {
                            (g + (buf * momentum)?)?
                        } else {
                            buf
                        }
                    } else {
                        g
                    };
                    (w - (update * lr)?)?
                }
                OptimizerKind::Adam { beta1, beta2, eps }
                | OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let decoupled = matches!(self.config.kind, OptimizerKind::AdamW { .. });
                    let g = if decay > 0.0 && !decoupled {
                        (g + (w * decay)?)?
                    } else {
                        g.clone()
                    };
                    let m = match self.m.get(&p.name) {
                        Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                        None => (&g * (1.0 - beta1))?,
                    };
                    let v = match self.v.get(&p.name) {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let mhat = (&m / (1.0 - beta1.powi(t)))?;
                    let vhat = (&v / (1.0 - beta2.powi(t)))?;
                    self.m.insert(p.name.clone(), m.detach());
                    self.v.insert(p.name.clone(), v.detach());
                    let w = if decay > 0.0 && decoupled {
                        (w * (1.0 - lr * decay))?
                    } else {
                        w.clone()
                    };
                    (w - ((mhat / (vhat.sqrt()? + eps)?)? * lr)?)?
                }
            };
            p.var.set(&next)?;
        }
        Ok(())
    }

    /// State tensors for a checkpoint: `m.<param>` and `v.<param>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .m
            .iter()
            .map(|(k, t)| (format!("m.{k}"), t.clone()))
            .chain(self.v.iter().map(|(k, t)| (format!("v.{k}"), t.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Restore from [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step_count: usize,
    ) -> Result<()> {
        self.m.clear();
        self.v.clear();
        let names: std::collections::HashSet<&str> =
            self.params.iter().map(|p| p.name.as_str()).collect();
        for (k, t) in tensors {
            let (slot, name) = k.split_at(2);
            if !names.contains(name) {
                candle_core::bail!("optimiser state for unknown parameter '{name}'");
            }
            match slot {
                "m." => self.m.insert(name.to_string(), t.clone()),
                "v." => self.v.insert(name.to_string(), t.clone()),
                _ => candle_core::bail!("unexpected optimiser state tensor '{k}'"),
            };
        }
        self.step_count = step_count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(kind: OptimizerKind, wd: f64) -> Vec<f32> {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let mut opt = Optimizer::new(
            OptimizerConfig {
                kind,
                weight_decay: wd,
            },
            vec![ParamSlot {
                name: "w".into(),
                var: w.clone(),
                lr_mult: 1.0,
                decay: true,
            }],
        );
        for _ in 0..2 {
            // loss = Σ w² → grad 2w
            let g = w
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&g, 0.1).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    /// Regression: with weight decay, the buffers were built from the `Var`'s tracked tensor
    /// and carried an autograd graph that grew by one step each update (training memory grew
    /// without bound). The state must hold plain values.
    #[test]
    fn optimiser_state_carries_no_autograd_history() {
        let kinds = [
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        ];
        for kind in kinds {
            let w = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(
                OptimizerConfig {
                    kind,
                    weight_decay: 5e-4,
                },
                vec![ParamSlot {
                    name: "w".into(),
                    var: w.clone(),
                    lr_mult: 1.0,
                    decay: true,
                }],
            );
            for _ in 0..3 {
                let g = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                opt.step(&g.backward().unwrap(), 0.01).unwrap();
            }
            let state = opt.state_tensors();
            assert!(!state.is_empty(), "{kind:?}: no state kept");
            for (name, t) in state {
                assert!(
                    !t.track_op(),
                    "{kind:?}: state '{name}' records an autograd graph"
                );
            }
        }
    }

    #[test]
    fn sgd_momentum_by_hand() {
        // step 1: g = 2w = 2 → buf 2 → w = 1 − 0.2 = 0.8; step 2: g = 1.6, buf = 0.9·2 + 1.6 = 3.4 → w = 0.46
        let w = run(
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            0.0,
        );
        assert!((w[0] - 0.46).abs() < 1e-6, "{w:?}");
        // nesterov: update = g + 0.9·buf; step 1: 2 + 1.8 = 3.8 → 0.62; step 2: g = 1.24, buf = 3.04, upd = 1.24 + 2.736 → 0.2224
        let w = run(
            OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            0.0,
        );
        assert!((w[0] - 0.2224).abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn adam_first_steps_move_by_lr() {
        // two Adam steps by hand on loss Σw², w0 = 1
        let (mut w0, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for t in 1..=2 {
            let g = 2.0 * w0;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let (mh, vh) = (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.999f64.powi(t)));
            w0 -= 0.1 * mh / (vh.sqrt() + 1e-8);
        }
        let w = run(
            OptimizerKind::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.0,
        );
        assert!((w[0] as f64 - w0).abs() < 1e-6, "{w:?} vs {w0}");
        // decoupled decay shrinks the weight on top
        let wd = run(
            OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.5,
        );
        assert!(wd[0] < w[0]);
    }
}
