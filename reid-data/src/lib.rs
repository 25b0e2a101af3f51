//! reid-data: re-ID datasets on disk, to network inputs.
//!
//! - [`datasets`]: the loaders of Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17 and image
//!   folders in their own layouts (names from the contract crate's `DatasetName`), and the
//!   fingerprint of the images a dataset lists (step keys, resume checks, reid-eval);
//! - [`loader`]: P×K identity sampling and batch-wise augmentation for training;
//! - [`transforms`]: image decoding and ImageNet preprocessing shared by extraction and training;
//! - [`ranklist`]: ranked lists as pictures (a query and its nearest gallery images, framed by
//!   whether they show its identity);
//! - [`synth`]: the synthetic benchmark's generator (real JPEG files in a real layout).

pub mod datasets;
pub mod error;
pub mod loader;
pub mod ranklist;
pub mod synth;
pub mod transforms;

pub use error::{DataError, Result};
pub use transforms::{list_images, load_image_chw, ImageBatch, Preprocess};
