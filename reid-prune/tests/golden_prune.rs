//! Channel-importance criteria on ResNet-50 against `../shared/golden/prune/` (README §4).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use reid_model::checkpoint::read_safetensors;
use reid_model::hub::infer_backbone_spec;
use reid_model::ReidNet;
use reid_prune::criterion::entropy::{entropy_from_gap, Entropy};
use reid_prune::criterion::taylor::{taylor_from_tensors, Taylor};
use reid_prune::criterion::{by_name, Criterion, ScoreData};

const LAYERS: [&str; 2] = ["layer1.0.conv1", "layer3.2.conv2"];

fn golden() -> PathBuf {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../shared/golden");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn net() -> ReidNet {
    let dev = Device::Cpu;
    let g = golden();
    let mut t = read_safetensors(&g.join("resnet/resnet50.safetensors"), &dev)
        .unwrap()
        .tensors;
    t.retain(|k, _| !k.starts_with("fc.") && !k.ends_with("num_batches_tracked"));
    let fc = read_safetensors(&g.join("prune/fc751.safetensors"), &dev)
        .unwrap()
        .tensors;
    let mut spec = infer_backbone_spec(&g, &t, 2).unwrap();
    spec.num_classes = 751;
    // the golden fc has a zero bias, so a bias-free classifier computes the same logits
    assert!(f64s(&fc["fc.bias"]).iter().all(|&b| b == 0.0));
    t.insert("classifier.weight".into(), fc["fc.weight"].clone());
    ReidNet::from_tensors_frozen(&spec, &t, &dev).unwrap()
}

fn layers(net: &ReidNet) -> Vec<reid_model::PrunableConv> {
    net.prunable_convs()
        .into_iter()
        .filter(|p| LAYERS.contains(&p.conv.as_str()))
        .collect()
}

fn expected() -> HashMap<String, Tensor> {
    read_safetensors(
        &golden().join("prune/prune_scores.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .tensors
}

fn assert_rel(got: &[f64], want: &[f64], rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (c, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= rtol * b.abs().max(1e-300),
            "{what}[{c}]: {a} vs {b}"
        );
    }
}

#[test]
fn weight_criteria_match() {
    let net = net();
    let exp = expected();
    for (crit, key, rtol) in [
        ("l1", "l1", 1e-5),
        ("l2", "l2", 1e-5),
        ("fpgm", "fpgm", 1e-5),
        ("bn-gamma", "bn_gamma", 0.0),
    ] {
        let s = by_name(crit, 0)
            .unwrap()
            .scores(&net, &layers(&net), None)
            .unwrap();
        for l in LAYERS {
            assert_rel(
                &s[l],
                &f64s(&exp[&format!("{l}.{key}.scores")]),
                rtol,
                &format!("{l} {crit}"),
            );
        }
    }
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let rank = |v: &[f64]| {
        let idx = reid_prune::criterion::rank_ascending(v);
        let mut r = vec![0f64; v.len()];
        for (pos, &i) in idx.iter().enumerate() {
            r[i] = pos as f64;
        }
        r
    };
    let (ra, rb) = (rank(a), rank(b));
    let n = a.len() as f64;
    let d2: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - y) * (x - y)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

#[test]
fn taylor_formula_on_stored_tensors_and_end_to_end() {
    let exp = expected();
    let tt = read_safetensors(
        &golden().join("prune/prune_taylor_tensors.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .tensors;
    for l in LAYERS {
        let h = &tt[&format!("{l}.H")];
        let (n, c, _, _) = h.dims4().unwrap();
        let (per, scores) = taylor_from_tensors(&f64s(h), &f64s(&tt[&format!("{l}.dL_dH")]), n, c);
        assert_rel(
            &per,
            &f64s(&exp[&format!("{l}.taylor.per_image")]),
            1e-5,
            &format!("{l} taylor per image"),
        );
        assert_rel(
            &scores,
            &f64s(&exp[&format!("{l}.taylor.scores")]),
            1e-5,
            &format!("{l} taylor"),
        );
    }
    // end to end in f32: our forward, backward and formula
    let net = net();
    let batch = read_safetensors(
        &golden().join("prune/prune_batch.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .tensors;
    let data = ScoreData {
        batches: vec![(batch["x"].clone(), Some(batch["labels"].clone()))],
    };
    let s = Taylor.scores(&net, &layers(&net), Some(&data)).unwrap();
    for l in LAYERS {
        let want = f64s(&exp[&format!("{l}.taylor.scores")]);
        let max = want.iter().cloned().fold(0.0, f64::max);
        for (c, (a, b)) in s[l].iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 0.05 * max, "{l} taylor[{c}]: {a} vs {b}");
        }
        let rho = spearman(&s[l], &want);
        assert!(rho >= 0.99, "{l}: Spearman {rho}");
    }
}

#[test]
fn entropy_from_stored_gap_and_end_to_end() {
    let exp = expected();
    let prune_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("prune/prune.json")).unwrap())
            .unwrap();
    for l in LAYERS {
        let gap = &exp[&format!("{l}.entropy.gap")];
        let (n, c) = gap.dims2().unwrap();
        let (counts, scores) = entropy_from_gap(&f64s(gap), n, c, 10);
        let want_counts: Vec<i64> = exp[&format!("{l}.entropy.counts")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got_counts: Vec<i64> = counts.iter().flatten().map(|&x| x as i64).collect();
        assert_eq!(got_counts, want_counts, "{l} entropy counts");
        let want = f64s(&exp[&format!("{l}.entropy.scores")]);
        for (ch, (a, b)) in scores.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-12, "{l} entropy[{ch}]: {a} vs {b}");
        }
    }
    let net = net();
    let batch = read_safetensors(
        &golden().join("prune/entropy_batch.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
    .tensors;
    let data = ScoreData {
        batches: vec![(batch["x"].clone(), None)],
    };
    let s = Entropy::default()
        .scores(&net, &layers(&net), Some(&data))
        .unwrap();
    for l in LAYERS {
        let fragile: Vec<usize> = prune_json["layers"][l]["entropy"]
            ["fragile_channels_margin_below_1e-4"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let want = f64s(&exp[&format!("{l}.entropy.scores")]);
        for (ch, (a, b)) in s[l].iter().zip(&want).enumerate() {
            if !fragile.contains(&ch) {
                assert!(
                    (a - b).abs() <= 1e-9,
                    "{l} entropy end to end [{ch}]: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn data_criteria_without_data_and_unknown_names_are_refused() {
    let net = net();
    let e = Taylor
        .scores(&net, &layers(&net), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("taylor needs data"), "{e}");
    assert!(by_name("magic", 0)
        .err()
        .unwrap()
        .to_string()
        .contains("unknown criterion"));
}
