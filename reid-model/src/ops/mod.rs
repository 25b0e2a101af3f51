//! Layer families of the ResNet, one file each (as in candle-nn).

pub mod batch_norm;
pub mod channels_last;
pub mod conv;
pub mod conv_bn;
pub mod conv_gemm;
#[cfg(feature = "cudnn")]
pub mod cudnn_conv;
pub mod fused;
pub mod pool;

use std::cell::Cell;
use std::mem::MaybeUninit;

use candle_core::{CpuStorage, Device, Layout, Tensor};
use rayon::prelude::*;

thread_local! {
    static GENERIC_OPS: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs this crate's CPU kernels on `device` (gemm convs, fused BN/ReLU,
/// pools, channels-last inference): on the CPU, unless [`with_generic_ops`] is in effect.
pub fn fast_cpu_device(device: &Device) -> bool {
    device.is_cpu() && !GENERIC_OPS.with(Cell::get)
}

/// [`fast_cpu_device`] for an f32 tensor (the kernels are f32 only).
pub fn fast_cpu(t: &Tensor) -> bool {
    fast_cpu_device(t.device()) && t.dtype() == candle_core::DType::F32
}

/// Run `f` with candle's generic ops on this thread — exactly the code path CUDA and every
/// other device executes — so that it can be checked on the CPU against the fast kernels.
/// Nets built inside `f` (`fold_bn`) keep the path they were built with.
pub fn with_generic_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            GENERIC_OPS.with(|g| g.set(self.0));
        }
    }
    let _reset = Reset(GENERIC_OPS.with(|g| g.replace(true)));
    f()
}

/// The f32 data of a CPU storage under a contiguous layout (custom ops require contiguous inputs).
pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("custom op: {what} must be contiguous"),
    }
}

/// Test helper: the largest |a − b| over all elements, computed in f64 (f32 or f64 tensors).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let f64s = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
    (f64s(a) - f64s(b))
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::Conv2d;
pub use pool::{global_avg_pool, max_pool_3x3_s2_p1};

/// `k` N×C×S tensors (`dims`) filled one channel at a time, channels in parallel:
/// `fill(ch, outs)` gets, for each output, channel `ch`'s N planes in image order and writes them
/// whole; its results come back in channel order. One task per channel reads the channel's
/// inputs from memory once and again from cache (BN: the channel sums, then the output), where
/// per-channel sums followed by a per-plane pass read them from memory twice.
pub(crate) fn filled_by_channel<R: Send>(
    k: usize,
    (n, c, s): (usize, usize, usize),
    fill: impl Fn(usize, Vec<Vec<&mut [MaybeUninit<f32>]>>) -> R + Sync,
) -> (Vec<Vec<f32>>, Vec<R>) {
    let len = n * c * s;
    let mut outs: Vec<Vec<f32>> = (0..k).map(|_| Vec::with_capacity(len)).collect();
    let mut work: Vec<Vec<Vec<&mut [MaybeUninit<f32>]>>> = (0..c)
        .map(|_| (0..k).map(|_| Vec::with_capacity(n)).collect())
        .collect();
    if s > 0 {
        for (j, out) in outs.iter_mut().enumerate() {
            for (p, plane) in out.spare_capacity_mut()[..len].chunks_mut(s).enumerate() {
                work[p % c][j].push(plane);
            }
        }
    }
    let results = work
        .into_par_iter()
        .enumerate()
        .map(|(ch, planes)| fill(ch, planes))
        .collect();
    for out in &mut outs {
        // SAFETY: the planes cover all `len` elements of each output and every caller writes
        // each plane whole (a zip with input planes of its length).
        unsafe { out.set_len(len) };
    }
    (outs, results)
}

/// ReLU as PyTorch and ONNX runtimes compute it: a NaN stays NaN (`f32::max(0.0)` returned 0,
/// so an overflowing model looked finite here and answered NaN once exported), −0 becomes +0.
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v <= 0.0 {
        0.0
    } else {
        v
    }
}

/// A vector of `len` elements, each written once by `fill(chunk index, chunk)` over chunks of
/// `chunk` elements in parallel: no zeroing pass before the real one.
pub(crate) fn filled_par(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the chunks cover all `len` elements and `fill` writes each of its chunk's (every
    // caller writes its whole chunk: a zip with inputs of its length, or indices covering it).
    unsafe { v.set_len(len) };
    v
}
