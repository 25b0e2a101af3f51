//! The paper's Tables 5–9 from run folders, as Markdown and CSV.

use crate::paper::{paper_dataset, PaperCell, PaperResults};
use crate::runs::Run;

/// A table of text cells; `None` is a missing value ("–" in Markdown, empty in CSV).
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// File stem: `table5`, `table7_market1501`, ...
    pub slug: String,
    pub title: String,
    pub note: Option<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        if let Some(n) = &self.note {
            s += &format!("{n}\n\n");
        }
        s += &format!("| {} |\n", self.headers.join(" | "));
        s += &format!(
            "|{}\n",
            self.headers
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        );
        for row in &self.rows {
            let cells: Vec<&str> = row.iter().map(|c| c.as_deref().unwrap_or("–")).collect();
            s += &format!("| {} |\n", cells.join(" | "));
        }
        s
    }

    pub fn to_csv(&self) -> String {
        let mut s = csv_line(self.headers.iter().map(|h| h.as_str()));
        for row in &self.rows {
            s += &csv_line(row.iter().map(|c| c.as_deref().unwrap_or("")));
        }
        s
    }
}

/// A CSV cell that a spreadsheet never reads as a formula: text starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return gets a leading `'` (OWASP's CSV injection rule); numbers,
/// negative ones included, stay numbers.
pub fn csv_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && cell.trim().parse::<f64>().is_err() {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

fn csv_line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let cells: Vec<String> = cells
        .map(|c| {
            let c = csv_safe(c);
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_string()
            }
        })
        .collect();
    cells.join(",") + "\n"
}

/// Paper order of criteria, then any other in alphabetical order.
pub const CRITERIA_ORDER: [&str; 5] = ["l1", "taylor", "auto-balanced", "entropy", "psfp"];

fn criterion_rank(c: &str) -> (usize, String) {
    let i = CRITERIA_ORDER
        .iter()
        .position(|x| *x == c)
        .unwrap_or(CRITERIA_ORDER.len());
    (i, c.to_string())
}

/// Datasets in the runs: the paper's three first (in its order), then the others by name.
pub fn datasets(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = runs
        .iter()
        .flat_map(|r| r.metrics.eval.keys().cloned())
        .collect();
    names.sort_by_key(|n| {
        let p = match paper_dataset(n) {
            Some("market1501") => 0,
            Some("dukemtmc-reid") => 1,
            Some(_) => 2,
            None => 3,
        };
        (p, n.clone())
    });
    names.dedup();
    names
}

/// Pruning levels present in the runs of scenarios S1–S4, sorted by name (C1, C2, ...).
pub fn levels(runs: &[Run]) -> Vec<String> {
    let mut l: Vec<String> = runs
        .iter()
        .filter(|r| r.scenario().is_some())
        .map(|r| r.metrics.level.clone())
        .collect();
    l.sort();
    l.dedup();
    l
}

pub fn scenarios(runs: &[Run]) -> Vec<String> {
    let mut s: Vec<String> = runs
        .iter()
        .filter(|r| r.scenario().is_some())
        .map(|r| r.metrics.scenario.clone())
        .collect();
    s.sort();
    s.dedup();
    s
}

pub fn criteria(runs: &[Run]) -> Vec<String> {
    let mut c: Vec<String> = runs
        .iter()
        .filter(|r| r.scenario().is_some())
        .map(|r| r.metrics.criterion.clone())
        .collect();
    c.sort_by_key(|c| criterion_rank(c));
    c.dedup();
    c
}

/// Baselines, deepest first (ResNet-50, -34, -18 as in the paper); one per backbone (with
/// several targets, the first target's run stands for the row).
pub fn baselines(runs: &[Run]) -> Vec<&Run> {
    let mut b: Vec<&Run> = runs.iter().filter(|r| r.is_baseline()).collect();
    b.sort_by_key(|r| {
        let depth: u32 = r
            .metrics
            .backbone
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .unwrap_or(0);
        (std::cmp::Reverse(depth), r.id.clone())
    });
    let mut seen = std::collections::BTreeSet::new();
    b.retain(|r| seen.insert(r.metrics.backbone.clone()));
    b
}

/// The first run of a grid cell (the one whose costs a table row shows).
pub fn find<'a>(runs: &'a [Run], scenario: &str, criterion: &str, level: &str) -> Option<&'a Run> {
    runs.iter().find(|r| {
        r.metrics.scenario == scenario
            && r.metrics.criterion == criterion
            && r.metrics.level == level
    })
}

