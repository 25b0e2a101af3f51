//! Layer families of the ResNet, one file each (as in candle-nn).

pub mod batch_norm;
pub mod channels_last;
pub mod conv;
pub mod conv_gemm;
pub mod fused;
pub mod pool;

use candle_core::{CpuStorage, Layout};

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

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::Conv2d;
pub use pool::{global_avg_pool, max_pool_3x3_s2_p1};
