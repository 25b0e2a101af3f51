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
