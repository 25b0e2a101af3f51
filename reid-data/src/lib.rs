//! reid-data: images to network inputs. This first part holds the image decoding and ImageNet
//! preprocessing shared by feature extraction and training.

pub mod datasets;
pub mod error;
pub mod loader;
pub mod synth;
pub mod transforms;

pub use error::{DataError, Result};
pub use transforms::{list_images, load_image_chw, ImageBatch, Preprocess};
