//! `reid-eval ranks --checkpoint A [--compare B] --dataset NAME --root DIR --out DIR`: ranked
//! lists as pictures, one row per model, and the queries the two models disagree on at rank 1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reid_data::ranklist::{draw_png, RankRow};
use reid_data::Preprocess;
use reid_run::ranks::{flips, Ranks};
use reid_run::write_atomic;

/// Draw queries and their nearest gallery images (green: same identity, red: another).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model whose lists are drawn (first row).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A second model (e.g. the pruned one), drawn below the first for the same queries.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Dataset to evaluate on.
    #[arg(long)]
    dataset: String,
    /// The dataset's folder.
    #[arg(long)]
    root: PathBuf,
    /// A new or empty folder for the pictures and ranks.json.
    #[arg(long)]
    out: PathBuf,
    /// How many queries to draw (the first ones, or with --flips the first lost and gained).
    #[arg(long, default_value_t = 8)]
    queries: usize,
    /// Draw the queries the first model answers at rank 1 and --compare does not (lost), and the
    /// reverse (gained), instead of the first queries.
    #[arg(long, requires = "compare")]
    flips: bool,
    /// Gallery images a list shows (at most 10, what an evaluation keeps).
    #[arg(long, default_value_t = reid_run::ranks::DEFAULT_TOP_K)]
    k: usize,
    /// Network input HEIGHTxWIDTH (default: the size each model was trained at).
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
}

/// One model evaluated: its per-query results and ranked lists.
struct Evaluated {
    queries: reid_run::stats::PerQuery,
    ranks: Ranks,
}

fn evaluate(
    ck: &Path,
    ds: &reid_data::datasets::ReidDataset,
    a: &Args,
    device: &candle_core::Device,
) -> Result<Evaluated> {
    let loaded = reid_model::load_weights(ck, &reid_model::LoadOptions::inference(2), device)
        .with_context(|| format!("loading {}", ck.display()))?;
    let input = a
        .input
        .or(super::evaluate::trained_input(ck, &loaded.provenance))
        .unwrap_or(reid_run::InputSize::new(256, 128));
    let (h, w) = input.hw();
    let m = reid_eval::evaluate_dataset(
        &loaded.net,
        ds,
        &Preprocess::imagenet(h, w),
        reid_eval::EvalOptions::default(),
        true,
    )
    .with_context(|| format!("evaluating {}", ck.display()))?;
    Ok(Evaluated {
        ranks: reid_eval::dataset_eval::ranks_of(&m, ds),
        queries: m.per_query,
    })
}

/// A file name's stem safe in any file system (`0001_c1s1_001051_00`).
fn stem(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    if a.k == 0 || a.k > reid_run::ranks::DEFAULT_TOP_K {
        bail!(
            "--k {}: expected 1 to {} (the images an evaluation keeps a query)",
            a.k,
            reid_run::ranks::DEFAULT_TOP_K
        );
    }
    if a.queries == 0 {
        bail!("--queries 0: expected at least one query to draw");
    }
    // the folder is claimed and checked before the long evaluation, and nothing in it is
    // replaced: a new folder, or an empty one (but for an earlier run's released lock)
    if a.out.is_symlink() && !a.out.exists() {
        bail!(
            "--out {}: a symbolic link to nothing; give a new or empty folder",
            a.out.display()
        );
    }
    if a.out.exists() && !a.out.is_dir() {
        bail!(
            "--out {}: exists and is not a folder; give a new or empty folder",
            a.out.display()
        );
    }
    let created = !a.out.exists();
    let _lock = reid_run::lock::claim_folder(&a.out, "reid-eval ranks")
        .with_context(|| format!("--out {}", a.out.display()))?;
    let holds_something = std::fs::read_dir(&a.out)
        .with_context(|| format!("--out {}: cannot read it", a.out.display()))?
        .flatten()
        .any(|e| e.file_name() != reid_run::lock::LOCK_FILE);
    if holds_something {
        bail!(
            "--out {}: exists and is not an empty folder; give a new or empty folder",
            a.out.display()
        );
    }
    let result = draw_all(&a);
    if result.is_err() {
        // a failed run leaves the folder as it found it: what it wrote goes
        if let Ok(entries) = std::fs::read_dir(&a.out) {
            for e in entries.flatten() {
                if e.file_name() != reid_run::lock::LOCK_FILE {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if created {
            drop(_lock);
            let _ = std::fs::remove_file(a.out.join(reid_run::lock::LOCK_FILE));
            let _ = std::fs::remove_dir(&a.out);
        }
    }
    result
}

/// Evaluate, pick the queries, write ranks.json and the pictures into the claimed `--out`.
fn draw_all(a: &Args) -> Result<()> {
    let device = reid_model::device::open_device(a.device)?;
    let ds = reid_data::datasets::load(&a.dataset, &a.root)?;
    let first = evaluate(&a.checkpoint, &ds, a, &device)?;
    let second = match &a.compare {
        Some(b) => Some(evaluate(b, &ds, a, &device)?),
        None => None,
    };
    // which queries, under which name
    let mut picked: Vec<(String, usize)> = Vec::new();
    let mut summary = String::new();
    if let Some(b) = &second {
        let f = flips(&first.queries, &b.queries).map_err(anyhow::Error::msg)?;
        summary = format!(
            "rank-1 of {} queries: {} lost and {} gained by {} against {}\n",
            first.queries.len(),
            f.lost.len(),
            f.gained.len(),
            a.compare.as_deref().unwrap_or(Path::new("")).display(),
            a.checkpoint.display()
        );
        if a.flips {
            // at most --queries in all: half lost, the rest gained
            let lost = f.lost.len().min(a.queries.div_ceil(2));
            let gained = f.gained.len().min(a.queries - lost);
            picked.extend(f.lost.iter().take(lost).map(|&q| ("lost".to_string(), q)));
            picked.extend(
                f.gained
                    .iter()
                    .take(gained)
                    .map(|&q| ("gained".to_string(), q)),
            );
        }
    }
    if !a.flips {
        let n = first.ranks.queries.len().min(a.queries);
        picked.extend((0..n).map(|q| ("query".to_string(), q)));
    }
    let run = reid_run::RunFolder::new(&a.out);
    run.write_ranks("checkpoint", &first.ranks)?;
    if let Some(b) = &second {
        run.write_ranks("compare", &b.ranks)?;
    }
    for (kind, q) in &picked {
        let mut rows = vec![RankRow::of(&first.ranks, *q, a.k)];
        if let Some(b) = &second {
            rows.push(RankRow::of(&b.ranks, *q, a.k));
        }
        let png = draw_png(&a.root, &rows)?;
        let name = format!("{kind}-{q:05}-{}.png", stem(&first.ranks.queries[*q].file));
        write_atomic(&a.out.join(&name), &png)?;
        println!("{kind:<6} query {q:>5} -> {}", a.out.join(&name).display());
    }
    print!("{summary}");
    if a.flips && picked.is_empty() {
        println!("no query changed at rank 1: nothing drawn");
    }
    println!(
        "{} pictures (rows: {}), ranks.json -> {}",
        picked.len(),
        if second.is_some() {
            "--checkpoint, then --compare"
        } else {
            "--checkpoint"
        },
        a.out.display()
    );
    Ok(())
}
