//! `extract` on the golden PNGs reproduces torchvision's preprocessing and pooled features.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use reid_data::{list_images, ImageBatch, Preprocess};
use reid_eval::{extract_features, load_model_for_inference, save_features, FeatureKind};
use reid_model::checkpoint::read_safetensors;

fn golden() -> PathBuf {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../shared/golden");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn check(arch: &str, tol: f64) {
    let dev = Device::Cpu;
    let g = golden();
    let paths = list_images(&g.join("resnet/images")).unwrap();
    assert_eq!(paths.len(), 4);
    let pre = Preprocess::imagenet(256, 128);
    let outputs =
        read_safetensors(&g.join(format!("resnet/{arch}_outputs.safetensors")), &dev).unwrap();
    // preprocessing is bit-exact
    let batch = ImageBatch::load(&paths, &pre).unwrap();
    let want: Vec<f32> = outputs.tensors["images.preprocessed"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(batch.data, want);

    let weights = g.join(format!("resnet/{arch}.safetensors"));
    let net = load_model_for_inference(&weights, Some(arch), 2, &dev).unwrap();
    let feats = extract_features(&net, &paths, &pre, 3, FeatureKind::Pool, false).unwrap();
    let d = max_abs(&feats, &outputs.tensors["images.features_f64"]);
    assert!(d <= tol, "{arch} image features differ by {d}");

    // written file: features plus the file names in sorted order
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("feats.safetensors");
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    save_features(&out, &feats, &names, FeatureKind::Pool).unwrap();
    let back = read_safetensors(&out, &dev).unwrap();
    assert_eq!(max_abs(&back.tensors["features"], &feats), 0.0);
    let files: Vec<String> = serde_json::from_str(&back.metadata["files"]).unwrap();
    assert_eq!(files, vec!["img0.png", "img1.png", "img2.png", "img3.png"]);
}

#[test]
fn resnet18_image_features_match_torchvision() {
    check("resnet18", 5e-5);
}

#[test]
fn resnet50_image_features_match_torchvision() {
    check("resnet50", 2e-3);
}

#[test]
fn wrong_arch_is_refused() {
    let g = golden();
    let e = load_model_for_inference(
        &g.join("resnet/resnet18.safetensors"),
        Some("resnet50"),
        2,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("resnet18") && e.contains("--arch resnet50"),
        "{e}"
    );
}

#[test]
fn flip_adds_the_mirrored_image_feature() {
    let g = golden();
    let dev = Device::Cpu;
    let paths = list_images(&g.join("resnet/images")).unwrap();
    let pre = Preprocess::imagenet(256, 128);
    let net =
        load_model_for_inference(&g.join("resnet/resnet18.safetensors"), None, 2, &dev).unwrap();
    let plain = extract_features(&net, &paths[..1], &pre, 1, FeatureKind::Pool, false).unwrap();
    let both = reid_eval::extract_features_with(
        &net,
        &paths[..1],
        &pre,
        1,
        FeatureKind::Pool,
        true,
        false,
    )
    .unwrap();
    // mirror the image by hand and extract it alone
    let img = image::open(&paths[0]).unwrap().to_rgb8();
    let dir = tempfile::tempdir().unwrap();
    let mirrored = dir.path().join("m.png");
    image::imageops::flip_horizontal(&img)
        .save(&mirrored)
        .unwrap();
    let flipped = extract_features(&net, &[mirrored], &pre, 1, FeatureKind::Pool, false).unwrap();
    let want = (plain + flipped).unwrap();
    assert!(max_abs(&both, &want) < 1e-4);
}
