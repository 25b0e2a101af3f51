//! The claims table of the report: [`reid_run::claims`] judged on the runs, as a report table.

use reid_run::claims::{judge, ClaimRun};

use crate::runs::Run;
use crate::tables::Table;

/// The claims table over every dataset that has an unpruned ResNet-50 baseline at `level`.
pub fn claims_table(runs: &[Run], level: &str) -> Option<Table> {
    let views: Vec<ClaimRun> = runs
        .iter()
        .map(|r| ClaimRun {
            dir: &r.dir,
            metrics: &r.metrics,
        })
        .collect();
    let t = judge(&views, level)?;
    Some(Table {
        slug: "claims".into(),
        title: t.title,
        note: Some(t.note),
        headers: t.headers,
        rows: t
            .rows
            .into_iter()
            .map(|r| r.into_iter().map(Some).collect())
            .collect(),
    })
}
