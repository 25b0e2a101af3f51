//! The fault suite, on the real binaries: writes that fail at every point of a training run
//! (injected through reid-run's `fault-injection` feature), kill -9 at 30 random moments of a
//! training run and of a grid, a full disk (a small tmpfs in a private mount namespace, when the
//! machine allows it), and an output folder that holds another run. Each ends in a clear error
//! or a correct result: the final weights equal an uninterrupted run's, no temporary file is
//! left, no good file is changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_weights, grid_command, killable_grid, synth, temp_files_under};

use reid_data::synth::SynthLayout;
use reid_prune::grid::{ExperimentConfig, Scenario};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_reid-prune");

/// A tiny re-ID training run on `data` into `out` (always `--resume`: a rerun continues).
fn train(data: &Path, out: &Path, epochs: usize) -> Command {
    let mut c = Command::new(BIN);
    c.args(["train", "--task", "reid", "--dataset", "market1501"])
        .arg("--root")
        .arg(data)
        .args([
            "--arch",
            "resnet18",
            "--width-mult",
            "0.125",
            "--input",
            "64x32",
        ])
        .args([
            "--batch-pk",
            "2x2",
            "--seed",
            "3",
            "--checkpoint-interval",
            "0.001",
        ])
        .arg("--epochs")
        .arg(epochs.to_string())
        .arg("--out")
        .arg(out)
        .arg("--resume")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn ok(o: Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

fn log_epochs(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn data(tmp: &Path) -> PathBuf {
    let d = tmp.join("data");
    synth(&d, "target", SynthLayout::Market);
    d
}

#[test]
fn a_failing_write_at_every_point_of_a_training_run_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let epochs = 2;
    let reference = tmp.path().join("reference");
    ok(
        train(&data, &reference, epochs).output().unwrap(),
        "reference",
    );
    let mut faults = 0;
    for stage in ["rename", "write"] {
        for n in 1.. {
            let out = tmp.path().join(format!("{stage}-{n}"));
            let o = train(&data, &out, epochs)
                .env("REID_FAULT", format!("{stage}:{n}"))
                .output()
                .unwrap();
            if o.status.success() {
                break; // the run has fewer writes than n: every point was tried
            }
            faults += 1;
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("injected fault") && err.contains(&*out.to_string_lossy()),
                "{stage} #{n}: the error names neither the fault nor the file:\n{err}"
            );
            assert_eq!(
                temp_files_under(&out),
                Vec::<PathBuf>::new(),
                "{stage} #{n}"
            );
            // whatever the failed run left is whole: the model (if any) loads
            if out.join("model.safetensors").exists() {
                reid_model::load_checkpoint(
                    &out.join("model.safetensors"),
                    &candle_core::Device::Cpu,
                    false,
                )
                .unwrap_or_else(|e| panic!("{stage} #{n}: a half model: {e}"));
            }
            ok(train(&data, &out, epochs).output().unwrap(), "resume");
            assert_same_weights(
                &reference.join("model.safetensors"),
                &out.join("model.safetensors"),
                &format!("{stage} #{n} then resume"),
            );
            assert_eq!(log_epochs(&out), vec![1, 2], "{stage} #{n}: log");
            assert_eq!(temp_files_under(&out), Vec::<PathBuf>::new());
        }
    }
    assert!(faults >= 6, "only {faults} write points in a training run");
    eprintln!("{faults} injected write failures, each resumed to the reference weights");
}

/// Kill -9 `cmd` at a random moment (a delay of up to `max_delay` after its start) until
/// `kills` kills have landed while it ran, rerunning it each time (at most 4 × `kills` starts:
/// a start that finishes before its delay is not a kill). Returns the kills that landed.
fn kill_rounds(
    mut cmd: impl FnMut() -> Command,
    kills: usize,
    max_delay: Duration,
    seed: u64,
) -> usize {
    let mut rng = reid_model::init::SplitMix64::new(seed);
    let mut landed = 0;
    for _ in 0..4 * kills {
        if landed == kills {
            break;
        }
        let mut child = cmd().spawn().unwrap();
        let delay = max_delay.mul_f64(rng.next_f64());
        let t = Instant::now();
        while t.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            landed += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
    }
    landed
}

#[test]
fn thirty_kills_at_random_moments_of_a_training_run_end_in_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let epochs = 10;
    let reference = tmp.path().join("reference");
    let t = Instant::now();
    ok(
        train(&data, &reference, epochs).output().unwrap(),
        "reference",
    );
    let whole = t.elapsed();
    let out = tmp.path().join("killed");
    // kills spread over the run's length (a rerun redoes the part after its last checkpoint)
    let landed = kill_rounds(|| train(&data, &out, epochs), 30, whole / 20, 11);
    ok(train(&data, &out, epochs).output().unwrap(), "final run");
    eprintln!("{landed} kills landed while training ran (uninterrupted: {whole:?})");
    assert_eq!(landed, 30, "kills that landed while the run was alive");
    assert_same_weights(
        &reference.join("model.safetensors"),
        &out.join("model.safetensors"),
        "after 30 kills",
    );
    assert_eq!(log_epochs(&out), (1..=epochs as u64).collect::<Vec<_>>());
    assert_eq!(temp_files_under(&out), Vec::<PathBuf>::new());
}

