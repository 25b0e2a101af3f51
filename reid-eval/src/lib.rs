//! reid-eval: feature extraction, distances and re-ID metrics (CMC, mAP, mINP).

pub mod dataset_eval;
pub mod distance;
pub mod extract;
pub mod metrics;
pub mod report;
pub mod rerank;

pub use dataset_eval::{evaluate_dataset, evaluate_query_gallery, EvalOptions};
pub use distance::{distance_matrix, evaluate_features, Metric};
pub use extract::{
    extract_features, extract_features_with, load_model_for_inference, save_features, FeatureKind,
};
pub use metrics::{evaluate_distmat, ApKind, EvalError, Labels, Metrics};
