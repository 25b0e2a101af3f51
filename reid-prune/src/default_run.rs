//! The default experiment: the paper's grid in miniature on the synthetic benchmark, on CPU.
//! Generates the source (pre-training) and two target domains if absent, then runs S1–S4 ×
//! {l1, taylor, entropy, auto-balanced, psfp (S1–S3; S4 is N/A for it, as in the paper)} at C1 ≈ ½
//! and C2 ≈ ⅓ of the FLOPs with the baselines and the row trained from scratch; `--preset quick`
//! runs l1, taylor and entropy at C1, `--preset large` the grid at a larger scale.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use reid_data::synth::{generate, planned_images, SynthConfig, SynthLayout};

use crate::config_file::{with_overrides, SetOverride};
use crate::grid::{DataRef, ExperimentConfig};

/// The synthetic experiments the command runs with no subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetName {
    /// A smoke run (about a minute here): every scenario and claim, three criteria at C1.
    Quick,
    /// The paper's grid in miniature (33 minutes here from nothing, 2 cores).
    Default,
    /// Twice the default's data and longer pre-training, for a machine with more time or cores
    /// (~1 h 40 min on 2 cores, projected).
    Large,
}

impl PresetName {
    pub fn name(self) -> &'static str {
        match self {
            Self::Quick => "quick",
            Self::Default => "default",
            Self::Large => "large",
        }
    }
}

/// Sizes of a synthetic experiment.
pub struct Preset {
    pub input: (u32, u32),
    /// Pre-training classes, the cameras each is seen by and images per camera: the source is
    /// larger than the target, as ImageNet is larger than any re-ID set.
    pub source_ids: usize,
    pub source_cams: usize,
    pub source_per_cam: usize,
    /// Identities of each re-ID target (half train, half test) and images per camera.
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
    /// Synthetic difficulty (0 easy … 1 hard) of every domain.
    pub difficulty: f32,
    pub criteria: Vec<&'static str>,
    pub levels: Vec<(&'static str, f64)>,
    /// Random erasing of training steps (Bag of Tricks: 0.5).
    pub erase_p: f32,
    /// Training seeds of the key cells (0, 1, …): the claims' intervals cover training variance
    /// only with two or more.
    pub seeds: u64,
    /// The row trained on the target alone (what pre-training is worth).
    pub scratch: bool,
}

const ALL_CRITERIA: [&str; 5] = ["l1", "taylor", "entropy", "auto-balanced", "psfp"];

pub fn preset(name: PresetName) -> Preset {
    match name {
        // A smoke run that still shows something (≤ 3 minutes here): every scenario and
        // claim, but three criteria at C1 only, easier data, and no random erasing (which costs
        // a few-epoch run ~8 points of rank-1).
        PresetName::Quick => Preset {
            input: (64, 32),
            source_ids: 100,
            source_cams: 4,
            source_per_cam: 3,
            target_ids: 64,
            per_cam: 2,
            extra_test_ids: 100,
            distractors: 500,
            pretrain_epochs: 6,
            finetune_epochs: 4,
            retrain_epochs: 1,
            baselines: vec!["resnet18".into()],
            difficulty: 0.15,
            criteria: vec!["l1", "taylor", "entropy"],
            levels: vec![("C1", 0.5)],
            erase_p: 0.0,
            seeds: 1,
            scratch: true,
        },
        // Re-ID's proportions at a size 2 cores train in the budget: a couple of hundred training
        // identities of ~8 images (Market-1501: 751 of ~17), more than a quarter-width net
        // memorises in a few epochs; a pre-training source three times the target's images
        // and classes (ImageNet is ~100 times Market's); six cameras with their own styles
        // and a second target domain for the cross-domain test. 64x32 keeps the grid (about
        // 60 training steps a seed) inside the budget: at 128x64 a quarter-width ResNet-50
        // trains at ~42 img/s here, four times slower.
        PresetName::Default => Preset {
            input: (64, 32),
            source_ids: 600,
            source_cams: 4,
            source_per_cam: 3,
            target_ids: 400,
            per_cam: 2,
            // ~1 500 queries, a gallery of ~4 000 images (Market-1501: 3 368 and 15 913)
            extra_test_ids: 250,
            distractors: 800,
            pretrain_epochs: 12,
            // 8 took the grid to 36 min here (session 17); every network gains alike from more
            finetune_epochs: 7,
            retrain_epochs: 1,
            baselines: vec!["resnet18".into(), "resnet34".into()],
            difficulty: 0.6,
            criteria: ALL_CRITERIA.to_vec(),
            levels: vec![("C1", 0.5), ("C2", 2.0 / 3.0)],
            erase_p: 0.5,
            seeds: 3,
            scratch: true,
        },
        // Twice the target's training identities and a source of 1 200 classes (10 400
        // images), pre-trained longer (trial p3 in BENCHMARKS.md, one seed: ResNet-50 = -34 >
        // -18 in rank-1 near 96 %, 50 > 34 > 18 in mAP); ~1 h 40 min here, projected.
        PresetName::Large => Preset {
            source_ids: 1200,
            target_ids: 800,
            extra_test_ids: 400,
            distractors: 1500,
            pretrain_epochs: 15,
            finetune_epochs: 10,
            retrain_epochs: 2,
            ..preset(PresetName::Default)
        },
    }
}

fn ensure_domain(dir: &Path, cfg: &SynthConfig) -> Result<()> {
    let marker = dir.join(".complete");
    let wanted = serde_json::to_string(cfg)?;
    match std::fs::read_to_string(&marker) {
        Ok(made) if made == wanted => return Ok(()),
        // generated by us with other settings (an earlier version's preset): made again
        Ok(_) => {
            eprintln!(
                "{}: generated with other settings, generating it again",
                dir.display()
            );
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("removing the outdated {}", dir.display()))?;
        }
        Err(_) => {}
    }
    eprintln!(
        "generating synthetic domain '{}' ({} images) in {}",
        cfg.domain,
        planned_images(cfg),
        dir.display()
    );
    generate(cfg, dir, |_| {}).with_context(|| format!("generating {}", dir.display()))?;
    reid_run::write_atomic(&marker, wanted.as_bytes())?;
    Ok(())
}

