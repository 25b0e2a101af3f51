//! The claims table: verdicts from paired intervals over the per-query results the run folders
//! hold.

use std::collections::BTreeMap;
use std::path::Path;

use reid_report::claims::claims_table;
use reid_report::runs::load_runs;
use reid_run::stats::PerQuery;
use reid_run::{EvalEntry, RunFolder, RunMetrics};

/// Per-query results of 400 queries (200 identities), the first `hits` matched at rank 1.
fn queries(hits: usize) -> PerQuery {
    let n = 400;
    PerQuery {
        pid: (0..n).map(|i| (i / 2) as i64).collect(),
        ap: (0..n).map(|i| if i < hits { 0.9 } else { 0.2 }).collect(),
        first_rank: (0..n).map(|i| if i < hits { 1 } else { 7 }).collect(),
        inp: vec![0.3; n],
    }
}

/// A run folder with `hits` rank-1 matches on market1501 and, when given, on the cross set.
fn run_with_cross(
    root: &Path,
    id: &str,
    scenario: &str,
    backbone: &str,
    criterion: &str,
    hits: usize,
    cross_hits: Option<usize>,
) {
    let entry = |q: &PerQuery| EvalEntry {
        map: q.mean("mAP").unwrap(),
        rank1: q.mean("rank1").unwrap(),
        ..Default::default()
    };
    let q = queries(hits);
    let mut eval = BTreeMap::from([("market1501".to_string(), entry(&q))]);
    let cross = cross_hits.map(queries);
    if let Some(c) = &cross {
        eval.insert("duke-cross".into(), entry(c));
    }
    let f = RunFolder::new(root.join(id));
    f.write_metrics(&RunMetrics {
        scenario: scenario.into(),
        criterion: criterion.into(),
        level: if scenario == "baseline" { "full" } else { "C1" }.into(),
        backbone: backbone.into(),
        macs: 10,
        params: 10,
        eval,
        ..Default::default()
    })
    .unwrap();
    f.write_per_query("market1501", &q).unwrap();
    if let Some(c) = &cross {
        f.write_per_query("duke-cross", c).unwrap();
    }
}

fn run(root: &Path, id: &str, scenario: &str, backbone: &str, criterion: &str, hits: usize) {
    run_with_cross(root, id, scenario, backbone, criterion, hits, None)
}

#[test]
fn claims_are_judged_from_paired_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    run_with_cross(
        root,
        "baseline/resnet50-full",
        "baseline",
        "resnet50",
        "resnet50",
        300,
        Some(120),
    );
    run(
        root,
        "baseline/resnet18-full",
        "baseline",
        "resnet18",
        "resnet18",
        200,
    );
    // the same hits as the unpruned model: within a point for sure; 60 fewer cross-domain hits
    run_with_cross(root, "S1/l1-C1", "S1", "resnet50", "l1", 300, Some(60));
    // pruned on the small target: 100 fewer hits than S1
    run(root, "S3/l1-C1", "S3", "resnet50", "l1", 200);
    // 40 fewer hits (10 points): does not hold
    run(root, "S1/taylor-C1", "S1", "resnet50", "taylor", 260);
    // 4 fewer hits (1 point): the interval straddles −1
    run(root, "S2/l1-C1", "S2", "resnet50", "l1", 296);
    let (runs, problems) = load_runs(root).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let t = claims_table(&runs, "C1").unwrap();
    let verdict = |a: &str, b: &str| {
        t.rows
            .iter()
            .find(|r| r[2].as_deref() == Some(a) && r[3].as_deref().is_some_and(|x| x.contains(b)))
            .and_then(|r| r[7].clone())
            .unwrap_or_else(|| panic!("no row {a} vs {b}: {:?}", t.rows))
    };
    assert_eq!(verdict("S1 l1 C1", "resnet50"), "holds");
    assert_eq!(verdict("S1 taylor C1", "resnet50"), "does not hold");
    assert_eq!(verdict("S2 l1 C1", "resnet50"), "inconclusive at this size");
    // claim 2 against the ResNet-18 (25 points fewer hits)
    assert_eq!(verdict("S1 l1 C1", "resnet18"), "holds");
    assert_eq!(verdict("S1 taylor C1", "resnet18"), "holds");
    // the difference column is A − B in points
    let row = t
        .rows
        .iter()
        .find(|r| r[2].as_deref() == Some("S1 taylor C1"))
        .unwrap();
    assert_eq!(row[4].as_deref(), Some("-10.0"));
    // claim 3: S1 over S3 by 25 points
    assert_eq!(verdict("S1 l1 C1", "S3 l1 C1"), "holds");
    // claim 4: on the cross set, the pruned model has 15 points fewer
    let cross = t
        .rows
        .iter()
        .find(|r| r[0].as_deref().is_some_and(|c| c.starts_with("(4)")))
        .unwrap_or_else(|| panic!("no cross-domain row: {:?}", t.rows));
    assert_eq!(cross[1].as_deref(), Some("duke-cross"));
    assert_eq!(cross[4].as_deref(), Some("-15.0"));
    assert_eq!(cross[7].as_deref(), Some("does not hold"));
    assert_eq!(cross[6].as_deref(), Some("queries only"));
    // claim 5: L1 10 points above Taylor
    assert_eq!(verdict("S1 l1 C1", "S1 taylor C1"), "holds");
    let claims: std::collections::BTreeSet<&str> = t
        .rows
        .iter()
        .filter_map(|r| r[0].as_deref()?.get(..3))
        .collect();
    assert_eq!(
        claims.into_iter().collect::<Vec<_>>(),
        ["(1)", "(2)", "(3)", "(4)", "(5)"]
    );
}

