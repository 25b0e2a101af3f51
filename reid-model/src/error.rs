//! Errors of the model crate. Every variant names what was wrong and, where there is one, the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid architecture: {0}")]
    Arch(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("{path}: checkpoint does not match the architecture:\n{report}")]
    Mismatch { path: PathBuf, report: String },
    #[error("hub: {0}")]
    Hub(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

impl From<reid_run::arch::ArchError> for ModelError {
    fn from(e: reid_run::arch::ArchError) -> Self {
        match e {
            reid_run::arch::ArchError::Arch(m) => ModelError::Arch(m),
            reid_run::arch::ArchError::Input(m) => ModelError::Input(m),
        }
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;