/// The experiment the default command runs: the preset's, with `--set` overrides and `--seeds`
/// applied, validated; nothing is read or written. The preset's seeds follow the experiment's
/// `seed` (`--set seed=5` trains under 5, 6, 7, as `--seeds 3` would), unless `seeds` itself is
/// set.
pub fn configured(
    out: &Path,
    which: PresetName,
    sets: &[SetOverride],
    seeds: Option<u64>,
) -> Result<ExperimentConfig> {
    let mut cfg = with_overrides(default_experiment_config(out, which), sets)?;
    if cfg.out != out {
        anyhow::bail!("--set out=…: give the output folder with --out (the data goes there)");
    }
    let seeds_set = sets.iter().any(|s| s.key() == "seeds");
    let count = seeds.or_else(|| {
        let n = preset(which).seeds;
        (n > 1 && !seeds_set).then_some(n)
    });
    if let Some(n) = count {
        cfg = cfg.with_seed_count(n);
    }
    cfg.validate()
        .with_context(|| format!("experiment '{}'", cfg.name))?;
    Ok(cfg)
}

/// Generate a preset's data in `out/data` where it is not there yet.
pub fn generate_data(out: &Path, which: PresetName) -> Result<()> {
    let p = preset(which);
    let data = out.join("data");
    // Two default runs on one folder share the data: one generates it, the other waits (and
    // then finds it made) instead of reading half-written domains.
    let _data_lock = reid_run::lock::claim_folder_waiting(&data, |holder| {
        eprintln!(
            "{}: waiting for {} to finish generating the data",
            data.display(),
            holder.map_or_else(|| "another process".to_string(), |h| h.to_string())
        )
    })?;
    let synth =
        |domain: &str, ids: usize, cams: usize, layout: SynthLayout, per_cam: usize| SynthConfig {
            domain: domain.into(),
            ids,
            cams,
            per_cam,
            seed: 0,
            height: p.input.0,
            width: p.input.1,
            difficulty: p.difficulty,
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
            p.source_cams,
            SynthLayout::ImageFolder,
            p.source_per_cam,
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
    )
}

/// The experiment of a preset whose data is (or will be) in `out/data`; nothing is read or
/// written.
pub fn default_experiment_config(out: &Path, which: PresetName) -> ExperimentConfig {
    let p = preset(which);
    let data = out.join("data");
    ExperimentConfig {
        name: which.name().into(),
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
        criteria: crate::method::MethodName::list(&p.criteria),
        levels: p
            .levels
            .iter()
            .map(|&(name, level)| (name.to_string(), level))
            .collect::<BTreeMap<_, _>>(),
        pretrain_epochs: p.pretrain_epochs,
        finetune_epochs: p.finetune_epochs,
        retrain_epochs: p.retrain_epochs,
        batch_pk: reid_run::PkBatch::new(8, 4),
        batch_size: 32,
        lr: 1e-3,
        augment: reid_data::loader::Augment {
            erase_p: p.erase_p,
            ..Default::default()
        },
        seeds: if p.seeds > 1 {
            (0..p.seeds).collect()
        } else {
            Vec::new()
        },
        scratch: p.scratch,
        ..ExperimentConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(s: &[&str]) -> Vec<SetOverride> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// `--set seed=5` moves the preset's seeds with it: the recorded and trained seeds are
    /// 5, 6, 7, not 5 beside the preset's 0, 1, 2 (four seeds, one the user never asked for).
    #[test]
    fn the_preset_seeds_follow_the_seed() {
        let out = Path::new("runs/x");
        let d = |s: &[&str], n| configured(out, PresetName::Default, &sets(s), n).unwrap();
        assert_eq!(d(&[], None).seeds, vec![0, 1, 2]);
        assert_eq!(d(&["seed=5"], None).seeds, vec![5, 6, 7]);
        assert_eq!(d(&["seed=5"], Some(2)).seeds, vec![5, 6]);
        assert_eq!(d(&["seed=5", "seeds=[1, 5]"], None).seeds, vec![1, 5]);
        assert!(configured(out, PresetName::Quick, &sets(&["seed=5"]), None)
            .unwrap()
            .seeds
            .is_empty());
        let err = configured(out, PresetName::Quick, &sets(&["out=elsewhere"]), None).unwrap_err();
        assert!(err.to_string().contains("--set out=…"), "{err}");
    }
}