/// Adds the cell's runs under other seeds: `seed_evals` in metrics.json and the per-query
/// results under `market1501#seed<N>`, as the grid writes them.
fn add_seeds(root: &Path, id: &str, seeds: &[(u64, usize)]) {
    let f = RunFolder::new(root.join(id));
    let mut m = f.read_metrics().unwrap().unwrap();
    for &(seed, hits) in seeds {
        let q = queries(hits);
        let e = EvalEntry {
            map: q.mean("mAP").unwrap(),
            rank1: q.mean("rank1").unwrap(),
            ..Default::default()
        };
        m.seed_evals
            .insert(seed, BTreeMap::from([("market1501".to_string(), e)]));
        f.write_per_query(&reid_run::stats::seed_label("market1501", seed), &q)
            .unwrap();
    }
    f.write_metrics(&m).unwrap();
}

#[test]
fn with_seeds_the_verdict_rests_on_training_and_query_variance() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    run(
        root,
        "baseline/resnet50-full",
        "baseline",
        "resnet50",
        "resnet50",
        300,
    );
    // the main seed alone: the same hits as the unpruned model, "holds" on queries only
    run(root, "S1/l1-C1", "S1", "resnet50", "l1", 300);
    run(root, "S1/taylor-C1", "S1", "resnet50", "taylor", 300);
    let t = claims_table(&load_runs(root).unwrap().0, "C1").unwrap();
    let row = |t: &reid_report::tables::Table, a: &str| {
        t.rows
            .iter()
            .find(|r| {
                r[0].as_deref().is_some_and(|c| c.starts_with("(1)")) && r[2].as_deref() == Some(a)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no row {a}: {:?}", t.rows))
    };
    assert_eq!(row(&t, "S1 l1 C1")[7].as_deref(), Some("holds"));
    // two more seeds where the pruned model loses 5 and 7.5 points: the training variance
    // makes the claim undecided, and Δ is the mean over seeds
    add_seeds(root, "baseline/resnet50-full", &[(1, 300), (2, 300)]);
    add_seeds(root, "S1/l1-C1", &[(1, 280), (2, 270)]);
    // taylor has the seeds of its own folder only: its row stays on queries
    add_seeds(root, "S1/taylor-C1", &[(7, 300)]);
    let t = claims_table(&load_runs(root).unwrap().0, "C1").unwrap();
    let l1 = row(&t, "S1 l1 C1");
    assert_eq!(l1[4].as_deref(), Some("-4.2"));
    assert_eq!(l1[6].as_deref(), Some("3 seeds + queries"));
    assert_eq!(
        l1[7].as_deref(),
        Some("inconclusive at this size"),
        "{l1:?}"
    );
    let taylor = row(&t, "S1 taylor C1");
    assert_eq!(taylor[6].as_deref(), Some("queries only"));
}

#[test]
fn two_experiments_in_one_folder_are_judged_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let in_experiment = |id: &str, e: &str| {
        let f = RunFolder::new(root.join(id));
        let mut m = f.read_metrics().unwrap().unwrap();
        m.experiment = e.into();
        f.write_metrics(&m).unwrap();
    };
    for (e, hits) in [("g1", 300), ("g2", 200)] {
        let base = format!("{e}/baseline/resnet50-full");
        let s1 = format!("{e}/S1/l1-C1");
        run(root, &base, "baseline", "resnet50", "resnet50", hits);
        run(root, &s1, "S1", "resnet50", "l1", hits);
        in_experiment(&base, e);
        in_experiment(&s1, e);
    }
    let t = claims_table(&load_runs(root).unwrap().0, "C1").unwrap();
    let rows: Vec<(String, String)> = t
        .rows
        .iter()
        .map(|r| (r[1].clone().unwrap(), r[4].clone().unwrap()))
        .collect();
    // each S1 cell against its own experiment's unpruned model: the same hits, Δ 0
    assert_eq!(
        rows,
        [
            ("g1: market1501".to_string(), "+0.0".to_string()),
            ("g2: market1501".to_string(), "+0.0".to_string())
        ]
    );
}

