//! Decoding and torchvision-exact preprocessing: `f32(u8) / 255`, then `(x - mean) / std` per
//! channel, CHW layout. Images not already at the network's input size are resized (bilinear).

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::error::{DataError, Result};

/// Image file extensions the loaders accept.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// Normalisation and target size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub height: usize,
    pub width: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet statistics at `height`×`width`.
    pub fn imagenet(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

fn has_image_ext(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Image files directly inside `dir`, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| DataError::file(dir, format!("cannot list the image folder: {e}")))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::file(dir, format!("cannot list: {e}")))?;
        let p = entry.path();
        if p.is_file() && has_image_ext(&p) {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Decode one image and return it preprocessed as CHW f32.
pub fn load_image_chw(path: &Path, pre: &Preprocess) -> Result<Vec<f32>> {
    let img = image::open(path)
        .map_err(|e| {
            DataError::file(
                path,
                format!("cannot decode image (corrupt or not an image?): {e}"),
            )
        })?
        .to_rgb8();
    let img = if img.height() as usize == pre.height && img.width() as usize == pre.width {
        img
    } else {
        image::imageops::resize(
            &img,
            pre.width as u32,
            pre.height as u32,
            FilterType::Triangle,
        )
    };
    Ok(to_chw(img.as_raw(), pre))
}

/// Interleaved RGB u8 (HWC) → normalised CHW f32, with torchvision's exact operation order.
pub fn to_chw(rgb: &[u8], pre: &Preprocess) -> Vec<f32> {
    let plane = pre.height * pre.width;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let x = px[c] as f32 / 255.0;
            out[c * plane + i] = (x - pre.mean[c]) / pre.std[c];
        }
    }
    out
}

/// A batch of preprocessed images in NCHW order.
pub struct ImageBatch {
    pub data: Vec<f32>,
    pub len: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageBatch {
    /// Decode `paths` in parallel; fails on the first unreadable image, naming it.
    pub fn load(paths: &[PathBuf], pre: &Preprocess) -> Result<Self> {
        let images: Vec<Vec<f32>> = paths
            .par_iter()
            .map(|p| load_image_chw(p, pre))
            .collect::<Result<_>>()?;
        Ok(Self {
            data: images.concat(),
            len: paths.len(),
            height: pre.height,
            width: pre.width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_order_and_layout() {
        let pre = Preprocess::imagenet(1, 2);
        let rgb = [255u8, 0, 128, 0, 255, 64];
        let v = to_chw(&rgb, &pre);
        assert_eq!(v.len(), 6);
        assert_eq!(v[0], (1.0f32 - 0.485) / 0.229);
        assert_eq!(v[1], (0.0f32 - 0.485) / 0.229);
        assert_eq!(v[2 * 2 + 1], (64.0f32 / 255.0 - 0.406) / 0.225);
    }

    #[test]
    fn corrupt_and_missing_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("0001_c1s1_000001_00.jpg");
        std::fs::write(&bad, b"not a jpeg").unwrap();
        let e = load_image_chw(&bad, &Preprocess::imagenet(8, 4))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0001_c1s1_000001_00.jpg") && e.contains("decode"),
            "{e}"
        );
        let e = list_images(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        assert_eq!(list_images(dir.path()).unwrap(), vec![bad]);
    }
}