/// The run of a grid cell evaluated on `dataset`: with several targets, each target's grid
/// has its own run of the cell.
pub fn find_on<'a>(
    runs: &'a [Run],
    scenario: &str,
    criterion: &str,
    level: &str,
    dataset: &str,
) -> Option<&'a Run> {
    runs.iter().find(|r| {
        r.metrics.scenario == scenario
            && r.metrics.criterion == criterion
            && r.metrics.level == level
            && r.metrics.eval.contains_key(dataset)
    })
}

/// The backbone the scenarios prune (the most frequent one among S1–S4 runs).
pub fn pruned_backbone(runs: &[Run]) -> Option<String> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in runs.iter().filter(|r| r.scenario().is_some()) {
        *counts.entry(r.metrics.backbone.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(b, n)| (*n, std::cmp::Reverse(*b)))
        .map(|(b, _)| b.to_string())
}

/// Batch-32 latency of the unpruned reference model over this run's: the reference is the
/// unpruned model of the pruned backbone (so shallower baselines get their speed-up too), or
/// of the run's own backbone when no scenario ran.
pub fn speedup(runs: &[Run], run: &Run) -> Option<f64> {
    speedup_by(runs, run, |r| r.latency(true))
}

/// [`speedup`] with the latency a deployment runtime measured (a key of `deploy.json`).
pub fn deploy_speedup(runs: &[Run], run: &Run, runtime: &str) -> Option<f64> {
    speedup_by(runs, run, |r| r.deploy_latency(runtime))
}

fn speedup_by(runs: &[Run], run: &Run, latency: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let backbone = pruned_backbone(runs).unwrap_or_else(|| run.metrics.backbone.clone());
    let is_ref = |b: &&Run| b.is_baseline() && b.metrics.backbone == backbone;
    // the same experiment's (target's) reference first: latencies are measured per grid
    let base = runs
        .iter()
        .filter(is_ref)
        .find(|b| b.metrics.experiment == run.metrics.experiment)
        .or_else(|| runs.iter().find(is_ref))?;
    Some(latency(base)? / latency(run)?)
}

/// A sentence on the runtime columns, when there are any.
fn deploy_note(runs: &[Run]) -> String {
    match deploy_runtimes(runs).as_slice() {
        [] => String::new(),
        rts => format!(
            " The {} columns are that runtime's own latency and speed-up (the run folders' deploy.json).",
            rts.join(", ")
        ),
    }
}

/// The deployment runtimes any run was measured in, in order.
pub fn deploy_runtimes(runs: &[Run]) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> =
        runs.iter().flat_map(|r| r.deploy.keys()).collect();
    set.into_iter().cloned().collect()
}

fn pct(v: f64) -> Option<String> {
    Some(format!("{:.2}", v * 100.0))
}
fn num(v: Option<f64>, decimals: usize) -> Option<String> {
    v.filter(|v| v.is_finite())
        .map(|v| format!("{v:.decimals$}"))
}

/// Columns describing a model's cost, shared by every table; with `latency`, also the
/// latency and speed-up in each deployment runtime any run was measured in.
fn cost_headers(runs: &[Run], latency: bool) -> Vec<String> {
    let mut h = vec!["Params (M)".to_string(), "GFLOPs".to_string()];
    if latency {
        h.push("Latency b1 (ms)".into());
        h.push("Latency b32 (ms)".into());
    }
    h.push("Speed-up b32 (×)".into());
    if latency {
        for rt in deploy_runtimes(runs) {
            h.push(format!("{rt} b32 (ms)"));
            h.push(format!("{rt} speed-up b32 (×)"));
        }
    }
    h
}

/// On `dataset` (when the row is about one): an evaluation at another input size than the
/// run's has no cost but its parameters here (the run's MACs and latency are at its own size).
fn cost_cells(
    runs: &[Run],
    run: &Run,
    latency: bool,
    dataset: Option<&str>,
) -> Vec<Option<String>> {
    let mut c = vec![num(Some(run.params_m()), 2), num(Some(run.gflops()), 3)];
    if dataset.is_some_and(|d| run.other_input(d).is_some()) {
        let n = cost_headers(runs, latency).len();
        c.truncate(1);
        c.resize(n, None);
        return c;
    }
    if latency {
        c.push(num(run.latency(false), 2));
        c.push(num(run.latency(true), 2));
    }
    c.push(num(speedup(runs, run), 2));
    if latency {
        for rt in deploy_runtimes(runs) {
            c.push(num(run.deploy_latency(&rt), 2));
            c.push(num(deploy_speedup(runs, run, &rt), 2));
        }
    }
    c
}

/// Whether any run has results under other seeds (the tables then add a column for them).
pub fn seeded(runs: &[Run]) -> bool {
    runs.iter().any(|r| !r.metrics.seed_evals.is_empty())
}

