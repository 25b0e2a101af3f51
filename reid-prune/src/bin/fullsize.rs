//! Full-size path, end to end on the CPU: a full-width ResNet-50 at 256×128 from
//! torchvision-layout weights (the golden file), a generated Market-layout tree, a few training
//! steps of each task, one prune with every criterion (Taylor and entropy data passes included),
//! retraining steps, and evaluation. Prints each stage's time and peak resident memory
//! (BENCHMARKS.md).
//!
//! Every stage runs in a process of its own (this binary with `--stage`), reading the files the
//! earlier stages wrote: the allocator keeps freed memory for reuse, so within one process each
//! stage's peak would include what the largest earlier stage left.
//!
//! `cargo run --release -p reid-prune --bin fullsize [-- --steps 3 --batch-pk 4x4 --out DIR]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_process::status_mb;
use reid_prune::prune_run::{run_prune, PruneConfig};
use reid_train::Task;
use reid_train::{evaluate_on, run_training, RunConfig};

reid_process::use_fast_allocator!();

#[derive(Parser, Clone)]
#[command(about = "Full-width ResNet-50 at 256x128: time and peak memory of every stage")]
struct Args {
    /// torchvision-layout ResNet-50 weights (default: the golden file beside the checkout).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Optimiser steps of each training stage.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// P×K of the re-ID steps (and P·K = the classification batch).
    #[arg(long, default_value = "4x4")]
    batch_pk: reid_run::PkBatch,
    /// Identities of the generated tree (half train, half test).
    #[arg(long, default_value_t = 24)]
    ids: usize,
    /// Criteria to prune with (default: all nine).
    #[arg(long, value_delimiter = ',')]
    criteria: Vec<String>,
    /// Work folder; a temporary folder when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run one stage in this process (what the driver does for each stage).
    #[arg(long, hide = true)]
    stage: Option<String>,
}

/// The stages in order, by name.
fn stage_names(a: &Args) -> Vec<String> {
    let mut v = vec!["generate".to_string(), "classify".into(), "reid".into()];
    v.extend(criteria(a).into_iter().map(|c| format!("prune-{c}")));
    v.push("evaluate".into());
    v
}

fn criteria(a: &Args) -> Vec<String> {
    if a.criteria.is_empty() {
        reid_prune::method::method_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    } else {
        a.criteria.clone()
    }
}

/// Training-time criteria prune while retraining; they and l1 get one retraining epoch.
fn retrains(criterion: &str) -> bool {
    criterion == "l1" || reid_prune::method::method(criterion).is_ok_and(|m| m.training_time)
}

fn describe(a: &Args, stage: &str) -> String {
    let (p, k) = (a.batch_pk.p, a.batch_pk.k);
    match stage {
        "generate" => "generate 256x128 data".into(),
        "classify" => format!("train classify, {} steps of {}", a.steps, p * k),
        "reid" => format!("train re-ID, {} steps of {}", a.steps, a.batch_pk),
        "evaluate" => "evaluate the last pruned model (query/gallery)".into(),
        s => {
            let c = s.trim_start_matches("prune-");
            if retrains(c) {
                format!("prune {c} (½ FLOPs) + 1 retraining epoch")
            } else {
                format!("prune {c} (½ FLOPs)")
            }
        }
    }
}