fn grid_config(tmp: &Path, name: &str) -> (PathBuf, ExperimentConfig) {
    killable_grid(tmp, name, vec![Scenario::S1, Scenario::S3], 1)
}

#[test]
fn thirty_kills_at_random_moments_of_a_grid_end_in_the_same_models() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole_cfg, whole) = grid_config(tmp.path(), "whole");
    let t = Instant::now();
    ok(
        grid_command(&whole_cfg).output().unwrap(),
        "uninterrupted grid",
    );
    let length = t.elapsed();
    let (killed_cfg, killed) = grid_config(tmp.path(), "killed");
    let landed = kill_rounds(|| grid_command(&killed_cfg), 30, length / 6, 12);
    ok(grid_command(&killed_cfg).output().unwrap(), "final grid");
    eprintln!("{landed} kills landed while the grid ran (uninterrupted: {length:?})");
    assert_eq!(landed, 30, "kills that landed while the grid was alive");
    for cell in ["baseline/resnet18-full", "S1/l1-C1", "S3/l1-C1"] {
        assert_same_weights(
            &whole.out.join(cell).join("model.safetensors"),
            &killed.out.join(cell).join("model.safetensors"),
            &format!("{cell} after 30 kills"),
        );
    }
    assert_eq!(temp_files_under(&killed.out), Vec::<PathBuf>::new());
}

#[test]
fn a_folder_holding_another_run_is_refused_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let out = tmp.path().join("run");
    ok(train(&data, &out, 1).output().unwrap(), "first run");
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let fresh = |extra: &[&str]| {
        let mut c = train(&data, &out, 2);
        // the same command without --resume
        let args: Vec<_> = c
            .get_args()
            .filter(|a| *a != "--resume")
            .map(|a| a.to_owned())
            .collect();
        c = Command::new(BIN);
        c.args(args).args(extra);
        c.output().unwrap()
    };
    let o = fresh(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("holds another run") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    ok(fresh(&["--overwrite"]), "--overwrite");
    // the replaced run's log is gone: one line per epoch of the new run
    assert_eq!(log_epochs(&out), vec![1, 2]);
}

#[test]
fn a_full_disk_is_a_clear_error_that_leaves_no_half_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let disk = tmp.path().join("disk");
    let cmd = train(&data, &disk.join("run"), 2);
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    // room for the config and the first model, not for the trainer state
    let script = format!(
        "{BIN} {} ; echo \"exit=$?\"; find '{}' -name '*.tmp-*'; echo listed",
        args.join(" "),
        disk.display()
    );
    let Some(out) = reid_run::testing::in_small_tmpfs(&disk, "300k", &script) else {
        return;
    };
    let (failed, listed) = reid_run::testing::exit_and_listing(&out);
    assert!(failed, "the run fitted on the small disk:\n{out}");
    assert!(
        out.contains("No space left") && out.contains(&*disk.to_string_lossy()),
        "the error names neither the cause nor the file:\n{out}"
    );
    assert!(!listed.contains(".tmp-"), "temporary files left:\n{out}");
}

