//! Fused CPU f32 kernels with hand-written backward passes: train-mode BatchNorm, optionally
//! followed by ReLU or by a residual add and ReLU (a residual block's end), and ReLU. Composed
//! from candle ops, train-mode BN is about ten full passes forward and twenty backward, each with
//! a fresh allocation; fused it is two passes each way. Outputs are written whole, never zeroed
//! first.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::f32_slice as contiguous;
use super::{filled_by_channel, filled_par, Kernels};

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

/// What a fused train-mode BN applies after the affine map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnTail {
    /// y = bn(x); inputs (x, γ, β).
    None,
    /// y = relu(bn(x)); inputs (x, γ, β).
    Relu,
    /// y = relu(bn(x) + r), a residual block's end; inputs (x, γ‖β, r) — γ and β packed into
    /// one tensor of 2·C because a candle custom op takes at most three inputs.
    AddRelu,
}

impl BnTail {
    fn relu(self) -> bool {
        self != BnTail::None
    }
}

/// y = tail((x − μ_B)/√(σ²_B + ε)·γ + β) with batch statistics; inputs as [`BnTail`] says.
#[derive(Debug)]
pub struct BatchNormTrain {
    pub eps: f64,
    pub tail: BnTail,
    /// Filled by the forward; read for the running-stat update and by the backward.
    pub stats: Arc<Mutex<BatchStats>>,
}

/// (Σ f(a[i], b[i], c[i]).0, Σ ….1) in eight independent f32 lanes each: without
/// reassociation a single running sum cannot vectorise, and these reductions were the largest
/// scalar loops of a training step. Two sums in one pass: the BN backward needs Σ g and Σ g·x̂
/// of the same three planes. P planes at once, each summed exactly as alone: one plane's lanes
/// are one chain of dependent adds; P chains overlap (0.7–0.9× the time at 32×64×32×16, where
/// the three planes' reads from L3 bound it: the sums are 9 % of a ResNet-18 128×64 step).
fn lanes_sums<const P: usize>(
    a: [&[f32]; P],
    b: [&[f32]; P],
    c: [&[f32]; P],
    f: impl Fn(f32, f32, f32) -> (f32, f32),
) -> [(f32, f32); P] {
    let len = a[0].len();
    assert!((0..P).all(|p| a[p].len() == len && b[p].len() == len && c[p].len() == len));
    let a8: [&[[f32; 8]]; P] = std::array::from_fn(|p| a[p].as_chunks::<8>().0);
    let b8: [&[[f32; 8]]; P] = std::array::from_fn(|p| b[p].as_chunks::<8>().0);
    let c8: [&[[f32; 8]]; P] = std::array::from_fn(|p| c[p].as_chunks::<8>().0);
    let (mut acc0, mut acc1) = ([[0f32; 8]; P], [[0f32; 8]; P]);
    for i in 0..len / 8 {
        for p in 0..P {
            let (x, y, z) = (&a8[p][i], &b8[p][i], &c8[p][i]);
            for k in 0..8 {
                let (u, v) = f(x[k], y[k], z[k]);
                acc0[p][k] += u;
                acc1[p][k] += v;
            }
        }
    }
    std::array::from_fn(|p| {
        let tail = len / 8 * 8;
        let (mut t0, mut t1) = (0f32, 0f32);
        for i in tail..len {
            let (u, v) = f(a[p][i], b[p][i], c[p][i]);
            t0 += u;
            t1 += v;
        }
        (
            acc0[p].iter().sum::<f32>() + t0,
            acc1[p].iter().sum::<f32>() + t1,
        )
    })
}

/// Σ over the planes of channel `ch` (N×C×S tensors a, b, c) of f(a, b, c) (two sums): f32
/// within a plane, f64 across planes (accurate and vectorisable).
fn channel_sum2(
    (a, b, c): (&[f32], &[f32], &[f32]),
    (n, channels, s): (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32, f32, f32) -> (f32, f32) + Copy,
) -> (f64, f64) {
    const P: usize = 4;
    fn plane(t: &[f32], i: usize, (channels, ch, s): (usize, usize, usize)) -> &[f32] {
        &t[(i * channels + ch) * s..(i * channels + ch + 1) * s]
    }
    let at = (channels, ch, s);
    let mut sums: Vec<(f32, f32)> = Vec::with_capacity(n);
    for i0 in (0..n).step_by(P) {
        if i0 + P <= n {
            let planes = |t| std::array::from_fn(|p| plane(t, i0 + p, at));
            sums.extend(lanes_sums::<P>(planes(a), planes(b), planes(c), f));
        } else {
            for i in i0..n {
                sums.extend(lanes_sums::<1>(
                    [plane(a, i, at)],
                    [plane(b, i, at)],
                    [plane(c, i, at)],
                    f,
                ));
            }
        }
    }
    // f64 across planes, in plane order
    sums.iter()
        .fold((0.0, 0.0), |(p, q), &(u, v)| (p + u as f64, q + v as f64))
}

