//! Full-size ResNet-18/50 forward passes and complexity against `../shared/golden/`
//! (torchvision outputs; see golden/README.md for the tolerances used here).

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use reid_model::checkpoint::read_safetensors;
use reid_model::complexity::complexity;
use reid_model::hub::infer_backbone_spec;
use reid_model::{ActivationTrace, ArchSpec, Neck, ReidNet};

fn golden() -> PathBuf {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../../shared/golden");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Forward `input` (f32 [2,3,256,128]) through the F16 golden weights; compare every stored stage.
fn check_arch(arch: &str, tol: [f32; 6]) {
    let dev = Device::Cpu;
    let g = golden();
    let weights = read_safetensors(&g.join(format!("resnet/{arch}.safetensors")), &dev).unwrap();
    let mut tensors = weights.tensors;
    let fc_w = tensors.remove("fc.weight").unwrap();
    let fc_b = tensors.remove("fc.bias").unwrap();
    tensors.retain(|k, _| !k.ends_with("num_batches_tracked"));
    let spec = infer_backbone_spec(&g, &tensors, 2).unwrap();
    assert_eq!(spec.name(), arch);
    assert_eq!(spec.neck, Neck::None);
    let net = ReidNet::from_tensors_frozen(&spec, &tensors, &dev).unwrap();
    let input = read_safetensors(&g.join("resnet/input.safetensors"), &dev).unwrap();
    let x = &input.tensors["input"];
    let out =
        read_safetensors(&g.join(format!("resnet/{arch}_outputs.safetensors")), &dev).unwrap();
    let o = |k: &str| out.tensors[&format!("input.{k}")].clone();
    let mut trace = ActivationTrace::new(["stem", "layer1", "layer2", "layer3", "layer4"], false);
    let res = net.forward_traced(x, false, &mut trace).unwrap();
    let d = max_abs_diff(&trace.activations["stem"], &o("stem"));
    assert!(d <= tol[0], "{arch} stem: {d}");
    for (l, &t) in tol.iter().enumerate().take(5).skip(1) {
        let gap =
            reid_model::kernels::global_avg_pool(&trace.activations[&format!("layer{l}")]).unwrap();
        let d = max_abs_diff(&gap, &o(&format!("gap_layer{l}")));
        assert!(d <= t, "{arch} gap_layer{l}: {d} > {t}");
    }
    // f32 forward against the f64 reference (golden README: compare with *_f64 where it exists)
    let d = max_abs_diff(&res.pooled, &o("features_f64"));
    assert!(d <= tol[4], "{arch} features: {d}");
    let logits = res
        .pooled
        .matmul(&fc_w.t().unwrap())
        .unwrap()
        .broadcast_add(&fc_b)
        .unwrap();
    let d = max_abs_diff(&logits, &o("logits_f64"));
    assert!(d <= tol[5], "{arch} logits: {d}");
    // the folded inference path gives the same features
    let folded = net.fold_bn().unwrap().forward_t(x, false).unwrap();
    let d = max_abs_diff(&folded.pooled, &o("features_f64"));
    assert!(d <= tol[4], "{arch} folded features: {d}");
}

#[test]
fn resnet18_forward_matches_torchvision() {
    // stem, gap1..4 (gap4 = features), logits: golden README table, ResNet-18 / input
    check_arch("resnet18", [5e-5, 5e-6, 5e-6, 2e-5, 5e-5, 5e-5]);
}

#[test]
fn resnet50_forward_matches_torchvision() {
    check_arch("resnet50", [5e-5, 5e-6, 5e-5, 5e-4, 1e-3, 5e-4]);
}

fn flops_json() -> serde_json::Value {
    let text = std::fs::read_to_string(golden().join("flops.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spec_for(model: &str) -> ArchSpec {
    let base = ArchSpec::resnet_with(
        match model {
            "resnet18" => 18,
            "resnet34" => 34,
            _ => 50,
        },
        0,
        1.0,
        2,
        Neck::None,
    )
    .unwrap();
    if model != "resnet50_halfwidth" {
        return base;
    }
    let halves: Vec<(String, usize)> = base
        .prunable_convs()
        .into_iter()
        .map(|p| (p.conv, p.width / 2))
        .collect();
    base.with_conv_widths(&halves).unwrap()
}

#[test]
fn complexity_matches_golden_totals() {
    let g = flops_json();
    let rows = g["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 16);
    for row in rows {
        let model = row["model"].as_str().unwrap();
        let chw: Vec<usize> = row["input_chw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let c = complexity(&spec_for(model), chw[1], chw[2]).unwrap();
        let (mut macs, mut params) = (c.backbone.macs, c.backbone.params);
        if row["with_fc"].as_bool().unwrap() {
            // torchvision's fc: 1000 classes with bias
            let f = c
                .layers
                .iter()
                .rev()
                .find(|l| l.part == reid_model::complexity::Part::Backbone)
                .unwrap()
                .out_channels as u64;
            macs += f * 1000;
            params += f * 1000 + 1000;
        }
        assert_eq!(
            macs,
            row["macs"].as_u64().unwrap(),
            "{model} {:?} macs",
            chw
        );
        assert_eq!(
            params,
            row["params"].as_u64().unwrap(),
            "{model} {:?} params",
            chw
        );
    }
}

#[test]
fn complexity_matches_golden_per_layer() {
    let g = flops_json();
    for (key, model) in [
        ("resnet18 3x256x128 with_fc=True", "resnet18"),
        ("resnet50 3x256x128 with_fc=True", "resnet50"),
        (
            "resnet50_halfwidth 3x256x128 with_fc=True",
            "resnet50_halfwidth",
        ),
    ] {
        let want = g["per_layer"][key].as_array().unwrap();
        let c = complexity(&spec_for(model), 256, 128).unwrap();
        let convs: Vec<_> = want.iter().filter(|l| l["type"] == "conv").collect();
        assert_eq!(convs.len(), c.layers.len(), "{model}: conv count");
        let mut ours = c.layers.clone();
        ours.sort_by(|a, b| a.name.cmp(&b.name));
        let mut theirs = convs.clone();
        theirs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        for (l, w) in ours.iter().zip(theirs) {
            assert_eq!(l.name, w["name"].as_str().unwrap());
            assert_eq!(
                l.in_channels as u64,
                w["in_channels"].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.out_channels as u64,
                w["out_channels"].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.kernel as u64,
                w["kernel"][0].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.stride as u64,
                w["stride"][0].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.padding as u64,
                w["padding"][0].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.out_hw[0] as u64,
                w["out_hw"][0].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(
                l.out_hw[1] as u64,
                w["out_hw"][1].as_u64().unwrap(),
                "{}",
                l.name
            );
            assert_eq!(l.macs, w["macs"].as_u64().unwrap(), "{}", l.name);
            assert_eq!(l.params, w["params"].as_u64().unwrap(), "{}", l.name);
        }
    }
}
