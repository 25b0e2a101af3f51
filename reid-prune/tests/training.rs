//! Training on a synthetic domain: accuracy well above chance, kill-and-resume equality,
//! and a diverging loss that stops the run with the last good checkpoint kept.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::assert_same_weights;
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_model::checkpoint::load_checkpoint;
use reid_train::schedule::{Decay, Schedule};
use reid_train::{run_training, RunConfig};

mod common;

fn synth(dir: &Path, ids: usize) {
    let cfg = SynthConfig {
        domain: "target".into(),
        ids,
        cams: 4,
        per_cam: 3,
        seed: 1,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout: SynthLayout::Market,
        extra_test_ids: 0,
        distractors: 0,
    };
    generate(&cfg, dir, |_| {}).unwrap();
}

fn config(data: &Path, out: &Path, epochs: usize) -> RunConfig {
    let mut c = RunConfig {
        dataset: "market1501".into(),
        root: data.to_path_buf(),
        arch: "resnet18".into(),
        width_mult: 0.125,
        input: reid_run::InputSize::new(64, 32),
        batch_pk: reid_run::PkBatch::new(6, 4),
        out: out.to_path_buf(),
        evaluate: false,
        ..RunConfig::default()
    };
    c.train.epochs = epochs;
    c.train.schedule = Schedule {
        base_lr: 2e-3,
        warmup_epochs: 1,
        warmup_factor: 0.1,
        decay: Decay::Step {
            milestones: vec![epochs.saturating_sub(2)],
            gamma: 0.1,
        },
    };
    c
}

fn no_interrupt() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

#[test]
fn tiny_resnet_learns_the_synthetic_domain() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    synth(data.path(), 40);
    let mut cfg = config(data.path(), out.path(), 8);
    cfg.evaluate = true;
    let o = run_training(&cfg, false, no_interrupt(), false).unwrap();
    assert!(o.completed);
    let m = o.metrics.unwrap();
    // 20 test identities: chance rank-1 is 1/20
    eprintln!("rank-1 {:.3} mAP {:.3}", m.rank(1), m.map);
    assert!(
        m.rank(1) > 0.3,
        "rank-1 {} is not well above chance (0.05)",
        m.rank(1)
    );
    for f in [
        "model.safetensors",
        "config.toml",
        "log.jsonl",
        "metrics.json",
        "trainer_state.safetensors",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    let log = std::fs::read_to_string(out.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 8);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    assert!(metrics["eval"]["market1501"]["rank1"].as_f64().unwrap() > 0.3);
}

#[test]
fn killed_and_resumed_run_reaches_the_same_weights() {
    let data = tempfile::tempdir().unwrap();
    synth(data.path(), 16);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // With the center loss on: its centres are state that must survive the restart too.
    let mut full = config(data.path(), a.path(), 2);
    full.train.center_loss_weight = 0.0005;
    assert!(
        run_training(&full, false, no_interrupt(), false)
            .unwrap()
            .completed
    );

    // stop mid-epoch (as Ctrl-C does), then resume, twice
    let mut cut = config(data.path(), b.path(), 2);
    cut.train.center_loss_weight = 0.0005;
    cut.stop_after_batches = Some(1);
    let first = run_training(&cut, false, no_interrupt(), false).unwrap();
    assert!(!first.completed);
    let second = run_training(&cut, true, no_interrupt(), false).unwrap();
    assert!(!second.completed);
    cut.stop_after_batches = None;
    assert!(
        run_training(&cut, true, no_interrupt(), false)
            .unwrap()
            .completed
    );

    assert_same_weights(
        &a.path().join("model.safetensors"),
        &b.path().join("model.safetensors"),
        "after resume",
    );
}

#[test]
fn diverging_loss_stops_and_keeps_the_last_good_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    synth(data.path(), 12);
    let out = tempfile::tempdir().unwrap();
    let good = config(data.path(), out.path(), 1);
    run_training(&good, false, no_interrupt(), false).unwrap();
    let mut bad = config(data.path(), out.path(), 3);
    bad.train.schedule.base_lr = 1e30;
    bad.train.schedule.warmup_epochs = 0;
    // the changed config is refused on resume, naming the fields, unless allowed explicitly
    let e = format!(
        "{:#}",
        run_training(&bad, true, no_interrupt(), false).unwrap_err()
    );
    assert!(
        e.contains("train.epochs: 1 -> 3") && e.contains("train.schedule.base_lr"),
        "{e}"
    );
    bad.allow_config_change = true;
    let e = format!(
        "{:#}",
        run_training(&bad, true, no_interrupt(), false).unwrap_err()
    );
    assert!(
        e.contains("diverged") && e.contains("last good checkpoint"),
        "{e}"
    );
    // the checkpoint on disk is the last one written before the failing step: it loads, it is
    // from an earlier epoch than the run asked for, and every weight is finite
    let ck = load_checkpoint(
        &out.path().join("model.safetensors"),
        &candle_core::Device::Cpu,
        false,
    )
    .unwrap();
    assert!(ck.provenance.epoch.unwrap() < 3);
    for (k, t) in ck.net.state_dict().unwrap() {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{k} has non-finite values");
    }
}

