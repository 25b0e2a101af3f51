//! Full-size path, end to end on the CPU: a full-width ResNet-50 at 256×128 from
//! torchvision-layout weights (the golden file), a generated Market-layout tree, a few training
//! steps of each task, one prune with every criterion (Taylor and entropy data passes included),
//! retraining steps, and evaluation. Prints each stage's time and peak resident memory
//! (BENCHMARKS.md).
//!
//! `cargo run --release -p reid-prune --bin fullsize [-- --steps 3 --batch-pk 4x4 --out DIR]`

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_model::train::Task;
use reid_prune::prune_run::{run_prune, PruneConfig};
use reid_prune::training::{evaluate_on, run_training, RunConfig};

reid_model::use_fast_allocator!();

#[derive(Parser)]
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
    batch_pk: String,
    /// Identities of the generated tree (half train, half test).
    #[arg(long, default_value_t = 24)]
    ids: usize,
    /// Criteria to prune with (default: all nine).
    #[arg(long, value_delimiter = ',')]
    criteria: Vec<String>,
    /// Work folder; a temporary folder when absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Peak resident memory (VmHWM) in MB.
fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Start a new peak: Linux resets VmHWM to the current RSS on "5" in clear_refs.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Stages {
    rows: Vec<(String, f64, f64)>,
}

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        reset_peak();
        let t = Instant::now();
        eprintln!("stage: {name}");
        let v = f().with_context(|| format!("stage {name}"))?;
        let row = (name.to_string(), t.elapsed().as_secs_f64(), peak_mb());
        eprintln!("  {:.1} s, peak {:.0} MB", row.1, row.2);
        self.rows.push(row);
        Ok(v)
    }
}

fn main() -> Result<()> {
    reid_model::alloc::configure();
    let a = Args::parse();
    let weights = a.weights.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/resnet/resnet50.safetensors")
    });
    if !weights.is_file() {
        anyhow::bail!(
            "{}: no ResNet-50 weights there (give --weights FILE)",
            weights.display()
        );
    }
    let tmp;
    let work = match &a.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let (p, k) = reid_prune::training::parse_pk(&a.batch_pk)?;
    let mut stages = Stages { rows: Vec::new() };
    let (target, source) = (work.join("market"), work.join("source"));
    stages.run("generate 256x128 data", || {
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
            };
            generate(&cfg, dir, |_| {})?;
        }
        Ok(())
    })?;
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
            input: "256x128".into(),
            batch_pk: a.batch_pk.clone(),
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
    stages.run(
        &format!("train classify, {} steps of {}", a.steps, p * k),
        || {
            run_training(
                &train_cfg(Task::Classify, &source, "classify"),
                false,
                no_stop(),
                false,
            )
        },
    )?;
    let reid = stages.run(
        &format!("train re-ID, {} steps of {}", a.steps, a.batch_pk),
        || {
            run_training(
                &train_cfg(Task::Reid, &target, "reid"),
                false,
                no_stop(),
                false,
            )
        },
    )?;
    let criteria: Vec<String> = if a.criteria.is_empty() {
        reid_prune::criterion::CRITERIA
            .iter()
            .map(|(n, _)| n.to_string())
            .collect()
    } else {
        a.criteria.clone()
    };
    let mut last = None;
    for c in &criteria {
        // training-time criteria prune while retraining; one retraining epoch for them and l1
        let retrain = matches!(c.as_str(), "auto-balanced" | "psfp" | "l1");
        let cfg = PruneConfig {
            checkpoint: reid.model.clone(),
            criterion: c.clone(),
            level: 0.5,
            input: "256x128".into(),
            dataset: Some("market1501".into()),
            root: Some(target.clone()),
            score_images: 32,
            retrain_epochs: usize::from(retrain),
            batch_pk: a.batch_pk.clone(),
            out: work.join(format!("prune-{c}")),
            ..PruneConfig::default()
        };
        let label = if retrain {
            format!("prune {c} (½ FLOPs) + 1 retraining epoch")
        } else {
            format!("prune {c} (½ FLOPs)")
        };
        last = Some(stages.run(&label, || run_prune(&cfg, false))?);
    }
    if let Some(o) = last {
        stages.run("evaluate the last pruned model (query/gallery)", || {
            let net = reid_model::load_checkpoint(&o.model, &candle_core::Device::Cpu, false)?.net;
            let ds = reid_data::datasets::load("market1501", &target)?;
            let m = evaluate_on(&net, &ds, &reid_data::Preprocess::imagenet(256, 128), false)?;
            eprintln!("  mAP {:.3} rank-1 {:.3}", m.map, m.rank(1));
            Ok(())
        })?;
    }
    println!("{:<58} {:>8} {:>12}", "stage", "s", "peak RSS MB");
    for (name, s, mb) in &stages.rows {
        println!("{name:<58} {s:>8.1} {mb:>12.0}");
    }
    Ok(())
}
