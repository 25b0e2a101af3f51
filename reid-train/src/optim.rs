//! Optimisers with checkpointable state (candle's SGD has no momentum and its AdamW state is
//! private): SGD with momentum / Nesterov and Adam / AdamW, weight decay skipped for BN
//! parameters and biases, per-parameter learning-rate multipliers (layer-wise rates, freezing).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use reid_model::kernels::{f32_slice, Kernels};

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

pub struct Optimizer {
    pub config: OptimizerConfig,
    pub params: Vec<ParamSlot>,
    /// First moment / momentum buffer and second moment, by parameter name.
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    pub step_count: usize,
    /// Native: one fused in-place pass per tensor where every tensor is CPU f32; generic:
    /// candle's composed ops, the update every other device runs.
    kernels: Kernels,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig, params: Vec<ParamSlot>) -> Self {
        Self {
            config,
            params,
            m: HashMap::new(),
            v: HashMap::new(),
            step_count: 0,
            kernels: Kernels::default(),
        }
    }

    /// The same optimiser updating through `kernels`' implementation.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
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
            let decay = if p.decay { wd } else { 0.0 };
            let (m, v) = (self.m.get(&p.name), self.v.get(&p.name));
            let in_place = [Some(p.var.as_tensor()), Some(g), m, v]
                .into_iter()
                .flatten()
                .all(|t| self.kernels.native_for(t) && t.is_contiguous());
            if in_place {
                let rule = UpdateRule::new(self.config.kind, decay, lr, t);
                let (m, v) = rule.step_in_place(p.var.as_tensor(), g, m, v)?;
                if let Some(m) = m {
                    self.m.insert(p.name.clone(), m);
                }
                if let Some(v) = v {
                    self.v.insert(p.name.clone(), v);
                }
            } else {
                let state = (&mut self.m, &mut self.v);
                step_composed(self.config.kind, state, p, g, (decay, lr, t))?;
            }
        }
        Ok(())
    }

    /// State tensors for a checkpoint: `m.<param>` and `v.<param>` (copies: the next step
    /// updates the optimiser's own in place).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = self
            .m
            .iter()
            .map(|(k, t)| Ok((format!("m.{k}"), t.copy()?)))
            .chain(
                self.v
                    .iter()
                    .map(|(k, t)| Ok((format!("v.{k}"), t.copy()?))),
            )
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Restore from [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step_count: usize,
    ) -> Result<()> {
        // Validated whole before anything is replaced: a bad checkpoint leaves the state as it was.
        let (mut m, mut v) = (HashMap::new(), HashMap::new());
        for (k, t) in tensors {
            let (map, name) = if let Some(name) = k.strip_prefix("m.") {
                (&mut m, name)
            } else if let Some(name) = k.strip_prefix("v.") {
                (&mut v, name)
            } else {
                candle_core::bail!("unexpected optimiser state tensor '{k}'");
            };
            let Some(p) = self.params.iter().find(|p| p.name == name) else {
                candle_core::bail!("optimiser state for unknown parameter '{name}'");
            };
            let w = p.var.as_tensor();
            if t.dims() != w.dims() || t.dtype() != w.dtype() {
                candle_core::bail!(
                    "optimiser state '{k}' is {:?} {:?}, its parameter {:?} {:?} (a checkpoint of another model?)",
                    t.dtype(),
                    t.dims(),
                    w.dtype(),
                    w.dims()
                );
            }
            // Own copies on the parameter's device: the in-place update writes into them.
            map.insert(name.to_string(), t.to_device(w.device())?.copy()?);
        }
        (self.m, self.v) = (m, v);
        self.step_count = step_count;
        Ok(())
    }
}

