//! Seeded, device-independent weight initialisation (candle cannot seed its CPU RNG, and runs
//! must be repeatable): torchvision's Kaiming-normal (fan-out, ReLU) for convs, BN γ=1 β=0,
//! running stats 0/1, and N(0, 0.001²) for the classifier (Bag of Tricks).

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::arch::ArchSpec;
use crate::error::Result;

/// The workspace's one seeded generator (it lives in the contract crate).
pub use reid_run::rng::SplitMix64;

/// Stable per-tensor seed, so one tensor's init does not depend on which others exist.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let mut h = SplitMix64::new(seed ^ 0xA5A5_5A5A_DEAD_BEEF);
    let mut acc = h.next_u64();
    for b in name.bytes() {
        acc = SplitMix64::new(acc ^ b as u64).next_u64();
    }
    acc
}

fn normal_tensor(shape: &[usize], std: f64, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Choices of the initialisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// γ = 0 in the last BN of every residual block, so each block starts as the identity
    /// (Goyal et al.; torchvision's `zero_init_residual`): deep nets trained from scratch converge
    /// faster.
    pub zero_init_residual: bool,
}

/// Initial value of every tensor of `spec` that `existing` lacks.
pub fn init_missing(
    spec: &ArchSpec,
    existing: &HashMap<String, Tensor>,
    seed: u64,
    device: &Device,
    options: InitOptions,
) -> Result<HashMap<String, Tensor>> {
    use crate::arch::{ConvRole, TensorRole};
    let mut out = HashMap::new();
    // the BN after the last conv of a residual branch (`bn2` basic, `bn3` bottleneck)
    let last_branch = ConvRole::Branch(spec.block.num_convs() - 1);
    for info in spec.tensors() {
        let (name, shape) = (info.name, info.shape);
        if existing.contains_key(&name) {
            continue;
        }
        let zeros = || Tensor::zeros(shape.as_slice(), candle_core::DType::F32, device);
        let t = match info.role {
            TensorRole::BnWeight
                if options.zero_init_residual && info.follows == Some(last_branch) =>
            {
                zeros()?
            }
            TensorRole::ClassifierWeight => {
                normal_tensor(&shape, 0.001, tensor_seed(seed, &name), device)?
            }
            TensorRole::ConvWeight(_) => {
                let fan_out = (shape[0] * shape[2] * shape[3]) as f64;
                normal_tensor(
                    &shape,
                    (2.0 / fan_out).sqrt(),
                    tensor_seed(seed, &name),
                    device,
                )?
            }
            TensorRole::BnWeight | TensorRole::BnRunningVar => {
                Tensor::ones(shape.as_slice(), candle_core::DType::F32, device)?
            }
            TensorRole::BnBias | TensorRole::BnRunningMean => zeros()?,
        };
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_moments_and_determinism() {
        let mut r = SplitMix64::new(42);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
    }
}

#[cfg(test)]
mod zero_residual_tests {
    use super::*;

    #[test]
    fn zero_init_residual_zeroes_only_the_last_branch_bn() {
        let spec = ArchSpec::resnet_with(50, 3, 0.125, 1, crate::arch::Neck::BnNeck).unwrap();
        let t = init_missing(
            &spec,
            &HashMap::new(),
            0,
            &Device::Cpu,
            InitOptions {
                zero_init_residual: true,
            },
        )
        .unwrap();
        let sum = |k: &str| t[k].sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(sum("layer2.1.bn3.weight"), 0.0);
        assert!(sum("layer2.1.bn2.weight") > 0.0);
        assert!(sum("layer2.0.downsample.1.weight") > 0.0);
        assert!(sum("bn1.weight") > 0.0);
    }
}
