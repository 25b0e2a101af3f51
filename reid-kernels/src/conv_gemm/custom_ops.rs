//! The candle custom ops that run the NCHW kernels: conv forward with its backward, and the
//! inference conv with bias (and residual) fused.

use super::*;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::f32_slice;

pub(crate) fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// The forward op `(x, w) → y`, with a gemm-based backward.
#[derive(Debug, Default)]
pub struct Conv2dGemm {
    pub stride: usize,
    pub padding: usize,
    /// When set, the forward keeps its im2col here (up to `KEEP_COLS_MAX_FLOATS`) and the weight
    /// gradient takes it instead of building it again (memory: k·k·Cin·Ho·Wo floats per image
    /// until the backward).
    saved_cols: Option<std::sync::Mutex<Option<Vec<f32>>>>,
}

impl Conv2dGemm {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            saved_cols: None,
        }
    }

    /// Keep the forward's im2col for the weight gradient.
    pub fn keeping_cols(mut self) -> Self {
        self.saved_cols = Some(std::sync::Mutex::new(None));
        self
    }
}

impl CustomOp2 for Conv2dGemm {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.padding)?;
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let keep = self.saved_cols.is_some();
        let (y, cols) = conv_forward_keep(x, w, &g, Epilogue::default(), keep);
        if let (Some(slot), Some(cols)) = (&self.saved_cols, cols) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(cols);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // No gradient for an input that is neither a variable nor computed from one (the image).
        let gx = if x.track_op() {
            let (_, _, h, wd) = x.dims4()?;
            Some(grad.apply_op2_no_bwd(
                w,
                &Conv2dInputGrad {
                    stride: self.stride,
                    padding: self.padding,
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            // taken, not cloned: a second backward over the same graph builds it again
            let cols = self
                .saved_cols
                .as_ref()
                .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
            Some(x.apply_op2_no_bwd(
                &grad,
                &Conv2dWeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    k: w.dim(2)?,
                    cols,
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `(gy, w) → gx` for an input of spatial size h×w.
pub(crate) struct Conv2dInputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cout, ho, wo) = dims4(l1)?;
        let wd = dims4(l2)?;
        let g = Geom::new((n, wd.1, self.h, self.w), wd, self.stride, self.padding)?;
        if (g.cout, g.ho, g.wo) != (cout, ho, wo) {
            candle_core::bail!(
                "conv2d-gemm input grad: gradient shape {:?} does not fit",
                l1.dims()
            );
        }
        let gy = f32_slice(s1, l1, "gradient")?;
        let w = f32_slice(s2, l2, "weight")?;
        let gx = conv_input_grad(gy, w, &g);
        Ok((CpuStorage::F32(gx), Shape::from((g.n, g.cin, g.h, g.w))))
    }
}

/// `(x, gy) → gW` for a k×k kernel.
pub(crate) struct Conv2dWeightGrad {
    stride: usize,
    padding: usize,
    k: usize,
    /// The forward's im2col of x, when it kept it.
    cols: Option<Vec<f32>>,
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xd = dims4(l1)?;
        let (n, cout, ho, wo) = dims4(l2)?;
        let g = Geom::new(xd, (cout, xd.1, self.k, self.k), self.stride, self.padding)?;
        if (g.n, g.ho, g.wo) != (n, ho, wo) {
            candle_core::bail!(
                "conv2d-gemm weight grad: gradient shape {:?} does not fit",
                l2.dims()
            );
        }
        let x = f32_slice(s1, l1, "input")?;
        let gy = f32_slice(s2, l2, "gradient")?;
        let cols = self
            .cols
            .as_deref()
            .filter(|c| c.len() == g.ckk() * g.hw_out() * g.n);
        let gw = conv_weight_grad(x, gy, &g, cols);
        Ok((CpuStorage::F32(gw), Shape::from((g.cout, g.cin, g.k, g.k))))
    }
}

/// Inference conv with its BN folded in: conv + bias (+ ReLU) in one pass, no backward. As a
/// three-input op (x, w, shortcut) it is a block's last conv: relu(conv + bias + shortcut) in
/// one pass over the output (no separate add and ReLU tensors).
#[derive(Clone, Debug)]
pub struct Conv2dBiasInference {
    pub stride: usize,
    pub padding: usize,
    pub bias: Vec<f32>,
    pub relu: bool,
}

impl Conv2dBiasInference {
    fn forward(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.padding)?;
        if self.bias.len() != g.cout {
            candle_core::bail!(
                "conv2d-gemm: bias of {} for {} channels",
                self.bias.len(),
                g.cout
            );
        }
        let residual = match residual {
            Some((s3, l3)) => {
                if dims4(l3)? != (g.n, g.cout, g.ho, g.wo) {
                    candle_core::bail!(
                        "conv2d-gemm: residual {:?} for an output of ({}, {}, {}, {})",
                        l3.dims(),
                        g.n,
                        g.cout,
                        g.ho,
                        g.wo
                    );
                }
                Some(f32_slice(s3, l3, "residual")?)
            }
            None => None,
        };
        let epi = Epilogue {
            bias: Some(&self.bias),
            residual,
            relu: self.relu,
        };
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let y = conv_forward(x, w, &g, epi);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
    }
}

impl CustomOp2 for Conv2dBiasInference {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bias-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Conv2dBiasInference {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bias-residual-inference"
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
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// relu(conv(x) + bias + residual) fused when nothing needs a gradient (CPU f32); `None`
/// otherwise.
pub fn conv2d_bias_residual_inference(
    k: Kernels,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Option<Tensor>> {
    if ![x, w, bias, residual].iter().all(|t| k.native_for(t))
        || x.track_op()
        || w.track_op()
        || bias.track_op()
        || residual.track_op()
    {
        return Ok(None);
    }
    let op = Conv2dBiasInference {
        stride,
        padding,
        bias: bias.to_vec1()?,
        relu: true,
    };
    Ok(Some(x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &residual.contiguous()?,
        &op,
    )?))
}
