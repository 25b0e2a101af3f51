//! Soak benchmark: a long re-ID training run of a small net (thousands of optimiser steps)
//! through the same `run_training` path and allocator as `reid-prune train`, with resident
//! memory sampled through the run. Prints memory per epoch and the growth from step ~100 to the
//! end (BENCHMARKS.md).
//!
//! `cargo run --release -p reid-prune --bin soak -- --minutes 20`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_train::{run_training_with, RunConfig, TrainHook};

reid_process::use_fast_allocator!();

#[derive(Parser)]
#[command(about = "Train a small net for a fixed time and report resident memory over the run")]
struct Args {
    /// Length of the run in minutes.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    #[arg(long, default_value = "resnet18")]
    arch: String,
    #[arg(long, default_value_t = 0.125)]
    width_mult: f64,
    /// HEIGHTxWIDTH
    #[arg(long, default_value = "64x32")]
    input: reid_run::InputSize,
    #[arg(long, default_value = "8x4")]
    batch_pk: reid_run::PkBatch,
    /// Synthetic identities of the training data.
    #[arg(long, default_value_t = 60)]
    ids: usize,
    /// Work folder (data and run); a temporary folder when absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Resident and peak resident memory of this process in MB.
fn memory_mb() -> (f64, f64) {
    use reid_process::status_mb;
    (status_mb("VmRSS:"), status_mb("VmHWM:"))
}

/// Records (epoch, seconds, RSS MB) after every epoch.
struct MemoryProbe {
    samples: Arc<Mutex<Vec<(usize, f64, f64)>>>,
    started: Instant,
}

impl TrainHook for MemoryProbe {
    fn after_epoch(&self, _: &reid_model::ReidNet, epoch: usize) -> Result<()> {
        let (rss, _) = memory_mb();
        if let Ok(mut s) = self.samples.lock() {
            s.push((epoch + 1, self.started.elapsed().as_secs_f64(), rss));
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    reid_process::default_sigpipe();
    reid_process::alloc::configure();
    reid_process::tune_thread_pools();
    let a = Args::parse();
    let tmp;
    let work = match &a.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let (h, w) = a.input.hw();
    let data = work.join("data");
    if !data.join("bounding_box_train").is_dir() {
        let synth = SynthConfig {
            domain: "target".into(),
            ids: a.ids,
            cams: 4,
            per_cam: 4,
            seed: 0,
            height: h as u32,
            width: w as u32,
            difficulty: 0.5,
            layout: SynthLayout::Market,
            extra_test_ids: 0,
            distractors: 0,
        };
        generate(&synth, &data, |_| {}).context("generating the soak data")?;
    }
    let run = work.join("run");
    let _ = std::fs::remove_dir_all(&run);
    let mut cfg = RunConfig {
        dataset: "market1501".into(),
        root: data,
        arch: a.arch.clone(),
        width_mult: a.width_mult,
        input: a.input,
        batch_pk: a.batch_pk,
        out: run,
        evaluate: false,
        ..RunConfig::default()
    };
    // far more epochs than the time allows: the clock stops the run
    cfg.train.epochs = 1_000_000;
    cfg.train.schedule.warmup_epochs = 0;

    let interrupt = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    {
        let flag = interrupt.clone();
        let limit = Duration::from_secs_f64(a.minutes * 60.0);
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            flag.store(true, Ordering::SeqCst);
        });
    }
    // (epoch, seconds, RSS MB) after every epoch
    let samples: Arc<Mutex<Vec<(usize, f64, f64)>>> = Arc::default();
    let hook = MemoryProbe {
        samples: samples.clone(),
        started,
    };
    eprintln!(
        "soak: {} x{} at {} for {} min",
        a.arch, a.width_mult, a.input, a.minutes
    );
    let outcome = run_training_with(&cfg, false, interrupt, false, &hook)?;
    let (rss_end, peak) = memory_mb();
    let wall = started.elapsed().as_secs_f64();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let epochs = samples.len().max(1);
    let per_epoch = outcome.batches as f64 / (epochs as f64 + 0.5);
    println!("{:>7} {:>8} {:>8} {:>9}", "epoch", "steps", "s", "RSS MB");
    let every = (samples.len() / 30).max(1);
    for (i, (e, t, rss)) in samples.iter().enumerate() {
        if i % every == 0 || i + 1 == samples.len() {
            println!("{e:>7} {:>8.0} {t:>8.1} {rss:>9.1}", *e as f64 * per_epoch);
        }
    }
    // memory once ~100 steps have run (the allocator warmed up), against the end
    let at_100 = samples
        .iter()
        .find(|(e, _, _)| *e as f64 * per_epoch >= 100.0)
        .map(|s| s.2)
        .unwrap_or(f64::NAN);
    println!(
        "\n{} optimiser steps in {:.0} s ({:.1} steps/s, ~{:.0} a epoch)",
        outcome.batches,
        wall,
        outcome.batches as f64 / wall,
        per_epoch
    );
    println!(
        "RSS after ~100 steps {at_100:.1} MB, at the end {rss_end:.1} MB: growth {:+.1} %; peak {peak:.1} MB",
        100.0 * (rss_end - at_100) / at_100
    );
    Ok(())
}
