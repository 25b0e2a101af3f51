//! The pruning library's one error type: criteria, methods, strategy, surgery and pruning runs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A request that cannot be served (bad level, unknown layer or criterion, missing data,
    /// settings that contradict each other), named by its flag or field.
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Model(#[from] reid_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A run folder's file (config, metrics, lock) that cannot be read or written.
    #[error(transparent)]
    RunFile(#[from] reid_run::RunFileError),
    #[error(transparent)]
    Data(#[from] reid_data::DataError),
    /// A retraining run or an evaluation that failed (the training and evaluation engines'
    /// error, its causes kept).
    #[error(transparent)]
    Engine(#[from] EngineFailure),
    /// Stopped by a signal before the end: `prune --resume` with the same settings continues
    /// the run in this folder.
    #[error("stopped before the end: continue the prune in {} with prune --resume and the same settings (its retraining goes on from its last checkpoint; scores and cuts are computed again)", .0.display())]
    Stopped(PathBuf),
    /// What was being done when `source` failed (a file read or written, a step).
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl PruneError {
    /// Whether the run was stopped by a signal (under any context).
    pub fn is_stopped(&self) -> bool {
        match self {
            PruneError::Stopped(_) => true,
            PruneError::Context { source, .. } => source
                .downcast_ref::<PruneError>()
                .is_some_and(PruneError::is_stopped),
            _ => false,
        }
    }
}

impl From<reid_model::arch::ArchError> for PruneError {
    fn from(e: reid_model::arch::ArchError) -> Self {
        PruneError::Model(e.into())
    }
}

/// The training or evaluation engine's error (they report with context chains): its message
/// and causes.
#[derive(Debug)]
pub struct EngineFailure(pub anyhow::Error);

impl std::fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the outermost message; the causes follow through `source`
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for EngineFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What was being done, on any error of the library's parts: `.context(...)`.
pub(crate) trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| PruneError::Context {
            context: context.into(),
            source: Box::new(e),
        })
    }
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| PruneError::Context {
            context: context(),
            source: Box::new(e),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| PruneError::Request(context.into()))
    }
    fn with_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| PruneError::Request(context()))
    }
}

/// Return a [`PruneError::Request`] made of a format string.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::error::PruneError::Request(format!($($arg)*)))
    };
}
pub(crate) use refuse;

pub type Result<T> = std::result::Result<T, PruneError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop is told from a failure under any context, and a context keeps its cause in the
    /// chain a binary prints (`{:#}` through anyhow).
    #[test]
    fn stops_are_typed_and_contexts_keep_their_causes() {
        let stopped: Result<()> = Err(PruneError::Stopped("runs/p".into()));
        let e = stopped.context("step 2").unwrap_err();
        assert!(e.is_stopped());
        let io: std::result::Result<(), _> = Err(std::io::Error::other("disk full"));
        let e = io
            .with_context(|| "writing runs/p/log.jsonl".into())
            .unwrap_err();
        assert!(!e.is_stopped());
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "writing runs/p/log.jsonl: disk full"
        );
        let train = anyhow::anyhow!("no image").context("loading the dataset");
        let e = PruneError::from(EngineFailure(train));
        assert_eq!(
            format!("{:#}", anyhow::Error::new(e)),
            "loading the dataset: no image"
        );
    }
}
