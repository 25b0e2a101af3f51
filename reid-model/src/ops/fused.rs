//! Fused CPU f32 kernels with hand-written backward passes: train-mode BatchNorm (optionally
//! followed by ReLU) and ReLU. Composed from candle ops, train-mode BN is about ten full passes
//! forward and twenty backward, each with a fresh allocation; fused it is two passes each way.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice as contiguous;

/// (N, C, spatial) of an NC or NCHW tensor.
fn ncs(dims: &[usize]) -> Result<(usize, usize, usize)> {
    if dims.len() < 2 {
        candle_core::bail!("batch norm needs at least 2 dims, got {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// Per-channel batch statistics of the last forward: mean and biased variance.
#[derive(Debug, Default, Clone)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// y = relu?((x − μ_B)/√(σ²_B + ε)·γ + β) with batch statistics; inputs (x, γ, β).
#[derive(Debug)]
pub struct BatchNormTrain {
    pub eps: f64,
    pub relu: bool,
    /// Filled by the forward; read for the running-stat update and by the backward.
    pub stats: Arc<Mutex<BatchStats>>,
}

/// Σ f(a[i], b[i], c[i]) in eight independent f32 lanes: without reassociation a single running
/// sum cannot vectorise, and these reductions were the largest scalar loops of a training step.
fn lanes_sum(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let (a8, ar) = a.as_chunks::<8>();
    let (b8, br) = b.as_chunks::<8>();
    let (c8, cr) = c.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for ((x, y), z) in a8.iter().zip(b8).zip(c8) {
        for k in 0..8 {
            acc[k] += f(x[k], y[k], z[k]);
        }
    }
    let tail: f32 = ar
        .iter()
        .zip(br)
        .zip(cr)
        .map(|((x, y), z)| f(*x, *y, *z))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Σ over the planes of channel `ch` (N×C×S tensors a, b, c) of f(a, b, c): f32 within a plane,
/// f64 across planes (accurate and vectorisable).
fn channel_sum(
    (a, b, c): (&[f32], &[f32], &[f32]),
    (n, channels, s): (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32, f32, f32) -> f32 + Copy,
) -> f64 {
    (0..n)
        .map(|i| {
            let r = (i * channels + ch) * s..(i * channels + ch + 1) * s;
            lanes_sum(&a[r.clone()], &b[r.clone()], &c[r], f) as f64
        })
        .sum()
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "input")?;
        let gamma = contiguous(s2, l2, "weight")?;
        let beta = contiguous(s3, l3, "bias")?;
        let (n, c, s) = ncs(l1.dims())?;
        let m = (n * s) as f64;
        let stats: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mean = channel_sum((x, x, x), (n, c, s), ch, |v, _, _| v) / m;
                let mf = mean as f32;
                let var = channel_sum((x, x, x), (n, c, s), ch, |v, _, _| (v - mf) * (v - mf)) / m;
                (mf, var as f32)
            })
            .collect();
        let scale: Vec<f32> = (0..c)
            .map(|ch| gamma[ch] / (stats[ch].1 as f64 + self.eps).sqrt() as f32)
            .collect();
        let mut y = vec![0f32; x.len()];
        let relu = self.relu;
        let plane = s.max(1);
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(p, (yo, xi))| {
                let ch = p % c;
                let (mu, sc, b) = (stats[ch].0, scale[ch], beta[ch]);
                for (o, &v) in yo.iter_mut().zip(xi) {
                    let t = (v - mu) * sc + b;
                    *o = if relu { t.max(0.0) } else { t };
                }
            });
        let mut st = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("stats lock".into()))?;
        st.mean = stats.iter().map(|p| p.0).collect();
        st.var = stats.iter().map(|p| p.1).collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BatchNormTrainBackward {
            eps: self.eps,
            relu: self.relu,
            gamma: gamma.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            stats: self
                .stats
                .lock()
                .map_err(|_| candle_core::Error::Msg("stats lock".into()))?
                .clone(),
            param_grads: Mutex::new(Vec::new()),
        };
        let dx = x.apply_op3_no_bwd(res, &grad.contiguous()?, &op)?;
        // dγ and dβ come out of the same pass, stashed in the op.
        let pg = op
            .param_grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("grad lock".into()))?
            .clone();
        let c = op.gamma.len();
        let dgamma = Tensor::from_slice(&pg[..c], c, x.device())?;
        let dbeta = Tensor::from_slice(&pg[c..], c, x.device())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Backward of [`BatchNormTrain`]: (x, y, dy) → dx; dγ, dβ left in `param_grads` ([dγ | dβ]).
struct BatchNormTrainBackward {
    eps: f64,
    relu: bool,
    gamma: Vec<f32>,
    stats: BatchStats,
    param_grads: Mutex<Vec<f32>>,
}

