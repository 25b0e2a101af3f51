//! reid-run: the run-folder contract shared by every crate of the workspace, with no tensor
//! library (the report reads it with the same types the tools write).
//!
//! # A run folder
//!
//! | file | written by | what |
//! |---|---|---|
//! | `model.safetensors` | train, prune, the grid | the network; its header holds `reid.arch` (every conv's width) and `reid.provenance` |
//! | `trainer_state.safetensors` | train (while it runs) | network + optimiser state + position, one file committed atomically; resume reads it |
//! | `config.toml` | train, prune, the grid | the resolved config the run used (serde of its config type) |
//! | `metrics.json` | train, prune, the grid, reid-eval | [`RunMetrics`]: complexity, latency, one [`EvalEntry`] per dataset |
//! | `per_query.json` | the grid, reid-eval | [`stats::PerQuery`]: each valid query's AP, first-match rank, INP, by evaluation label |
//! | `ranks.json` | the grid, reid-eval | [`ranks::Ranks`]: each valid query's nearest gallery images, by evaluation label |
//! | `log.jsonl` | train, prune | one JSON object per epoch (train) or pruning step (prune) |
//! | `deploy.json` | `bench/onnx_check.py --runs` | [`DeployLatencies`]: the model's latency in a deployment runtime (ONNX Runtime) |
//! | `.lock` | every writer | [`lock`]: who writes the folder now (pid, host, heartbeat); one writer a folder |
//!
//! A grid writes one run folder per cell at `<out>/<scenario>/<criterion>-<level>/` and keeps
//! its steps under `<out>/steps/<kind>-<key>/` (each with `step.json`, the resolved work it
//! computes, and `DONE` once finished); the report reads run folders and skips `steps/`.
//!
//! Every file is written with [`write_atomic`]: a uniquely named temporary file in the same
//! folder, created exclusively, synced, renamed over the target, the folder synced; a failing
//! write leaves the old file as it was. Metrics are checked ([`RunMetrics::validate`]) before
//! they are written and when they are read.
//!
//! Checkpoint headers go through [`canonical`] (sorted keys), so the same run writes the same
//! bytes and a file's sha256 names its content.
//!
//! [`arch`] is the schema of the `reid.arch` header every checkpoint carries (every conv's width,
//! the prunable convs and residual streams), and [`header`] reads a safetensors header without
//! its tensors: the model crate builds networks from the one, the report reads widths through
//! both, with the same types.
//!
//! [`graph`] describes a network as a graph of operations and computes its channel-dependency
//! groups from it (so far built from the ResNet schema; issue #37 makes it the one description).
//!
//! [`stats`] holds the bootstrap intervals over query identities (single and paired) and the
//! spread over seeds; [`claims`] judges the paper's claims on run folders (the grid prints it,
//! the report opens with it).

pub mod arch;
pub mod atomic;
pub mod canonical;
pub mod claims;
pub mod config;
pub mod deploy;
pub mod graph;
pub mod header;
pub mod lock;
pub mod metrics;
pub mod ranks;
pub mod rng;
pub mod sensitivity;
pub mod stats;
pub mod step_key;
#[cfg(feature = "fault-injection")]
pub mod testing;
pub mod types;

pub use atomic::{folder_of, remove_stale_temp_files, write_atomic, TEMP_MARK};
pub use deploy::{
    file_sha256, read_deploy, read_deploy_for_model, DeployLatencies, DeployLatency, DEPLOY_FILE,
};
pub use metrics::{EvalEntry, Latency, RunFolder, RunMetrics, TrainSummary};
pub use types::{DatasetName, DeviceSpec, InputSize, PkBatch, Scenario};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunFileError {
    #[error("{path}: cannot write (nothing was replaced): {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl RunFileError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Write { path, .. } | Self::Read { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// What went wrong, without the path (for readers that print the path themselves).
    pub fn message(&self) -> String {
        match self {
            Self::Write { source, .. } => format!("cannot write (nothing was replaced): {source}"),
            Self::Read { source, .. } => format!("cannot read: {source}"),
            Self::Invalid { message, .. } => message.clone(),
        }
    }
}

pub type Result<T> = std::result::Result<T, RunFileError>;
