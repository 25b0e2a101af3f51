//! The grid as real processes: kill -9 during a long training step and rerun (the step resumes
//! from its last checkpoint and the final weights equal an uninterrupted grid's), and two
//! processes on one output folder (both finish, every step is computed exactly once).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_same_weights, grid_command, killable_grid, temp_files_under};
use reid_model::checkpoint::read_safetensors;
use reid_prune::grid::{ExperimentConfig, Scenario};

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

/// The steps a worker's last line says it computed (`worker … computed N steps: a b c`).
fn worker_computed(stdout: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("worker ") && l.contains(" computed "))
        .unwrap_or_else(|| panic!("no worker line in:\n{stdout}"));
    let list = line.split_once(" steps: ").unwrap().1;
    if list == "none" {
        return vec![];
    }
    list.split(' ').map(str::to_string).collect()
}

/// Three `run --worker` processes on one output folder, one of them killed with SIGKILL while it
/// holds a step: the other two finish the grid, each step computed by one worker only (the
/// killed one's step resumed by another), and every cell's model equals a single process's.
#[test]
fn three_workers_finish_a_grid_once_each_and_survive_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg_path, cfg) = write_config(tmp.path(), "workers", 3);
    let worker = |extra: &[&str]| {
        let mut c = grid_command(&cfg_path);
        c.arg("--worker").args(extra);
        c.spawn().unwrap()
    };
    let mut a = worker(&[]);
    let a_pid = a.id();
    let held_by_a = || {
        step_dirs(&cfg.out, "").into_iter().find(|d| {
            !d.join("DONE").exists()
                && std::fs::read_to_string(d.join(".lock"))
                    .is_ok_and(|t| t.contains(&format!("\"pid\":{a_pid},")))
        })
    };
    // b and c start once a holds the first step, so that they wait for it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while held_by_a().is_none() {
        assert!(Instant::now() < deadline, "worker a never held a step");
        std::thread::sleep(Duration::from_millis(10));
    }
    let b = worker(&[]);
    let c = worker(&[]);
    // Kill a while it holds a step that has not finished (a few checkpoints into it).
    let killed_in = loop {
        assert!(
            a.try_wait().unwrap().is_none(),
            "worker a ended before it could be killed inside a step"
        );
        assert!(
            Instant::now() < deadline,
            "worker a never held a step long enough"
        );
        if let Some(d) = held_by_a() {
            std::thread::sleep(Duration::from_millis(150));
            if !d.join("DONE").exists() && held_by_a().as_ref() == Some(&d) {
                break d;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    a.kill().unwrap();
    let a_out = a.wait_with_output().unwrap();
    assert!(!a_out.status.success(), "a was killed");
    let a_err = String::from_utf8_lossy(&a_out.stderr).into_owned();
    let (b_out, b_err) = finished(b.wait_with_output().unwrap());
    let (c_out, c_err) = finished(c.wait_with_output().unwrap());
    let (by_b, by_c) = (worker_computed(&b_out), worker_computed(&c_out));
    let killed = killed_in
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    eprintln!(
        "a killed in {killed}; b computed {}, c computed {}",
        by_b.len(),
        by_c.len()
    );
    let done: Vec<String> = step_dirs(&cfg.out, "")
        .into_iter()
        .filter(|d| d.join("DONE").is_file())
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let all = step_dirs(&cfg.out, "");
    assert_eq!(done.len(), all.len(), "every step finished");
    for step in &done {
        let n = by_b.iter().chain(&by_c).filter(|s| *s == step).count();
        // a step finished by a before it was killed is in no survivor's list
        let by_a = a_err.contains(&format!("({step})")) && step != &killed;
        assert_eq!(
            n + usize::from(by_a && n == 0),
            1,
            "{step}: computed by b {}, by c {}, started by a {by_a}",
            by_b.contains(step),
            by_c.contains(step)
        );
    }
    assert!(
        by_b.contains(&killed) || by_c.contains(&killed),
        "the killed step {killed} was finished by a survivor"
    );
    assert!(
        format!("{b_err}{c_err}").contains("resuming the unfinished step"),
        "the killed step was resumed, not started afresh"
    );
    for out in [&b_out, &c_out] {
        assert!(out.contains("S3") && out.contains("S4"), "{out}");
    }
    // The same grid in one process, in another folder: the same models.
    let single = ExperimentConfig {
        out: tmp.path().join("single"),
        ..cfg.clone()
    };
    let single_path = tmp.path().join("single.toml");
    std::fs::write(&single_path, toml::to_string(&single).unwrap()).unwrap();
    finished(grid_command(&single_path).output().unwrap());
    let mut compared = 0;
    for scenario in ["S3", "S4", "baseline"] {
        for cell in std::fs::read_dir(cfg.out.join(scenario)).unwrap().flatten() {
            let rel = Path::new(scenario).join(cell.file_name());
            assert_same_weights(
                &cfg.out.join(&rel).join("model.safetensors"),
                &single.out.join(&rel).join("model.safetensors"),
                &rel.display().to_string(),
            );
            compared += 1;
        }
    }
    assert!(compared >= 3, "{compared} cells compared");
}

/// `--max-steps N`: a worker computes N steps, says so and exits 0; a second one finishes.
#[test]
fn a_worker_stops_after_its_max_steps_and_another_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg_path, cfg) = write_config(tmp.path(), "budget", 1);
    let (out, _) = finished(
        grid_command(&cfg_path)
            .args(["--worker", "--max-steps", "2"])
            .output()
            .unwrap(),
    );
    assert_eq!(worker_computed(&out).len(), 2, "{out}");
    assert!(
        out.contains("stopped: computed 2 steps (--max-steps)"),
        "{out}"
    );
    let done = |d: &PathBuf| d.join("DONE").is_file();
    assert_eq!(
        step_dirs(&cfg.out, "").iter().filter(|d| done(d)).count(),
        2
    );
    let (out, _) = finished(grid_command(&cfg_path).arg("--worker").output().unwrap());
    assert!(out.contains("S3") && out.contains("S4"), "{out}");
    assert!(step_dirs(&cfg.out, "").iter().all(done));
}

/// The grid numbers the steps it computes against what was left to compute ("step k/N"), with
/// the time left once every kind of step still to run has been timed (never from one kind's
/// pace for another's); a rerun has nothing left and prints no step.
#[test]
fn a_grid_says_which_step_of_how_many_it_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, cfg) = killable_grid(tmp.path(), "progress", vec![Scenario::S1], 1);
    let left = reid_prune::grid::planned_steps(&cfg, true).unwrap().len();
    let o = grid_command(&config).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let steps: Vec<&str> = err
        .lines()
        .filter_map(|l| l.split_once("] step ").map(|(_, s)| s))
        .collect();
    assert_eq!(steps.len(), left, "{err}");
    assert!(
        steps[0].starts_with(&format!("1/{left}: pretrain")),
        "{err}"
    );
    // after the pre-training alone, the fine-tuning still to run is not timed: no estimate
    assert!(
        steps[1].starts_with(&format!("2/{left}: finetune")),
        "{err}"
    );
    assert!(
        steps[left - 1].starts_with(&format!("{left}/{left}, ~")),
        "{err}"
    );
    let again = grid_command(&config).output().unwrap();
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(!err.contains("] step "), "{err}");
}
