//! The one weights loader: every mode (inference, any trainable, ImageNet init) reads checkpoints
//! and plain torchvision-style state dicts with the same strict checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use reid_model::checkpoint::{save_checkpoint, Provenance};
use reid_model::hub::HeadOptions;
use reid_model::{load_weights, ArchSpec, LoadOptions, Neck, ReidNet};

/// A plain state dict as torchvision writes it: backbone names, `fc.weight`/`fc.bias`, no header.
fn plain_state_dict(classes: usize) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let spec = ArchSpec::resnet_with(18, classes, 0.125, 2, Neck::None).unwrap();
    let net = ReidNet::new(&spec, &dev, 3).unwrap();
    let mut map: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
    let fc = map.remove("classifier.weight").unwrap();
    map.insert("fc.weight".into(), fc);
    map.insert(
        "fc.bias".into(),
        Tensor::zeros(classes, DType::F32, &dev).unwrap(),
    );
    map
}

fn save_plain(dir: &Path, name: &str, map: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(map, &path).unwrap();
    path
}

fn all_modes() -> Vec<(&'static str, LoadOptions)> {
    vec![
        ("inference", LoadOptions::inference(2)),
        ("any", LoadOptions::any_trainable()),
        ("imagenet", LoadOptions::imagenet(HeadOptions::default())),
    ]
}

/// The error of loading `path` with `opts` (the test fails if it loads).
fn load_err(path: &Path, opts: &LoadOptions) -> String {
    match load_weights(path, opts, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn plain_weights_load_in_every_mode_with_the_head_each_asks_for() {
    let tmp = tempfile::tempdir().unwrap();
    let map = plain_state_dict(7);
    let path = save_plain(tmp.path(), "plain.safetensors", &map);
    let dev = Device::Cpu;

    let inf = load_weights(&path, &LoadOptions::inference(2), &dev).unwrap();
    assert!(!inf.is_checkpoint);
    assert_eq!(inf.net.spec().num_classes, 0);
    assert_eq!(inf.net.spec().neck, Neck::None);
    let any = load_weights(&path, &LoadOptions::any_trainable(), &dev).unwrap();
    assert_eq!(any.net.spec().num_classes, 7, "fc became the classifier");
    let head = HeadOptions {
        num_classes: 5,
        last_stride: 1,
        neck: Neck::BnNeck,
        seed: 0,
    };
    let init = load_weights(&path, &LoadOptions::imagenet(head), &dev).unwrap();
    assert_eq!(init.net.spec().num_classes, 5);
    assert_eq!(init.net.spec().neck, Neck::BnNeck);
    assert_eq!(init.net.spec().last_stride, 1);
    assert_eq!(
        init.provenance.source_weights.as_deref(),
        Some(path.display().to_string().as_str())
    );

    // The backbone tensors are the file's in every mode, the classifier is fc.
    for loaded in [&inf, &any, &init] {
        let sd: HashMap<String, Tensor> = loaded.net.state_dict().unwrap().into_iter().collect();
        for name in [
            "conv1.weight",
            "layer4.1.conv2.weight",
            "layer2.0.bn1.running_var",
        ] {
            assert_eq!(values(&sd[name]), values(&map[name]), "{name}");
        }
    }
    let sd: HashMap<String, Tensor> = any.net.state_dict().unwrap().into_iter().collect();
    assert_eq!(values(&sd["classifier.weight"]), values(&map["fc.weight"]));
}

#[test]
fn a_stray_or_missing_tensor_is_refused_in_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let mut stray = plain_state_dict(7);
    stray.insert(
        "layer1.0.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let stray = save_plain(tmp.path(), "stray.safetensors", &stray);
    let mut missing = plain_state_dict(7);
    missing.remove("layer3.1.bn2.running_mean");
    let missing = save_plain(tmp.path(), "missing.safetensors", &missing);
    for (mode, opts) in all_modes() {
        let e = load_err(&stray, &opts);
        assert!(
            e.contains("stray.safetensors") && e.contains("layer1.0.extra.weight"),
            "{mode}: {e}"
        );
        let e = load_err(&missing, &opts);
        assert!(
            e.contains("missing.safetensors") && e.contains("layer3.1.bn2.running_mean"),
            "{mode}: {e}"
        );
    }
}

#[test]
fn a_non_finite_value_is_refused_in_every_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let mut map = plain_state_dict(7);
    let w = &map["layer2.1.conv1.weight"];
    let mut v = values(w);
    v[5] = f32::NAN;
    let bad = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
    map.insert("layer2.1.conv1.weight".into(), bad);
    let path = save_plain(tmp.path(), "nan.safetensors", &map);
    for (mode, opts) in all_modes() {
        let e = load_err(&path, &opts);
        assert!(
            e.contains("nan.safetensors") && e.contains("layer2.1.conv1.weight"),
            "{mode}: {e}"
        );
    }
}

#[test]
fn the_expected_architecture_must_be_the_one_held() {
    let tmp = tempfile::tempdir().unwrap();
    let path = save_plain(tmp.path(), "r18.safetensors", &plain_state_dict(7));
    for (mode, opts) in all_modes() {
        load_weights(
            &path,
            &opts.clone().expecting(Some("resnet18")),
            &Device::Cpu,
        )
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let e = load_err(&path, &opts.clone().expecting(Some("resnet50")));
        assert!(
            e.contains("resnet50") && e.contains("resnet18"),
            "{mode}: {e}"
        );
        let e = load_err(&path, &opts.expecting(Some("vgg16")));
        assert!(e.contains("unknown architecture 'vgg16'"), "{mode}: {e}");
    }
}

#[test]
fn a_checkpoint_is_refused_only_as_imagenet_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ArchSpec::resnet_with(18, 4, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &Device::Cpu, 0).unwrap();
    let path = tmp.path().join("model.safetensors");
    let mut prov = Provenance::new();
    prov.criterion = Some("l1".into());
    save_checkpoint(&net, &path, &prov).unwrap();
    for (mode, opts) in all_modes() {
        match load_weights(&path, &opts, &Device::Cpu) {
            Ok(l) => {
                assert_ne!(mode, "imagenet");
                assert!(l.is_checkpoint);
                assert_eq!(l.net.spec(), &spec, "{mode}");
                assert_eq!(l.provenance, prov, "{mode}");
            }
            Err(e) => {
                assert_eq!(mode, "imagenet");
                let e = e.to_string();
                assert!(
                    e.contains("model.safetensors") && e.contains("reid checkpoint"),
                    "{e}"
                );
            }
        }
    }
}

#[test]
fn a_misshaped_fc_is_refused_as_a_classifier() {
    let tmp = tempfile::tempdir().unwrap();
    let mut map = plain_state_dict(7);
    map.insert(
        "fc.weight".into(),
        Tensor::zeros((7, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = save_plain(tmp.path(), "fc.safetensors", &map);
    let e = load_err(&path, &LoadOptions::any_trainable());
    assert!(
        e.contains("fc.safetensors") && e.contains("fc.weight"),
        "{e}"
    );
    // Dropped, it does not matter.
    load_weights(&path, &LoadOptions::inference(2), &Device::Cpu).unwrap();
}
