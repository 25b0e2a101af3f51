//! Convolution + train-mode BatchNorm (+ ReLU) as one autograd node (CPU f32).
//!
//! candle's backward gives every node's gradient a zeroed tensor and adds into it: two passes
//! and two allocations per node, on one thread. A conv followed by its BN was two nodes; as one,
//! the conv's output is an internal buffer whose gradient goes straight from the BN backward
//! into the conv's input and weight gradients. Values are those of [`super::conv_gemm::conv2d`]
//! followed by [`super::fused::batch_norm_train`]: the same kernels on the same buffers.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::conv_gemm::{
    conv_forward, conv_forward_keep, conv_input_grad, conv_weight_grad, dims4, Epilogue, Geom,
};
use super::fused::{bn_backward, bn_forward, with_f32s, BatchStats};
use super::{f32_slice, Kernels};

/// `(x, w, γ‖β) → relu?(bn(conv(x, w)))` with batch statistics; γ and β packed in one tensor of
/// 2·Cout (a candle custom op takes at most three inputs).
#[derive(Debug)]
pub struct ConvBnTrain {
    pub stride: usize,
    pub padding: usize,
    pub eps: f64,
    pub relu: bool,
    /// Filled by the forward: the batch statistics, for the running-stat update.
    pub stats: Arc<Mutex<BatchStats>>,
    /// Keep the forward's im2col for the weight gradient (when the weight has one and the im2col
    /// is small: `KEEP_COLS_MAX_FLOATS`).
    keep_cols: bool,
    /// The conv output and the kept im2col, taken by the backward (a second backward over the
    /// same graph computes the conv output again).
    saved: Mutex<Option<SavedForward>>,
}

/// The conv output and, when kept, the forward's im2col.
type SavedForward = (Vec<f32>, Option<Vec<f32>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "conv2d-batch-norm-train"
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
        let g = Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.padding)?;
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let gb = f32_slice(s3, l3, "batch norm weight and bias")?;
        if gb.len() != 2 * g.cout {
            candle_core::bail!(
                "conv + batch norm: {} batch norm parameters for {} channels (expected γ‖β)",
                gb.len(),
                g.cout
            );
        }
        let (z, cols) = conv_forward_keep(x, w, &g, Epilogue::default(), self.keep_cols);
        let (gamma, beta) = gb.split_at(g.cout);
        let dims = (g.n, g.cout, g.hw_out());
        let (y, stats) = bn_forward(&z, dims, (gamma, beta), None, self.eps, self.relu);
        *lock(&self.stats) = stats;
        *lock(&self.saved) = Some((z, cols));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let g = Geom::new(x.dims4()?, w.dims4()?, self.stride, self.padding)?;
        let gamma = gb.narrow(0, 0, g.cout)?.to_vec1::<f32>()?;
        let stats = lock(&self.stats).clone();
        let saved = lock(&self.saved).take();
        let (dx, dw, dgb) = with_f32s([x, w, y, &dy], |[xs, ws, ys, dys]| {
            let (z, cols) =
                saved.unwrap_or_else(|| (conv_forward(xs, ws, &g, Epilogue::default()), None));
            let dims = (g.n, g.cout, g.hw_out());
            let (dz, dgb, _) = bn_backward(
                (&z, ys, dys),
                dims,
                &gamma,
                &stats,
                self.eps,
                self.relu,
                false,
            );
            drop(z);
            let dx = x.track_op().then(|| conv_input_grad(&dz, ws, &g));
            let dw = w
                .track_op()
                .then(|| conv_weight_grad(xs, &dz, &g, cols.as_deref()));
            Ok((dx, dw, dgb))
        })?;
        let dev = x.device();
        Ok((
            dx.map(|v| Tensor::from_vec(v, x.shape(), dev))
                .transpose()?,
            dw.map(|v| Tensor::from_vec(v, w.shape(), dev))
                .transpose()?,
            Some(Tensor::from_vec(dgb, 2 * g.cout, dev)?),
        ))
    }
}

