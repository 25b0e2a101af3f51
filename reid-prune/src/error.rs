//! Errors of the pruning library.

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A request that cannot be served (bad level, unknown layer or criterion, missing data).
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Model(#[from] reid_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<reid_model::arch::ArchError> for PruneError {
    fn from(e: reid_model::arch::ArchError) -> Self {
        PruneError::Model(e.into())
    }
}

pub type Result<T> = std::result::Result<T, PruneError>;
