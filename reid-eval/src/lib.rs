//! reid-eval: feature extraction (this part), distances and re-ID metrics.

pub mod extract;

pub use extract::{extract_features, load_model_for_inference, save_features, FeatureKind};