/// Rank-1 on `dataset` over a run's seed and its other seeds.
pub fn rank1_over_seeds(run: &Run, dataset: &str) -> Option<reid_run::stats::SeedSpread> {
    let m = &run.metrics;
    let values: Vec<f64> = m
        .eval
        .get(dataset)
        .into_iter()
        .chain(m.seed_evals.values().filter_map(|e| e.get(dataset)))
        .map(|e| e.rank1)
        .collect();
    reid_run::stats::SeedSpread::of(&values)
}

/// mAP, R-1, R-1's 95 % bootstrap interval and, with seeds, R-1 mean ± sd over seeds.
fn metric_headers(prefix: &str, seeded: bool) -> Vec<String> {
    let mut h = vec![
        format!("{prefix}mAP"),
        format!("{prefix}R-1"),
        format!("{prefix}R-1 95% CI"),
    ];
    if seeded {
        h.push(format!("{prefix}R-1 over seeds"));
    }
    h
}

fn metric_cells(run: Option<&Run>, dataset: &str, seeded: bool) -> Vec<Option<String>> {
    let mut c = match run.and_then(|r| r.metrics.eval.get(dataset)) {
        Some(e) => vec![
            pct(e.map),
            pct(e.rank1),
            e.ci95
                .get("rank1")
                .map(|i| format!("[{:.1}, {:.1}]", i.lo * 100.0, i.hi * 100.0)),
        ],
        None => vec![None, None, None],
    };
    if seeded {
        c.push(
            run.and_then(|r| rank1_over_seeds(r, dataset))
                .map(|s| format!("{:.2} ± {:.2} ({})", s.mean * 100.0, s.sd * 100.0, s.n)),
        );
    }
    c
}

fn paper_cells(cell: Option<&PaperCell>) -> [Option<String>; 2] {
    match cell {
        Some(c) => [num(Some(c.map), 2), num(Some(c.rank1), 2)],
        None => [None, None],
    }
}

fn dataset_headers(datasets: &[String], seeded: bool) -> Vec<String> {
    let mut h = Vec::new();
    for d in datasets {
        h.extend(metric_headers(&format!("{d} "), seeded));
        if paper_dataset(d).is_some() {
            h.push(format!("{d} paper mAP"));
            h.push(format!("{d} paper R-1"));
        }
    }
    h
}

/// Table 5: baselines and every criterion of Scenario 1 at `level`.
pub fn table5(runs: &[Run], paper: &PaperResults, level: &str) -> Table {
    let datasets = datasets(runs);
    let mut headers = vec!["Model".to_string()];
    headers.extend(cost_headers(runs, true));
    let seeded = seeded(runs);
    headers.extend(dataset_headers(&datasets, seeded));
    let mut rows = Vec::new();
    let mut models: Vec<(&Run, String)> = baselines(runs)
        .into_iter()
        .map(|r| (r, r.metrics.backbone.clone()))
        .collect();
    for c in criteria(runs) {
        if let Some(r) = find(runs, "S1", &c, level) {
            models.push((r, c));
        }
    }
    for (run, name) in models {
        let mut row = vec![Some(name.clone())];
        row.extend(cost_cells(runs, run, true, None));
        let m = &run.metrics;
        for d in &datasets {
            let on = find_on(runs, &m.scenario, &m.criterion, &m.level, d);
            row.extend(metric_cells(on, d, seeded));
            if paper_dataset(d).is_some() {
                // The paper's Table 5 is at C1 (about half the FLOPs).
                let cell = if run.is_baseline() || level == "C1" {
                    paper.table5(&name, d)
                } else {
                    None
                };
                row.extend(paper_cells(cell));
            }
        }
        rows.push(row);
    }
    Table {
        slug: "table5".into(),
        title: format!(
            "Table 5: baselines and pruning criteria (Scenario 1, {level}); mAP and R-1 in %"
        ),
        note: Some(
            format!("GFLOPs = 2 × multiply-adds. Speed-up: measured batch-32 latency of the unpruned model of the pruned backbone over this model's.{} \
             Paper columns: Masson et al., Table 5 (ResNet-50 on ImageNet-pretrained weights, C1).", deploy_note(runs)),
        ),
        headers,
        rows,
    }
}

