use anyhow::{Context, Result};
use clap::Parser;
use reid_report::{write_report, ReportOptions};
use std::path::PathBuf;

/// Tables (Markdown, CSV) and figures (PNG, SVG) of the paper from run folders.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Folder of run folders (each with a metrics.json); the default run writes runs/default.
    #[arg(long, default_value = "runs/default")]
    runs: PathBuf,
    /// Output folder: results.csv/.parquet, tables/, figures/, index.html.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// Compression level of Tables 5 and 6 and of the default CMC curves (default: the first).
    #[arg(long)]
    level: Option<String>,
    /// A run (folder relative to --runs, e.g. S1/l1-C1) to draw in the CMC figure; repeatable.
    #[arg(long = "cmc")]
    cmc: Vec<String>,
    /// Title of index.html and tables.md.
    #[arg(long, default_value = "reid-prune report")]
    title: String,
}

fn main() -> Result<()> {
    // A closed stdout ends the program quietly (Rust ignores SIGPIPE, so println! would panic).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    let opts = ReportOptions {
        level: args.level,
        cmc_runs: args.cmc,
        title: args.title,
    };
    let summary = write_report(&args.runs, &args.out, &opts).with_context(|| {
        format!(
            "report of {} into {}",
            args.runs.display(),
            args.out.display()
        )
    })?;
    for p in &summary.problems {
        eprintln!("skipped {p}");
    }
    println!(
        "{} runs -> {} files in {} (open {})",
        summary.runs,
        summary.files.len(),
        args.out.display(),
        args.out.join("index.html").display()
    );
    Ok(())
}
