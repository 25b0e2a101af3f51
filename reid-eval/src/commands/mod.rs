//! The subcommands of `reid-eval`, one module each (`Args` + `run`); with no subcommand,
//! `evaluate` (extract + score a checkpoint on a dataset).

pub mod bench;
pub mod evaluate;
pub mod extract;
pub mod ranks;
pub mod score;

use anyhow::Result;
use reid_eval::rerank::RerankParams;
use reid_eval::{report, Metrics};

/// k-reciprocal re-ranking (Zhong et al. 2017).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RerankArgs {
    /// Re-rank the query × gallery distances (k-reciprocal encoding).
    #[arg(long)]
    pub rerank: bool,
    /// k1 of the k-reciprocal neighbours (with --rerank: alone it would change nothing).
    #[arg(long, requires = "rerank", default_value_t = 20)]
    k1: usize,
    /// k2 of the local query expansion.
    #[arg(long, requires = "rerank", default_value_t = 6)]
    k2: usize,
    /// Weight of the original distance in the final one.
    #[arg(long, requires = "rerank", default_value_t = 0.3)]
    lambda: f32,
}

impl RerankArgs {
    pub fn params(self) -> Option<RerankParams> {
        self.rerank.then_some(RerankParams {
            k1: self.k1,
            k2: self.k2,
            lambda: self.lambda,
        })
    }
}

pub fn print_metrics(m: &Metrics, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(&report::json(m))?);
    } else {
        print!("{}", report::table(m));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        rerank: RerankArgs,
    }

    /// A re-ranking setting without --rerank would be ignored silently: refused.
    #[test]
    fn rerank_settings_need_rerank() {
        for flag in ["--k1", "--k2", "--lambda"] {
            let e = Cli::try_parse_from(["eval", flag, "5"])
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("--rerank"), "{flag}: {e}");
        }
        let cli = Cli::try_parse_from(["eval", "--rerank", "--k1", "5"]).unwrap();
        assert_eq!(cli.rerank.params().unwrap().k1, 5);
        assert!(Cli::try_parse_from(["eval"])
            .unwrap()
            .rerank
            .params()
            .is_none());
    }
}