/// The update as candle tensor ops: any device or dtype (and the reference the in-place
/// CPU update is tested against).
fn step_composed(
    kind: OptimizerKind,
    (m_state, v_state): (&mut HashMap<String, Tensor>, &mut HashMap<String, Tensor>),
    p: &ParamSlot,
    g: &Tensor,
    (decay, lr, t): (f64, f64, i32),
) -> Result<()> {
    // Detached: arithmetic on a `Var`'s own tensor records an autograd node, and a
    // momentum or moment buffer built from it would chain every earlier step's
    // gradients and temporaries into the optimiser state (memory growing per step).
    let w = &p.var.as_tensor().detach();
    let g = &g.detach();
    let next = match kind {
        OptimizerKind::Sgd { momentum, nesterov } => {
            let g = if decay > 0.0 {
                (g + (w * decay)?)?
            } else {
                g.clone()
            };
            let update = if momentum > 0.0 {
                let buf = match m_state.get(&p.name) {
                    Some(b) => ((b * momentum)? + &g)?,
                    None => g.clone(),
                };
                m_state.insert(p.name.clone(), buf.detach());
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
        OptimizerKind::Adam { beta1, beta2, eps } | OptimizerKind::AdamW { beta1, beta2, eps } => {
            let decoupled = matches!(kind, OptimizerKind::AdamW { .. });
            let g = if decay > 0.0 && !decoupled {
                (g + (w * decay)?)?
            } else {
                g.clone()
            };
            let m = match m_state.get(&p.name) {
                Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                None => (&g * (1.0 - beta1))?,
            };
            let v = match v_state.get(&p.name) {
                Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                None => (g.sqr()? * (1.0 - beta2))?,
            };
            let mhat = (&m / (1.0 - beta1.powi(t)))?;
            let vhat = (&v / (1.0 - beta2.powi(t)))?;
            m_state.insert(p.name.clone(), m.detach());
            v_state.insert(p.name.clone(), v.detach());
            let w = if decay > 0.0 && decoupled {
                (w * (1.0 - lr * decay))?
            } else {
                w.clone()
            };
            (w - ((mhat / (vhat.sqrt()? + eps)?)? * lr)?)?
        }
    };
    p.var.set(&next)
}

/// One parameter's update at one step, with its constants in f32 as candle's ops take them.
/// Applied in place, one pass per tensor written (the state, then the weight): no temporaries,
/// both threads. Each rule repeats the composed update's f32 operations in the same order
/// (candle's `t * c`, `t + c`, `t / c` are `affine`: `x·mul + add`), so the two give the same
/// values bit for bit (`in_place_update_equals_composed_update`).
#[derive(Clone, Copy, Debug)]
struct UpdateRule {
    kind: OptimizerKind,
    /// L2 decay added to the gradient (SGD, Adam; 0: none).
    l2: f32,
    /// AdamW's decoupled decay: the weight is multiplied by 1 − lr·decay (computed in f64).
    shrink: Option<f32>,
    lr: f32,
    /// 1 / (1 − β^t) for Adam's bias corrections.
    correct1: f32,
    correct2: f32,
}

/// candle's `affine` on f32: `x·mul + add`, the adding of 0 included (it turns −0 into +0).
#[inline(always)]
fn affine(x: f32, mul: f32, add: f32) -> f32 {
    x * mul + add
}

impl UpdateRule {
    fn new(kind: OptimizerKind, decay: f64, lr: f64, t: i32) -> Self {
        let (c1, c2) = match kind {
            OptimizerKind::Sgd { .. } => (1.0, 1.0),
            OptimizerKind::Adam { beta1, beta2, .. }
            | OptimizerKind::AdamW { beta1, beta2, .. } => {
                (1.0 / (1.0 - beta1.powi(t)), 1.0 / (1.0 - beta2.powi(t)))
            }
        };
        let decoupled = matches!(kind, OptimizerKind::AdamW { .. });
        let has_decay = decay > 0.0;
        Self {
            kind,
            l2: if has_decay && !decoupled {
                decay as f32
            } else {
                0.0
            },
            shrink: (has_decay && decoupled).then_some((1.0 - lr * decay) as f32),
            lr: lr as f32,
            correct1: c1 as f32,
            correct2: c2 as f32,
        }
    }

    /// The gradient with L2 decay added (SGD, Adam), as the composed `g + w·decay`.
    #[inline(always)]
    fn decayed(&self, g: f32, w: f32) -> f32 {
        if self.l2 > 0.0 {
            g + affine(w, self.l2, 0.0)
        } else {
            g
        }
    }

    /// Update `w` in place from its gradient `g` and its state (`m`, `v`; `None` before the first
    /// step); returns the state tensors it created.
    ///
    /// `g` is only read, never written: the patched candle-core (vendor/candle-core/PATCHED.md)
    /// stores a tensor's first gradient as the very buffer backward produced, which may be
    /// shared with another node's, so an in-place change of a gradient would change others.
    fn step_in_place(
        &self,
        w: &Tensor,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let r = *self;
        let fresh = |t: Option<&Tensor>| match t {
            Some(_) => Ok(None),
            None => w.zeros_like().map(Some),
        };
        match r.kind {
            OptimizerKind::Sgd { momentum, .. } if momentum <= 0.0 => {
                w.inplace_op3(
                    g,
                    g,
                    &InPlace::new("sgd", move |w, g, _| w - affine(r.decayed(g, w), r.lr, 0.0)),
                )?;
                Ok((None, None))
            }
            OptimizerKind::Sgd { momentum, nesterov } => {
                let mu = momentum as f32;
                let new_m = fresh(m)?;
                let buf = m.or(new_m.as_ref()).expect("present or created");
                let first = m.is_none();
                buf.inplace_op3(
                    g,
                    w,
                    &InPlace::new("sgd momentum", move |b, g, w| {
                        let g = r.decayed(g, w);
                        if first {
                            g
                        } else {
                            affine(b, mu, 0.0) + g
                        }
                    }),
                )?;
                w.inplace_op3(
                    buf,
                    g,
                    &InPlace::new("sgd", move |w, b, g| {
                        let update = if nesterov {
                            r.decayed(g, w) + affine(b, mu, 0.0)
                        } else {
                            b
                        };
                        w - affine(update, r.lr, 0.0)
                    }),
                )?;
                Ok((new_m, None))
            }
            OptimizerKind::Adam { beta1, beta2, eps }
            | OptimizerKind::AdamW { beta1, beta2, eps } => {
                let (b1, b2, eps) = (beta1 as f32, beta2 as f32, eps as f32);
                let (c1, c2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
                let (new_m, new_v) = (fresh(m)?, fresh(v)?);
                let mt = m.or(new_m.as_ref()).expect("present or created");
                let vt = v.or(new_v.as_ref()).expect("present or created");
                let (m_first, v_first) = (m.is_none(), v.is_none());
                mt.inplace_op3(
                    g,
                    w,
                    &InPlace::new("adam first moment", move |m, g, w| {
                        let g = affine(r.decayed(g, w), c1, 0.0);
                        if m_first {
                            g
                        } else {
                            affine(m, b1, 0.0) + g
                        }
                    }),
                )?;
                vt.inplace_op3(
                    g,
                    w,
                    &InPlace::new("adam second moment", move |v, g, w| {
                        let g = r.decayed(g, w);
                        let g2 = affine(g * g, c2, 0.0);
                        if v_first {
                            g2
                        } else {
                            affine(v, b2, 0.0) + g2
                        }
                    }),
                )?;
                w.inplace_op3(
                    mt,
                    vt,
                    &InPlace::new("adam", move |w, m, v| {
                        let mhat = affine(m, r.correct1, 0.0);
                        let vhat = affine(v, r.correct2, 0.0);
                        let w = match r.shrink {
                            Some(s) => affine(w, s, 0.0),
                            None => w,
                        };
                        w - affine(mhat / affine(vhat.sqrt(), 1.0, eps), r.lr, 0.0)
                    }),
                )?;
                Ok((new_m, new_v))
            }
        }
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])` over contiguous f32 tensors of one length, in parallel
/// chunks.
struct InPlace<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(f32, f32, f32) -> f32 + Sync> InPlace<F> {
    fn new(name: &'static str, f: F) -> Self {
        Self { name, f }
    }
}

/// Elements per parallel task: large enough that a task outweighs its scheduling.
const UPDATE_CHUNK: usize = 1 << 15;

impl<F: Fn(f32, f32, f32) -> f32 + Sync> InplaceOp3 for InPlace<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (a, b) = (
            f32_slice(s2, l2, "update input")?,
            f32_slice(s3, l3, "update input")?,
        );
        let Some((start, end)) = l1.contiguous_offsets() else {
            candle_core::bail!("{}: the updated tensor must be contiguous", self.name);
        };
        let CpuStorage::F32(dst) = s1 else {
            candle_core::bail!("{}: the updated tensor must be f32", self.name);
        };
        let dst = &mut dst[start..end];
        if a.len() != dst.len() || b.len() != dst.len() {
            candle_core::bail!(
                "{}: {} values to update from {} and {} (optimiser state of another shape?)",
                self.name,
                dst.len(),
                a.len(),
                b.len()
            );
        }
        let f = &self.f;
        dst.par_chunks_mut(UPDATE_CHUNK)
            .zip(a.par_chunks(UPDATE_CHUNK).zip(b.par_chunks(UPDATE_CHUNK)))
            .for_each(|(d, (a, b))| {
                for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                    *d = f(*d, a, b);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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
            opt.step(&grads_of_sum_of_squares(&w), 0.1).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    /// The gradients of loss = Σ w² (2w).
    fn grads_of_sum_of_squares(w: &Var) -> GradStore {
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        loss.backward().unwrap()
    }

    /// One of each update rule: plain SGD first, then SGD with momentum, Nesterov, Adam, AdamW.
    fn every_rule() -> [OptimizerKind; 5] {
        let sgd = |momentum, nesterov| OptimizerKind::Sgd { momentum, nesterov };
        let (beta1, beta2, eps) = (0.9, 0.999, 1e-8);
        [
            sgd(0.0, false),
            sgd(0.9, false),
            sgd(0.9, true),
            OptimizerKind::Adam { beta1, beta2, eps },
            OptimizerKind::AdamW { beta1, beta2, eps },
        ]
    }

    /// Regression: with weight decay, the buffers were built from the `Var`'s tracked tensor
    /// and carried an autograd graph that grew by one step each update (training memory grew
    /// without bound). The state must hold plain values.
    #[test]
    fn optimiser_state_carries_no_autograd_history() {
        // every rule that keeps state (plain SGD keeps none)
        let kinds = every_rule().into_iter().skip(1);
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
                opt.step(&grads_of_sum_of_squares(&w), 0.01).unwrap();
            }
            let state = opt.state_tensors().unwrap();
            assert!(!state.is_empty(), "{kind:?}: no state kept");
            for (name, t) in state {
                assert!(
                    !t.track_op(),
                    "{kind:?}: state '{name}' records an autograd graph"
                );
            }
        }
    }

    /// The in-place CPU update gives the composed update's weights and state bit for bit, for
    /// every rule, with and without weight decay, over tensors of several parallel chunks.
    #[test]
    fn in_place_update_equals_composed_update() {
        let kinds = every_rule();
        let n = 2 * UPDATE_CHUNK + 1001;
        let mut rng = reid_run::rng::SplitMix64::new(7);
        let w0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let r: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        for kind in kinds {
            for wd in [0.0, 5e-4] {
                let run = |kernels: Kernels| {
                    let dev = Device::Cpu;
                    let w = Var::new(w0.as_slice(), &dev).unwrap();
                    let r = Tensor::new(r.as_slice(), &dev).unwrap();
                    let slot = |name: &str, decay| ParamSlot {
                        name: name.into(),
                        var: w.clone(),
                        lr_mult: 0.5,
                        decay,
                    };
                    let config = OptimizerConfig {
                        kind,
                        weight_decay: wd,
                    };
                    let mut opt =
                        Optimizer::new(config, vec![slot("w", true)]).with_kernels(kernels);
                    for step in 0..3 {
                        // loss = Σ r·w² → grad 2·r·w
                        let loss = (w.as_tensor().sqr().unwrap() * &r).unwrap();
                        let g = loss.sum_all().unwrap().backward().unwrap();
                        opt.step(&g, 0.01 * (step + 1) as f64).unwrap();
                    }
                    let mut out = vec![("w".to_string(), w.as_tensor().clone())];
                    out.extend(opt.state_tensors().unwrap());
                    out.into_iter()
                        .map(|(k, t)| (k, t.to_vec1::<f32>().unwrap()))
                        .collect::<Vec<_>>()
                };
                let (fused, composed) = (run(Kernels::Native), run(Kernels::Generic));
                assert_eq!(fused.len(), composed.len(), "{kind:?} wd {wd}");
                for ((name, a), (_, b)) in fused.iter().zip(&composed) {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{kind:?} wd {wd}: '{name}' differs");
                }
                assert_ne!(fused[0].1, w0, "{kind:?}: the weights did not move");
            }
        }
    }

    #[test]
    fn a_bad_saved_state_is_an_error_and_changes_nothing() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0, 0.5], &dev).unwrap();
        let config = OptimizerConfig {
            kind: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            weight_decay: 0.0,
        };
        let slot = ParamSlot {
            name: "w".into(),
            var: w.clone(),
            lr_mult: 1.0,
            decay: true,
        };
        let mut opt = Optimizer::new(config, vec![slot]);
        opt.step(&grads_of_sum_of_squares(&w), 0.1).unwrap();
        let before = opt.state_tensors().unwrap()[0].1.to_vec1::<f32>().unwrap();
        for (key, t) in [
            ("m.w", Tensor::zeros(2, DType::F32, &dev).unwrap()),
            ("m.w", Tensor::zeros(3, DType::F64, &dev).unwrap()),
            ("m.x", Tensor::zeros(3, DType::F32, &dev).unwrap()),
            ("w", Tensor::zeros(3, DType::F32, &dev).unwrap()),
        ] {
            let saved = HashMap::from([(key.to_string(), t)]);
            let err = opt.load_state(&saved, 1).unwrap_err().to_string();
            assert!(err.contains(key.trim_start_matches("m.")), "{err}");
            // the state in use is untouched
            let now = opt.state_tensors().unwrap()[0].1.to_vec1::<f32>().unwrap();
            assert_eq!(now, before);
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
