//! The paper's claims, judged on run folders: each with the measured rank-1 difference A − B,
//! its 95 % interval and a verdict — holds, does not hold, or inconclusive at this test size.
//! Where both cells were trained under several seeds (an experiment's `seeds`), the difference
//! is the mean over seeds and the interval covers training and query variance
//! ([`crate::stats::seeds_and_queries`]); with one seed it is the paired bootstrap over query
//! identities alone, which training variance can exceed (a row says which). Both read the
//! `per_query.json` of the run folders. The grid prints the table when it ends; the report opens
//! with it.
//!
//! 1. S1 and S2 at the level keep rank-1 within 1 point of the unpruned model;
//! 2. the pruned ResNet-50 (S1) beats a ResNet-18/34 trained the same way (any baseline of
//!    another backbone);
//! 3. pruning on the source (S1) beats pruning on the small target (S3, S4);
//! 4. the pruned models (S1, S2) keep cross-domain rank-1 within 1 point of the unpruned one;
//! 5. per criterion (S1): L1 is within 1 point of Taylor and entropy or better (the paper's
//!    "Hao Li is best or close to best").

use std::path::Path;

use crate::stats::{paired_bootstrap, seed_label, seeds_and_queries, PerQuery, RESAMPLES};
use crate::{RunFolder, RunMetrics};

/// One run folder, as the claims read it.
#[derive(Clone, Copy)]
pub struct ClaimRun<'a> {
    pub dir: &'a Path,
    pub metrics: &'a RunMetrics,
}

/// What a claim asks of the difference `a − b` (in rank-1 fractions).
#[derive(Clone, Copy, Debug)]
pub enum Test {
    /// a is no more than `margin` below b.
    NotBelow { margin: f64 },
    /// a is above b.
    Above,
}

/// What a claim's interval says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    /// The interval holds the bound: more seeds or queries would decide it.
    Inconclusive,
    /// A model has no per-query results to resample.
    Unjudged,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::DoesNotHold => "does not hold",
            Self::Inconclusive => "inconclusive at this size",
            Self::Unjudged => "no per-query results to judge",
        }
    }
}

/// The verdict of `test` on the interval [lo, hi] of a − b.
pub fn judge_interval(test: Test, lo: f64, hi: f64) -> Verdict {
    let bound = match test {
        Test::NotBelow { margin } => -margin,
        Test::Above => 0.0,
    };
    if lo > bound {
        Verdict::Holds
    } else if hi < bound {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    }
}

/// [`judge_interval`]'s verdict as the tables print it.
pub fn verdict(test: Test, lo: f64, hi: f64) -> &'static str {
    judge_interval(test, lo, hi).text()
}

/// One comparison judged: a claim on model A against model B, on one dataset.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub claim: String,
    pub dataset: String,
    /// A's scenario, model (criterion or backbone) and level, as recorded.
    pub scenario: String,
    pub model: String,
    pub level: String,
    pub a: String,
    pub b: String,
    /// A − B in rank-1 fractions (the mean over seeds where there are several).
    pub delta: f64,
    pub interval: Option<(f64, f64)>,
    pub seeds: usize,
    pub verdict: Verdict,
}

impl Judgement {
    /// The table's cells (see [`headers`]).
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.claim.clone(),
            self.dataset.clone(),
            self.a.clone(),
            self.b.clone(),
            format!("{:+.1}", 100.0 * self.delta),
            self.interval_text(),
            if self.seeds >= 2 {
                format!("{} seeds + queries", self.seeds)
            } else {
                "queries only".to_string()
            },
            self.verdict.text().to_string(),
        ]
    }

    /// The 95 % interval in points, e.g. `[-2.7, +3.8]` ("–" when unjudged).
    pub fn interval_text(&self) -> String {
        match self.interval {
            Some((lo, hi)) => format!("[{:+.1}, {:+.1}]", 100.0 * lo, 100.0 * hi),
            None => "–".into(),
        }
    }
}

/// The judged claims: a header and one row of cells per comparison.
#[derive(Clone, Debug)]
pub struct ClaimsTable {
    pub title: String,
    pub note: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The rows as values (the verdict matrix reads them).
    pub judged: Vec<Judgement>,
}

impl ClaimsTable {
    fn new(title: String, note: String, what: &str, judged: Vec<Judgement>) -> Self {
        Self {
            title,
            note,
            headers: headers(what),
            rows: judged.iter().map(Judgement::cells).collect(),
            judged,
        }
    }
}

