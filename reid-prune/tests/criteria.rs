//! The criterion and method registries: every registered criterion scores every prunable conv,
//! a criterion added as one file and one registry line (LAMP) works from the library, the CLI
//! and the grid's config.

use std::process::Command;

use candle_core::{Device, Tensor};
use reid_model::complexity::complexity;
use reid_model::{ArchSpec, Neck, ReidNet};
use reid_prune::criterion::{rank_ascending, ScoreData, CRITERIA};
use reid_prune::strategy::{plan, Allocation, PruneTarget, TargetKind};

fn tiny() -> ReidNet {
    let spec = ArchSpec::resnet_with(18, 5, 0.25, 1, Neck::BnNeck).unwrap();
    ReidNet::new(&spec, &Device::Cpu, 7).unwrap()
}

fn batch() -> ScoreData {
    let dev = Device::Cpu;
    ScoreData {
        batches: vec![(
            Tensor::randn(0f32, 1.0, (6, 3, 64, 32), &dev).unwrap(),
            Some(Tensor::new(&[0u32, 1, 2, 3, 4, 0], &dev).unwrap()),
        )],
    }
}

#[test]
fn every_registered_criterion_scores_every_channel() {
    let net = tiny();
    let layers = net.prunable_convs();
    let data = batch();
    for c in CRITERIA {
        let crit = (c.build)(1);
        assert_eq!(crit.name(), c.name, "registry name vs the type's name");
        let scores = crit
            .scores(&net, &layers, c.needs_data().then_some(&data))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(scores.len(), layers.len(), "{}", c.name);
        for l in &layers {
            let s = &scores[&l.conv];
            assert_eq!(s.len(), l.width, "{} {}", c.name, l.conv);
            assert!(s.iter().all(|v| v.is_finite()), "{} {}", c.name, l.conv);
        }
    }
}

#[test]
fn lamp_ranks_like_l2_in_a_layer_compares_across_layers_and_prunes_globally() {
    let net = tiny();
    let layers = net.prunable_convs();
    let by = |name: &str| {
        reid_prune::criterion::by_name(name, 0)
            .unwrap()
            .scores(&net, &layers, None)
            .unwrap()
    };
    let (lamp, l2) = (by("lamp"), by("l2"));
    for l in &layers {
        assert_eq!(
            rank_ascending(&lamp[&l.conv]),
            rank_ascending(&l2[&l.conv]),
            "{}",
            l.conv
        );
        let max = lamp[&l.conv].iter().cloned().fold(0.0, f64::max);
        assert!(
            (max - 1.0).abs() < 1e-12,
            "{}: largest filter scores {max}",
            l.conv
        );
    }
    let spec = net.spec();
    let target = PruneTarget {
        kind: TargetKind::Flops,
        level: 0.5,
        allocation: Allocation::Global,
        floor: 1.0 / 16.0,
        round_to: 1,
        input: (64, 32),
    };
    let p = plan(spec, spec, &lamp, &target).unwrap();
    let pruned = reid_prune::surgery::apply(&net, &p).unwrap();
    let ratio = complexity(pruned.spec(), 64, 32).unwrap().backbone.macs as f64
        / complexity(spec, 64, 32).unwrap().backbone.macs as f64;
    assert!(ratio <= 0.5 + 1e-9 && ratio > 0.4, "FLOPs kept: {ratio}");
}

#[test]
fn lamp_from_the_cli_and_the_grid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("in").join("model.safetensors");
    std::fs::create_dir_all(ck.parent().unwrap()).unwrap();
    reid_model::checkpoint::save_checkpoint(&tiny(), &ck, &Default::default()).unwrap();
    let bin = env!("CARGO_BIN_EXE_reid-prune");
    let out = tmp.path().join("out");
    let o = Command::new(bin)
        .args([
            "prune",
            "--criterion",
            "lamp",
            "--allocation",
            "global",
            "--input",
            "64x32",
        ])
        .arg("--checkpoint")
        .arg(&ck)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["criterion"], "lamp");
    assert!(m["macs"].as_u64().unwrap() * 2 <= m["macs_before"].as_u64().unwrap() + 2);

    // help lists it with its description; a misspelling lists every name
    let help = Command::new(bin)
        .args(["prune", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("lamp") && help.contains("layer-adaptive"),
        "{help}"
    );
    let bad = Command::new(bin)
        .args(["scores", "--criterion", "lmap", "--weights"])
        .arg(&ck)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("lmap") && e.contains("lamp"), "{e}");

    // the grid accepts it by name
    let cfg: reid_prune::grid::ExperimentConfig = reid_prune::config_file::parse_toml(
        "criteria = [\"lamp\", \"psfp\"]\n[levels]\nC1 = 0.5\n",
    )
    .unwrap();
    cfg.validate().unwrap();
}
