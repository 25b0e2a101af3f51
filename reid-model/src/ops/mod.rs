//! Layer families of the ResNet, one file each (as in candle-nn).

pub mod batch_norm;
pub mod conv;
pub mod conv_gemm;
pub mod fused;
pub mod pool;

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::Conv2d;
pub use pool::{global_avg_pool, max_pool_3x3_s2_p1};
