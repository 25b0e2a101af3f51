//! `reid-prune export`: the ONNX graph of every checkpoint kind (ResNet-18/34/50, unpruned,
//! pruned branch convs, pruned residual groups, plain torchvision weights) run in tract, a
//! pure-Rust ONNX runtime, gives our features; broken input gets a clear error and no file.

use common::trained_tiny;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use reid_model::checkpoint::{read_safetensors, save_checkpoint, Provenance};
use reid_model::{ArchSpec, ReidNet};
use reid_prune::criterion::{by_name, group_scores};
use reid_prune::strategy::{plan_with_groups, Allocation, PruneTarget, TargetKind};
use reid_prune::surgery::apply;
use tract_onnx::prelude::*;

mod common;

fn export(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reid-prune"))
        .arg("export")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn export_ok(checkpoint: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = export(&args);
    assert!(
        o.status.success(),
        "export {extra:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The exported model's output for `x` (N×3×H×W), run in tract.
fn run_onnx(file: &Path, x: &Tensor) -> (Vec<usize>, Vec<f32>, TVec<(String, String)>) {
    let dims = x.dims().to_vec();
    let model = tract_onnx::onnx()
        .model_for_path(file)
        .unwrap()
        .with_input_fact(0, f32::fact(&dims).into())
        .unwrap();
    let props: TVec<(String, String)> = model
        .properties
        .iter()
        .filter_map(|(k, v)| {
            let view = v.try_as_plain_ram().ok()?;
            Some((k.clone(), view.to_scalar::<String>().ok()?.clone()))
        })
        .collect();
    let runnable = model.into_optimized().unwrap().into_runnable().unwrap();
    let data = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let input: tract_onnx::prelude::Tensor = tract_ndarray::ArrayD::from_shape_vec(dims, data)
        .unwrap()
        .into();
    let out = runnable.run(tvec!(input.into())).unwrap();
    let out = out[0].to_plain_array_view::<f32>().unwrap();
    (out.shape().to_vec(), out.iter().copied().collect(), props)
}

/// max |a − b| relative to the feature scale (the largest |b|).
fn rel_diff(a: &[f32], b: &Tensor) -> f32 {
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

fn check(net: &ReidNet, dir: &Path, what: &str) {
    let ck = dir.join(format!("{what}.safetensors"));
    save_checkpoint(net, &ck, &Provenance::new()).unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 3, 64, 32), &Device::Cpu).unwrap();
    let ours = net.forward_t(&x, false).unwrap();
    let cases: [(&str, &[&str], &Tensor); 4] = [
        ("neck", &["--input", "64x32"], &ours.neck),
        (
            "pool",
            &["--input", "64x32", "--feature", "pool"],
            &ours.pooled,
        ),
        ("folded", &["--input", "64x32", "--fold-bn"], &ours.neck),
        (
            "fixed",
            &["--input", "64x32", "--batch", "3", "--opset", "17"],
            &ours.neck,
        ),
    ];
    for (case, args, want) in cases {
        let out = dir.join(format!("{what}-{case}.onnx"));
        export_ok(&ck, &out, args);
        let (shape, got, props) = run_onnx(&out, &x);
        assert_eq!(shape, want.dims(), "{what} {case}");
        let d = rel_diff(&got, want);
        assert!(d <= 1e-4, "{what} {case}: relative difference {d}");
        let arch = props
            .iter()
            .find(|(k, _)| k == "onnx.metadata_props.reid.arch")
            .unwrap_or_else(|| panic!("{what} {case}: no reid.arch in {props:?}"));
        let spec: ArchSpec = serde_json::from_str(&arch.1).unwrap();
        assert_eq!(&spec, net.spec(), "{what} {case}");
    }
    // the graph normalises raw RGB itself: the same features from 0..255 values
    let out = dir.join(format!("{what}-baked.onnx"));
    export_ok(&ck, &out, &["--input", "64x32", "--bake-normalisation"]);
    let mean = Tensor::new(&[0.485f32, 0.456, 0.406], &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let std = Tensor::new(&[0.229f32, 0.224, 0.225], &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 1, 1))
        .unwrap();
    let rgb = Tensor::rand(0f32, 255.0, (2, 3, 64, 32), &Device::Cpu).unwrap();
    let normalised = ((rgb.clone() / 255.0).unwrap().broadcast_sub(&mean).unwrap())
        .broadcast_div(&std)
        .unwrap();
    let want = net.forward_t(&normalised, false).unwrap().neck;
    let (_, got, _) = run_onnx(&out, &rgb);
    let d = rel_diff(&got, &want);
    assert!(d <= 1e-4, "{what} baked normalisation: {d}");
}

#[test]
fn every_tiny_checkpoint_kind_runs_in_tract_with_our_features() {
    let tmp = tempfile::tempdir().unwrap();
    for depth in [18, 34, 50] {
        let net = trained_tiny(depth, 0.125);
        check(&net, tmp.path(), &format!("resnet{depth}"));
        let random = by_name("random", 7).unwrap();
        let scores = random.scores(&net, &net.prunable_convs(), None).unwrap();
        let gs = group_scores(random.as_ref(), &net, None).unwrap();
        let target = PruneTarget {
            kind: TargetKind::Flops,
            level: 0.5,
            allocation: Allocation::Layerwise,
            floor: 1.0 / 16.0,
            round_to: 1,
            input: (64, 32),
        };
        let branch = plan_with_groups(net.spec(), net.spec(), &scores, None, &target).unwrap();
        check(
            &apply(&net, &branch).unwrap(),
            tmp.path(),
            &format!("resnet{depth}-pruned"),
        );
        let groups = plan_with_groups(net.spec(), net.spec(), &scores, Some(&gs), &target).unwrap();
        check(
            &apply(&net, &groups).unwrap(),
            tmp.path(),
            &format!("resnet{depth}-groups"),
        );
    }
}

fn golden() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

#[test]
fn the_golden_torchvision_resnet50_exports_to_its_reference_features() {
    let g = golden();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("resnet50.onnx");
    // plain torchvision weights (last stride 2, no neck): the pooled feature
    export_ok(
        &g.join("resnet/resnet50.safetensors"),
        &out,
        &["--arch", "resnet50", "--feature", "pool", "--fold-bn"],
    );
    let dev = Device::Cpu;
    let input = read_safetensors(&g.join("resnet/input.safetensors"), &dev).unwrap();
    let x = &input.tensors["input"];
    let reference = read_safetensors(&g.join("resnet/resnet50_outputs.safetensors"), &dev).unwrap();
    let want = reference.tensors["input.features_f64"]
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let (shape, got, _) = run_onnx(&out, x);
    assert_eq!(shape, want.dims());
    let d = rel_diff(&got, &want);
    assert!(
        d <= 1e-4,
        "golden resnet50 via ONNX: relative difference {d}"
    );
}

#[test]
fn broken_checkpoints_and_bad_options_leave_no_onnx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let net = trained_tiny(18, 0.125);
    let ck = tmp.path().join("good.safetensors");
    save_checkpoint(&net, &ck, &Provenance::new()).unwrap();
    let bytes = std::fs::read(&ck).unwrap();
    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let out = tmp.path().join("model.onnx");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--checkpoint".into(),
                s(&truncated),
                "--out".into(),
                s(&out),
            ],
            "truncated.safetensors",
        ),
        (
            vec!["--checkpoint".into(), s(&garbage), "--out".into(), s(&out)],
            "garbage.safetensors",
        ),
        (
            vec![
                "--checkpoint".into(),
                s(&ck),
                "--out".into(),
                s(&out),
                "--opset".into(),
                "11".into(),
            ],
            "--opset 11",
        ),
        (
            vec![
                "--checkpoint".into(),
                s(&ck),
                "--out".into(),
                s(&out),
                "--input".into(),
                "16x8".into(),
            ],
            "too small",
        ),
        (
            vec![
                "--checkpoint".into(),
                s(&ck),
                "--out".into(),
                s(&out),
                "--batch".into(),
                "0".into(),
            ],
            "batch 0",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = export(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains("onnx"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // a good export replaces an old file only once it is whole
    std::fs::write(&out, b"old").unwrap();
    let o = export(&["--checkpoint", &s(&truncated), "--out", &s(&out)]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
}

/// Any model graph exports: torchvision's MobileNetV2 (grouped depthwise convs, ReLU6 as Clip,
/// residual additions) built from its graph and the golden weights, run in tract, gives the
/// graph's own pooled features, BN as nodes and folded into its convs; ResNet-50's graph gives
/// torchvision's golden features.
#[test]
fn a_model_graph_exports_mobilenet_v2_to_its_own_features() {
    use reid_model::graph_net::GraphNet;
    use reid_model::onnx::{export_graph, OnnxBatch, OnnxFeature, OnnxOptions};
    let dev = Device::Cpu;
    let g = golden();
    let weights = read_safetensors(&g.join("mobilenet/mobilenet_v2.safetensors"), &dev).unwrap();
    let graph =
        reid_run::graph::ModelGraph::mobilenet_v2(1.0, 1000, &std::collections::BTreeMap::new());
    let net = GraphNet::new(graph, &weights.tensors).unwrap();
    let x = read_safetensors(&g.join("resnet/input.safetensors"), &dev)
        .unwrap()
        .tensors["input"]
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let all = net.forward_all(&x).unwrap();
    let want = &all[net.graph.feature];
    let tmp = tempfile::tempdir().unwrap();
    for fold_bn in [false, true] {
        let bytes = export_graph(
            &net,
            &OnnxOptions {
                feature: OnnxFeature::Pool,
                batch: OnnxBatch::Dynamic,
                input: (256, 128),
                fold_bn,
                ..OnnxOptions::default()
            },
        )
        .unwrap();
        let file = tmp.path().join(format!("mnv2-{fold_bn}.onnx"));
        std::fs::write(&file, bytes).unwrap();
        let (shape, got, _) = run_onnx(&file, &x);
        assert_eq!(shape, [2, 1280]);
        let d = rel_diff(&got, want);
        eprintln!("fold_bn {fold_bn}: relative max difference {d:.2e}");
        assert!(d < 1e-4, "fold_bn {fold_bn}: {d}");
    }
    // the ResNet graph exports the same way: torchvision's ResNet-50 to its golden features
    let weights = read_safetensors(&g.join("resnet/resnet50.safetensors"), &dev).unwrap();
    let outputs = read_safetensors(&g.join("resnet/resnet50_outputs.safetensors"), &dev).unwrap();
    let spec = ArchSpec::resnet_with(50, 0, 1.0, 2, reid_model::Neck::None).unwrap();
    let net = GraphNet::new(
        reid_run::graph::ModelGraph::of_resnet(&spec),
        &weights.tensors,
    )
    .unwrap();
    let bytes = export_graph(
        &net,
        &OnnxOptions {
            feature: OnnxFeature::Pool,
            fold_bn: true,
            ..OnnxOptions::default()
        },
    )
    .unwrap();
    let file = tmp.path().join("r50.onnx");
    std::fs::write(&file, bytes).unwrap();
    let (_, got, _) = run_onnx(&file, &x);
    let d = rel_diff(&got, &outputs.tensors["input.features"]);
    eprintln!("resnet50 graph export: relative max difference {d:.2e}");
    assert!(d < 1e-4, "{d}");
}
