//! `reid-eval` writes only what belongs where it writes: a run folder's metrics.json takes the
//! results of that folder's own model (by content), at the size the model was trained at (another
//! size is its own entry); another checkpoint's results are printed, never merged; a checkpoint
//! whose batch norm holds a negative variance is refused, naming the tensor.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_model::checkpoint::{save_checkpoint, Provenance};
use reid_model::{ArchSpec, Neck, ReidNet};

fn dataset(dir: &Path) -> PathBuf {
    let root = dir.join("ds");
    let cfg = SynthConfig {
        domain: "target".into(),
        ids: 6,
        cams: 2,
        per_cam: 2,
        seed: 1,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout: SynthLayout::Market,
        extra_test_ids: 0,
        distractors: 0,
    };
    generate(&cfg, &root, |_| {}).unwrap();
    root
}

/// A tiny model trained (so its header says) at 64×32, saved at `path`.
fn model(path: &Path, seed: u64) -> ReidNet {
    let spec = ArchSpec::resnet_with(18, 6, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, seed).unwrap();
    let mut prov = Provenance::new();
    prov.input = Some(reid_run::InputSize::new(64, 32));
    save_checkpoint(&net, path, &prov).unwrap();
    net
}

fn eval(ck: &Path, root: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reid-eval"))
        .arg("--checkpoint")
        .arg(ck)
        .args(["--dataset", "market1501", "--root"])
        .arg(root)
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "failed: {err}");
    err
}

fn metrics(path: &Path) -> reid_run::RunMetrics {
    reid_run::metrics::read_metrics(path).unwrap()
}

