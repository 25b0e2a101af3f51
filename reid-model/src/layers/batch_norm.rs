//! BatchNorm for NCHW (2-D) and NC (1-D) inputs, with training statistics.
//!
//! Train mode normalises with the batch's biased variance and updates the running statistics with
//! momentum using the unbiased variance (PyTorch's convention). Running stats are `Var`s updated in
//! place with `Var::set`: when the `VarBuilder` is backed by a `VarMap` they share storage with the
//! map's entries, so saving the map saves them.

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::VarBuilder;

use reid_kernels::{batch_norm_train, BatchStats, BnTail, Kernels};

#[derive(Clone, Copy, Debug)]
pub struct BatchNormConfig {
    pub eps: f64,
    pub momentum: f64,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Var,
    pub running_var: Var,
    pub config: BatchNormConfig,
}

impl BatchNorm {
    pub fn new(vb: VarBuilder, channels: usize, config: BatchNormConfig) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        let rm = vb.get_with_hints(channels, "running_mean", candle_nn::Init::Const(0.0))?;
        let rv = vb.get_with_hints(channels, "running_var", candle_nn::Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
            config,
        })
    }

    pub fn channels(&self) -> usize {
        self.weight.elem_count()
    }

    /// Per-channel `(scale, shift)` of the eval-mode affine map y = x·scale + shift.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let inv_std = (self.running_var.as_tensor().detach() + self.config.eps)?
            .sqrt()?
            .recip()?;
        let scale = self.weight.mul(&inv_std)?;
        let shift = self
            .bias
            .sub(&self.running_mean.as_tensor().detach().mul(&scale)?)?;
        Ok((scale, shift))
    }

    fn view_shape(&self, x: &Tensor) -> Vec<usize> {
        let mut s = vec![1; x.rank()];
        s[1] = self.channels();
        s
    }

    /// `train`: batch statistics + running-stat update; otherwise running statistics.
    pub fn forward_t(&self, k: Kernels, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_t_relu(k, x, train, false)
    }

    /// As [`BatchNorm::forward_t`], followed by ReLU when `relu` (fused on the CPU).
    pub fn forward_t_relu(
        &self,
        k: Kernels,
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() < 2 || dims[1] != self.channels() {
            candle_core::bail!(
                "batch norm over {} channels got input of shape {:?}",
                self.channels(),
                dims
            );
        }
        let relu_after = |y: Tensor| {
            if relu {
                reid_kernels::relu(k, &y)
            } else {
                Ok(y)
            }
        };
        let shape = self.view_shape(x);
        if !train {
            let (scale, shift) = self.eval_affine()?;
            let y = x
                .broadcast_mul(&scale.reshape(shape.clone())?)?
                .broadcast_add(&shift.reshape(shape)?)?;
            return relu_after(y);
        }
        let (n, c) = (dims[0], dims[1]);
        let spatial: usize = dims[2..].iter().product();
        let count = n * spatial;
        if count < 2 {
            candle_core::bail!(
                "batch norm in train mode needs more than one value per channel, got input {:?}",
                dims
            );
        }
        let tail = if relu { BnTail::Relu } else { BnTail::None };
        if let Some((y, stats)) =
            batch_norm_train(k, x, &self.weight, &self.bias, self.config.eps, tail, None)?
        {
            self.update_running_from(stats, count, x.device())?;
            return Ok(y);
        }
        let xf = x.to_dtype(DType::F32)?;
        // Reduce (N, C, HW) over HW then N: two contiguous reductions, no transpose copy.
        let x3 = xf.reshape((n, c, spatial))?;
        let mean = (x3.sum(2)?.sum(0)? / count as f64)?;
        let centered = x3.broadcast_sub(&mean.reshape((1, c, 1))?)?;
        let var = (centered.sqr()?.sum(2)?.sum(0)? / count as f64)?;
        let inv_std = (var.clone() + self.config.eps)?.sqrt()?.recip()?;
        let scale = inv_std.mul(&self.weight.to_dtype(DType::F32)?)?;
        let y = centered
            .broadcast_mul(&scale.reshape((1, c, 1))?)?
            .broadcast_add(&self.bias.to_dtype(DType::F32)?.reshape((1, c, 1))?)?
            .reshape(dims)?
            .to_dtype(x.dtype())?;
        self.update_running(&mean.detach(), &var.detach(), count)?;
        relu_after(y)
    }

    /// relu(bn(x) + residual): a residual block's end. In train mode on the CPU (f32) one fused
    /// op, whose backward gives the residual its gradient in the same pass; elsewhere composed.
    pub fn forward_t_add_relu(
        &self,
        k: Kernels,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        if train && x.rank() >= 2 && x.dim(1)? == self.channels() && x.dims() == residual.dims() {
            let count = x.elem_count() / self.channels();
            if count >= 2 {
                let fused = batch_norm_train(
                    k,
                    x,
                    &self.weight,
                    &self.bias,
                    self.config.eps,
                    BnTail::AddRelu,
                    Some(residual),
                )?;
                if let Some((y, stats)) = fused {
                    self.update_running_from(stats, count, x.device())?;
                    return Ok(y);
                }
            }
        }
        // checks and error messages of the plain forward
        reid_kernels::relu(k, &(self.forward_t(k, x, train)? + residual)?)
    }

    /// relu?(self(conv(x))) in train mode as one autograd node (CPU f32, a conv without bias):
    /// see `reid_kernels::conv_bn`. `None` where that does not apply; the caller composes the two.
    pub fn forward_conv_train(
        &self,
        k: Kernels,
        x: &Tensor,
        conv: &super::Conv2d,
        relu: bool,
    ) -> Result<Option<Tensor>> {
        if conv.bias.is_some() || conv.out_channels() != self.channels() {
            return Ok(None);
        }
        let fused = reid_kernels::conv_bn_train(
            k,
            x,
            &conv.weight,
            (conv.stride, conv.padding),
            &self.weight,
            &self.bias,
            self.config.eps,
            relu,
        )?;
        let Some((y, stats)) = fused else {
            return Ok(None);
        };
        let count = y.elem_count() / self.channels();
        self.update_running_from(stats, count, x.device())?;
        Ok(Some(y))
    }

    fn update_running_from(
        &self,
        stats: BatchStats,
        count: usize,
        dev: &candle_core::Device,
    ) -> Result<()> {
        let c = stats.mean.len();
        let mean = Tensor::from_vec(stats.mean, c, dev)?;
        let var = Tensor::from_vec(stats.var, c, dev)?;
        self.update_running(&mean, &var, count)
    }

    /// running = (1 − m)·running + m·batch, with the unbiased variance (PyTorch's convention).
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.config.momentum;
        let unbiased = (var * (count as f64 / (count - 1) as f64))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean
            .set(&rm.to_dtype(self.running_mean.dtype())?)?;
        self.running_var
            .set(&rv.to_dtype(self.running_var.dtype())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn train_stats_and_running_update_match_hand_computation() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let bn = BatchNorm::new(vb.pp("bn"), 2, BatchNormConfig::default()).unwrap();
        // N=2, C=2, H=1, W=2: channel 0 values 1,2,3,4 ; channel 1 values 0,0,0,4
        let x =
            Tensor::from_vec(vec![1f32, 2., 0., 0., 3., 4., 0., 4.], (2, 2, 1, 2), &dev).unwrap();
        let y = bn.forward_t(Kernels::Native, &x, true).unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // channel 0: mean 2.5, biased var 1.25
        let s0 = (1.25f32 + 1e-5).sqrt();
        assert!((y[0] - (1.0 - 2.5) / s0).abs() < 1e-5);
        let rm: Vec<f32> = bn.running_mean.as_tensor().to_vec1().unwrap();
        let rv: Vec<f32> = bn.running_var.as_tensor().to_vec1().unwrap();
        assert!((rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 0.1).abs() < 1e-6);
        // unbiased var of channel 0 = 5/3; 0.9 + 0.1*5/3
        assert!((rv[0] - (0.9 + 0.5 / 3.0)).abs() < 1e-6, "{rv:?}");
        // running stats live in the VarMap
        let data = vm.data().lock().unwrap();
        let stored: Vec<f32> = data["bn.running_mean"].as_tensor().to_vec1().unwrap();
        assert_eq!(stored, rm);
    }

    #[test]
    fn eval_uses_running_stats() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let bn = BatchNorm::new(vb, 1, BatchNormConfig::default()).unwrap();
        bn.running_mean
            .set(&Tensor::new(&[2f32], &dev).unwrap())
            .unwrap();
        bn.running_var
            .set(&Tensor::new(&[4f32], &dev).unwrap())
            .unwrap();
        let x = Tensor::new(&[[6f32]], &dev).unwrap();
        let y: Vec<Vec<f32>> = bn
            .forward_t(Kernels::Native, &x, false)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert!((y[0][0] - 4.0 / (4.0f32 + 1e-5).sqrt()).abs() < 1e-6);
    }
}
