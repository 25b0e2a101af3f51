//! The network's layers, one file per family (as in candle-nn): parameters built on a
//! `VarBuilder`, forward passes that call the kernel crate's ops with the caller's [`Kernels`].

pub mod batch_norm;
pub mod conv;

pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::Conv2d;
pub use reid_kernels::Kernels;
