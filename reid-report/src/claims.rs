//! The paper's claims, judged on the runs: each with the measured rank-1 difference, its 95 %
//! paired bootstrap interval over query identities (both models evaluated on the same queries,
//! from the `per_query.json` of their run folders) and a verdict — holds, does not hold, or
//! inconclusive at this test size.
//!
//! (1) S1 and S2 at the level keep rank-1 within 1 point of the unpruned model;
//! (2) a pruned ResNet-50 (S1 at the level) beats the ResNet-18 baseline of about the same cost.

use reid_run::stats::{paired_bootstrap, PerQuery, RESAMPLES};
use reid_run::RunFolder;

use crate::runs::Run;
use crate::tables::Table;

/// What a claim asks of the difference `a − b` (in rank-1 fractions).
#[derive(Clone, Copy)]
enum Test {
    /// a is no more than `margin` below b.
    NotBelow { margin: f64 },
    /// a is above b.
    Above,
}

fn verdict(test: Test, lo: f64, hi: f64) -> &'static str {
    let bound = match test {
        Test::NotBelow { margin } => -margin,
        Test::Above => 0.0,
    };
    if lo > bound {
        "holds"
    } else if hi < bound {
        "does not hold"
    } else {
        "inconclusive at this size"
    }
}

fn queries(run: &Run, label: &str) -> Option<PerQuery> {
    RunFolder::new(&run.dir)
        .read_per_query()
        .ok()?
        .remove(label)
}

/// One row: the claim, the two models, Δ rank-1 in points, its interval and the verdict.
fn row(claim: &str, a: &Run, b: &Run, label: &str, test: Test) -> Vec<Option<String>> {
    let name = |r: &Run| {
        format!(
            "{} {} {}",
            r.metrics.scenario,
            r.model_name(),
            r.metrics.level
        )
    };
    let (Some(ea), Some(eb)) = (a.metrics.eval.get(label), b.metrics.eval.get(label)) else {
        return vec![];
    };
    let delta = 100.0 * (ea.rank1 - eb.rank1);
    let interval = match (queries(a, label), queries(b, label)) {
        (Some(qa), Some(qb)) => paired_bootstrap(&qa, &qb, "rank1", RESAMPLES, 0).ok(),
        _ => None,
    };
    let (ci, v) = match interval {
        Some(i) => (
            format!("[{:+.1}, {:+.1}]", 100.0 * i.lo, 100.0 * i.hi),
            verdict(test, i.lo, i.hi),
        ),
        None => ("–".into(), "no per-query results to judge"),
    };
    vec![
        Some(claim.to_string()),
        Some(label.to_string()),
        Some(name(a)),
        Some(name(b)),
        Some(format!("{delta:+.1}")),
        Some(ci),
        Some(v.to_string()),
    ]
}

/// The claims table over every dataset that has an unpruned ResNet-50 baseline at `level`.
pub fn claims_table(runs: &[Run], level: &str) -> Option<Table> {
    let mut rows = Vec::new();
    let baseline = |backbone: &str, label: &str| {
        runs.iter().find(|r| {
            r.is_baseline() && r.metrics.backbone == backbone && r.metrics.eval.contains_key(label)
        })
    };
    let mut labels: Vec<&String> = runs
        .iter()
        .filter(|r| r.is_baseline() && r.metrics.backbone == "resnet50")
        .flat_map(|r| r.metrics.eval.keys())
        .filter(|k| !k.ends_with("-cross") && !k.contains('+'))
        .collect();
    labels.sort();
    labels.dedup();
    for label in labels {
        let Some(unpruned) = baseline("resnet50", label) else {
            continue;
        };
        let cells = |scenario: &'static str| -> Vec<&Run> {
            runs.iter()
                .filter(|r| {
                    r.metrics.scenario == scenario
                        && r.metrics.level == level
                        && r.metrics.eval.contains_key(label.as_str())
                })
                .collect()
        };
        for scenario in ["S1", "S2"] {
            for cell in cells(scenario) {
                rows.push(row(
                    &format!("(1) {scenario} at {level} keeps rank-1 within 1 point"),
                    cell,
                    unpruned,
                    label,
                    Test::NotBelow { margin: 0.01 },
                ));
            }
        }
        if let Some(r18) = baseline("resnet18", label) {
            for cell in cells("S1") {
                rows.push(row(
                    "(2) the pruned ResNet-50 beats the ResNet-18",
                    cell,
                    r18,
                    label,
                    Test::Above,
                ));
            }
        }
    }
    rows.retain(|r| !r.is_empty());
    if rows.is_empty() {
        return None;
    }
    Some(Table {
        slug: "claims".into(),
        title: format!("The paper's claims at {level}, judged"),
        note: Some(
            "Δ rank-1 = A − B in points; the interval is a 95 % paired bootstrap over query \
             identities (2 000 seeded resamples, the same queries for both models). A claim holds \
             when the whole interval is on its side of the bound (−1 point for (1), 0 for (2)), \
             does not hold when the whole interval is on the other side, and is inconclusive \
             otherwise: more queries would decide it."
                .into(),
        ),
        headers: [
            "claim",
            "dataset",
            "A",
            "B",
            "Δ R-1",
            "95 % interval",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_by_where_the_interval_lies() {
        let one = Test::NotBelow { margin: 0.01 };
        assert_eq!(verdict(one, -0.005, 0.02), "holds");
        assert_eq!(verdict(one, -0.03, -0.015), "does not hold");
        assert_eq!(verdict(one, -0.015, 0.01), "inconclusive at this size");
        assert_eq!(verdict(Test::Above, 0.001, 0.05), "holds");
        assert_eq!(
            verdict(Test::Above, -0.02, 0.01),
            "inconclusive at this size"
        );
        assert_eq!(verdict(Test::Above, -0.05, -0.01), "does not hold");
    }
}