fn run_stage(a: &Args, work: &Path, stage: &str) -> Result<()> {
    let weights = a.weights.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/resnet/resnet50.safetensors")
    });
    let (p, k) = (a.batch_pk.p, a.batch_pk.k);
    let (target, source) = (work.join("market"), work.join("source"));
    let train_cfg = |task: Task, root: &PathBuf, out: &str| {
        let mut c = RunConfig {
            dataset: if task == Task::Reid {
                "market1501".into()
            } else {
                "imagefolder".into()
            },
            root: root.clone(),
            arch: "resnet50".into(),
            width_mult: 1.0,
            input: reid_run::InputSize::new(256, 128),
            batch_pk: a.batch_pk,
            batch_size: p * k,
            out: work.join(out),
            pretrained: Some(weights.to_string_lossy().into_owned()),
            evaluate: false,
            stop_after_batches: Some(a.steps),
            ..RunConfig::default()
        };
        c.train.task = task;
        c.train.epochs = 1;
        c
    };
    let no_stop = || Arc::new(AtomicBool::new(false));
    match stage {
        "generate" => {
            if !weights.is_file() {
                bail!(
                    "{}: no ResNet-50 weights there (give --weights FILE)",
                    weights.display()
                );
            }
            for (dir, domain, layout) in [
                (&target, "target", SynthLayout::Market),
                (&source, "source", SynthLayout::ImageFolder),
            ] {
                let cfg = SynthConfig {
                    domain: domain.into(),
                    ids: a.ids,
                    cams: 4,
                    per_cam: 2,
                    seed: 0,
                    height: 256,
                    width: 128,
                    difficulty: 0.5,
                    layout,
                    extra_test_ids: 0,
                    distractors: 0,
                };
                generate(&cfg, dir, |_| {})?;
            }
        }
        "classify" => {
            run_training(
                &train_cfg(Task::Classify, &source, "classify"),
                false,
                no_stop(),
                false,
            )?;
        }
        "reid" => {
            run_training(
                &train_cfg(Task::Reid, &target, "reid"),
                false,
                no_stop(),
                false,
            )?;
        }
        "evaluate" => {
            let last = criteria(a)
                .last()
                .cloned()
                .context("no criterion was given")?;
            let model = work.join(format!("prune-{last}/model.safetensors"));
            let net = reid_model::load_checkpoint(&model, &candle_core::Device::Cpu, false)?.net;
            let ds = reid_data::datasets::load("market1501", &target)?;
            let m = evaluate_on(&net, &ds, &reid_data::Preprocess::imagenet(256, 128), false)?;
            eprintln!("  mAP {:.3} rank-1 {:.3}", m.map, m.rank(1));
        }
        s => {
            let c = s
                .strip_prefix("prune-")
                .with_context(|| format!("unknown stage '{s}'"))?;
            let cfg = PruneConfig {
                checkpoint: work.join("reid/model.safetensors"),
                criterion: c.to_string(),
                level: 0.5,
                input: reid_run::InputSize::new(256, 128),
                dataset: Some("market1501".into()),
                root: Some(target.clone()),
                score_images: 32,
                retrain_epochs: usize::from(retrains(c)),
                batch_pk: a.batch_pk,
                out: work.join(s),
                ..PruneConfig::default()
            };
            run_prune(&cfg, false)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    reid_process::default_sigpipe();
    reid_process::alloc::configure();
    reid_process::tune_thread_pools();
    let a = Args::parse();
    if let Some(stage) = &a.stage {
        let work = a.out.clone().context("--stage needs --out")?;
        let t = Instant::now();
        run_stage(&a, &work, stage).with_context(|| format!("stage {stage}"))?;
        // the driver reads this line
        println!(
            "STAGE {} {} {}",
            t.elapsed().as_secs_f64(),
            status_mb("VmHWM:"),
            status_mb("VmRSS:")
        );
        return Ok(());
    }
    let tmp;
    let work = match &a.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for stage in stage_names(&a) {
        let label = describe(&a, &stage);
        eprintln!("stage: {label}");
        let mut cmd = Command::new(&exe);
        cmd.arg("--stage")
            .arg(&stage)
            .arg("--out")
            .arg(&work)
            .arg("--steps")
            .arg(a.steps.to_string())
            .arg("--batch-pk")
            .arg(a.batch_pk.to_string())
            .arg("--ids")
            .arg(a.ids.to_string());
        if let Some(w) = &a.weights {
            cmd.arg("--weights").arg(w);
        }
        if !a.criteria.is_empty() {
            cmd.arg("--criteria").arg(a.criteria.join(","));
        }
        let out = cmd
            .output()
            .with_context(|| format!("starting stage {stage}"))?;
        if !out.status.success() {
            bail!(
                "stage {stage} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<f64> = stdout
            .lines()
            .find_map(|l| l.strip_prefix("STAGE "))
            .context("a stage printed no result line")?
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [s, peak, end] = nums[..] else {
            bail!("stage {stage}: unreadable result line");
        };
        eprintln!("  {s:.1} s, peak {peak:.0} MB");
        rows.push((label, s, peak, end));
    }
    println!(
        "{:<52} {:>8} {:>12} {:>11}",
        "stage (one process each)", "s", "peak RSS MB", "end RSS MB"
    );
    for (name, s, peak, end) in &rows {
        println!("{name:<52} {s:>8.1} {peak:>12.0} {end:>11.0}");
    }
    Ok(())
}
