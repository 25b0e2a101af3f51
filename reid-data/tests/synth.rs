//! The synthetic benchmark: determinism, layout, identity signal and domain shift.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reid_data::datasets::{load, stats, SplitStats};
use reid_data::synth::{generate, planned_images, SynthConfig, SynthLayout};

fn cfg(domain: &str, layout: SynthLayout) -> SynthConfig {
    SynthConfig {
        domain: domain.into(),
        ids: 12,
        cams: 3,
        per_cam: 2,
        seed: 7,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout,
        extra_test_ids: 0,
        distractors: 0,
    }
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_and_other_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let conf = cfg("target", SynthLayout::Market);
    generate(&conf, a.path(), |_| {}).unwrap();
    generate(&conf, b.path(), |_| {}).unwrap();
    generate(&SynthConfig { seed: 8, ..conf }, c.path(), |_| {}).unwrap();
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa, fb);
    assert!(fa.values().zip(fc.values()).any(|(x, y)| x != y));
    assert!(fa.keys().all(|k| !k.ends_with(".tmp")));
}

#[test]
fn market_layout_reads_back_with_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&cfg("target", SynthLayout::Market), dir.path(), |_| {}).unwrap();
    let mut ds = load("market1501", dir.path()).unwrap();
    let st = stats(&mut ds, true, false).unwrap();
    assert_eq!(st.train.ids, 6);
    assert_eq!(st.query.ids, 6, "every test identity has a query");
    assert_eq!(st.gallery.ids, 6);
    assert_eq!(
        st.train.images + st.query.images + st.gallery.images,
        summary.images
    );
    assert!(st.train.cams >= 2 && st.train.cams <= 3);
    // every query has a true match in another camera
    for q in &ds.query {
        assert!(ds
            .gallery
            .iter()
            .any(|g| g.pid == q.pid && g.camid != q.camid));
    }
    let dir = tempfile::tempdir().unwrap();
    generate(&cfg("source", SynthLayout::ImageFolder), dir.path(), |_| {}).unwrap();
    let mut src = load("imagefolder", dir.path()).unwrap();
    let st = stats(&mut src, false, false).unwrap();
    assert_eq!((st.train.ids, st.query), (12, SplitStats::default()));
}

/// 4×4×4 colour histogram (normalised) of the central region of an image, where re-ID crops
/// have the person.
fn hist(path: &Path) -> Vec<f32> {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = (img.width(), img.height());
    let mut hist = vec![0f32; 64];
    let mut n = 0.0;
    for (x, y, p) in img.enumerate_pixels() {
        if x < w / 4 || x >= 3 * w / 4 || y < h / 8 {
            continue;
        }
        let b = |v: u8| (v / 64) as usize;
        hist[b(p[0]) * 16 + b(p[1]) * 4 + b(p[2])] += 1.0;
        n += 1.0;
    }
    hist.iter_mut().for_each(|v| *v /= n);
    hist
}

fn l1(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum()
}

#[test]
fn identities_carry_signal_and_domains_differ() {
    let dir = tempfile::tempdir().unwrap();
    let conf = SynthConfig {
        ids: 30,
        ..cfg("target", SynthLayout::Market)
    };
    generate(&conf, dir.path(), |_| {}).unwrap();
    let ds = load("market1501", dir.path()).unwrap();
    let all: Vec<_> = ds
        .train
        .iter()
        .map(|s| (s.pid, s.camid, hist(&s.path)))
        .collect();
    // mean histogram distance: same identity in two cameras; different identities (any cameras);
    // different identities in two cameras (the camera-controlled comparison)
    let (mut same, mut diff, mut diff_x) = ((0f32, 0), (0f32, 0), (0f32, 0));
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let d = l1(&a.2, &b.2);
            let slot = if a.0 == b.0 && a.1 != b.1 {
                Some(&mut same)
            } else if a.0 != b.0 {
                diff.0 += d;
                diff.1 += 1;
                (a.1 != b.1).then_some(&mut diff_x)
            } else {
                None
            };
            if let Some(s) = slot {
                s.0 += d;
                s.1 += 1;
            }
        }
    }
    let mean = |s: (f32, i32)| s.0 / s.1 as f32;
    let (same, diff, diff_x) = (mean(same), mean(diff), mean(diff_x));
    assert!(
        same < diff,
        "same identity across cameras {same} vs different identities {diff}"
    );
    assert!(
        same < diff_x,
        "same identity across cameras {same} vs different identities across cameras {diff_x}"
    );

    // a second domain has measurably different colour statistics
    let other = tempfile::tempdir().unwrap();
    generate(
        &SynthConfig {
            domain: "target-b".into(),
            ..conf
        },
        other.path(),
        |_| {},
    )
    .unwrap();
    let mean = |d: &Path| {
        let ds = load("market1501", d).unwrap();
        let hs: Vec<Vec<f32>> = ds.train.iter().map(|s| hist(&s.path)).collect();
        (0..64)
            .map(|k| hs.iter().map(|h| h[k]).sum::<f32>() / hs.len() as f32)
            .collect::<Vec<f32>>()
    };
    let shift = l1(&mean(dir.path()), &mean(other.path()));
    assert!(shift > 0.2, "domain colour shift {shift}");
}