/// One sum of [`channel_sum2`].
fn channel_sum(
    planes: (&[f32], &[f32], &[f32]),
    dims: (usize, usize, usize),
    ch: usize,
    f: impl Fn(f32, f32, f32) -> f32 + Copy,
) -> f64 {
    channel_sum2(planes, dims, ch, move |a, b, c| (f(a, b, c), 0.0)).0
}

/// γ, β and the residual (with [`BnTail::AddRelu`]) of a train-mode BN.
type BnParams<'a> = (&'a [f32], &'a [f32], Option<&'a [f32]>);

impl BatchNormTrain {
    /// (γ, β, residual) from the second and third inputs, checked against x's C channels.
    fn params<'a>(
        &self,
        c: usize,
        x_dims: &[usize],
        (s2, l2): (&'a CpuStorage, &Layout),
        (s3, l3): (&'a CpuStorage, &Layout),
    ) -> Result<BnParams<'a>> {
        let p2 = contiguous(s2, l2, "weight")?;
        let (gamma, beta, residual) = if self.tail == BnTail::AddRelu {
            if l3.dims() != x_dims {
                candle_core::bail!(
                    "batch norm + residual: residual {:?} for an input {x_dims:?}",
                    l3.dims()
                );
            }
            let r = contiguous(s3, l3, "residual")?;
            let (g, b) = p2.split_at(p2.len().min(c));
            (g, b, Some(r))
        } else {
            (p2, contiguous(s3, l3, "bias")?, None)
        };
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!(
                "batch norm over {c} channels got {} weights and {} biases",
                gamma.len(),
                beta.len()
            );
        }
        Ok((gamma, beta, residual))
    }
}

/// Train-mode BN forward of N×C×S data `x`: y = relu?((x − μ_B)/√(σ²_B + ε)·γ + β [+ residual])
/// and the batch statistics.
pub(crate) fn bn_forward(
    x: &[f32],
    (n, c, s): (usize, usize, usize),
    (gamma, beta): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    eps: f64,
    relu: bool,
) -> (Vec<f32>, BatchStats) {
    let m = (n * s) as f64;
    let (mut ys, stats) = filled_by_channel(1, (n, c, s), |ch, mut outs| {
        let mean = channel_sum((x, x, x), (n, c, s), ch, |v, _, _| v) / m;
        let mu = mean as f32;
        let var = channel_sum((x, x, x), (n, c, s), ch, |v, _, _| (v - mu) * (v - mu)) / m;
        let var = var as f32;
        let (sc, b) = (gamma[ch] / (var as f64 + eps).sqrt() as f32, beta[ch]);
        for (i, yo) in outs.swap_remove(0).into_iter().enumerate() {
            let at = (i * c + ch) * s..(i * c + ch + 1) * s;
            let xi = &x[at.clone()];
            match residual {
                // same f32 operations, in the same order, as bn(x) then + r then relu
                Some(r) => {
                    for ((o, &v), &rv) in yo.iter_mut().zip(xi).zip(&r[at]) {
                        o.write(crate::relu_f32((v - mu) * sc + b + rv));
                    }
                }
                None => {
                    for (o, &v) in yo.iter_mut().zip(xi) {
                        let t = (v - mu) * sc + b;
                        o.write(if relu { crate::relu_f32(t) } else { t });
                    }
                }
            }
        }
        (mu, var)
    });
    let y = ys.swap_remove(0);
    let stats = BatchStats {
        mean: stats.iter().map(|p| p.0).collect(),
        var: stats.iter().map(|p| p.1).collect(),
    };
    (y, stats)
}

