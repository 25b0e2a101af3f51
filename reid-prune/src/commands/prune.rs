//! `reid-prune prune`: remove channels for real (once or iteratively, retraining) into a run folder.

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: reid_prune::prune_run::PruneConfig,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.config;
    // one writer a run folder, for the whole command
    let o = super::as_folder_writer(&cfg.out, "prune", || {
        reid_prune::prune_run::run_prune(&cfg, true)
    })?;
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
