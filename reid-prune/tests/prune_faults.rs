//! A pruning run that cannot succeed changes nothing on disk, and never writes over its input.

use reid_model::checkpoint::{save_checkpoint, Provenance};
use reid_model::{ArchSpec, Neck, ReidNet};
use reid_prune::prune_run::{run_prune, PruneConfig};

fn tiny_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let spec = ArchSpec::resnet_with(18, 4, 0.125, 1, Neck::BnNeck).unwrap();
    let net = ReidNet::new(&spec, &candle_core::Device::Cpu, 0).unwrap();
    let path = dir.join("model.safetensors");
    save_checkpoint(&net, &path, &Provenance::new()).unwrap();
    path
}

#[test]
fn failing_prune_into_an_existing_run_folder_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path());
    let out = tmp.path().join("pruned");
    std::fs::create_dir_all(&out).unwrap();
    let files = [
        ("log.jsonl", "{\"step\": 1}\n"),
        ("config.toml", "kept = true\n"),
    ];
    for (f, text) in files {
        std::fs::write(out.join(f), text).unwrap();
    }
    let cfg = PruneConfig {
        checkpoint: ck,
        criterion: "taylor".into(), // needs data, none given
        input: reid_run::InputSize::new(64, 32),
        out: out.clone(),
        ..PruneConfig::default()
    };
    let e = format!(
        "{:#}",
        anyhow::Error::new(run_prune(&cfg, false).unwrap_err())
    );
    assert!(e.contains("taylor") && e.contains("needs data"), "{e}");
    for (f, text) in files {
        assert_eq!(std::fs::read_to_string(out.join(f)).unwrap(), text, "{f}");
    }
}

#[test]
fn prune_into_the_checkpoints_own_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path());
    let before = std::fs::read(&ck).unwrap();
    let cfg = PruneConfig {
        checkpoint: ck.clone(),
        criterion: "l1".into(),
        input: reid_run::InputSize::new(64, 32),
        out: tmp.path().to_path_buf(),
        ..PruneConfig::default()
    };
    let e = format!(
        "{:#}",
        anyhow::Error::new(run_prune(&cfg, false).unwrap_err())
    );
    assert!(e.contains("folder of the checkpoint"), "{e}");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        before,
        "the input model changed"
    );
}

/// `reid-prune scores … | head -n1`: a closed stdout ends the program quietly, no panic.
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reid-prune"))
        .args(["scores", "--criterion", "l1", "--weights"])
        .arg(&ck)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before the first line
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

/// `--arch` that contradicts the checkpoint is an error, not ignored.
#[test]
fn arch_flag_contradicting_the_checkpoint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path()); // a ResNet-18
    let cfg = PruneConfig {
        checkpoint: ck,
        arch: Some("resnet50".into()),
        criterion: "l1".into(),
        input: reid_run::InputSize::new(64, 32),
        out: tmp.path().join("out"),
        ..PruneConfig::default()
    };
    let e = format!(
        "{:#}",
        anyhow::Error::new(run_prune(&cfg, false).unwrap_err())
    );
    assert!(
        e.contains("--arch resnet50") && e.contains("resnet18"),
        "{e}"
    );
    assert!(
        !tmp.path().join("out").exists(),
        "the run folder was created"
    );
}

#[test]
fn a_second_prune_with_retraining_needs_overwrite_and_replaces_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path());
    let data = tmp.path().join("data");
    let synth = reid_data::synth::SynthConfig {
        domain: "t".into(),
        ids: 8,
        cams: 3,
        per_cam: 2,
        seed: 1,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout: reid_data::synth::SynthLayout::Market,
        extra_test_ids: 0,
        distractors: 0,
    };
    reid_data::synth::generate(&synth, &data, |_| {}).unwrap();
    let cfg = PruneConfig {
        checkpoint: ck,
        criterion: "l1".into(),
        input: reid_run::InputSize::new(64, 32),
        dataset: Some("market1501".into()),
        root: Some(data),
        retrain_epochs: 1,
        batch_pk: reid_run::PkBatch::new(2, 2),
        out: tmp.path().join("pruned"),
        ..PruneConfig::default()
    };
    run_prune(&cfg, false).unwrap();
    let e = format!(
        "{:#}",
        anyhow::Error::new(run_prune(&cfg, false).unwrap_err())
    );
    assert!(
        e.contains("holds another run") && e.contains("--overwrite"),
        "{e}"
    );
    // with --overwrite, the retraining run inside is replaced too (not refused halfway)
    run_prune(
        &PruneConfig {
            overwrite: true,
            ..cfg.clone()
        },
        false,
    )
    .unwrap();
}

/// Regression: `load_any` (prune, scores, export) skipped the tensor-name check on plain state
/// dicts, so a file with a stray tensor was pruned as if it were a ResNet.
#[test]
fn plain_weights_with_a_stray_tensor_are_refused_by_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = ArchSpec::resnet_with(18, 0, 0.125, 2, Neck::None).unwrap();
    let net = ReidNet::new(&spec, &candle_core::Device::Cpu, 0).unwrap();
    let mut map: std::collections::HashMap<String, candle_core::Tensor> =
        net.state_dict().unwrap().into_iter().collect();
    map.insert(
        "layer1.0.se.fc1.weight".into(),
        candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    let path = tmp.path().join("se_resnet.safetensors");
    candle_core::safetensors::save(&map, &path).unwrap();
    let e = reid_prune::prune_run::load_any(&path, None, &candle_core::Device::Cpu)
        .err()
        .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.contains("se_resnet.safetensors") && e.contains("layer1.0.se.fc1.weight"),
        "{e}"
    );
}