/// Train-mode BN backward from the forward's input x, output y and the output's gradient dy:
/// (dx, [dγ | dβ], and with `keep_masked` the gradient reaching the affine output — dy masked
/// by the ReLU — else empty).
pub(crate) fn bn_backward(
    (x, y, dy): (&[f32], &[f32], &[f32]),
    (n, c, sp): (usize, usize, usize),
    gamma: &[f32],
    BatchStats { mean, var }: &BatchStats,
    eps: f64,
    relu: bool,
    keep_masked: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let invstd: Vec<f32> = var
        .iter()
        .map(|v| (1.0 / (*v as f64 + eps).sqrt()) as f32)
        .collect();
    // the gradient reaching the BN output: dy, zeroed where the ReLU was off
    let g = move |y: f32, dy: f32| -> f32 {
        if relu && y <= 0.0 {
            0.0
        } else {
            dy
        }
    };
    // Per channel: Σ g and Σ g·x̂, then dx (and the masked gradient) while the channel's
    // planes are still in cache.
    let m = (n * sp) as f32;
    let (mut outs, sums) = filled_by_channel(1 + keep_masked as usize, (n, c, sp), |ch, outs| {
        let (mu, is) = (mean[ch], invstd[ch]);
        let sums = channel_sum2((x, y, dy), (n, c, sp), ch, |v, y, d| {
            let gv = g(y, d);
            (gv, gv * (v - mu) * is)
        });
        let (sg, sgx) = (sums.0 as f32 / m, sums.1 as f32 / m);
        let k = gamma[ch] * is;
        let mut outs = outs.into_iter();
        let (dxs, mut masked) = (outs.next().unwrap_or_default(), outs.next());
        for (i, d) in dxs.into_iter().enumerate() {
            let at = (i * c + ch) * sp..(i * c + ch + 1) * sp;
            let (xs, ys, dys) = (&x[at.clone()], &y[at.clone()], &dy[at]);
            for (((o, &v), &yv), &dv) in d.iter_mut().zip(xs).zip(ys).zip(dys) {
                let xhat = (v - mu) * is;
                o.write(k * (g(yv, dv) - sg - xhat * sgx));
            }
            if let Some(mk) = masked.as_mut() {
                for ((o, &yv), &dv) in mk[i].iter_mut().zip(ys).zip(dys) {
                    o.write(g(yv, dv));
                }
            }
        }
        sums
    });
    let masked = if keep_masked {
        outs.pop().unwrap_or_default()
    } else {
        Vec::new()
    };
    let dx = outs.swap_remove(0);
    let pg = sums
        .iter()
        .map(|s| s.1 as f32)
        .chain(sums.iter().map(|s| s.0 as f32))
        .collect();
    (dx, pg, masked)
}