impl CustomOp3 for BatchNormTrainBackward {
    fn name(&self) -> &'static str {
        "batch-norm-train-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "input")?;
        let y = contiguous(s2, l2, "output")?;
        let dy = contiguous(s3, l3, "gradient")?;
        let (n, c, sp) = ncs(l1.dims())?;
        let BatchStats { mean, var } = &self.stats;
        let gamma = &self.gamma;
        let invstd: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / (*v as f64 + self.eps).sqrt()) as f32)
            .collect();
        let relu = self.relu;
        // the gradient reaching the BN output: dy, zeroed where the ReLU was off
        let g = move |y: f32, dy: f32| -> f32 {
            if relu && y <= 0.0 {
                0.0
            } else {
                dy
            }
        };
        // Σ g and Σ g·x̂ per channel.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let sg = channel_sum((x, y, dy), (n, c, sp), ch, |_, y, d| g(y, d));
                let (mu, is) = (mean[ch], invstd[ch]);
                let sgx = channel_sum((x, y, dy), (n, c, sp), ch, |v, y, d| {
                    g(y, d) * (v - mu) * is
                });
                (sg, sgx)
            })
            .collect();
        let m = (n * sp) as f32;
        let mut dx = vec![0f32; x.len()];
        let plane = sp.max(1);
        dx.par_chunks_mut(plane).enumerate().for_each(|(p, d)| {
            let ch = p % c;
            let (mu, is) = (mean[ch], invstd[ch]);
            let (sg, sgx) = (sums[ch].0 as f32 / m, sums[ch].1 as f32 / m);
            let k = gamma[ch] * is;
            let r = p * plane..(p + 1) * plane;
            let (xs, ys, dys) = (&x[r.clone()], &y[r.clone()], &dy[r]);
            for (((o, &v), &yv), &d) in d.iter_mut().zip(xs).zip(ys).zip(dys) {
                let xhat = (v - mu) * is;
                *o = k * (g(yv, d) - sg - xhat * sgx);
            }
        });
        let mut pg = self
            .param_grads
            .lock()
            .map_err(|_| candle_core::Error::Msg("grad lock".into()))?;
        *pg = sums
            .iter()
            .map(|s| s.1 as f32)
            .chain(sums.iter().map(|s| s.0 as f32))
            .collect();
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// ReLU with a one-pass backward (candle's is four passes: zeros, compare, cast, multiply).
/// The gradient at 0 is 0, as in PyTorch.
pub struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, "input")?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &v)| *o = v.max(0.0)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &ReluBackward)?,
        ))
    }
}

/// (y, dy) → dy where y > 0, else 0.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "relu-fused-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous(s1, l1, "output")?;
        let dy = contiguous(s2, l2, "gradient")?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(1 << 14)
            .zip(y.par_chunks(1 << 14).zip(dy.par_chunks(1 << 14)))
            .for_each(|(o, (y, g))| {
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = if y > 0.0 { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

fn fused_ok(x: &Tensor) -> bool {
    super::fast_cpu(x)
}

/// ReLU: fused kernel on CPU f32, candle's elsewhere.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if fused_ok(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// Train-mode batch norm (+ ReLU) through the fused kernel; returns the output and the batch
/// statistics (for the running-stat update). `None` when the fused path does not apply.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Option<(Tensor, BatchStats)>> {
    if !fused_ok(x) || gamma.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BatchNormTrain {
        eps,
        relu,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let st = stats
        .lock()
        .map_err(|_| candle_core::Error::Msg("stats lock".into()))?
        .clone();
    Ok(Some((y, st)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    /// Composed train-mode BN (+ReLU) in f64 with candle autograd: the reference.
    fn reference(x: &Tensor, g: &Tensor, b: &Tensor, relu: bool) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let x3 = x.reshape((n, c, h * w)).unwrap();
        let cnt = (n * h * w) as f64;
        let mean = (x3.sum(2).unwrap().sum(0).unwrap() / cnt).unwrap();
        let cen = x3.broadcast_sub(&mean.reshape((1, c, 1)).unwrap()).unwrap();
        let var = (cen.sqr().unwrap().sum(2).unwrap().sum(0).unwrap() / cnt).unwrap();
        let inv = ((var + 1e-5).unwrap().sqrt().unwrap()).recip().unwrap();
        let y = cen
            .broadcast_mul(&(inv * g).unwrap().reshape((1, c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1)).unwrap())
            .unwrap()
            .reshape((n, c, h, w))
            .unwrap();
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    #[test]
    fn batch_norm_train_matches_composed_f64() {
        let dev = Device::Cpu;
        for relu in [false, true] {
            let x64 = Tensor::randn(0.5f64, 2.0, (4, 3, 5, 6), &dev).unwrap();
            let g64 = Tensor::new(&[0.7f64, 1.3, -0.4], &dev).unwrap();
            let b64 = Tensor::new(&[0.1f64, -0.2, 0.3], &dev).unwrap();
            let r64 = Tensor::randn(0f64, 1.0, (4, 3, 5, 6), &dev).unwrap();
            let (xv, gv, bv) = (
                Var::from_tensor(&x64).unwrap(),
                Var::from_tensor(&g64).unwrap(),
                Var::from_tensor(&b64).unwrap(),
            );
            let y_ref = reference(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), relu);
            let gr = (&y_ref * &r64)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();

            let f = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap();
            let (x32, g32, b32) = (f(&x64), f(&g64), f(&b64));
            let (y, stats) = batch_norm_train(
                x32.as_tensor(),
                g32.as_tensor(),
                b32.as_tensor(),
                1e-5,
                relu,
            )
            .unwrap()
            .unwrap();
            assert!(max_diff(&y, &y_ref) < 1e-5, "forward relu={relu}");
            assert_eq!(stats.mean.len(), 3);
            let r32 = r64.to_dtype(DType::F32).unwrap();
            let g = (&y * &r32).unwrap().sum_all().unwrap().backward().unwrap();
            for (ours, theirs, what) in [
                (&x32, &xv, "dx"),
                (&g32, &gv, "dgamma"),
                (&b32, &bv, "dbeta"),
            ] {
                let a = g.get(ours.as_tensor()).unwrap();
                let b = gr.get(theirs.as_tensor()).unwrap();
                assert!(
                    max_diff(a, b) < 1e-4,
                    "{what} relu={relu}: {}",
                    max_diff(a, b)
                );
            }
        }
    }

    #[test]
    fn relu_backward_is_zero_at_and_below_zero() {
        let dev = Device::Cpu;
        let x = Var::new(&[-1f32, 0.0, 2.0], &dev).unwrap();
        let y = relu(x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 2.0]);
        let g = (y * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 3.0]
        );
    }
}