/// The same on the default run's `--quick` grid (minutes: `cargo test --release -p reid-prune
/// --test faults -- --ignored`; numbers in BENCHMARKS.md).
#[test]
#[ignore]
fn thirty_kills_at_random_moments_of_the_quick_grid_end_in_the_same_models() {
    let tmp = tempfile::tempdir().unwrap();
    let quick = |out: &Path| {
        let mut c = Command::new(BIN);
        c.arg("--quick")
            .arg("--out")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let whole = tmp.path().join("whole");
    let t = Instant::now();
    ok(quick(&whole).output().unwrap(), "uninterrupted --quick");
    let length = t.elapsed();
    let killed = tmp.path().join("killed");
    // kills spread over the whole run: a rerun reuses finished steps and resumes the open one
    let landed = kill_rounds(|| quick(&killed), 30, length / 10, 13);
    ok(quick(&killed).output().unwrap(), "final --quick");
    eprintln!("{landed} kills landed while --quick ran (uninterrupted: {length:?})");
    assert_eq!(landed, 30);
    let mut compared = 0;
    for scenario in std::fs::read_dir(&whole).unwrap().flatten() {
        for cell in std::fs::read_dir(scenario.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let model = cell.path().join("model.safetensors");
            if !model.is_file() || scenario.file_name() == "steps" {
                continue;
            }
            let rel = model.strip_prefix(&whole).unwrap();
            assert_same_weights(&model, &killed.join(rel), &format!("{}", rel.display()));
            compared += 1;
        }
    }
    assert!(compared > 10, "{compared} cells compared");
    assert_eq!(temp_files_under(&killed), Vec::<PathBuf>::new());
}

#[test]
#[cfg(not(feature = "cuda"))]
fn the_default_run_on_a_gpu_this_build_cannot_open_fails_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("quick");
    let o = Command::new(BIN)
        .args(["--quick", "--device", "cuda:0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(
        err.contains("device 'cuda:0'") && err.contains("--features cuda"),
        "unclear error: {err}"
    );
    assert!(!out.exists(), "wrote {} before failing", out.display());
    // a misspelt device is refused by the parser, naming the accepted values
    let o = Command::new(BIN)
        .args(["--quick", "--device", "gpu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("expected cpu, cuda or cuda:N"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The default command's `--set` overrides are checked against the preset's config before any
/// data is generated; `--preset` names the accepted presets.
#[test]
fn the_default_run_refuses_a_bad_override_or_preset_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    let run = |extra: &[&str]| {
        let o = Command::new(BIN)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["--preset", "quick", "--set", "finetune_epoch=3"]);
    assert!(
        err.contains("finetune_epoch") && err.contains("finetune_epochs"),
        "{err}"
    );
    assert!(!out.exists(), "wrote {} before failing", out.display());
    let err = run(&["--preset", "huge"]);
    assert!(
        err.contains("quick") && err.contains("default") && err.contains("large"),
        "{err}"
    );
    let err = run(&["--quick", "--preset", "large"]);
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!out.exists());
}

/// A `synth` stopped halfway leaves no dataset a loader would take for a whole one (the images
/// are generated aside and moved into place at the end); the next `synth` into the folder
/// removes the unfinished generation and makes the whole dataset.
#[test]
fn a_stopped_synth_leaves_no_partial_dataset_and_the_next_one_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ds");
    let synth = |ids: &str| {
        let mut c = Command::new(BIN);
        c.args([
            "synth",
            "--domain",
            "target",
            "--cams",
            "3",
            "--per-cam",
            "2",
        ])
        .args(["--size", "64x32", "--ids", ids, "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    };
    let mut child = synth("3000").spawn().unwrap();
    // stopped once images are being written
    let staging = out.join(".synth-partial");
    let start = Instant::now();
    while !staging.join("bounding_box_train").is_dir() && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !out.join("bounding_box_train").exists(),
        "a partial dataset in place"
    );
    let err = String::from_utf8_lossy(
        &Command::new(BIN)
            .args(["data", "stats", "--dataset", "market1501", "--root"])
            .arg(&out)
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(err.contains("bounding_box_train"), "{err}");
    let o = synth("4").output().unwrap();
    let err = ok(o, "synth after a stopped one");
    assert!(err.contains("removing an unfinished generation"), "{err}");
    assert!(!staging.exists());
    let ds = reid_data::datasets::load("market1501", &out).unwrap();
    // half of the 4 identities are the training split
    assert_eq!(ds.num_train_pids(), 2);
}
