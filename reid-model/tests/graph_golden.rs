//! A network described by its model graph alone runs as torchvision's: MobileNetV2 (depthwise
//! convs, ReLU6, residual additions) and ResNet-50 from `reid_run::graph`, through
//! `reid_model::graph_net`, against the golden outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use reid_model::checkpoint::read_safetensors;
use reid_model::graph_net::GraphNet;
use reid_run::graph::ModelGraph;

fn golden() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden");
    assert!(p.is_dir(), "golden folder missing: {}", p.display());
    p
}

/// Largest |a − b| over the largest |b| (the reference's magnitude).
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let d = (f(a) - f(b)).unwrap().abs().unwrap().max_all().unwrap();
    let m = f(b).abs().unwrap().max_all().unwrap();
    d.to_scalar::<f64>().unwrap() / m.to_scalar::<f64>().unwrap().max(1e-12)
}

#[test]
fn mobilenet_v2_from_its_graph_gives_torchvisions_outputs() {
    let dev = Device::Cpu;
    let g = golden();
    let weights = read_safetensors(&g.join("mobilenet/mobilenet_v2.safetensors"), &dev).unwrap();
    let outputs =
        read_safetensors(&g.join("mobilenet/mobilenet_v2_outputs.safetensors"), &dev).unwrap();
    let input = read_safetensors(&g.join("resnet/input.safetensors"), &dev).unwrap();
    let graph = ModelGraph::mobilenet_v2(1.0, 1000, &BTreeMap::new());
    let net = GraphNet::new(graph, &weights.tensors).unwrap();
    let x = input.tensors["input"].to_dtype(DType::F32).unwrap();
    let all = net.forward_all(&x).unwrap();
    let at = |module: &str| &all[net.graph.outputs[module]];
    let gap = |t: &Tensor| t.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
    let want = |k: &str| outputs.tensors[&format!("input.{k}")].clone();
    let checks = [
        ("stem", at("features.0").clone()),
        ("gap_block1", gap(at("features.1"))),
        ("gap_block3", gap(at("features.3"))),
        ("gap_block6", gap(at("features.6"))),
        ("gap_block13", gap(at("features.13"))),
        ("gap_block17", gap(at("features.17"))),
        ("gap_last_conv", gap(at("features.18"))),
        ("features", all[net.graph.feature].clone()),
        ("logits", all[net.graph.logits.unwrap()].clone()),
    ];
    for (key, got) in checks {
        let r = relative(&got, &want(key));
        eprintln!("{key}: relative max difference {r:.2e}");
        // torch's own f32 against f64 differs by up to 1.6e-5 of the magnitude
        assert!(r < 1e-4, "{key}: {r:.2e}");
    }
}

/// The ResNet-50 graph (as the schema builds it) with torchvision's names runs the golden
/// weights to the golden pooled features: the same graph describes both families.
#[test]
fn resnet50_from_its_graph_gives_torchvisions_features() {
    let dev = Device::Cpu;
    let g = golden();
    let weights = read_safetensors(&g.join("resnet/resnet50.safetensors"), &dev).unwrap();
    let outputs = read_safetensors(&g.join("resnet/resnet50_outputs.safetensors"), &dev).unwrap();
    let input = read_safetensors(&g.join("resnet/input.safetensors"), &dev).unwrap();
    // torchvision's ResNet-50: last stride 2, no neck, the 1000-class fc as the classifier
    let spec = reid_model::ArchSpec::resnet_with(50, 0, 1.0, 2, reid_model::Neck::None).unwrap();
    let graph = ModelGraph::of_resnet(&spec);
    let net = GraphNet::new(graph, &weights.tensors).unwrap();
    let x = input.tensors["input"].to_dtype(DType::F32).unwrap();
    let all = net.forward_all(&x).unwrap();
    let gap = |t: &Tensor| t.mean(D::Minus1).unwrap().mean(D::Minus1).unwrap();
    let checks = [
        ("gap_layer1", gap(&all[net.graph.outputs["layer1.2"]])),
        ("gap_layer2", gap(&all[net.graph.outputs["layer2.3"]])),
        ("gap_layer3", gap(&all[net.graph.outputs["layer3.5"]])),
        ("gap_layer4", gap(&all[net.graph.outputs["layer4.2"]])),
        ("features", all[net.graph.feature].clone()),
    ];
    for (key, got) in checks {
        let r = relative(&got, &outputs.tensors[&format!("input.{key}")]);
        eprintln!("{key}: relative max difference {r:.2e}");
        assert!(r < 1e-4, "{key}: {r:.2e}");
    }
}

