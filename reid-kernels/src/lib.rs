//! reid-kernels: the CPU kernels under the model's layers, and the cuDNN conv.
//!
//! The model calls a small set of ops — [`conv2d`], [`conv2d_bias_inference`] and its residual
//! form, [`conv_bn_train`], [`batch_norm_train`], [`relu`], [`max_pool_3x3_s2_p1`],
//! [`global_avg_pool`] and the channels-last inference path ([`ActNhwc`], [`ConvNhwc`]) — with a
//! [`Kernels`] value, and each op picks its implementation from that value, the device and the
//! dtype: this crate's gemm/direct convs and fused BN/ReLU/pool kernels for f32 on the CPU, the
//! cuDNN conv on CUDA (feature `cudnn`), candle's generic ops everywhere else. Every choice is
//! made from the problem alone, never from the thread count (`conv_gemm::PARTS`), so a run writes
//! the same bits on any number of threads.
//!
//! Dependencies: candle-core, gemm and rayon only (no model, no run-folder types).

pub mod channels_last;
pub mod conv_bn;
pub mod conv_gemm;
#[cfg(feature = "cudnn")]
pub mod cudnn_conv;
pub mod fused;
pub mod pool;

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Device, Layout, Tensor};
use rayon::prelude::*;

pub use channels_last::{ActNhwc, ConvNhwc};
pub use conv_bn::conv_bn_train;
pub use conv_gemm::{conv2d, conv2d_bias_inference, conv2d_bias_residual_inference};
pub use fused::{batch_norm_train, relu, BatchStats, BnTail};
pub use pool::{global_avg_pool, max_pool_3x3_s2_p1};

/// Which implementation the ops run: a value the caller holds (a net, an optimiser), so two nets
/// in one thread can run different paths and nothing depends on where a value was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// This crate's kernels where they serve (f32 on the CPU; the cuDNN conv on CUDA with
    /// `cudnn`), candle's ops elsewhere.
    #[default]
    Native,
    /// candle's generic ops on every device — the code path CUDA and every other device runs for
    /// all but the conv — so that it can be checked on the CPU against the native kernels.
    Generic,
}

impl Kernels {
    /// Whether this crate's CPU kernels run on `device` (those tensors that are f32).
    pub fn native_on(self, device: &Device) -> bool {
        self == Kernels::Native && device.is_cpu()
    }

    /// Whether this crate's CPU kernels take `t` (the kernels are f32 only).
    pub fn native_for(self, t: &Tensor) -> bool {
        self.native_on(t.device()) && t.dtype() == DType::F32
    }
}

/// The f32 data of a CPU storage under a contiguous layout (custom ops require contiguous inputs).
pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
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
pub(crate) fn relu_f32(v: f32) -> f32 {
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
