//! Training input pipeline: seeded augmentation (BoT: flip, pad + random crop, random erasing),
//! P×K identity sampling, and a batch loader that decodes on worker threads with prefetch.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use image::imageops::FilterType;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::datasets::Sample;
use crate::error::{DataError, Result};
use crate::transforms::{to_chw, Preprocess};

/// Training-time augmentation (Bag of Tricks defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    pub flip_p: f32,
    /// Zero padding in pixels before the random crop back to the input size (0 = off). Unset:
    /// Bag of Tricks' 10 px at 256×128 scaled to the input's width (3 px at 64×32): a fixed 10 px
    /// would shift a 32-wide image by a third and cost a short run half its rank-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<u32>,
    /// Probability of random erasing (Zhong et al.): a rectangle set to the mean (0 after normalising).
    pub erase_p: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            flip_p: 0.5,
            pad: None,
            erase_p: 0.5,
        }
    }
}

impl Augment {
    /// Bag of Tricks pads 10 px at a width of 128.
    pub const REFERENCE_PAD: (u32, u32) = (10, 128);

    /// The padding used at an input `width` (see [`Augment::pad`]).
    pub fn pad_px(&self, width: u32) -> u32 {
        self.pad.unwrap_or_else(|| {
            let (pad, at) = Self::REFERENCE_PAD;
            ((pad * width + at / 2) / at).max(1)
        })
    }

    pub fn none() -> Self {
        Self {
            flip_p: 0.0,
            pad: Some(0),
            erase_p: 0.0,
        }
    }
}

/// Decode, resize, augment and normalise one image into CHW f32.
pub fn load_augmented(
    sample: &Sample,
    pre: &Preprocess,
    aug: &Augment,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<f32>> {
    let img = image::open(&sample.path)
        .map_err(|e| {
            DataError::file(
                &sample.path,
                format!("cannot decode image (corrupt or not an image?): {e}"),
            )
        })?
        .to_rgb8();
    let (w, h) = (pre.width as u32, pre.height as u32);
    let mut img = if img.dimensions() == (w, h) {
        img
    } else {
        image::imageops::resize(&img, w, h, FilterType::Triangle)
    };
    if rng.random::<f32>() < aug.flip_p {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    let p = aug.pad_px(w);
    if p > 0 {
        let mut padded = RgbImage::new(w + 2 * p, h + 2 * p);
        image::imageops::replace(&mut padded, &img, p as i64, p as i64);
        let (x, y) = (rng.random_range(0..=2 * p), rng.random_range(0..=2 * p));
        img = image::imageops::crop_imm(&padded, x, y, w, h).to_image();
    }
    let mut chw = to_chw(img.as_raw(), pre);
    if rng.random::<f32>() < aug.erase_p {
        random_erase(&mut chw, pre.height, pre.width, rng);
    }
    Ok(chw)
}

/// Erase a rectangle of area 2–40 % of the image, aspect 0.3–3.3 (torchvision's defaults).
fn random_erase(chw: &mut [f32], h: usize, w: usize, rng: &mut ChaCha8Rng) {
    for _ in 0..10 {
        let area = (h * w) as f32 * rng.random_range(0.02..0.4);
        let aspect = (rng.random_range(0.3f32.ln()..3.3f32.ln())).exp();
        let eh = (area * aspect).sqrt().round() as usize;
        let ew = (area / aspect).sqrt().round() as usize;
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        let (y0, x0) = (rng.random_range(0..=h - eh), rng.random_range(0..=w - ew));
        for c in 0..3 {
            for y in y0..y0 + eh {
                chw[c * h * w + y * w + x0..c * h * w + y * w + x0 + ew].fill(0.0);
            }
        }
        return;
    }
}

/// How batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sampling {
    /// P identities × K images each (re-ID; BoT: 16 × 4).
    IdentityPk { p: usize, k: usize },
    /// Plain shuffled batches (classification).
    Shuffled { batch: usize },
}

/// Indices of one epoch's batches, deterministic in (seed, epoch).
pub fn epoch_batches(
    samples: &[Sample],
    sampling: Sampling,
    seed: u64,
    epoch: usize,
) -> Result<Vec<Vec<usize>>> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match sampling {
        Sampling::Shuffled { batch } => {
            if batch == 0 || samples.len() < batch {
                return Err(DataError::Invalid(format!(
                    "batch size {batch} with {} training images",
                    samples.len()
                )));
            }
            let mut idx: Vec<usize> = (0..samples.len()).collect();
            idx.shuffle(&mut rng);
            Ok(idx.chunks_exact(batch).map(|c| c.to_vec()).collect())
        }
        Sampling::IdentityPk { p, k } => {
            let mut by_pid: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            for (i, s) in samples.iter().enumerate() {
                by_pid.entry(s.pid).or_default().push(i);
            }
            if p == 0 || k == 0 || by_pid.len() < p {
                return Err(DataError::Invalid(format!(
                    "P×K sampling with P = {p}, K = {k} needs at least P identities; the training set has {}",
                    by_pid.len()
                )));
            }
            // Per identity, shuffled groups of K (topped up with repeats, as torchreid does).
            let mut groups: Vec<(i64, Vec<usize>)> = Vec::new();
            for (pid, mut idx) in by_pid {
                idx.shuffle(&mut rng);
                while idx.len() < k {
                    let extra = idx[rng.random_range(0..idx.len())];
                    idx.push(extra);
                }
                for c in idx.chunks_exact(k) {
                    groups.push((pid, c.to_vec()));
                }
            }
            groups.shuffle(&mut rng);
            // Fill batches with groups of P distinct identities.
            let mut batches = Vec::new();
            let mut pending: Vec<(i64, Vec<usize>)> = Vec::new();
            let mut current: Vec<(i64, Vec<usize>)> = Vec::new();
            for g in groups {
                if current.iter().any(|c| c.0 == g.0) {
                    pending.push(g);
                    continue;
                }
                current.push(g);
                if current.len() == p {
                    batches.push(current.drain(..).flat_map(|c| c.1).collect());
                    // retry groups that were waiting for a batch without their identity
                    let waiting = std::mem::take(&mut pending);
                    for w in waiting {
                        if current.iter().any(|c| c.0 == w.0) {
                            pending.push(w);
                        } else {
                            current.push(w);
                            if current.len() == p {
                                batches.push(current.drain(..).flat_map(|c| c.1).collect());
                            }
                        }
                    }
                }
            }
            Ok(batches)
        }
    }
}