impl ClaimsTable {
    /// Aligned plain text (for a terminal).
    pub fn to_text(&self) -> String {
        let width = |i: usize| {
            std::iter::once(&self.headers[i])
                .chain(self.rows.iter().map(|r| &r[i]))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (c, w) in cells.iter().zip(&widths) {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
            s.trim_end().to_string() + "\n"
        };
        let mut s = format!("{}\n", self.title);
        s.push_str(&line(&self.headers));
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

fn name(r: &ClaimRun) -> String {
    let m = r.metrics;
    format!("{} {} {}", m.scenario, m.model_name(), m.level)
}

/// The (A, B) per-query pairs of every training seed both cells have: the main runs, then each
/// seed of `seed_evals` that both hold with per-query results.
fn seed_pairs(a: &ClaimRun, b: &ClaimRun, label: &str) -> Vec<(PerQuery, PerQuery)> {
    let (Ok(mut qa), Ok(mut qb)) = (
        RunFolder::new(a.dir).read_per_query(),
        RunFolder::new(b.dir).read_per_query(),
    ) else {
        return Vec::new();
    };
    let mut pairs: Vec<(PerQuery, PerQuery)> = Vec::new();
    if let (Some(x), Some(y)) = (qa.remove(label), qb.remove(label)) {
        pairs.push((x, y));
    } else {
        return pairs;
    }
    for seed in a.metrics.seed_evals.keys() {
        if !b.metrics.seed_evals.contains_key(seed) {
            continue;
        }
        let key = seed_label(label, *seed);
        if let (Some(x), Some(y)) = (qa.remove(&key), qb.remove(&key)) {
            pairs.push((x, y));
        }
    }
    pairs
}

/// One comparison: the claim, the dataset, the two models, Δ rank-1 (the mean over seeds where
/// there are several), its interval, the seeds it rests on and the verdict (None when either
/// model lacks `label`).
fn row(claim: &str, a: &ClaimRun, b: &ClaimRun, label: &str, test: Test) -> Option<Judgement> {
    let ea = a.metrics.eval.get(label)?;
    let eb = b.metrics.eval.get(label)?;
    let pairs = seed_pairs(a, b, label);
    let (delta, interval, seeds) = if pairs.len() >= 2 {
        match seeds_and_queries(&pairs, "rank1", RESAMPLES, 0) {
            Ok(i) => (i.mean, Some(i.interval), pairs.len()),
            Err(_) => (ea.rank1 - eb.rank1, None, pairs.len()),
        }
    } else {
        let i = pairs
            .first()
            .and_then(|(qa, qb)| paired_bootstrap(qa, qb, "rank1", RESAMPLES, 0).ok());
        (ea.rank1 - eb.rank1, i, 1)
    };
    Some(Judgement {
        claim: claim.to_string(),
        dataset: label.to_string(),
        scenario: a.metrics.scenario.clone(),
        model: a.metrics.model_name(),
        level: a.metrics.level.clone(),
        a: name(a),
        b: name(b),
        delta,
        interval: interval.map(|i| (i.lo, i.hi)),
        seeds,
        verdict: interval.map_or(Verdict::Unjudged, |i| judge_interval(test, i.lo, i.hi)),
    })
}

const ONE_POINT: Test = Test::NotBelow { margin: 0.01 };

/// `judge` on each experiment's runs apart (a folder holding two grids must not judge one
/// grid's pruned model against the other's baseline); with several, each row's dataset is
/// prefixed with its experiment.
fn per_experiment(
    runs: &[ClaimRun],
    judge: impl Fn(&[ClaimRun]) -> Vec<Judgement>,
) -> Vec<Judgement> {
    let mut experiments: Vec<&str> = runs.iter().map(|r| r.metrics.experiment.as_str()).collect();
    experiments.sort();
    experiments.dedup();
    let mut rows = Vec::new();
    for e in &experiments {
        let group: Vec<ClaimRun> = runs
            .iter()
            .filter(|r| r.metrics.experiment == *e)
            .copied()
            .collect();
        for mut row in judge(&group) {
            if experiments.len() > 1 {
                row.dataset = format!("{e}: {}", row.dataset);
            }
            rows.push(row);
        }
    }
    rows
}

/// The in-domain evaluation labels of `runs` (no cross set, no variant such as `+flip`), sorted.
fn in_domain_labels<'a>(runs: impl Iterator<Item = &'a ClaimRun<'a>>) -> Vec<&'a String> {
    let mut labels: Vec<&String> = runs
        .flat_map(|r| r.metrics.eval.keys())
        .filter(|k| !k.ends_with("-cross") && !k.contains('+'))
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

/// The claims over every dataset that has the unpruned model as a baseline, at `level`. The
/// pruned backbone is the scenario cells' (ResNet-50 in the paper); the other baselines are the
/// smaller networks of claim 2.
pub fn judge(runs: &[ClaimRun], level: &str) -> Option<ClaimsTable> {
    let rows = per_experiment(runs, |group| judge_experiment(group, level));
    if rows.is_empty() {
        return None;
    }
    Some(ClaimsTable::new(
        format!("The paper's claims at {level}, judged"),
        NOTE.into(),
        "claim",
        rows,
    ))
}

/// The claims of one experiment's runs.
fn judge_experiment(runs: &[ClaimRun], level: &str) -> Vec<Judgement> {
    let mut rows: Vec<Option<Judgement>> = Vec::new();
    let is_baseline = |r: &ClaimRun| r.metrics.scenario == "baseline";
    let pruned = runs
        .iter()
        .find(|r| ["S1", "S2", "S3", "S4"].contains(&r.metrics.scenario.as_str()))
        .map_or("resnet50", |r| r.metrics.backbone.as_str());
    let baseline = |backbone: &str, label: &str| {
        runs.iter().find(|r| {
            is_baseline(r) && r.metrics.backbone == backbone && r.metrics.eval.contains_key(label)
        })
    };
    let mut smaller: Vec<&str> = runs
        .iter()
        .filter(|r| is_baseline(r) && r.metrics.backbone != pruned)
        .map(|r| r.metrics.backbone.as_str())
        .collect();
    smaller.sort();
    smaller.dedup();
    let labels = in_domain_labels(
        runs.iter()
            .filter(|r| is_baseline(r) && r.metrics.backbone == pruned),
    );
    for label in labels {
        let Some(unpruned) = baseline(pruned, label) else {
            continue;
        };
        let cells = |scenario: &str| -> Vec<&ClaimRun> {
            runs.iter()
                .filter(|r| {
                    r.metrics.scenario == scenario
                        && r.metrics.level == level
                        && r.metrics.eval.contains_key(label.as_str())
                })
                .collect()
        };
        let cell = |scenario: &str, criterion: &str| {
            cells(scenario)
                .into_iter()
                .find(|r| r.metrics.criterion == criterion)
        };
        for scenario in ["S1", "S2"] {
            for c in cells(scenario) {
                rows.push(row(
                    &format!("(1) {scenario} at {level} keeps rank-1 within 1 point"),
                    c,
                    unpruned,
                    label,
                    ONE_POINT,
                ));
            }
        }
        for &small in &smaller {
            if let Some(b) = baseline(small, label) {
                for c in cells("S1") {
                    rows.push(row(
                        &format!(
                            "(2) the pruned {} beats the {}",
                            pretty(pruned),
                            pretty(small)
                        ),
                        c,
                        b,
                        label,
                        Test::Above,
                    ));
                }
            }
        }
        for c in cells("S1") {
            for target_scenario in ["S3", "S4"] {
                if let Some(t) = cell(target_scenario, &c.metrics.criterion) {
                    rows.push(row(
                        &format!("(3) pruning on the source (S1) beats the small target ({target_scenario})"),
                        c,
                        t,
                        label,
                        Test::Above,
                    ));
                }
            }
        }
        // the grid keys a cross set's results `<cross label>-cross`
        for cross in unpruned
            .metrics
            .eval
            .keys()
            .filter(|k| k.ends_with("-cross"))
        {
            for scenario in ["S1", "S2"] {
                for c in cells(scenario) {
                    rows.push(row(
                        &format!("(4) {scenario} keeps cross-domain rank-1 within 1 point"),
                        c,
                        unpruned,
                        cross,
                        ONE_POINT,
                    ));
                }
            }
        }
        if let Some(l1) = cell("S1", "l1") {
            for other in ["taylor", "entropy"] {
                if let Some(o) = cell("S1", other) {
                    rows.push(row(
                        &format!("(5) L1 is within 1 point of {other} or better (S1)"),
                        l1,
                        o,
                        label,
                        ONE_POINT,
                    ));
                }
            }
        }
    }
    rows.into_iter().flatten().collect()
}

/// Whether the benchmark itself behaves like re-ID (issue #38's design checks, not the paper's
/// claims): on each target, (a) every unpruned baseline is at or above each one with fewer
/// parameters (real re-ID: ResNet-50 > ResNet-34 > ResNet-18), (b) the model pre-trained on the
/// source beats the same network trained on the target alone (the `scratch` row). Judged like
/// the claims, on seeds and queries; the sizes compared are the recorded parameter counts.
pub fn judge_benchmark(runs: &[ClaimRun]) -> Option<ClaimsTable> {
    let rows = per_experiment(runs, benchmark_experiment);
    if rows.is_empty() {
        return None;
    }
    Some(ClaimsTable::new(
        "Does the benchmark behave like re-ID? (its design, not the paper's claims)".into(),
        "Judged as the claims: a check holds when the whole interval of A − B is above 0, does \
         not hold when it is below, and is inconclusive when it holds 0 (a tie at this size)."
            .into(),
        "check",
        rows,
    ))
}

/// The benchmark checks of one experiment's runs.
fn benchmark_experiment(group: &[ClaimRun]) -> Vec<Judgement> {
    let mut rows = Vec::new();
    let mut baselines: Vec<&ClaimRun> = group
        .iter()
        .filter(|r| r.metrics.scenario == "baseline")
        .collect();
    // largest first
    baselines.sort_by_key(|r| std::cmp::Reverse(r.metrics.params));
    for label in in_domain_labels(baselines.iter().copied()) {
        for (i, big) in baselines.iter().enumerate() {
            for small in &baselines[i + 1..] {
                if big.metrics.params > small.metrics.params {
                    rows.push(row(
                        &format!(
                            "(a) the {} is at or above the {}",
                            pretty(&big.metrics.backbone),
                            pretty(&small.metrics.backbone)
                        ),
                        big,
                        small,
                        label,
                        Test::Above,
                    ));
                }
            }
        }
        for scratch in group.iter().filter(|r| r.metrics.scenario == "scratch") {
            if let Some(pre) = baselines
                .iter()
                .find(|b| b.metrics.backbone == scratch.metrics.backbone)
            {
                rows.push(row(
                    "(b) pre-training on the source beats training on the target alone",
                    pre,
                    scratch,
                    label,
                    Test::Above,
                ));
            }
        }
    }
    rows.into_iter().flatten().collect()
}

/// The columns of a judged table: what is judged, then [`row`]'s cells.
fn headers(what: &str) -> Vec<String> {
    [
        what,
        "dataset",
        "A",
        "B",
        "Δ R-1",
        "95 % interval",
        "variance covered",
        "verdict",
    ]
    .map(String::from)
    .to_vec()
}

const NOTE: &str =
    "Δ rank-1 = A − B in points. Where both models were trained under several seeds \
               (\"N seeds + queries\"), Δ is the mean over the seeds and the 95 % interval covers \
               training and query variance: mean ± t·sqrt(sd²/N + the paired query-bootstrap \
               variance), t at the Welch–Satterthwaite degrees of freedom. Otherwise (\"queries \
               only\") it is a 95 % paired bootstrap over query identities, which training \
               variance can exceed. A claim holds when the whole interval is on its side of the \
               bound (−1 point for (1), (4) and (5), 0 for (2) and (3)), does not hold when the \
               whole interval is on the other side, and is inconclusive otherwise: more seeds or \
               queries would decide it.";

fn pretty(backbone: &str) -> String {
    backbone.replace("resnet", "ResNet-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_by_where_the_interval_lies() {
        assert_eq!(verdict(ONE_POINT, -0.005, 0.02), "holds");
        assert_eq!(verdict(ONE_POINT, -0.03, -0.015), "does not hold");
        assert_eq!(
            verdict(ONE_POINT, -0.015, 0.01),
            "inconclusive at this size"
        );
        assert_eq!(verdict(Test::Above, 0.001, 0.05), "holds");
        assert_eq!(
            verdict(Test::Above, -0.02, 0.01),
            "inconclusive at this size"
        );
        assert_eq!(verdict(Test::Above, -0.05, -0.01), "does not hold");
    }
}
