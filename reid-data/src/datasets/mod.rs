//! Re-ID datasets by name, parsed as the community does (torchreid / fast-reid conventions):
//! train / query / gallery lists of (path, pid, camid). Camera ids are 0-based; train pids are
//! relabelled 0..N−1; gallery pid −1 (junk) is dropped, pid 0 (distractors) kept.

pub mod market1501;
pub mod msmt17;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use reid_run::DatasetName;

/// One image of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub pid: i64,
    /// 0-based camera index.
    pub camid: i64,
}

/// A loaded dataset.
#[derive(Clone, Debug)]
pub struct ReidDataset {
    pub name: String,
    /// The folder the splits were found in (after resolving root spellings).
    pub root: PathBuf,
    pub train: Vec<Sample>,
    pub query: Vec<Sample>,
    pub gallery: Vec<Sample>,
}

impl ReidDataset {
    /// Number of training identities (pids are 0..N−1 after relabelling).
    pub fn num_train_pids(&self) -> usize {
        self.train
            .iter()
            .map(|s| s.pid)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// The dataset a name denotes (the registry is the contract crate's [`DatasetName`]).
fn kind(name: &str) -> Result<DatasetName> {
    name.parse().map_err(DataError::Invalid)
}

/// Load dataset `name` from `root`.
pub fn load(name: &str, root: &Path) -> Result<ReidDataset> {
    if !root.is_dir() {
        return Err(DataError::file(root, "dataset root folder not found"));
    }
    let ds = match kind(name)? {
        DatasetName::Market1501 => market1501::load_market_style(
            "market1501",
            root,
            &[
                "market1501",
                "Market-1501-v15.09.15",
                "market1501/Market-1501-v15.09.15",
            ],
            1..=6,
        )?,
        DatasetName::DukeMtmcReid => market1501::load_market_style(
            "dukemtmc-reid",
            root,
            &[
                "dukemtmc-reid",
                "DukeMTMC-reID",
                "dukemtmc-reid/DukeMTMC-reID",
            ],
            1..=8,
        )?,
        d @ (DatasetName::Cuhk03NpLabeled | DatasetName::Cuhk03NpDetected) => {
            let detected = d == DatasetName::Cuhk03NpDetected;
            let sub = if detected { "detected" } else { "labeled" };
            let candidates = [
                sub.to_string(),
                format!("cuhk03-np/{sub}"),
                format!("cuhk03_np/{sub}"),
                format!("CUHK03-NP/{sub}"),
            ];
            let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let mut ds = market1501::load_market_style("cuhk03-np", root, &refs, 1..=2)?;
            ds.name = format!("cuhk03-np-{sub}");
            ds
        }
        DatasetName::Msmt17 => msmt17::load(root)?,
        DatasetName::ImageFolder => load_imagefolder(root)?,
    };
    Ok(ds)
}

/// The first of `root` and `root/<candidate>` that holds `marker`.
pub(crate) fn resolve_root(root: &Path, candidates: &[&str], marker: &str) -> Result<PathBuf> {
    let mut tried = vec![root.to_path_buf()];
    tried.extend(candidates.iter().map(|c| root.join(c)));
    for dir in &tried {
        if dir.join(marker).exists() {
            return Ok(dir.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(DataError::file(
        root,
        format!("no '{marker}' found in any of: {}", list.join(", ")),
    ))
}

/// Relabel pids to 0..N−1 in order of first appearance after sorting by pid.
pub(crate) fn relabel(samples: &mut [Sample]) {
    let pids: BTreeSet<i64> = samples.iter().map(|s| s.pid).collect();
    let map: BTreeMap<i64, i64> = pids
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i as i64))
        .collect();
    for s in samples {
        s.pid = map[&s.pid];
    }
}

/// One class per sub-folder (sorted by name) → pid = class index, camid 0.
pub fn load_imagefolder(root: &Path) -> Result<ReidDataset> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| DataError::file(root, format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::file(
            root,
            "no class folders: an imagefolder dataset is ROOT/<class>/<image>",
        ));
    }
    let mut train = Vec::new();
    for (i, dir) in classes.iter().enumerate() {
        let images = crate::transforms::list_images(dir)?;
        if images.is_empty() {
            return Err(DataError::file(
                dir,
                "class folder holds no images (jpg, png, bmp, webp)",
            ));
        }
        train.extend(images.into_iter().map(|path| Sample {
            path,
            pid: i as i64,
            camid: 0,
        }));
    }
    Ok(ReidDataset {
        name: "imagefolder".into(),
        root: root.to_path_buf(),
        train,
        query: Vec::new(),
        gallery: Vec::new(),
    })
}

/// A fingerprint of what the dataset's loader lists: every split's images (path relative to the
/// dataset's root, pid, camera, size, modification time), in the loader's order. A file the
/// loader does not read (a README, another dataset beside it under the same root, a log) changes
/// nothing; an image replaced, added, removed or relabelled changes it. Stat calls only: ~10 ms
/// for a 13 000-image set. 16 hex digits.
pub fn fingerprint(ds: &ReidDataset) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (split, samples) in [
        ("train", &ds.train),
        ("query", &ds.query),
        ("gallery", &ds.gallery),
    ] {
        h.update(split.as_bytes());
        h.update((samples.len() as u64).to_le_bytes());
        for s in samples {
            let meta = std::fs::metadata(&s.path)
                .map_err(|e| DataError::file(&s.path, format!("cannot read: {e}")))?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let rel = s.path.strip_prefix(&ds.root).unwrap_or(&s.path);
            h.update(rel.to_string_lossy().as_bytes());
            h.update(b"\0");
            h.update(s.pid.to_le_bytes());
            h.update(s.camid.to_le_bytes());
            h.update(meta.len().to_le_bytes());
            h.update(mtime.to_le_bytes());
        }
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Images / identities / cameras of one split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SplitStats {
    pub images: usize,
    pub ids: usize,
    pub cams: usize,
}

impl SplitStats {
    pub fn of(samples: &[Sample]) -> Self {
        Self {
            images: samples.len(),
            ids: samples.iter().map(|s| s.pid).collect::<BTreeSet<_>>().len(),
            cams: samples
                .iter()
                .map(|s| s.camid)
                .collect::<BTreeSet<_>>()
                .len(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DatasetStats {
    pub train: SplitStats,
    pub query: SplitStats,
    pub gallery: SplitStats,
    /// Images that failed to decode and were skipped (with `skip_bad`).
    pub skipped: usize,
}

/// Statistics; with `verify`, every image is decoded first. A corrupt image is an error naming
/// it, or (with `skip_bad`) is dropped from its split and counted in `skipped`.
pub fn stats(ds: &mut ReidDataset, verify: bool, skip_bad: bool) -> Result<DatasetStats> {
    let mut skipped = 0;
    if verify {
        for split in [&mut ds.train, &mut ds.query, &mut ds.gallery] {
            let ok: Vec<Result<()>> = split
                .par_iter()
                .map(|s| {
                    image::open(&s.path).map(|_| ()).map_err(|e| {
                        DataError::file(&s.path, format!("corrupt or unreadable image: {e}"))
                    })
                })
                .collect();
            let mut keep = Vec::with_capacity(split.len());
            for (s, r) in split.drain(..).zip(ok) {
                match r {
                    Ok(()) => keep.push(s),
                    Err(e) if skip_bad => {
                        eprintln!("warning: skipping {e}");
                        skipped += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            *split = keep;
        }
    }
    Ok(DatasetStats {
        train: SplitStats::of(&ds.train),
        query: SplitStats::of(&ds.query),
        gallery: SplitStats::of(&ds.gallery),
        skipped,
    })
}
