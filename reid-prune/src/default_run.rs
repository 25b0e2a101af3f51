//! The default experiment: the paper's grid in miniature on the synthetic benchmark, on CPU.
//! Generates the source (pre-training) and two target domains if absent, then runs S1–S4 ×
//! {l1, taylor, entropy, auto-balanced, psfp (S1–S3; S4 is N/A for it, as in the paper)} at C1 ≈ ½ and C2 ≈ ⅓ of the FLOPs with the baselines.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use reid_data::synth::{generate, planned_images, SynthConfig, SynthLayout};

use crate::scenario::{DataRef, ExperimentConfig};

/// Sizes of the default and `--quick` runs.
pub struct Preset {
    pub input: (u32, u32),
    pub source_ids: usize,
    pub target_ids: usize,
    pub per_cam: usize,
    /// Test-only identities and gallery distractors of each re-ID target (statistics: enough
    /// queries that a rank-1 interval is a few points wide, not ±10).
    pub extra_test_ids: usize,
    pub distractors: usize,
    pub pretrain_epochs: usize,
    pub finetune_epochs: usize,
    pub retrain_epochs: usize,
    pub baselines: Vec<String>,
}

pub fn preset(quick: bool) -> Preset {
    if quick {
        Preset {
            input: (64, 32),
            source_ids: 32,
            target_ids: 32,
            per_cam: 2,
            extra_test_ids: 100,
            distractors: 500,
            pretrain_epochs: 2,
            finetune_epochs: 3,
            retrain_epochs: 1,
            baselines: vec!["resnet18".into()],
        }
    } else {
        // 64x32 keeps the whole grid (about 60 training steps) inside 30 minutes on 2 cores;
        // at 128x64 a quarter-width ResNet-50 trains at ~42 img/s here, four times slower.
        Preset {
            input: (64, 32),
            source_ids: 100,
            target_ids: 60,
            per_cam: 3,
            // ~1 300 valid queries and a gallery of ~5 300 images on each target
            extra_test_ids: 300,
            distractors: 2500,
            pretrain_epochs: 8,
            finetune_epochs: 10,
            retrain_epochs: 2,
            baselines: vec!["resnet18".into(), "resnet34".into()],
        }
    }
}

fn ensure_domain(dir: &Path, cfg: &SynthConfig) -> Result<()> {
    let marker = dir.join(".complete");
    if marker.is_file() {
        return Ok(());
    }
    eprintln!(
        "generating synthetic domain '{}' ({} images) in {}",
        cfg.domain,
        planned_images(cfg),
        dir.display()
    );
    generate(cfg, dir, |_| {}).with_context(|| format!("generating {}", dir.display()))?;
    std::fs::write(&marker, serde_json::to_string(cfg)?)?;
    Ok(())
}

/// Generate the data (if needed) and build the experiment for the default run.
pub fn default_experiment(out: &Path, quick: bool) -> Result<ExperimentConfig> {
    let p = preset(quick);
    let data = out.join("data");
    let synth =
        |domain: &str, ids: usize, cams: usize, layout: SynthLayout, per_cam: usize| SynthConfig {
            domain: domain.into(),
            ids,
            cams,
            per_cam,
            seed: 0,
            height: p.input.0,
            width: p.input.1,
            difficulty: 0.6,
            layout,
            extra_test_ids: 0,
            distractors: 0,
        };
    let test_side = |c: SynthConfig| SynthConfig {
        extra_test_ids: p.extra_test_ids,
        distractors: p.distractors,
        ..c
    };
    ensure_domain(
        &data.join("source"),
        &synth(
            "source",
            p.source_ids,
            4,
            SynthLayout::ImageFolder,
            p.per_cam + 1,
        ),
    )?;
    ensure_domain(
        &data.join("target"),
        &test_side(synth(
            "target",
            p.target_ids,
            6,
            SynthLayout::Market,
            p.per_cam,
        )),
    )?;
    ensure_domain(
        &data.join("target-b"),
        &test_side(synth(
            "target-b",
            p.target_ids,
            6,
            SynthLayout::Market,
            p.per_cam,
        )),
    )?;
    Ok(ExperimentConfig {
        name: if quick {
            "quick".into()
        } else {
            "default".into()
        },
        out: out.to_path_buf(),
        input: reid_run::InputSize::new(p.input.0 as usize, p.input.1 as usize),
        arch: "resnet50".into(),
        width_mult: 0.25,
        baselines: p.baselines,
        source: DataRef {
            dataset: "imagefolder".into(),
            root: data.join("source"),
            name: Some("synth-source".into()),
        },
        target: DataRef {
            dataset: "market1501".into(),
            root: data.join("target"),
            name: Some("synth-target".into()),
        },
        cross: Some(DataRef {
            dataset: "market1501".into(),
            root: data.join("target-b"),
            name: Some("synth-target-b".into()),
        }),
        criteria: crate::method::MethodName::list(&[
            "l1",
            "taylor",
            "entropy",
            "auto-balanced",
            "psfp",
        ]),
        levels: BTreeMap::from([("C1".to_string(), 0.5), ("C2".to_string(), 2.0 / 3.0)]),
        pretrain_epochs: p.pretrain_epochs,
        finetune_epochs: p.finetune_epochs,
        retrain_epochs: p.retrain_epochs,
        batch_pk: reid_run::PkBatch::new(8, 4),
        batch_size: 32,
        lr: 1e-3,
        ..ExperimentConfig::default()
    })
}
