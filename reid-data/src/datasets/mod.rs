//! Re-ID dataset layouts. This part holds the file-name conventions; the loaders follow.

pub mod market1501;
