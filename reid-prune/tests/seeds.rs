//! Seeds: the key cells of a grid (unpruned, baselines, each scenario × criterion at the
//! smallest level) trained again under other seeds, shown as mean ± sd over seeds.

use std::collections::BTreeMap;

use common::tiny_experiment;
use reid_prune::grid::{ExperimentConfig, Runner, Scenario};

mod common;

fn config(tmp: &std::path::Path) -> ExperimentConfig {
    let base = tiny_experiment(tmp, "seeded", &tmp.join("runs"));
    ExperimentConfig {
        scenarios: vec![Scenario::S1, Scenario::S3],
        levels: BTreeMap::from([("C1".to_string(), 0.5), ("C2".to_string(), 0.6)]),
        batch_pk: reid_run::PkBatch::new(4, 2),
        seeds: vec![0, 1],
        scratch: true,
        ..base
    }
}

#[test]
fn key_cells_run_under_every_seed_and_equal_a_grid_run_with_that_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let cells = Runner::new(cfg.clone()).unwrap().run().unwrap();
    let rows: Vec<(&str, &str)> = cells
        .iter()
        .map(|c| (c.scenario.as_str(), c.level.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("baseline", "full"),
            ("source", "full"),
            ("scratch", "full"),
            ("S1", "C1"),
            ("S1", "C2"),
            ("S3", "C1"),
            ("S3", "C2")
        ]
    );
    for c in &cells {
        let key = ["baseline", "scratch"].contains(&c.scenario.as_str()) || c.level == "C1";
        let seeds: Vec<u64> = c.seed_evals.keys().copied().collect();
        assert_eq!(
            seeds,
            if key { vec![1] } else { vec![] },
            "{} {}",
            c.scenario,
            c.level
        );
        let m = reid_run::RunFolder::new(&c.folder)
            .read_metrics()
            .unwrap()
            .unwrap();
        assert_eq!(m.seed_evals.len(), seeds.len());
        if key {
            let r1 = m.seed_evals[&1][cfg.target.label()].rank1;
            assert_eq!(r1, c.seed_evals[&1].target.rank1);
            let spread = c.rank1_over_seeds().unwrap();
            assert_eq!(spread.n, 2);
            assert!((spread.mean - (c.target.rank1 + r1) / 2.0).abs() < 1e-12);
        }
    }
    let table = reid_prune::grid::render_table(&cells, None);
    assert!(table.contains("R-1 over seeds"), "{table}");
    assert_eq!(table.matches("(2 seeds)").count(), 4, "{table}");
    // the scratch row starts from no model: its training step has no parent
    let plan = Runner::new(cfg.clone()).unwrap().plan().unwrap();
    let scratch: Vec<_> = plan.iter().filter(|s| s.kind == "scratch").collect();
    assert_eq!(scratch.len(), 2, "one a seed");
    assert!(scratch.iter().all(|s| s.parents.is_empty()));

    // Every seed starts from the one pre-trained model (seed 0's): the same grid under seed 1
    // from seed 0's pre-training reuses every key step the seeds run computed: it runs only the
    // C2 cells (S1: prune, fine-tune, evaluate; S3: prune, evaluate), and its key cells are the
    // seed-1 results above.
    let pretrains = plan.iter().filter(|s| s.kind == "pretrain").count();
    assert_eq!(pretrains, 1, "one pre-training for every seed");
    let mut one = Runner::new(ExperimentConfig {
        seed: 1,
        seeds: vec![],
        pretrain_seed: Some(0),
        ..cfg
    })
    .unwrap();
    let again = one.run().unwrap();
    assert_eq!(one.steps_run(), 5);
    for (c, a) in cells.iter().zip(&again) {
        if let Some(e) = c.seed_evals.get(&1) {
            assert_eq!(e.target, a.target, "{} {}", c.scenario, c.level);
        }
    }
}

#[test]
fn repeated_seeds_are_refused_before_any_step() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig {
        seeds: vec![0, 2, 2],
        ..config(tmp.path())
    };
    let e = format!("{:#}", Runner::new(cfg.clone()).unwrap().run().unwrap_err());
    assert!(e.contains("seeds: 2 is listed twice"), "{e}");
    assert!(!cfg.out.exists());
}