/// Table 6: every scenario × criterion at `level`.
pub fn table6(runs: &[Run], paper: &PaperResults, level: &str) -> Table {
    let datasets = datasets(runs);
    let mut headers = vec!["Scenario".to_string(), "Criterion".to_string()];
    headers.extend(cost_headers(runs, false));
    let seeded = seeded(runs);
    headers.extend(dataset_headers(&datasets, seeded));
    let mut rows = Vec::new();
    for s in scenarios(runs) {
        for c in criteria(runs) {
            let Some(run) = find(runs, &s, &c, level) else {
                continue;
            };
            let mut row = vec![Some(s.clone()), Some(c.clone())];
            row.extend(cost_cells(runs, run, false, None));
            for d in &datasets {
                row.extend(metric_cells(find_on(runs, &s, &c, level, d), d, seeded));
                if paper_dataset(d).is_some() {
                    row.extend(paper_cells(paper.table6(&s, &c, d)));
                }
            }
            rows.push(row);
        }
    }
    Table {
        slug: "table6".into(),
        title: format!("Table 6: pruning scenarios × criteria at {level}; mAP and R-1 in %"),
        note: Some(
            "Paper columns: Masson et al., Table 6, at the paper's own levels \
             (S1 at C1, S2 at C2, S3 and S4 pruning 5 % of the channels)."
                .into(),
        ),
        headers,
        rows,
    }
}

/// Tables 7–9: levels × scenarios × criteria on one dataset (numbered from 7 in dataset order).
pub fn tables789(runs: &[Run], paper: &PaperResults) -> Vec<Table> {
    let mut out = Vec::new();
    for (i, d) in datasets(runs).iter().enumerate() {
        let with_paper = paper_dataset(d).is_some();
        let mut headers = vec![
            "Level".to_string(),
            "Scenario".to_string(),
            "Criterion".to_string(),
        ];
        headers.extend(cost_headers(runs, true));
        let seeded = seeded(runs);
        headers.extend(metric_headers("", seeded));
        if with_paper {
            headers.push("paper mAP".into());
            headers.push("paper R-1".into());
        }
        let mut rows = Vec::new();
        for l in levels(runs) {
            for s in scenarios(runs) {
                for c in criteria(runs) {
                    let Some(run) = find_on(runs, &s, &c, &l, d) else {
                        continue;
                    };
                    let mut row = vec![Some(l.clone()), Some(s.clone()), Some(c.clone())];
                    row.extend(cost_cells(runs, run, true, Some(d)));
                    row.extend(metric_cells(Some(run), d, seeded));
                    if with_paper {
                        row.extend(paper_cells(paper.table789(&s, &l, &c, d)));
                    }
                    rows.push(row);
                }
            }
        }
        out.push(Table {
            slug: format!("table{}_{}", 7 + i, d),
            title: format!(
                "Table {}: compression levels × scenarios × criteria on {d}; mAP and R-1 in %",
                7 + i
            ),
            note: with_paper.then(|| {
                "Paper columns: Masson et al., Tables 7–9 (Hao Li = l1, Auto-Balanced, PSFP)."
                    .to_string()
            }),
            headers,
            rows,
        });
    }
    out
}

/// All tables of the report, Table 5/6 at `level`.
pub fn all_tables(runs: &[Run], paper: &PaperResults, level: &str) -> Vec<Table> {
    let mut t = vec![table5(runs, paper, level), table6(runs, paper, level)];
    t.extend(tables789(runs, paper));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_never_start_a_formula_and_numbers_stay_numbers() {
        assert_eq!(csv_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_safe("+1+2"), "'+1+2");
        assert_eq!(csv_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_safe("-cmd|calc"), "'-cmd|calc");
        assert_eq!(csv_safe("\tx"), "'\tx");
        assert_eq!(csv_safe("-0.3"), "-0.3");
        assert_eq!(csv_safe("+1.5e-3"), "+1.5e-3");
        assert_eq!(csv_safe("l1"), "l1");
        let t = Table {
            slug: "t".into(),
            title: "t".into(),
            headers: vec!["name".into(), "delta".into()],
            rows: vec![vec![Some("=1+1".into()), Some("-2.5".into())]],
            note: None,
        };
        assert_eq!(t.to_csv(), "name,delta\n'=1+1,-2.5\n");
    }

    #[test]
    fn csv_quotes_cells_with_commas_and_quotes() {
        let t = Table {
            slug: "t".into(),
            title: "T".into(),
            note: None,
            headers: vec!["a".into(), "b".into()],
            rows: vec![
                vec![Some("x,y".into()), Some("say \"hi\"".into())],
                vec![None, Some("1".into())],
            ],
        };
        assert_eq!(t.to_csv(), "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n,1\n");
        assert_eq!(
            t.to_markdown(),
            "### T\n\n| a | b |\n|---|---:|\n| x,y | say \"hi\" |\n| – | 1 |\n"
        );
    }
}
