//! Helpers shared by the tests that compare two code paths of a network (generic ops, CUDA).
#![allow(dead_code)] // each test file uses its own subset

use candle_core::{DType, Device, Tensor};

/// A seeded N(0, 1) tensor on the CPU.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut r = reid_model::init::SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Every value as f32, from any device.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a − b| over max |b| (the scale of the reference); `a` must be finite.
pub fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()), "non-finite values");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}
