//! `reid-eval score` refuses inputs that would give a wrong number without a word: non-finite
//! distances or features and fractional labels are errors naming the file and tensor; an existing
//! metrics.json that is not an object is never replaced.

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};

fn write(path: &Path, tensors: &[(&str, Tensor)]) {
    safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (*k, t)), None, path).unwrap();
}

fn score(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reid-eval"))
        .arg("score")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn labels(n: usize) -> Tensor {
    Tensor::from_vec(
        (0..n as i64).map(|i| i % 3).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn nan_distances_and_fractional_pids_are_named() {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let (nq, ng) = (3, 5);
    let mut d: Vec<f32> = (0..nq * ng).map(|i| i as f32 / 10.0).collect();
    d[7] = f32::NAN;
    let cams_q = Tensor::zeros(nq, candle_core::DType::I64, &dev).unwrap();
    let cams_g = Tensor::ones(ng, candle_core::DType::I64, &dev).unwrap();
    let bad = tmp.path().join("nan.safetensors");
    write(
        &bad,
        &[
            ("distmat", Tensor::from_vec(d, (nq, ng), &dev).unwrap()),
            ("q_pids", labels(nq)),
            ("g_pids", labels(ng)),
            ("q_camids", cams_q.clone()),
            ("g_camids", cams_g.clone()),
        ],
    );
    let (ok, err) = score(&["--distmat".as_ref(), bad.as_os_str()]);
    assert!(
        !ok && err.contains("nan.safetensors") && err.contains("NaN"),
        "{err}"
    );

    let frac = tmp.path().join("frac.safetensors");
    let d: Vec<f32> = (0..nq * ng).map(|i| i as f32 / 10.0).collect();
    write(
        &frac,
        &[
            ("distmat", Tensor::from_vec(d, (nq, ng), &dev).unwrap()),
            ("q_pids", Tensor::new(&[0.7f32, 1.0, 2.0], &dev).unwrap()),
            ("g_pids", labels(ng)),
            ("q_camids", cams_q),
            ("g_camids", cams_g),
        ],
    );
    let (ok, err) = score(&["--distmat".as_ref(), frac.as_os_str()]);
    assert!(
        !ok && err.contains("q_pids") && err.contains("0.7") && err.contains("integer"),
        "{err}"
    );
}

#[test]
fn featureless_rows_and_an_impossible_k2_are_refused() {
    let dev = Device::Cpu;
    let tmp = tempfile::tempdir().unwrap();
    let files = |name: &str, n: usize, d: usize| {
        let p = tmp.path().join(name);
        let f = Tensor::rand(0f32, 1., (n, d), &dev).unwrap();
        write(
            &p,
            &[
                ("features", f),
                ("pids", labels(n)),
                (
                    "camids",
                    Tensor::zeros(n, candle_core::DType::I64, &dev).unwrap(),
                ),
            ],
        );
        p
    };
    let (q, g) = (files("q0.safetensors", 3, 0), files("g0.safetensors", 5, 0));
    let (ok, err) = score(&[
        "--query".as_ref(),
        q.as_os_str(),
        "--gallery".as_ref(),
        g.as_os_str(),
    ]);
    assert!(
        !ok && err.contains("shape [3, 0]") && err.contains("D ≥ 1"),
        "{err}"
    );
    // 8 images cannot give 50 neighbours each (this panicked inside the query expansion)
    let (q, g) = (files("q.safetensors", 3, 4), files("g.safetensors", 5, 4));
    let (ok, err) = score(&[
        "--query".as_ref(),
        q.as_os_str(),
        "--gallery".as_ref(),
        g.as_os_str(),
        "--rerank".as_ref(),
        "--k1".as_ref(),
        "2".as_ref(),
        "--k2".as_ref(),
        "50".as_ref(),
    ]);
    assert!(
        !ok && err.contains("k2 = 50") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_cmc_of_no_ranks_is_refused() {
    let (ok, err) = score(&["--max-rank".as_ref(), "0".as_ref()]);
    assert!(
        !ok && err.contains("--max-rank") && err.contains("0"),
        "{err}"
    );
}