/// Run `f` on the contiguous f32 data of CPU tensors (in a custom op's backward, which gets
/// tensors, not storages).
pub(crate) fn with_f32s<const N: usize, R>(
    ts: [&Tensor; N],
    f: impl FnOnce([&[f32]; N]) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[f32]> = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => slices.push(contiguous(s, layout, "tensor")?),
            _ => candle_core::bail!("fused kernel: expected CPU tensors"),
        }
    }
    match slices.try_into() {
        Ok(arr) => f(arr),
        Err(_) => unreachable!("one slice per tensor"),
    }
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        match self.tail {
            BnTail::AddRelu => "batch-norm-add-relu-train",
            _ => "batch-norm-train",
        }
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
        let dims = ncs(l1.dims())?;
        let (gamma, beta, residual) = self.params(dims.1, l1.dims(), (s2, l2), (s3, l3))?;
        let (y, stats) = bn_forward(x, dims, (gamma, beta), residual, self.eps, self.tail.relu());
        *self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("stats lock".into()))? = stats;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _third: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = ncs(x.dims())?;
        let c = dims.1;
        let gamma = params
            .narrow(0, 0, c)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let stats = self
            .stats
            .lock()
            .map_err(|_| candle_core::Error::Msg("stats lock".into()))?
            .clone();
        let add = self.tail == BnTail::AddRelu;
        let dy = dy.contiguous()?;
        let (dx, pg, masked) = with_f32s([x, y, &dy], |[xs, ys, dys]| {
            Ok(bn_backward(
                (xs, ys, dys),
                dims,
                &gamma,
                &stats,
                self.eps,
                self.tail.relu(),
                add,
            ))
        })?;
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        if add {
            // d(γ‖β) in one tensor; the residual's gradient is the ReLU-masked gradient
            let dparams = Tensor::from_vec(pg, 2 * c, dev)?;
            let dres = Tensor::from_vec(masked, x.shape(), dev)?;
            return Ok((Some(dx), Some(dparams), Some(dres)));
        }
        let dgamma = Tensor::from_slice(&pg[..c], c, dev)?;
        let dbeta = Tensor::from_slice(&pg[c..], c, dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
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
        let y = filled_par(x.len(), 1 << 14, |i, o| {
            for (o, &v) in o.iter_mut().zip(&x[i << 14..]) {
                o.write(crate::relu_f32(v));
            }
        });
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
        if dy.len() != y.len() {
            candle_core::bail!(
                "relu backward: gradient {:?} for {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let dx = filled_par(y.len(), 1 << 14, |i, o| {
            let r = i << 14..(i << 14) + o.len();
            for ((o, &y), &g) in o.iter_mut().zip(&y[r.clone()]).zip(&dy[r]) {
                o.write(if y > 0.0 { g } else { 0.0 });
            }
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// ReLU: fused kernel on CPU f32, candle's elsewhere, a NaN kept NaN on both (candle's
/// `max(0)` turns it into 0, which hides an overflow; see `relu_f32`).
pub fn relu(k: Kernels, x: &Tensor) -> Result<Tensor> {
    if k.native_for(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.ne(x)?.where_cond(x, &x.relu()?)
    }
}

/// Train-mode batch norm and its `tail` through the fused kernel; returns the output and the
/// batch statistics (for the running-stat update). `residual` is required by
/// [`BnTail::AddRelu`] and ignored otherwise. `None` when the fused path does not apply.
pub fn batch_norm_train(
    k: Kernels,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    tail: BnTail,
    residual: Option<&Tensor>,
) -> Result<Option<(Tensor, BatchStats)>> {
    if !k.native_for(x) || gamma.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BatchNormTrain {
        eps,
        tail,
        stats: stats.clone(),
    };
    let x = x.contiguous()?;
    let y = if tail == BnTail::AddRelu {
        let Some(r) = residual.filter(|r| k.native_for(r)) else {
            return Ok(None);
        };
        let params = Tensor::cat(&[gamma, beta], 0)?;
        x.apply_op3(&params, &r.contiguous()?, op)?
    } else {
        x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?
    };
    let st = stats
        .lock()
        .map_err(|_| candle_core::Error::Msg("stats lock".into()))?
        .clone();
    Ok(Some((y, st)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::max_abs_diff;
    use candle_core::{DType, Device, Var};

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
            let tail = if relu { BnTail::Relu } else { BnTail::None };
            let (y, stats) = batch_norm_train(
                crate::Kernels::Native,
                x32.as_tensor(),
                g32.as_tensor(),
                b32.as_tensor(),
                1e-5,
                tail,
                None,
            )
            .unwrap()
            .unwrap();
            assert!(max_abs_diff(&y, &y_ref) < 1e-5, "forward relu={relu}");
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
                    max_abs_diff(a, b) < 1e-4,
                    "{what} relu={relu}: {}",
                    max_abs_diff(a, b)
                );
            }
        }
    }

    /// relu(crate::Kernels::Native, bn(x) + r) fused against the composed f64 reference: output, running statistics'
    /// inputs, and the gradients of x, γ, β and the residual.
    #[test]
    fn batch_norm_add_relu_matches_composed_f64() {
        let dev = Device::Cpu;
        let x64 = Tensor::randn(0.5f64, 2.0, (4, 3, 5, 6), &dev).unwrap();
        let g64 = Tensor::new(&[0.7f64, 1.3, -0.4], &dev).unwrap();
        let b64 = Tensor::new(&[0.1f64, -0.2, 0.3], &dev).unwrap();
        let res64 = Tensor::randn(0f64, 1.0, (4, 3, 5, 6), &dev).unwrap();
        let r64 = Tensor::randn(0f64, 1.0, (4, 3, 5, 6), &dev).unwrap();
        let v = |t: &Tensor| Var::from_tensor(t).unwrap();
        let (xv, gv, bv, resv) = (v(&x64), v(&g64), v(&b64), v(&res64));
        let pre = reference(xv.as_tensor(), gv.as_tensor(), bv.as_tensor(), false);
        let y_ref = (pre + resv.as_tensor()).unwrap().relu().unwrap();
        let gr = (&y_ref * &r64)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();

        let f = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F32).unwrap()).unwrap();
        let (x32, g32, b32, res32) = (f(&x64), f(&g64), f(&b64), f(&res64));
        let (y, stats) = batch_norm_train(
            crate::Kernels::Native,
            x32.as_tensor(),
            g32.as_tensor(),
            b32.as_tensor(),
            1e-5,
            BnTail::AddRelu,
            Some(res32.as_tensor()),
        )
        .unwrap()
        .unwrap();
        assert!(max_abs_diff(&y, &y_ref) < 1e-5, "forward");
        // the statistics are x's, not x + residual's
        let mean0: f32 = x32
            .as_tensor()
            .narrow(1, 0, 1)
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((stats.mean[0] - mean0).abs() < 1e-5);
        let r32 = r64.to_dtype(DType::F32).unwrap();
        let g = (&y * &r32).unwrap().sum_all().unwrap().backward().unwrap();
        for (ours, theirs, what) in [
            (&x32, &xv, "dx"),
            (&g32, &gv, "dgamma"),
            (&b32, &bv, "dbeta"),
            (&res32, &resv, "dresidual"),
        ] {
            let a = g.get(ours.as_tensor()).unwrap();
            let b = gr.get(theirs.as_tensor()).unwrap();
            assert!(max_abs_diff(a, b) < 1e-4, "{what}: {}", max_abs_diff(a, b));
        }
        // a residual of another shape is an error, not a wrong broadcast
        let bad = Tensor::zeros((4, 3, 5, 5), DType::F32, &dev).unwrap();
        let err = batch_norm_train(
            crate::Kernels::Native,
            x32.as_tensor(),
            g32.as_tensor(),
            b32.as_tensor(),
            1e-5,
            BnTail::AddRelu,
            Some(&bad),
        )
        .unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
    }

    /// Summing four planes at once changes no bit: each channel's sums equal the plane-by-plane
    /// 8-lane sums (lane k over the plane's 8-chunks in order, the tail in order, the lanes in
    /// order, then f64 over the planes in order), for batches that leave 0–3 planes over.
    #[test]
    fn channel_sums_equal_the_plane_by_plane_lane_sums() {
        let mut rng = reid_run::rng::SplitMix64::new(5);
        for (n, c, s) in [(1, 2, 37), (4, 3, 64), (7, 2, 21), (9, 1, 8), (6, 2, 5)] {
            let mut r =
                || -> Vec<f32> { (0..n * c * s).map(|_| rng.normal() as f32 * 3.0).collect() };
            let (x, y, d) = (r(), r(), r());
            let f = |a: f32, b: f32, e: f32| (a * b - e, a + e * 0.5);
            for ch in 0..c {
                let mut want = (0f64, 0f64);
                for i in 0..n {
                    let at = (i * c + ch) * s;
                    let (mut l0, mut l1) = ([0f32; 8], [0f32; 8]);
                    for j in 0..s / 8 * 8 {
                        let (u, v) = f(x[at + j], y[at + j], d[at + j]);
                        l0[j % 8] += u;
                        l1[j % 8] += v;
                    }
                    let (mut t0, mut t1) = (0f32, 0f32);
                    for j in s / 8 * 8..s {
                        let (u, v) = f(x[at + j], y[at + j], d[at + j]);
                        t0 += u;
                        t1 += v;
                    }
                    want.0 += (l0.iter().sum::<f32>() + t0) as f64;
                    want.1 += (l1.iter().sum::<f32>() + t1) as f64;
                }
                let got = channel_sum2((&x, &y, &d), (n, c, s), ch, f);
                assert_eq!(
                    (got.0.to_bits(), got.1.to_bits()),
                    (want.0.to_bits(), want.1.to_bits()),
                    "n {n} c {c} s {s} channel {ch}: {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn relu_backward_is_zero_at_and_below_zero() {
        let dev = Device::Cpu;
        let x = Var::new(&[-1f32, 0.0, 2.0], &dev).unwrap();
        let y = relu(crate::Kernels::Native, x.as_tensor()).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![0.0, 0.0, 2.0]);
        let g = (y * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 0.0, 3.0]
        );
    }
}
