//! `reid-prune`: the command-line entry point; each subcommand lives in `commands/`.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

reid_process::use_fast_allocator!();

#[derive(Parser)]
#[command(
    name = "reid-prune",
    version,
    about = "Prune ResNet re-ID models and reproduce the paper's tables"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the default experiment on the synthetic benchmark.
    #[command(flatten)]
    default: commands::experiment::DefaultArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run an experiment grid (scenarios x criteria x levels, with baselines) from a TOML file.
    Run(commands::experiment::RunArgs),
    /// List an experiment grid's steps (key, parents, state) without running anything.
    Plan(commands::experiment::PlanArgs),
    /// Write an sbatch job-array script that runs a grid with N workers on a Slurm cluster.
    Slurm(commands::slurm::Args),
    /// Prune a model's filters for real (prune once or iteratively) and write a run folder.
    Prune(commands::prune::Args),
    /// Per-channel importance scores of the prunable convs.
    Scores(commands::scores::Args),
    /// Each prunable conv pruned alone at several ratios, evaluated without retraining on
    /// held-out training identities: which layers are prunable.
    Sensitivity(commands::sensitivity::Args),
    /// Train a re-ID model (or a source classifier) and write a run folder.
    Train(commands::train::Args),
    /// Generate a synthetic re-ID domain as real JPEG files (Market-1501 layout or imagefolder).
    Synth(commands::synth::Args),
    /// Dataset utilities.
    Data {
        #[command(subcommand)]
        command: commands::data::Command,
    },
    /// MACs, FLOPs and parameters of an architecture or checkpoint, per layer and in total.
    Flops(commands::flops::Args),
    /// Write a checkpoint as an ONNX model (image tensor to re-ID feature).
    Export(commands::export::Args),
}

fn main() -> Result<()> {
    reid_process::default_sigpipe();
    reid_process::alloc::configure();
    reid_process::tune_thread_pools();
    let cli = Cli::parse();
    match cli.command {
        None => commands::experiment::run_default(cli.default),
        Some(Command::Run(a)) => commands::experiment::run(a),
        Some(Command::Plan(a)) => commands::experiment::plan(a),
        Some(Command::Slurm(a)) => commands::slurm::run(a),
        Some(Command::Prune(a)) => commands::prune::run(a),
        Some(Command::Scores(a)) => commands::scores::run(a),
        Some(Command::Sensitivity(a)) => commands::sensitivity::run(a),
        Some(Command::Train(a)) => commands::train::run(a),
        Some(Command::Synth(a)) => commands::synth::run(a),
        Some(Command::Data { command }) => commands::data::run(command),
        Some(Command::Flops(a)) => commands::flops::run(a),
        Some(Command::Export(a)) => commands::export::run(a),
    }
}
