//! `reid-prune sensitivity`: every prunable conv at every ratio, on held-out training identities
//! only (the test split is never read), as `sensitivity.json`; bad settings refused first.

use std::path::Path;

use common::{synth, trained_tiny};
use reid_data::synth::SynthLayout;
use reid_model::checkpoint::{save_checkpoint, Provenance};
use reid_prune::sensitivity::{held_out_split, run_sensitivity, SensitivityConfig};

mod common;

fn config(tmp: &Path) -> SensitivityConfig {
    let root = tmp.join("ds");
    synth(&root, "target", SynthLayout::Market);
    let ck = tmp.join("model.safetensors");
    save_checkpoint(&trained_tiny(18, 0.125), &ck, &Provenance::new()).unwrap();
    SensitivityConfig {
        checkpoint: ck,
        dataset: "market1501".into(),
        root,
        criterion: "l1".into(),
        ratios: vec![0.25, 0.5, 0.75],
        held_out: 0.25,
        input: reid_run::InputSize::new(64, 32),
        seed: 0,
    }
}

#[test]
fn every_layer_at_every_ratio_on_held_out_training_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let mut told = 0;
    let s = run_sensitivity(&cfg, |_| told += 1).unwrap();
    let spec =
        reid_model::ArchSpec::resnet_with(18, 5, 0.125, 1, reid_model::Neck::BnNeck).unwrap();
    let prunable = spec.prunable_convs();
    assert_eq!(s.layers.len(), prunable.len());
    assert_eq!(told, prunable.len());
    for (l, p) in s.layers.iter().zip(&prunable) {
        assert_eq!((l.conv.as_str(), l.width), (p.conv.as_str(), p.width));
        let kept: Vec<usize> = l.points.iter().map(|q| q.kept).collect();
        let want: Vec<usize> = cfg
            .ratios
            .iter()
            .map(|r| ((p.width as f64 * (1.0 - r)).round() as usize).max(1))
            .collect();
        assert_eq!(kept, want, "{}", l.conv);
        for q in &l.points {
            assert!((0.0..=1.0).contains(&q.rank1) && (0.0..=1.0).contains(&q.map));
        }
    }
    assert!(s.queries > 0);
    // the held-out identities are the last quarter of the training ones, and no image of the
    // evaluation is one of the test split's
    let ds = reid_data::datasets::load("market1501", &cfg.root).unwrap();
    let (split, ids) = held_out_split(&ds, cfg.held_out).unwrap();
    assert_eq!(ids, s.held_out_ids);
    let mut train_ids: Vec<i64> = ds.train.iter().map(|x| x.pid).collect();
    train_ids.sort_unstable();
    train_ids.dedup();
    assert_eq!(ids, train_ids[train_ids.len() - ids.len()..]);
    let test: std::collections::HashSet<_> = ds
        .query
        .iter()
        .chain(&ds.gallery)
        .map(|x| &x.path)
        .collect();
    assert!(split
        .query
        .iter()
        .chain(&split.gallery)
        .all(|x| !test.contains(&x.path) && ids.contains(&x.pid)));
}

#[test]
fn bad_settings_are_refused_before_anything_is_computed() {
    let tmp = tempfile::tempdir().unwrap();
    let base = config(tmp.path());
    for (cfg, want) in [
        (
            SensitivityConfig {
                ratios: vec![0.5, 1.0],
                ..base.clone()
            },
            "--ratios",
        ),
        (
            SensitivityConfig {
                held_out: 0.0,
                ..base.clone()
            },
            "--held-out 0",
        ),
        (
            SensitivityConfig {
                criterion: "l7".into(),
                ..base.clone()
            },
            "unknown criterion 'l7'",
        ),
    ] {
        let e = run_sensitivity(&cfg, |_| panic!("nothing is measured")).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}
