//! What a finished grid says: the paper's claims judged on its cells, and the text table the
//! default run prints and writes as `summary.txt`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{CellResult, ExperimentConfig};

/// The paper's claims ([`reid_run::claims`]) judged on a grid's cells at its smallest level
/// (None when the grid has none of the cells they compare).
pub fn judge_claims(
    cfg: &ExperimentConfig,
    cells: &[CellResult],
) -> Result<Option<reid_run::claims::ClaimsTable>> {
    let Some(level) = cfg
        .levels
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(name, _)| name.clone())
    else {
        return Ok(None);
    };
    let metrics = cell_metrics(cells)?;
    Ok(reid_run::claims::judge(&claim_runs(&metrics), &level))
}

/// Whether the grid's benchmark behaves like re-ID ([`reid_run::claims::judge_benchmark`]):
/// larger baselines at or above smaller ones, pre-training above training from scratch.
pub fn judge_benchmark(cells: &[CellResult]) -> Result<Option<reid_run::claims::ClaimsTable>> {
    let metrics = cell_metrics(cells)?;
    Ok(reid_run::claims::judge_benchmark(&claim_runs(&metrics)))
}

fn cell_metrics(cells: &[CellResult]) -> Result<Vec<(PathBuf, reid_run::RunMetrics)>> {
    cells
        .iter()
        .map(|c| {
            let m = reid_run::RunFolder::new(&c.folder)
                .read_metrics()?
                .with_context(|| format!("{}: no metrics.json", c.folder.display()))?;
            Ok((c.folder.clone(), m))
        })
        .collect()
}

fn claim_runs(metrics: &[(PathBuf, reid_run::RunMetrics)]) -> Vec<reid_run::claims::ClaimRun<'_>> {
    metrics
        .iter()
        .map(|(dir, m)| reid_run::claims::ClaimRun { dir, metrics: m })
        .collect()
}

/// The summary table (Table 6 layout): one row per cell, rank-1 with its 95 % interval over
/// query identities, and the paired difference to the first row (the unpruned model) with its
/// own interval: a cell whose interval holds 0 is not distinguishable from it at this size.
/// With other seeds, key cells also show rank-1 as mean ± sd over the seeds.
pub fn render_table(cells: &[CellResult], cross: Option<&str>) -> String {
    use reid_run::stats::{paired_bootstrap, RESAMPLES};
    let base = cells.first();
    let pct = |v: f64| v * 100.0;
    let ci = |e: &reid_run::EvalEntry, m: &str| {
        e.ci95
            .get(m)
            .map(|i| format!("[{:.1}, {:.1}]", pct(i.lo), pct(i.hi)))
            .unwrap_or_default()
    };
    let mut s = format!(
        "{:<9} {:<13} {:<5} {:>7} {:>8} {:>7} {:>7} {:>14} {:>22} {:>9} {:>8}\n",
        "scenario",
        "criterion",
        "level",
        "GFLOPs",
        "params M",
        "mAP",
        "R-1",
        "R-1 95% CI",
        "ΔR-1 vs row 1 [95%]",
        if cross.is_some() { "R-1 cross" } else { "" },
        "speed-up"
    );
    let seeded = cells.iter().any(|c| !c.seed_evals.is_empty());
    if seeded {
        s.insert_str(s.len() - 1, "  R-1 over seeds");
    }
    for (i, c) in cells.iter().enumerate() {
        let speed = base
            .map(|b| b.latency_ms_batch32 / c.latency_ms_batch32)
            .unwrap_or(1.0);
        let delta = match base {
            Some(b) if i > 0 => {
                match paired_bootstrap(&c.target_queries, &b.target_queries, "rank1", RESAMPLES, 0)
                {
                    Ok(d) => format!(
                        "{:+.1} [{:+.1}, {:+.1}]",
                        pct(c.target.rank1 - b.target.rank1),
                        pct(d.lo),
                        pct(d.hi)
                    ),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        s.push_str(&format!(
            "{:<9} {:<13} {:<5} {:>7.3} {:>8.2} {:>7.2} {:>7.2} {:>14} {:>22} {:>9} {:>7.2}x\n",
            c.scenario,
            c.criterion,
            c.level,
            2.0 * c.macs as f64 / 1e9,
            c.params as f64 / 1e6,
            pct(c.target.map),
            pct(c.target.rank1),
            ci(&c.target, "rank1"),
            delta,
            c.cross
                .as_ref()
                .map(|v| format!("{:.2}", pct(v.rank1)))
                .unwrap_or_default(),
            speed
        ));
        if seeded {
            if let Some(sp) = c.rank1_over_seeds() {
                let row = format!("  {:.2} ± {:.2} ({} seeds)", pct(sp.mean), pct(sp.sd), sp.n);
                s.insert_str(s.len() - 1, &row);
            }
        }
    }
    s
}
