//! `reid-eval`: feature extraction, scoring of features or distance matrices, ranked lists as
//! pictures, and a speed bench;
//! each subcommand lives in `commands/`.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

reid_process::use_fast_allocator!();

#[derive(Parser)]
#[command(
    name = "reid-eval",
    version,
    about = "Re-ID feature extraction and evaluation"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    eval: commands::evaluate::Args,
}

#[derive(Subcommand)]
enum Command {
    /// Extract one feature per image of a folder into a safetensors file.
    Extract(commands::extract::Args),
    /// Score given features (query and gallery files) or a given distance matrix.
    Score(commands::score::Args),
    /// Time distance + CMC + mAP + mINP on random features at Market-1501 scale.
    Bench(commands::bench::Args),
    /// Draw ranked lists: queries and their nearest gallery images, one row per model, and the
    /// queries two models disagree on at rank 1.
    Ranks(commands::ranks::Args),
}

fn main() -> Result<()> {
    reid_process::default_sigpipe();
    reid_process::alloc::configure();
    reid_process::tune_thread_pools();
    let cli = Cli::parse();
    match cli.command {
        None => commands::evaluate::run(cli.eval),
        Some(Command::Extract(a)) => commands::extract::run(a),
        Some(Command::Score(a)) => commands::score::run(a),
        Some(Command::Bench(a)) => commands::bench::run(a),
        Some(Command::Ranks(a)) => commands::ranks::run(a),
    }
}