fn log_losses(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["epoch"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// A crash between the two checkpoint writes (the trainer state and model.safetensors) must not
/// pair weights of one step with the optimiser of another, and an epoch logged before the crash
/// but run again after it is logged once.
#[test]
fn resume_uses_one_consistent_checkpoint_and_logs_each_epoch_once() {
    let data = tempfile::tempdir().unwrap();
    synth(data.path(), 16);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut full = config(data.path(), a.path(), 3);
    full.batch_pk = reid_run::PkBatch::new(2, 4); // several batches an epoch
    let whole = run_training(&full, false, no_interrupt(), false).unwrap();
    let per_epoch = whole.batches / 3;
    assert!(per_epoch >= 2, "{per_epoch} batches an epoch");
    assert_eq!(log_losses(a.path()).len(), 3);

    // stop inside epoch 2 (after epoch 1's line is logged)
    let mut cut = config(data.path(), b.path(), 3);
    cut.batch_pk = full.batch_pk;
    cut.stop_after_batches = Some(per_epoch + 1);
    let first = run_training(&cut, false, no_interrupt(), false).unwrap();
    assert!(!first.completed);
    // the crash: model.safetensors is from another point of the run than the trainer state
    // (here: the start), and a half-written temp file of the killed process is left behind
    let start = config(data.path(), &b.path().join("other"), 0);
    run_training(&start, false, no_interrupt(), false).unwrap();
    std::fs::copy(
        b.path().join("other/model.safetensors"),
        b.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        b.path().join(".trainer_state.safetensors.tmp-999999999-0"),
        b"half",
    )
    .unwrap();
    // an epoch line the crash left although its checkpoint was not written
    let mut log = std::fs::read_to_string(b.path().join("log.jsonl")).unwrap();
    log.push_str("{\"epoch\": 3, \"loss\": 123.0}\n");
    std::fs::write(b.path().join("log.jsonl"), log).unwrap();

    cut.stop_after_batches = None;
    assert!(
        run_training(&cut, true, no_interrupt(), false)
            .unwrap()
            .completed
    );
    assert_same_weights(
        &a.path().join("model.safetensors"),
        &b.path().join("model.safetensors"),
        "after resume",
    );
    // one line per epoch, with the uninterrupted run's losses (the resumed epoch's running
    // sums were checkpointed with it)
    assert_eq!(log_losses(b.path()), log_losses(a.path()));
    assert!(
        !b.path()
            .join(".trainer_state.safetensors.tmp-999999999-0")
            .exists(),
        "a dead process's temp file was left"
    );
}

/// A run started from a checkpoint records that checkpoint's architecture, not the `arch` field
/// it was given (the grid passes its main arch to every fine-tune), and resumes under it.
#[test]
fn a_run_from_a_checkpoint_records_the_architecture_it_trains() {
    let data = tempfile::tempdir().unwrap();
    synth(data.path(), 12);
    let out = tempfile::tempdir().unwrap();
    let start = config(data.path(), &out.path().join("start"), 0);
    run_training(&start, false, no_interrupt(), false).unwrap();
    let mut next = config(data.path(), &out.path().join("next"), 1);
    next.arch = "resnet50".into();
    next.width_mult = 1.0;
    next.init_checkpoint = Some(out.path().join("start/model.safetensors"));
    run_training(&next, false, no_interrupt(), false).unwrap();
    let recorded: RunConfig =
        toml::from_str(&std::fs::read_to_string(out.path().join("next/config.toml")).unwrap())
            .unwrap();
    assert_eq!(recorded.arch, "resnet18");
    assert_eq!(recorded.width_mult, 0.125);
    // and a resume with the same (unresolved) config is the same run
    assert!(run_training(&next, true, no_interrupt(), false).is_ok());
}