/// The benchmark's own checks: each baseline against every one with fewer parameters, and the
/// pre-trained model against the same network trained from scratch, judged over seeds and
/// queries like the claims.
#[test]
fn the_benchmark_checks_order_the_baselines_by_parameters_and_compare_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (id, scenario, backbone, hits, params) in [
        ("baseline/resnet50-full", "baseline", "resnet50", 320, 30),
        ("baseline/resnet34-full", "baseline", "resnet34", 300, 20),
        ("baseline/resnet18-full", "baseline", "resnet18", 310, 10),
        ("scratch/resnet50-full", "scratch", "resnet50", 100, 30),
    ] {
        run(root, id, scenario, backbone, backbone, hits);
        add_seeds(root, id, &[(1, hits), (2, hits)]);
        let f = RunFolder::new(root.join(id));
        let mut m = f.read_metrics().unwrap().unwrap();
        m.params = params;
        m.level = "full".into();
        f.write_metrics(&m).unwrap();
    }
    let runs = load_runs(root).unwrap().0;
    let claim_runs: Vec<reid_run::claims::ClaimRun> = runs
        .iter()
        .map(|r| reid_run::claims::ClaimRun {
            dir: &r.dir,
            metrics: &r.metrics,
        })
        .collect();
    let t = reid_run::claims::judge_benchmark(&claim_runs).unwrap();
    let got: Vec<(&str, &str, &str, &str, &str)> = t
        .rows
        .iter()
        .map(|r| {
            (
                r[0].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[7].as_str(),
            )
        })
        .collect();
    let deeper = "(a) the ResNet-";
    assert_eq!(
        got,
        [
            (
                &*format!("{deeper}50 is at or above the ResNet-34"),
                "baseline resnet50 full",
                "baseline resnet34 full",
                "+5.0",
                "holds"
            ),
            (
                &*format!("{deeper}50 is at or above the ResNet-18"),
                "baseline resnet50 full",
                "baseline resnet18 full",
                "+2.5",
                "holds"
            ),
            (
                &*format!("{deeper}34 is at or above the ResNet-18"),
                "baseline resnet34 full",
                "baseline resnet18 full",
                "-2.5",
                "does not hold"
            ),
            (
                "(b) pre-training on the source beats training on the target alone",
                "baseline resnet50 full",
                "scratch resnet50 full",
                "+55.0",
                "holds"
            ),
        ]
    );
    assert!(t.rows.iter().all(|r| r[6] == "3 seeds + queries"));
}