#[test]
fn a_run_folder_keeps_its_own_models_results_at_its_own_size() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let ck = run.join("model.safetensors");
    let net = model(&ck, 0);

    // no --input: evaluated at the trained 64x32, and the record's complexity is at 64x32
    ok(&eval(&ck, &root, &[]));
    let first = metrics(&run.join("metrics.json"));
    let c = reid_model::complexity::complexity(net.spec(), 64, 32).unwrap();
    assert_eq!(first.macs, c.backbone.macs);
    assert_eq!(first.eval.keys().collect::<Vec<_>>(), ["market1501"]);

    // another size: its own entry; the trained size's entry is untouched
    ok(&eval(&ck, &root, &["--input", "128x64"]));
    let second = metrics(&run.join("metrics.json"));
    assert_eq!(
        second.eval.keys().collect::<Vec<_>>(),
        ["market1501", "market1501@128x64"]
    );
    assert_eq!(second.eval["market1501"], first.eval["market1501"]);
    assert_eq!(second.macs, first.macs);
    // the entry says its size (the report gives it none of the run's 64x32 costs)
    assert_eq!(
        second.eval["market1501@128x64"].input,
        Some(reid_run::InputSize::new(128, 64))
    );
    assert_eq!(second.eval["market1501"].input, None);

    // other options: their own entries too
    ok(&eval(&ck, &root, &["--flip", "--metric", "euclidean"]));
    let third = metrics(&run.join("metrics.json"));
    assert!(
        third.eval.contains_key("market1501+flip+euclidean"),
        "{:?}",
        third.eval.keys()
    );
    assert_eq!(third.eval["market1501"], first.eval["market1501"]);

    // a loose checkpoint (its folder holds no run of it): printed only, nothing written
    let loose = tmp.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    model(&loose.join("some.safetensors"), 3);
    let err = ok(&eval(&loose.join("some.safetensors"), &root, &[]));
    assert!(err.contains("printed only"), "{err}");
    assert!(!loose.join("metrics.json").exists());

    // another model in the same folder: printed, never merged
    let before = std::fs::read(run.join("metrics.json")).unwrap();
    let before_q = std::fs::read(run.join("per_query.json")).unwrap();
    let other = run.join("other.safetensors");
    model(&other, 7);
    let err = ok(&eval(&other, &root, &[]));
    assert!(
        err.contains("is not") && err.contains("printed only"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);
    assert_eq!(std::fs::read(run.join("per_query.json")).unwrap(), before_q);

    // ... and refused when --out names that folder's metrics
    let o = eval(
        &other,
        &root,
        &["--out", run.join("metrics.json").to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("other.safetensors") && err.contains("model.safetensors"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);

    // the run's dataset name on other images (its config.toml names its root): printed only
    std::fs::write(
        run.join("config.toml"),
        format!(
            "dataset = \"market1501\"\nroot = {:?}\n",
            root.to_str().unwrap()
        ),
    )
    .unwrap();
    let other_root = dataset(&tmp.path().join("other"));
    let before = std::fs::read(run.join("metrics.json")).unwrap();
    let err = ok(&eval(&ck, &other_root, &[]));
    assert!(
        err.contains("is not the data the run") && err.contains("printed only"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);

    // a metrics.json of another network (no model beside it) is not merged into either
    let lone = tmp.path().join("lone");
    std::fs::create_dir_all(&lone).unwrap();
    std::fs::copy(run.join("metrics.json"), lone.join("metrics.json")).unwrap();
    let wide = tmp.path().join("wide.safetensors");
    let spec = ArchSpec::resnet_with(18, 6, 0.25, 1, Neck::BnNeck).unwrap();
    let mut prov = Provenance::new();
    prov.input = Some(reid_run::InputSize::new(64, 32));
    save_checkpoint(&ReidNet::new(&spec, &Device::Cpu, 0).unwrap(), &wide, &prov).unwrap();
    let o = eval(
        &wide,
        &root,
        &["--out", lone.join("metrics.json").to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("parameters"), "{err}");
}

#[test]
fn a_negative_batch_norm_variance_is_named_where_it_enters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let spec = ArchSpec::resnet_with(18, 6, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, 0).unwrap();
    let mut tensors: Vec<(String, Tensor)> = net.state_dict().unwrap();
    let bad = "layer2.0.bn1.running_var";
    for (name, t) in tensors.iter_mut() {
        if name == bad {
            *t = (t.ones_like().unwrap() * -1.0).unwrap();
        }
    }
    let arch = serde_json::to_string(net.spec()).unwrap();
    let meta = std::collections::HashMap::from([("reid.arch".to_string(), arch)]);
    let ck = tmp.path().join("bad.safetensors");
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        Some(meta),
        &ck,
    )
    .unwrap();
    let o = eval(&ck, &root, &["--out", "/nonexistent/never/metrics.json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(bad) && err.contains("negative") && err.contains("variance"),
        "{err}"
    );
}

/// A run's data is told by content, not by the path its config.toml was given: a relative root
/// names other images from another working directory, and the same images reached by another
/// path are the run's own.
#[test]
fn a_runs_data_is_recognised_by_its_fingerprint_not_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let ck = run.join("model.safetensors");
    model(&ck, 0);
    ok(&eval(&ck, &root, &[]));
    // trained from `tmp` on "ds" (relative), as `reid-prune train --root ds` records it
    std::fs::write(
        run.join("config.toml"),
        "dataset = \"market1501\"\nroot = \"ds\"\n",
    )
    .unwrap();
    let mut m = metrics(&run.join("metrics.json"));
    let ds = reid_data::datasets::load("market1501", &root).unwrap();
    m.data.insert(
        reid_run::metrics::TRAIN_DATA.into(),
        reid_data::datasets::fingerprint(&ds).unwrap(),
    );
    reid_run::metrics::write_metrics(&run.join("metrics.json"), &m).unwrap();
    let before = std::fs::read(run.join("metrics.json")).unwrap();

    // from another folder whose "ds" holds other images: printed only
    let elsewhere = tmp.path().join("sub");
    dataset(&elsewhere);
    let o = Command::new(env!("CARGO_BIN_EXE_reid-eval"))
        .current_dir(&elsewhere)
        .arg("--checkpoint")
        .arg(&ck)
        .args(["--dataset", "market1501", "--root", "ds"])
        .output()
        .unwrap();
    let err = ok(&o);
    assert!(
        err.contains("is not the data the run")
            && err.contains("records the listed images' fingerprint")
            && err.contains("printed only"),
        "{err}"
    );
    assert_eq!(std::fs::read(run.join("metrics.json")).unwrap(), before);

    // the run's own images by another path: written
    let err = ok(&eval(&ck, &tmp.path().join("sub/../ds"), &["--flip"]));
    assert!(!err.contains("printed only"), "{err}");
    assert!(metrics(&run.join("metrics.json"))
        .eval
        .contains_key("market1501+flip"));
}

/// `reid-eval bench` refuses counts of zero (`--ids 0` panicked on a division) and sizes whose
/// features and distance matrix exceed the machine (10⁹ × 10⁹ grew to 24 GB and was killed).
#[test]
fn bench_sizes_are_checked_before_anything_is_allocated() {
    let bench = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_reid-eval"))
            .arg("bench")
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let o = bench(&["--ids", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--ids 0: expected at least 1"), "{err}");
    let o = bench(&[
        "--queries",
        "1000000000",
        "--gallery",
        "1000000000",
        "--ids",
        "3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("GB (estimated, with the full distance matrix) and this machine has"),
        "{err}"
    );
}

/// Finite weights that overflow on real images (±3e38): extraction and evaluation are refused
/// naming an image and the cause, and no feature file is written (before, the NaN features were
/// saved, and an evaluation blamed the distance matrix).
#[test]
fn features_that_overflow_are_refused_where_they_are_computed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let spec = ArchSpec::resnet_with(18, 6, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, 0).unwrap();
    let mut tensors: std::collections::HashMap<String, Tensor> =
        net.state_dict().unwrap().into_iter().collect();
    // the last conv: an overflow in conv1 can end at zero after a ReLU (f32::max drops NaN)
    let w = &tensors["layer4.1.conv2.weight"];
    let n = w.elem_count();
    let huge: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { 3e38 } else { -3e38 })
        .collect();
    let huge = Tensor::from_vec(huge, w.shape(), &Device::Cpu).unwrap();
    tensors.insert("layer4.1.conv2.weight".into(), huge);
    let net = ReidNet::from_tensors_trainable(&spec, &tensors, &Device::Cpu, 0).unwrap();
    let ck = tmp.path().join("big.safetensors");
    let mut prov = Provenance::new();
    prov.input = Some(reid_run::InputSize::new(64, 32));
    save_checkpoint(&net, &ck, &prov).unwrap();

    let out = tmp.path().join("features.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_reid-eval"))
        .arg("extract")
        .arg("--weights")
        .arg(&ck)
        .arg("--images")
        .arg(root.join("query"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("the model's feature is NaN or infinite") && err.contains(".jpg"),
        "{err}"
    );
    assert!(!out.exists());
    let o = eval(&ck, &root, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("the model's feature is NaN or infinite"),
        "{err}"
    );
}

/// An unfinished (interrupted, resumable) training folder gets no metrics.json from reid-eval:
/// one written there would mark the folder as a finished run. Printed without --out, refused
/// with an --out into it.
#[test]
fn an_unfinished_training_gets_no_metrics_from_an_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let ck = run.join("model.safetensors");
    model(&ck, 0);
    std::fs::write(run.join("trainer_state.safetensors"), b"state").unwrap();
    let err = ok(&eval(&ck, &root, &[]));
    assert!(err.contains("holds an unfinished training"), "{err}");
    assert!(!run.join("metrics.json").exists());
    let o = eval(
        &ck,
        &root,
        &["--out", run.join("metrics.json").to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("holds an unfinished training"),
        "{err}"
    );
    assert!(!run.join("metrics.json").exists());
    // finished (its metrics.json written; the trainer state stays): results go where asked
    std::fs::remove_file(run.join("trainer_state.safetensors")).unwrap();
    ok(&eval(&ck, &root, &[]));
    std::fs::write(run.join("trainer_state.safetensors"), b"state").unwrap();
    ok(&eval(
        &ck,
        &root,
        &["--out", run.join("other.json").to_str().unwrap()],
    ));
    assert!(run.join("other.json").is_file());
}

/// A metrics file outside any run folder (`--out` elsewhere) names the model its results are
/// of: a second model of the same shape is refused, not merged beside the first one's results
/// (before, only the architecture and parameter count were compared).
#[test]
fn a_loose_metrics_file_holds_one_models_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = dataset(tmp.path());
    let (a, b) = (
        tmp.path().join("a.safetensors"),
        tmp.path().join("b.safetensors"),
    );
    model(&a, 1);
    model(&b, 2);
    let out = tmp.path().join("results").join("metrics.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let out_flag = ["--out", out.to_str().unwrap()];
    ok(&eval(&a, &root, &out_flag));
    let first = metrics(&out);
    assert_eq!(
        first.model_sha256.as_deref(),
        Some(reid_run::file_sha256(&a).unwrap().as_str())
    );
    // the same model under other options: merged
    ok(&eval(&a, &root, &[&out_flag[..], &["--flip"]].concat()));
    assert_eq!(metrics(&out).eval.len(), 2);
    // another model of the same shape: refused, the file as it was
    let before = std::fs::read(&out).unwrap();
    let o = eval(
        &b,
        &root,
        &[&out_flag[..], &["--flip", "--metric", "euclidean"]].concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("holds the results of another model") && err.contains("b.safetensors"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
}
