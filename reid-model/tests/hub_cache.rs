//! ImageNet weights by hub id, resolved through a Hugging Face cache laid out on disk (the hub
//! itself is unreachable here), and by local path.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use reid_model::hub::{load_imagenet, resolve_weights, HeadOptions};
use reid_model::{ArchSpec, Neck, ReidNet};

/// A tiny torchvision-style ResNet-18 state dict with `fc.*` and `num_batches_tracked`.
fn torchvision_file(path: &std::path::Path) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let spec = ArchSpec::resnet_with(18, 0, 0.125, 2, Neck::None).unwrap();
    let net = ReidNet::new(&spec, &dev, 0).unwrap();
    let mut map: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
    map.insert(
        "fc.weight".into(),
        Tensor::ones((1000, 64), DType::F32, &dev).unwrap(),
    );
    map.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &dev).unwrap(),
    );
    map.insert(
        "bn1.num_batches_tracked".into(),
        Tensor::new(2i64, &dev).unwrap(),
    );
    // stored as F16, as timm/torchvision exports often are
    let f16: Vec<(String, Tensor)> = map
        .iter()
        .map(|(k, t)| {
            let t = if t.dtype() == DType::F32 {
                t.to_dtype(DType::F16).unwrap()
            } else {
                t.clone()
            };
            (k.clone(), t)
        })
        .collect();
    safetensors::serialize_to_file(f16.iter().map(|(k, t)| (k.as_str(), t)), None, path).unwrap();
    map
}

#[test]
fn hub_id_through_offline_cache_and_local_path() {
    let dev = Device::Cpu;
    let cache = tempfile::tempdir().unwrap();
    let repo_dir = cache.path().join("models--timm--resnet18.tv_in1k");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    let original = torchvision_file(&snap.join("model.safetensors"));

    // This test binary has this single test, so setting the process environment is race-free.
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let resolved = resolve_weights("timm/resnet18.tv_in1k").unwrap();
    assert_eq!(resolved, snap.join("model.safetensors"));

    let head = HeadOptions {
        num_classes: 11,
        last_stride: 1,
        neck: Neck::BnNeck,
        seed: 3,
    };
    let (net, path) = load_imagenet("timm/resnet18.tv_in1k", head, &dev).unwrap();
    assert_eq!(path, resolved);
    let spec = net.spec();
    assert_eq!(
        (spec.depth, spec.last_stride, spec.num_classes),
        (18, 1, 11)
    );
    assert_eq!(spec.stages[3][0].stride, 1);
    let sd: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
    assert!(!sd.contains_key("fc.weight"));
    assert_eq!(sd["classifier.weight"].dims(), &[11, 64]);
    let gamma: Vec<f32> = sd["bnneck.weight"].to_vec1().unwrap();
    assert!(gamma.iter().all(|&g| g == 1.0));
    // backbone weights are the file's (F16-rounded) values
    let a: Vec<f32> = sd["layer2.0.conv1.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = original["layer2.0.conv1.weight"]
        .to_dtype(DType::F16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
    assert!(net.is_trainable());

    // a repo that is not cached, offline: a clear error naming the repo and the cache
    let e = resolve_weights("timm/resnet50.tv_in1k")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("timm/resnet50.tv_in1k") && e.contains("HF_HUB_OFFLINE"),
        "{e}"
    );

    // a local path works the same
    let (net2, _) = load_imagenet(resolved.to_str().unwrap(), head, &dev).unwrap();
    assert_eq!(net2.spec(), net.spec());
}
