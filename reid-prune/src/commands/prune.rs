//! `reid-prune prune`: remove channels for real (once or iteratively, retraining) into a run folder.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: reid_prune::prune_run::PruneConfig,
    /// Input HEIGHTxWIDTH the FLOPs are counted at and data is scored at [default: the size the
    /// checkpoint was trained at, else 256x128]
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// Continue an interrupted prune in --out (same settings): its retraining runs go on from
    /// their last checkpoints; scores and cuts are computed again (they are deterministic)
    #[arg(long)]
    resume: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut cfg = a.config;
    // parsed at the edge: the record says the size the prune ran at, given or the model's own
    // (a resume: the size the run was started at)
    let recorded = || {
        let text =
            std::fs::read_to_string(reid_run::RunFolder::new(&cfg.out).config_path()).ok()?;
        let table: toml::Table = text.parse().ok()?;
        table
            .get("input")?
            .as_str()?
            .parse::<reid_run::InputSize>()
            .ok()
    };
    cfg.input = a
        .input
        .or_else(|| a.resume.then(recorded).flatten())
        .or_else(|| reid_prune::prune_run::trained_input(&cfg.checkpoint))
        .unwrap_or(cfg.input);
    let stop = Arc::new(AtomicBool::new(false));
    super::signals::install(stop.clone(), "stopping at the next retraining checkpoint")?;
    if a.resume && !reid_run::RunFolder::new(&cfg.out).config_path().is_file() {
        anyhow::bail!(
            "--resume: {} holds no pruning run to continue (no config.toml); start it without \
             --resume",
            cfg.out.display()
        );
    }
    // one writer a run folder, for the whole command
    let o = super::as_folder_writer(&cfg.out, "prune", || {
        Ok(reid_prune::prune_run::run_prune_until(
            &cfg, true, a.resume, stop,
        )?)
    });
    let o = match o {
        Err(e)
            if e.downcast_ref::<reid_prune::error::PruneError>()
                .is_some_and(|e| e.is_stopped()) =>
        {
            eprintln!("{e}");
            // an unfinished prune is not a success: `prune && export` must not go on
            std::process::exit(super::signals::exit_status().unwrap_or(1));
        }
        o => o?,
    };
    println!(
        "backbone GFLOPs {:.3} -> {:.3} ({:.1}%), params {:.2} M -> {:.2} M, {:.1}% of prunable channels kept",
        2.0 * o.macs_before as f64 / 1e9,
        2.0 * o.macs_after as f64 / 1e9,
        100.0 * o.macs_after as f64 / o.macs_before as f64,
        o.params_before as f64 / 1e6,
        o.params_after as f64 / 1e6,
        100.0 * o.kept_channel_fraction
    );
    println!("pruned model: {}", o.model.display());
    Ok(())
}