#[test]
fn bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = generate(
        &SynthConfig {
            cams: 1,
            ..cfg("t", SynthLayout::Market)
        },
        dir.path(),
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("--cams 1"), "{e}");
}

#[test]
fn loader_yields_seeded_augmented_pk_batches() {
    use reid_data::loader::{epoch_batches, Augment, Prefetcher, Sampling};
    use reid_data::Preprocess;
    let dir = tempfile::tempdir().unwrap();
    generate(&cfg("target", SynthLayout::Market), dir.path(), |_| {}).unwrap();
    let ds = load("market1501", dir.path()).unwrap();
    let train = std::sync::Arc::new(ds.train.clone());
    let pre = Preprocess::imagenet(64, 32);
    let run = || {
        let b = epoch_batches(&train, Sampling::IdentityPk { p: 3, k: 2 }, 5, 0).unwrap();
        Prefetcher::start(train.clone(), b, 0, pre, Augment::default(), 5, 0, 2)
            .map(|b| b.unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (run(), run());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len, 6);
        assert_eq!(x.images.len(), 6 * 3 * 64 * 32);
        assert_eq!(x.images, y.images, "same seed, same augmented pixels");
        assert_eq!(x.pids, y.pids);
    }
}

#[test]
fn extra_test_identities_and_distractors_grow_only_the_test_side() {
    let base = SynthConfig {
        ids: 8,
        cams: 4,
        per_cam: 2,
        ..cfg("t", SynthLayout::Market)
    };
    let big = SynthConfig {
        extra_test_ids: 20,
        distractors: 30,
        ..base.clone()
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let na = generate(&base, a.path(), |_| {}).unwrap().images;
    let nb = generate(&big, b.path(), |_| {}).unwrap().images;
    assert_eq!(nb, planned_images(&big));
    let (da, db) = (
        reid_data::datasets::load("market1501", a.path()).unwrap(),
        reid_data::datasets::load("market1501", b.path()).unwrap(),
    );
    // the same training set; more queries; the distractors in the gallery as pid 0
    let train = |d: &reid_data::datasets::ReidDataset, root: &Path| -> Vec<(PathBuf, i64, i64)> {
        d.train
            .iter()
            .map(|s| {
                (
                    s.path.strip_prefix(root).unwrap().to_path_buf(),
                    s.pid,
                    s.camid,
                )
            })
            .collect()
    };
    assert_eq!(train(&da, a.path()), train(&db, b.path()));
    assert!(
        db.query.len() >= da.query.len() + 40,
        "{} queries",
        db.query.len()
    );
    assert_eq!(db.gallery.iter().filter(|s| s.pid == 0).count(), 30);
    assert!(nb > na + 30);
    // every extra identity has one query per camera it appears in, and gallery images in them
    let qpids: std::collections::BTreeSet<i64> = db.query.iter().map(|s| s.pid).collect();
    let gpids: std::collections::BTreeSet<i64> = db.gallery.iter().map(|s| s.pid).collect();
    assert!(qpids.is_subset(&gpids));
    // an imagefolder has no test side to grow
    assert!(SynthConfig {
        extra_test_ids: 1,
        ..cfg("t", SynthLayout::ImageFolder)
    }
    .validate()
    .is_err());
}
