//! `round_to`: a layerwise plan whose kept widths are multiples of 8 or 16 (the channel blocks of
//! deployment runtimes) still reaches its level, on the full-size ResNet-50 widths.

use std::collections::BTreeMap;

use reid_model::complexity::complexity;
use reid_model::{ArchSpec, Neck};
use reid_prune::criterion::ChannelScores;
use reid_prune::strategy::{plan, Allocation, PruneTarget, TargetKind};

fn scores(spec: &ArchSpec) -> ChannelScores {
    let mut s: ChannelScores = BTreeMap::new();
    for (i, l) in spec.prunable_convs().into_iter().enumerate() {
        // distinct, deterministic values: channel c of layer i
        s.insert(
            l.conv,
            (0..l.width)
                .map(|c| ((c * 7919 + i * 104729) % 1009) as f64)
                .collect(),
        );
    }
    s
}

fn target(round_to: usize, allocation: Allocation) -> PruneTarget {
    PruneTarget {
        kind: TargetKind::Flops,
        level: 0.5,
        allocation,
        floor: 1.0 / 16.0,
        round_to,
        input: (256, 128),
    }
}

#[test]
fn kept_widths_are_multiples_and_the_level_is_reached() {
    let spec = ArchSpec::resnet_with(50, 0, 1.0, 1, Neck::BnNeck).unwrap();
    let s = scores(&spec);
    let full = complexity(&spec, 256, 128).unwrap().backbone.macs as f64;
    for m in [1, 8, 16] {
        let p = plan(&spec, &spec, &s, &target(m, Allocation::Layerwise)).unwrap();
        let widths: Vec<usize> = p.keep.values().map(Vec::len).collect();
        assert!(
            widths.iter().all(|w| w % m == 0),
            "round_to {m}: widths {widths:?}"
        );
        let pruned = p.apply_to(&spec).unwrap();
        let kept = complexity(&pruned, 256, 128).unwrap().backbone.macs as f64 / full;
        assert!(
            kept <= 0.5 + 1e-9 && kept > 0.4,
            "round_to {m}: {kept} of the FLOPs kept"
        );
        if m == 1 {
            // without rounding, layerwise widths are 0.6 × 64 and so on: not all multiples of 8
            assert!(widths.iter().any(|w| w % 8 != 0), "{widths:?}");
        }
    }
}

#[test]
fn bad_round_to_is_refused_naming_it() {
    let spec = ArchSpec::resnet_with(18, 0, 0.25, 1, Neck::BnNeck).unwrap();
    let s = scores(&spec);
    for (t, says) in [
        (target(0, Allocation::Layerwise), "round_to 0"),
        (target(8, Allocation::Global), "layerwise"),
    ] {
        let e = plan(&spec, &spec, &s, &t).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}
