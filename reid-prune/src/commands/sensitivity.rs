//! `reid-prune sensitivity`: each prunable conv pruned alone at several ratios, evaluated
//! without retraining on held-out training identities; `sensitivity.json` in `--out`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use reid_prune::sensitivity::{run_sensitivity, SensitivityConfig, SENSITIVITY_FILE};

/// How much each layer's channels matter: pruned alone, evaluated on held-out identities.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The re-ID dataset whose training identities are held out for the evaluation (its test
    /// split is never read).
    #[arg(long)]
    dataset: String,
    /// The dataset's folder.
    #[arg(long)]
    root: PathBuf,
    /// The criterion that picks each layer's channels.
    #[arg(long, value_parser = super::method_values(), default_value = "l1")]
    criterion: String,
    /// Fractions of a layer's channels removed.
    #[arg(long, value_delimiter = ',', default_values_t = [0.25, 0.5, 0.75])]
    ratios: Vec<f64>,
    /// Fraction of the training identities held out (the last ones).
    #[arg(long, default_value_t = 0.2)]
    held_out: f64,
    /// Network input HEIGHTxWIDTH (default: the size the checkpoint was trained at, else
    /// 256x128).
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// Seed of the scoring images (data-driven criteria).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The folder to write sensitivity.json in (new, or holding no other run).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let input = a
        .input
        .or_else(|| reid_prune::prune_run::trained_input(&a.checkpoint))
        .unwrap_or(reid_run::InputSize::new(256, 128));
    let cfg = SensitivityConfig {
        checkpoint: a.checkpoint,
        dataset: a.dataset,
        root: a.root,
        criterion: a.criterion,
        ratios: a.ratios,
        held_out: a.held_out,
        input,
        seed: a.seed,
    };
    let path = a.out.join(SENSITIVITY_FILE);
    if path.exists() || reid_run::RunFolder::new(&a.out).holds_run() {
        anyhow::bail!(
            "--out {} holds another run ({SENSITIVITY_FILE}, a model or metrics): give another \
             --out",
            a.out.display()
        );
    }
    super::as_folder_writer(&a.out, "sensitivity", || {
        let s = run_sensitivity(&cfg, |l| {
            let points: Vec<String> = l
                .points
                .iter()
                .map(|p| {
                    format!(
                        "{:.0} %: R-1 {:.1} mAP {:.1}",
                        p.ratio * 100.0,
                        p.rank1 * 100.0,
                        p.map * 100.0
                    )
                })
                .collect();
            eprintln!("{:<20} width {:>4}  {}", l.conv, l.width, points.join("  "));
        })?;
        let text = serde_json::to_string_pretty(&s)?;
        reid_run::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!(
            "unpruned: R-1 {:.1} %, mAP {:.1} % on {} held-out queries ({} identities); {} layers -> {}",
            s.unpruned.rank1 * 100.0,
            s.unpruned.map * 100.0,
            s.queries,
            s.held_out_ids.len(),
            s.layers.len(),
            path.display()
        );
        Ok(())
    })
}