/// MobileNetV2 pruned from its graph's groups: every expansion halved by the L1 norm of its
/// expand conv's filters (torch-pruning's recipe of the golden `half_expansion`) has the golden
/// widths, MACs and parameters, and computes what the unpruned network computes with the cut
/// channels masked (their readers' input weights zeroed).
#[test]
fn mobilenet_v2_pruned_from_its_groups_equals_the_masked_network() {
    let dev = Device::Cpu;
    let g = golden();
    let weights = read_safetensors(&g.join("mobilenet/mobilenet_v2.safetensors"), &dev).unwrap();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(g.join("mobilenet/mobilenet_v2.json")).unwrap(),
    )
    .unwrap();
    let half = &json["half_expansion"];
    let graph = ModelGraph::mobilenet_v2(1.0, 1000, &BTreeMap::new());
    let full = GraphNet::new(graph.clone(), &weights.tensors).unwrap();
    let mut pruned = GraphNet::new(graph.clone(), &weights.tensors).unwrap();
    let mut masked = full.tensors().clone();
    for group in graph.channel_groups() {
        let expand = &group.producers[0].0;
        let Some(kept) = half["kept_expansion"][expand.as_str()].as_u64() else {
            continue;
        };
        // L1 norm of each expand filter; the largest `kept`, in channel order
        let w = &full.tensors()[&format!("{expand}.weight")];
        let l1: Vec<f32> = w.abs().unwrap().sum((1, 2, 3)).unwrap().to_vec1().unwrap();
        let mut order: Vec<usize> = (0..l1.len()).collect();
        order.sort_by(|&a, &b| l1[b].total_cmp(&l1[a]).then(a.cmp(&b)));
        let mut keep: Vec<usize> = order[..kept as usize].to_vec();
        keep.sort();
        // the group as it stands in the network pruned so far (its readers' names are the same)
        let current = pruned
            .graph
            .channel_groups()
            .into_iter()
            .find(|c| c.producers == group.producers)
            .unwrap();
        pruned = pruned.prune(&current, &keep).unwrap();
        for reader in &group.readers {
            let name = format!("{reader}.weight");
            let t = &masked[&name];
            let mask: Vec<f32> = (0..group.width)
                .map(|c| f32::from(u8::from(keep.contains(&c))))
                .collect();
            let mask = Tensor::from_vec(mask, (1, group.width, 1, 1), &dev).unwrap();
            masked.insert(name, t.broadcast_mul(&mask).unwrap());
        }
    }
    let (convs, linear): (Vec<(String, u64)>, u64) =
        (pruned.graph.conv_macs(256, 128).unwrap(), 1280 * 1000);
    let macs: u64 = convs.iter().map(|(_, m)| m).sum::<u64>() + linear;
    assert_eq!(macs, half["macs"].as_u64().unwrap());
    assert_eq!(pruned.graph.params(), half["params"].as_u64().unwrap());

    let masked = GraphNet::new(graph, &masked).unwrap();
    let x = read_safetensors(&g.join("resnet/input.safetensors"), &dev)
        .unwrap()
        .tensors["input"]
        .to_dtype(DType::F32)
        .unwrap();
    let a = pruned.forward_all(&x).unwrap();
    let b = masked.forward_all(&x).unwrap();
    let r = relative(
        &a[pruned.graph.logits.unwrap()],
        &b[masked.graph.logits.unwrap()],
    );
    eprintln!("pruned vs masked logits: relative max difference {r:.2e}");
    assert!(r < 1e-5, "{r:.2e}");
}