/// One decoded batch (NCHW f32).
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<f32>,
    pub pids: Vec<i64>,
    pub camids: Vec<i64>,
    pub len: usize,
    pub height: usize,
    pub width: usize,
}

/// Decode one batch in parallel; each image has its own RNG stream (seed, epoch, batch, slot).
pub fn load_batch(
    samples: &[Sample],
    indices: &[usize],
    pre: &Preprocess,
    aug: &Augment,
    seed: u64,
    stream: u64,
) -> Result<Batch> {
    let images: Vec<Vec<f32>> = indices
        .par_iter()
        .enumerate()
        .map(|(slot, &i)| {
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (slot as u64) << 48,
            );
            load_augmented(&samples[i], pre, aug, &mut rng)
        })
        .collect::<Result<_>>()?;
    Ok(Batch {
        images: images.concat(),
        pids: indices.iter().map(|&i| samples[i].pid).collect(),
        camids: indices.iter().map(|&i| samples[i].camid).collect(),
        len: indices.len(),
        height: pre.height,
        width: pre.width,
    })
}

/// Batches `first..` of one epoch decoded ahead on a background thread (`prefetch` in flight).
/// Each batch's augmentation stream depends on (seed, epoch, batch index) only.
pub struct Prefetcher {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
    pub num_batches: usize,
}

impl Prefetcher {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        samples: std::sync::Arc<Vec<Sample>>,
        batches: Vec<Vec<usize>>,
        first: usize,
        pre: Preprocess,
        aug: Augment,
        seed: u64,
        epoch: usize,
        prefetch: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let num_batches = batches.len().saturating_sub(first);
        let handle = std::thread::spawn(move || {
            for (b, idx) in batches.iter().enumerate().skip(first) {
                let stream = ((epoch as u64) << 32) | b as u64;
                let batch = load_batch(&samples, idx, &pre, &aug, seed, stream);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
        });
        Self {
            rx,
            handle: Some(handle),
            num_batches,
        }
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn samples(pids: &[(i64, usize)]) -> Vec<Sample> {
        pids.iter()
            .flat_map(|&(p, n)| {
                (0..n).map(move |_| Sample {
                    path: PathBuf::new(),
                    pid: p,
                    camid: 0,
                })
            })
            .collect()
    }

    #[test]
    fn unset_pad_scales_with_the_input_width_and_a_set_one_is_kept() {
        let unset = Augment::default();
        assert_eq!(unset.pad_px(128), 10);
        assert_eq!(unset.pad_px(32), 3);
        assert_eq!(unset.pad_px(64), 5);
        assert_eq!(unset.pad_px(8), 1);
        let set = Augment {
            pad: Some(10),
            ..unset
        };
        assert_eq!(set.pad_px(32), 10);
        assert_eq!(Augment::none().pad_px(128), 0);
        // an unset pad stays unset in a saved config; a set one round-trips
        let back: Augment = toml::from_str(&toml::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        assert!(!toml::to_string(&unset).unwrap().contains("pad"));
    }

    #[test]
    fn pk_batches_have_p_distinct_ids_of_k_images() {
        let s = samples(&[(0, 5), (1, 2), (2, 9), (3, 4), (4, 4), (5, 1)]);
        let b = epoch_batches(&s, Sampling::IdentityPk { p: 3, k: 4 }, 1, 0).unwrap();
        assert!(!b.is_empty());
        for batch in &b {
            assert_eq!(batch.len(), 12);
            let mut count: BTreeMap<i64, usize> = BTreeMap::new();
            for &i in batch {
                *count.entry(s[i].pid).or_default() += 1;
            }
            assert_eq!(count.len(), 3);
            assert!(count.values().all(|&c| c == 4));
        }
        // deterministic per (seed, epoch), different across epochs
        assert_eq!(
            b,
            epoch_batches(&s, Sampling::IdentityPk { p: 3, k: 4 }, 1, 0).unwrap()
        );
        assert_ne!(
            b,
            epoch_batches(&s, Sampling::IdentityPk { p: 3, k: 4 }, 1, 1).unwrap()
        );
        assert!(epoch_batches(&s, Sampling::IdentityPk { p: 7, k: 4 }, 1, 0).is_err());
    }

    #[test]
    fn shuffled_batches_cover_without_repeats() {
        let s = samples(&[(0, 10), (1, 7)]);
        let b = epoch_batches(&s, Sampling::Shuffled { batch: 4 }, 3, 0).unwrap();
        assert_eq!(b.len(), 4);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn erasing_keeps_shape_and_zeroes_a_block() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut x = vec![1f32; 3 * 32 * 16];
        random_erase(&mut x, 32, 16, &mut rng);
        let zeros = x.iter().filter(|&&v| v == 0.0).count();
        assert!(zeros > 0 && zeros % 3 == 0);
    }
}
