//! The grid as real processes: kill -9 during a long training step and rerun (the step resumes
//! from its last checkpoint and the final weights equal an uninterrupted grid's), and two
//! processes on one output folder (both finish, every step is computed exactly once).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_weights, grid_command, killable_grid, temp_files_under};
use reid_model::checkpoint::read_safetensors;
use reid_prune::scenario::{ExperimentConfig, Scenario};

mod common;

fn write_config(tmp: &Path, name: &str, finetune_epochs: usize) -> (PathBuf, ExperimentConfig) {
    killable_grid(tmp, name, vec![Scenario::S3, Scenario::S4], finetune_epochs)
}

fn finished(o: Output) -> (String, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "grid failed:\n{out}\n{err}");
    (out, err)
}

/// "N steps run, M reused" from a grid's stdout.
fn steps_run(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains(" steps run, "))
        .unwrap_or_else(|| panic!("no step count in:\n{stdout}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1])
}

fn step_dirs(out: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("steps"))
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn killed_grid_resumes_its_training_step_and_matches_an_uninterrupted_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole_cfg, whole) = write_config(tmp.path(), "whole", 6);
    let (killed_cfg, killed) = write_config(tmp.path(), "killed", 6);
    finished(grid_command(&whole_cfg).output().unwrap());

    // Kill -9 once the fine-tuning step has checkpointed inside an epoch after the first.
    let mut child = grid_command(&killed_cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let finetune = loop {
        let found = step_dirs(&killed.out, "finetune-").into_iter().find(|d| {
            let st = d.join("trainer_state.safetensors");
            // read while the grid writes it: every version on disk is whole (atomic rename)
            st.is_file()
                && read_safetensors(&st, &candle_core::Device::Cpu).is_ok_and(|f| {
                    f.metadata.get("epoch").is_some_and(|e| e != "0")
                        && f.metadata.get("batch").is_some_and(|b| b != "0")
                })
        });
        if let Some(d) = found {
            break d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no fine-tuning checkpoint"
        );
        assert!(child.try_wait().unwrap().is_none(), "the grid ended early");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !finetune.join("DONE").exists(),
        "the step finished before the kill: nothing to resume (make it longer)"
    );

    let (out, err) = finished(grid_command(&killed_cfg).output().unwrap());
    assert!(
        err.contains("finetune on market1501: resuming the unfinished step"),
        "the grid does not say it resumed:\n{err}"
    );
    assert!(
        err.contains("optimiser steps done"),
        "the training run does not say where it resumed:\n{err}"
    );
    assert!(!err.contains("starting fresh"), "{err}");
    let (run, reused) = steps_run(&out);
    assert!(
        reused >= 1 && run >= 1,
        "pretraining reused, the rest run: {run} run, {reused} reused"
    );
    // no temporary file survives the kill and the rerun
    assert_eq!(temp_files_under(&killed.out), Vec::<PathBuf>::new());
    for cell in ["baseline/resnet18-full", "S3/l1-C1", "S4/l1-C1"] {
        assert_same_weights(
            &whole.out.join(cell).join("model.safetensors"),
            &killed.out.join(cell).join("model.safetensors"),
            &format!("{cell} after kill and resume"),
        );
    }
}

#[test]
fn two_grid_processes_share_one_folder_and_compute_each_step_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg_path, cfg) = write_config(tmp.path(), "shared", 2);
    let a = grid_command(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = grid_command(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out_a, _) = finished(a.wait_with_output().unwrap());
    let (out_b, err_b) = finished(b.wait_with_output().unwrap());
    let (run_a, _) = steps_run(&out_a);
    let (run_b, _) = steps_run(&out_b);
    let done = step_dirs(&cfg.out, "")
        .into_iter()
        .filter(|d| d.join("DONE").is_file())
        .count();
    assert!(done > 0);
    eprintln!("{done} steps: process a ran {run_a}, process b ran {run_b}");
    assert_eq!(
        run_a + run_b,
        done,
        "each of the {done} steps computed exactly once (a ran {run_a}, b ran {run_b}):\n{err_b}"
    );
    // both printed the whole table
    for out in [&out_a, &out_b] {
        assert!(out.contains("S3") && out.contains("S4"), "{out}");
    }
}
