//! reid-model: a prunable, self-describing ResNet re-ID network on candle.
//!
//! - [`arch::ArchSpec`] (re-exported from the contract crate reid-run): every conv's width and
//!   role, so a pruned net is just another spec;
//! - [`net::ReidNet`]: stem, four stages, GAP, BNNeck, classifier; train/eval BN; activation hooks;
//! - [`checkpoint`]: `model.safetensors` with `reid.arch` / `reid.provenance` metadata, atomic writes;
//! - [`hub`]: torchvision/timm ImageNet weights from a path or a hub id;
//! - [`weights`]: the one loader of any weights file (checkpoint or plain state dict), strict;
//! - [`complexity`]: MACs / FLOPs / parameters per layer, backbone and head apart;
//! - [`graph_net`]: any model graph (`reid_run::graph`, e.g. MobileNetV2) run on candle's ops,
//!   inference only, for checks against references;
//! - `onnx` (feature `onnx`): any net as a standard ONNX graph, image tensor to re-ID feature;
//! - [`layers`]: conv and BN layers over the kernel crate (reid-kernels), which picks each op's
//!   implementation; a net's [`layers::Kernels`] value (`ReidNet::with_kernels`) selects
//!   candle's generic ops instead (the path of every other device), so that it is tested on the
//!   CPU; with `cudnn`, the kernel crate runs a CUDA conv's forward and both gradients on cuDNN.
//!
//! Features: `hub` (default; hub ids through hf-hub, otherwise local files only), `onnx` (ONNX export), `cuda` / `cudnn`. The allocator and
//! the process's thread pools are the binaries' (reid-process), the speed benchmark is
//! reid-bench's.

/// The architecture schema lives in the candle-free contract crate (the report reads it too).
pub use reid_run::arch;
pub mod checkpoint;
pub mod complexity;
pub mod device;
pub mod error;
pub mod graph_net;
pub mod hub;
pub mod init;
pub mod net;
#[cfg(feature = "onnx")]
pub mod onnx;
/// The kernels under the layers (for benchmarks and pooled features; the crate graph keeps
/// reid-kernels a dependency of this crate alone).
pub use reid_kernels as kernels;
pub mod layers;
pub mod weights;

pub use arch::{ArchSpec, BlockKind, BlockSpec, Neck, PrunableConv, ResidualGroup};
pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, Provenance};
pub use error::{ModelError, Result};
pub use net::{ActivationTrace, InferenceLayout, ReidNet, ReidOutput};
pub use weights::{load_weights, LoadOptions, LoadedWeights, PlainFc};

/// ImageNet channel statistics used by torchvision's `Normalize`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
