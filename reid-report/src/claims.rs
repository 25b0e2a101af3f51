//! The claims of the report: [`reid_run::claims`] judged on the runs, as a verdict matrix (the
//! report's first screen) and a table, and the benchmark's own checks
//! ([`reid_run::claims::judge_benchmark`]).

use reid_run::claims::{judge, judge_benchmark, ClaimRun, ClaimsTable, Judgement};

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

/// The claims at a glance: one row per claim and dataset, one column per model judged (the
/// criterion of the pruned cell, or the larger network), each cell a verdict with Δ rank-1 and
/// its interval.
pub struct VerdictMatrix {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<MatrixRow>,
}

pub struct MatrixRow {
    pub claim: String,
    pub dataset: String,
    /// By column; `None` where the claim does not compare that model.
    pub cells: Vec<Option<Judgement>>,
}

/// The paper's claims at `level`, as a matrix (None when no claim can be judged).
pub fn verdict_matrix(runs: &[Run], level: &str) -> Option<VerdictMatrix> {
    let judged = judge(&views(runs), level)?.judged;
    let mut columns: Vec<String> = Vec::new();
    for j in &judged {
        if !columns.contains(&j.model) {
            columns.push(j.model.clone());
        }
    }
    let mut rows: Vec<MatrixRow> = Vec::new();
    for j in judged {
        let col = columns.iter().position(|c| *c == j.model).unwrap_or(0);
        let at = match rows
            .iter()
            .position(|r| r.claim == j.claim && r.dataset == j.dataset)
        {
            Some(i) => i,
            None => {
                rows.push(MatrixRow {
                    claim: j.claim.clone(),
                    dataset: j.dataset.clone(),
                    cells: vec![None; columns.len()],
                });
                rows.len() - 1
            }
        };
        let cells = &mut rows[at].cells;
        cells.resize(columns.len(), None);
        cells[col] = Some(j);
    }
    for r in &mut rows {
        r.cells.resize(columns.len(), None);
    }
    Some(VerdictMatrix {
        title: format!("The paper's claims at {level} at a glance"),
        columns,
        rows,
    })
}

impl MatrixRow {
    /// A cell as text: the verdict, Δ rank-1 and its interval in points.
    pub fn cell_text(j: &Judgement) -> String {
        format!(
            "{} {:+.1} {}",
            j.verdict.text(),
            100.0 * j.delta,
            j.interval_text()
        )
    }
}

impl VerdictMatrix {
    /// As a plain table (Markdown and CSV files, tables.md).
    pub fn as_table(&self) -> Table {
        let mut headers = vec!["claim".to_string(), "dataset".to_string()];
        headers.extend(self.columns.iter().cloned());
        Table {
            slug: "verdicts".into(),
            title: self.title.clone(),
            note: Some(
                "Each cell: the verdict, Δ rank-1 of that model against the claim's reference \
                 (points) and its 95 % interval; the claims table below has every comparison."
                    .into(),
            ),
            headers,
            rows: self
                .rows
                .iter()
                .map(|r| {
                    let mut cells = vec![Some(r.claim.clone()), Some(r.dataset.clone())];
                    cells.extend(r.cells.iter().map(|c| c.as_ref().map(MatrixRow::cell_text)));
                    cells
                })
                .collect(),
        }
    }
}
