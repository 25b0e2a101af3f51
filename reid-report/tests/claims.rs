//! The claims table: verdicts from paired intervals over the per-query results the run folders
//! hold.

use std::collections::BTreeMap;
use std::path::Path;

use reid_report::claims::claims_table;
use reid_report::runs::load_runs;
use reid_run::stats::PerQuery;
use reid_run::{EvalEntry, RunFolder, RunMetrics};

/// A run folder whose `hits` of 400 queries (200 identities) find their match at rank 1.
fn run(root: &Path, id: &str, scenario: &str, backbone: &str, criterion: &str, hits: usize) {
    let n = 400;
    let q = PerQuery {
        pid: (0..n).map(|i| (i / 2) as i64).collect(),
        ap: (0..n).map(|i| if i < hits { 0.9 } else { 0.2 }).collect(),
        first_rank: (0..n).map(|i| if i < hits { 1 } else { 7 }).collect(),
        inp: vec![0.3; n],
    };
    let f = RunFolder::new(root.join(id));
    f.write_metrics(&RunMetrics {
        scenario: scenario.into(),
        criterion: criterion.into(),
        level: if scenario == "baseline" { "full" } else { "C1" }.into(),
        backbone: backbone.into(),
        macs: 10,
        params: 10,
        eval: BTreeMap::from([(
            "market1501".to_string(),
            EvalEntry {
                map: q.mean("mAP").unwrap(),
                rank1: q.mean("rank1").unwrap(),
                ..Default::default()
            },
        )]),
        ..Default::default()
    })
    .unwrap();
    f.write_per_query("market1501", &q).unwrap();
}

#[test]
fn claims_are_judged_from_paired_intervals() {
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
    run(
        root,
        "baseline/resnet18-full",
        "baseline",
        "resnet18",
        "resnet18",
        200,
    );
    // the same hits as the unpruned model: within a point for sure
    run(root, "S1/l1-C1", "S1", "resnet50", "l1", 300);
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
            .and_then(|r| r[6].clone())
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
}