/// relu?(bn(conv(x, w))) in train mode as one node (CPU f32, no conv bias); returns the output
/// and the batch statistics. `None` where it does not apply: another device or dtype, or fewer
/// than two values per channel (the composed path gives that error).
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_train(
    k: Kernels,
    x: &Tensor,
    w: &Tensor,
    (stride, padding): (usize, usize),
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Option<(Tensor, BatchStats)>> {
    if ![x, w, gamma, beta].iter().all(|t| k.native_for(t)) {
        return Ok(None);
    }
    let g = Geom::new(x.dims4()?, w.dims4()?, stride, padding)?;
    if g.n * g.hw_out() < 2 {
        return Ok(None);
    }
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = ConvBnTrain {
        stride,
        padding,
        eps,
        relu,
        stats: stats.clone(),
        keep_cols: w.track_op(),
        saved: Mutex::new(None),
    };
    let params = Tensor::cat(&[gamma, beta], 0)?;
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &params, op)?;
    let st = lock(&stats).clone();
    Ok(Some((y, st)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_gemm::conv2d;
    use crate::fused::{batch_norm_train, BnTail};
    use crate::max_abs_diff;
    use candle_core::{DType, Device, Var};

    /// One node gives what the conv node followed by the BN node gives: the output, the batch
    /// statistics and the gradients of x, w, γ and β, for both tails and on the shapes that
    /// take each of the conv's paths (3×3 stride 1 and 2, pointwise, grouped small maps).
    #[test]
    fn conv_bn_node_equals_conv_then_batch_norm() {
        let dev = Device::Cpu;
        for (n, cin, cout, h, w, k, stride) in [
            (4, 3, 5, 9, 7, 3, 1),
            (3, 4, 6, 8, 8, 3, 2),
            (8, 6, 4, 4, 2, 1, 1),
            (2, 3, 4, 12, 10, 7, 2),
        ] {
            for relu in [false, true] {
                let v = |shape: &[usize], mean: f32| {
                    Var::from_tensor(&Tensor::randn(mean, 1f32, shape, &dev).unwrap()).unwrap()
                };
                let (x, wt) = (v(&[n, cin, h, w], 0.0), v(&[cout, cin, k, k], 0.0));
                let (gamma, beta) = (v(&[cout], 1.0), v(&[cout], 0.0));
                let (fused, stats) = conv_bn_train(
                    crate::Kernels::Native,
                    x.as_tensor(),
                    wt.as_tensor(),
                    (stride, k / 2),
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                    relu,
                )
                .unwrap()
                .unwrap();
                let z = conv2d(
                    crate::Kernels::Native,
                    x.as_tensor(),
                    wt.as_tensor(),
                    stride,
                    k / 2,
                )
                .unwrap();
                let tail = if relu { BnTail::Relu } else { BnTail::None };
                let (composed, stats_ref) = batch_norm_train(
                    crate::Kernels::Native,
                    &z,
                    gamma.as_tensor(),
                    beta.as_tensor(),
                    1e-5,
                    tail,
                    None,
                )
                .unwrap()
                .unwrap();
                let tag = format!("n{n} {cin}->{cout} {h}x{w} k{k} s{stride} relu={relu}");
                assert!(max_abs_diff(&fused, &composed) <= 1e-6, "forward {tag}");
                assert_eq!(stats.mean, stats_ref.mean, "{tag}");
                assert_eq!(stats.var, stats_ref.var, "{tag}");
                let r = Tensor::randn(0f32, 1., fused.shape(), &dev).unwrap();
                let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
                let gf = loss(&fused).backward().unwrap();
                let gc = loss(&composed).backward().unwrap();
                for (t, what) in [
                    (&x, "dx"),
                    (&wt, "dw"),
                    (&gamma, "dgamma"),
                    (&beta, "dbeta"),
                ] {
                    let (a, b) = (
                        gf.get(t.as_tensor()).unwrap(),
                        gc.get(t.as_tensor()).unwrap(),
                    );
                    let scale: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
                    assert!(
                        max_abs_diff(a, b) <= 1e-5 * f64::from(scale.max(1.0)),
                        "{what} {tag}"
                    );
                }
                // a second backward over the same graph computes the conv output again
                let again = loss(&fused).backward().unwrap();
                let d = max_abs_diff(
                    again.get(wt.as_tensor()).unwrap(),
                    gf.get(wt.as_tensor()).unwrap(),
                );
                assert!(d <= 1e-5, "second backward {tag}: {d}");
            }
        }
    }

    #[test]
    fn packed_parameters_of_the_wrong_length_are_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((5, 3, 3, 3), DType::F32, &dev).unwrap();
        let gb = Tensor::zeros(9, DType::F32, &dev).unwrap();
        let op = ConvBnTrain {
            stride: 1,
            padding: 1,
            eps: 1e-5,
            relu: false,
            stats: Arc::default(),
            keep_cols: false,
            saved: Mutex::new(None),
        };
        let err = x.apply_op3_no_bwd(&w, &gb, &op).unwrap_err();
        assert!(
            err.to_string().contains("9 batch norm parameters for 5"),
            "{err}"
        );
    }
}
