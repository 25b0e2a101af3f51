//! CMC / mAP / mINP and distances against `../shared/golden/eval/` (torchreid + AGW).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use reid_eval::{distance_matrix, evaluate_distmat, evaluate_features, ApKind, Labels, Metric};
use reid_model::checkpoint::read_safetensors;

fn golden() -> PathBuf {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../shared/golden/eval");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64).unwrap().to_vec1().unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn case(name: &str) {
    let dev = Device::Cpu;
    let f = read_safetensors(&golden().join(format!("{name}.safetensors")), &dev).unwrap();
    let t = |k: &str| {
        f.tensors
            .get(k)
            .unwrap_or_else(|| panic!("{name}: no {k}"))
            .clone()
    };
    let labels = Labels {
        q_pids: i64s(&t("q_pids")),
        q_camids: i64s(&t("q_camids")),
        g_pids: i64s(&t("g_pids")),
        g_camids: i64s(&t("g_camids")),
    };
    let distmat: Vec<f32> = t("distmat").flatten_all().unwrap().to_vec1().unwrap();
    let (m, per) = evaluate_distmat(&distmat, &labels, 50, ApKind::Exact).unwrap();

    let cmc = f64s(&t("expected_cmc"));
    assert_eq!(m.cmc.len(), cmc.len(), "{name}: max rank");
    for (k, (a, b)) in m.cmc.iter().zip(&cmc).enumerate() {
        assert!((a - b).abs() <= 1e-7, "{name}: cmc[{k}] {a} vs {b}");
    }
    // per-query AP/INP are stored with f32 accumulation (golden README: atol 1e-6)
    let ap = f64s(&t("expected_ap"));
    let inp = f64s(&t("expected_inp"));
    let first = i64s(&t("expected_first_hit_rank0"));
    let last = i64s(&t("expected_hardest_hit_rank0"));
    let npos = i64s(&t("expected_num_pos"));
    let valid: Vec<u8> = t("expected_valid")
        .to_dtype(DType::U8)
        .unwrap()
        .to_vec1()
        .unwrap();
    for (q, r) in per.iter().enumerate() {
        match r {
            None => {
                assert_eq!(valid[q], 0, "{name}: query {q} should be valid");
                assert!(ap[q].is_nan() && first[q] == -1);
            }
            Some(r) => {
                assert_eq!(valid[q], 1, "{name}: query {q} should be skipped");
                assert!(
                    (r.ap - ap[q]).abs() <= 1e-6,
                    "{name}: AP[{q}] {} vs {}",
                    r.ap,
                    ap[q]
                );
                assert!((r.inp - inp[q]).abs() <= 1e-6, "{name}: INP[{q}]");
                assert_eq!(
                    r.first_rank as i64 - 1,
                    first[q],
                    "{name}: first hit of {q}"
                );
                assert_eq!(
                    r.last_rank as i64 - 1,
                    last[q],
                    "{name}: hardest hit of {q}"
                );
                assert_eq!(r.num_pos as i64, npos[q], "{name}: positives of {q}");
            }
        }
    }
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden().join("eval_cases.json")).unwrap())
            .unwrap();
    let exp = cases["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["expected"]
        .clone();
    assert!(
        (m.map - exp["mAP"].as_f64().unwrap()).abs() <= 1e-12,
        "{name}: mAP {}",
        m.map
    );
    assert!(
        (m.minp - exp["mINP"].as_f64().unwrap()).abs() <= 1e-12,
        "{name}: mINP {}",
        m.minp
    );
    assert_eq!(
        m.num_valid_queries as u64,
        exp["num_valid_q"].as_u64().unwrap()
    );
    assert_eq!(m.num_queries, labels.q_pids.len());

    // Feature cases: our distances equal torchreid's (rtol 1e-5), and evaluating from the
    // features gives the same metrics.
    if let (Some(qf), Some(gf)) = (f.tensors.get("qf"), f.tensors.get("gf")) {
        let metric = if name == "small_no_valid_match" {
            Metric::Cosine
        } else {
            Metric::Euclidean
        };
        let ours = f64s(&distance_matrix(qf, gf, metric).unwrap());
        let scale = distmat.iter().fold(0f64, |a, &b| a.max(b.abs() as f64));
        for (a, b) in ours.iter().zip(&distmat) {
            assert!(
                (a - *b as f64).abs() <= 1e-5 * scale,
                "{name}: distance {a} vs {b}"
            );
        }
        let mf = evaluate_features(qf, gf, &labels, metric, 50, ApKind::Exact, 7).unwrap();
        assert!(
            (mf.map - m.map).abs() < 1e-6 && (mf.rank(1) - m.rank(1)).abs() < 1e-9,
            "{name}"
        );
    }
}

#[test]
fn tiny_handcheck() {
    case("tiny_handcheck");
}

#[test]
fn small_basic() {
    case("small_basic");
}

#[test]
fn small_junk_distractors() {
    case("small_junk_distractors");
}

#[test]
fn small_no_valid_match() {
    case("small_no_valid_match");
}
