//! The claims table of the report: [`reid_run::claims`] judged on the runs, as a report table,
//! and the benchmark's own checks ([`reid_run::claims::judge_benchmark`]).

use reid_run::claims::{judge, judge_benchmark, ClaimRun, ClaimsTable};

use crate::runs::Run;
use crate::tables::Table;

/// The claims table over every dataset that has an unpruned ResNet-50 baseline at `level`.
pub fn claims_table(runs: &[Run], level: &str) -> Option<Table> {
    Some(as_table("claims", judge(&views(runs), level)?))
}

/// Whether the benchmark behaves like re-ID: larger baselines at or above smaller ones,
/// pre-training above training from scratch.
pub fn benchmark_table(runs: &[Run]) -> Option<Table> {
    Some(as_table("benchmark", judge_benchmark(&views(runs))?))
}

fn views(runs: &[Run]) -> Vec<ClaimRun<'_>> {
    runs.iter()
        .map(|r| ClaimRun {
            dir: &r.dir,
            metrics: &r.metrics,
        })
        .collect()
}

fn as_table(slug: &str, t: ClaimsTable) -> Table {
    Table {
        slug: slug.into(),
        title: t.title,
        note: Some(t.note),
        headers: t.headers,
        rows: t
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(Some).collect())
            .collect(),
    }
}
