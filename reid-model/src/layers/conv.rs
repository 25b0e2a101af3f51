//! 2-D convolution with optional bias (the bias appears only once BN is folded in for inference).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use reid_kernels::Kernels;

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// Builds `weight` [out, in, k, k] at `vb`'s prefix, Kaiming-normal (fan-out, ReLU) as torchvision.
    pub fn new(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let fan_out = (out_c * kernel * kernel) as f64;
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: (2.0 / fan_out).sqrt(),
        };
        let weight = vb.get_with_hints((out_c, in_c, kernel, kernel), "weight", init)?;
        Ok(Self {
            weight,
            bias: None,
            stride,
            padding,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    pub fn forward(&self, k: Kernels, x: &Tensor) -> Result<Tensor> {
        let y = reid_kernels::conv2d(k, x, &self.weight, self.stride, self.padding)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
            None => Ok(y),
        }
    }
}
