//! `reid-prune synth`: a synthetic re-ID domain as real JPEG files.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LayoutArg {
    Market,
    Imagefolder,
}

/// Generate a synthetic re-ID domain as real JPEG files (Market-1501 layout or imagefolder).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to write the domain into.
    #[arg(long)]
    out: PathBuf,
    /// Domain name: domains differ in palettes and camera styles (e.g. source, target, target-b).
    #[arg(long, default_value = "target")]
    domain: String,
    /// Identities.
    #[arg(long, default_value_t = 100)]
    ids: usize,
    /// Cameras.
    #[arg(long, default_value_t = 6)]
    cams: usize,
    /// Images per identity and camera.
    #[arg(long, default_value_t = 4)]
    per_cam: usize,
    /// Seed of every random choice (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Market-1501 (re-ID) or imagefolder (classification) layout.
    #[arg(long, value_enum, default_value = "market")]
    layout: LayoutArg,
    /// Image HEIGHTxWIDTH.
    #[arg(long, default_value = "256x128")]
    size: reid_run::InputSize,
    /// 0 (easy) to 1 (hard): look-alike identities, occlusion, pose, noise.
    #[arg(long, default_value_t = 0.5)]
    difficulty: f32,
    /// Also write a sample grid (identities x cameras) to this PNG.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Market layout: identities only in query/gallery (one query per camera each), beyond
    /// the test half of --ids: a test side large enough to resolve small differences.
    #[arg(long, default_value_t = 0)]
    extra_test_ids: usize,
    /// Market layout: gallery distractors (pid 0000) that match no query.
    #[arg(long, default_value_t = 0)]
    distractors: usize,
}

/// Where `synth` generates before moving the dataset into `--out` (hidden: no loader reads it).
const STAGING: &str = ".synth-partial";

pub fn run(a: Args) -> Result<()> {
    let Args {
        out,
        domain,
        ids,
        cams,
        per_cam,
        seed,
        layout,
        size,
        difficulty,
        grid,
        extra_test_ids,
        distractors,
    } = a;
    let (h, w) = size.hw();
    let cfg = reid_data::synth::SynthConfig {
        domain,
        ids,
        cams,
        per_cam,
        seed,
        height: h as u32,
        width: w as u32,
        difficulty,
        layout: match layout {
            LayoutArg::Market => reid_data::synth::SynthLayout::Market,
            LayoutArg::Imagefolder => reid_data::synth::SynthLayout::ImageFolder,
        },
        extra_test_ids,
        distractors,
    };
    cfg.validate()?;
    // The images are generated in a staging folder inside `out` and moved into place at the
    // end: a stopped generator leaves no partial dataset that a loader would take for a whole
    // one, only the staging folder, which the next run removes.
    let staging = out.join(STAGING);
    // a new dataset folder: images of another domain under the same names would mix silently
    let unfinished_only = std::fs::read_dir(&out).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| e.file_name() == reid_run::lock::LOCK_FILE || e.file_name() == STAGING)
    });
    if out.is_dir() && !unfinished_only {
        anyhow::bail!(
            "--out {} is not empty: synth writes a dataset into a new or empty folder (remove \
             the folder first to generate it again)",
            out.display()
        );
    }
    // one writer a dataset folder: two generators would interleave their images
    let _lock = reid_run::lock::claim_folder(&out, "synth")?;
    if staging.exists() {
        eprintln!(
            "{}: removing an unfinished generation left by a stopped synth",
            staging.display()
        );
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "synth {msg} [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}",
        )?
        .progress_chars("=> "),
    );
    pb.set_message(cfg.domain.clone());
    let start = std::time::Instant::now();
    let total = reid_data::synth::planned_images(&cfg);
    pb.set_length(total as u64);
    let summary = reid_data::synth::generate(&cfg, &staging, |n| pb.inc(n as u64))
        .with_context(|| format!("generating into {}", staging.display()))?;
    for entry in
        std::fs::read_dir(&staging).with_context(|| format!("reading {}", staging.display()))?
    {
        let from = entry
            .with_context(|| format!("reading {}", staging.display()))?
            .path();
        let to = out.join(from.file_name().unwrap_or_default());
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    std::fs::remove_dir(&staging).with_context(|| format!("removing {}", staging.display()))?;
    pb.finish_and_clear();
    println!(
        "{} images of {} identities ({:?} layout, domain '{}') in {:.1} s -> {}",
        summary.images,
        summary.ids,
        cfg.layout,
        cfg.domain,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    if let Some(g) = grid {
        reid_data::synth::sample_grid(&cfg, 6.min(cfg.ids))?
            .save(&g)
            .with_context(|| format!("writing {}", g.display()))?;
        println!("sample grid -> {}", g.display());
    }
    Ok(())
}
