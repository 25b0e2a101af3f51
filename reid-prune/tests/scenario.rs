//! The experiment grid: a tiny grid runs end to end, and a rerun repeats no finished step.

use std::collections::BTreeMap;
use std::path::Path;

use common::{synth, tiny_experiment};
use reid_data::synth::SynthLayout;
use reid_prune::grid::{DataRef, ExperimentConfig, Runner, Scenario};

mod common;

/// A tiny grid on generated data under `tmp` (source, and target with label `target_name`).
fn tiny_config(tmp: &Path, target_name: Option<&str>) -> ExperimentConfig {
    let base = tiny_experiment(tmp, "tiny", &tmp.join("runs"));
    ExperimentConfig {
        target: DataRef {
            name: target_name.map(String::from),
            ..base.target.clone()
        },
        scenarios: vec![Scenario::S1, Scenario::S3],
        batch_pk: reid_run::PkBatch::new(4, 2),
        ..base
    }
}

#[test]
fn tiny_grid_runs_and_resumes_without_repeating_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), Some("tiny-target"));
    // the run computes the plan's steps, each once, in the plan's order: one graph for both
    let planned: Vec<String> = Runner::new(cfg.clone())
        .unwrap()
        .plan()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let mut first = Runner::new(cfg.clone()).unwrap();
    let cells = first.run().unwrap();
    assert_eq!(cells.len(), 4, "baseline + source-only + S1 + S3");
    assert_eq!(cells[1].scenario, "source");
    assert_eq!(first.computed, planned);
    let base = &cells[0];
    for c in &cells[2..] {
        let ratio = c.macs as f64 / base.macs as f64;
        assert!(
            (ratio - 0.5).abs() < 0.05,
            "{} at {ratio} of the FLOPs",
            c.scenario
        );
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(c.folder.join("metrics.json")).unwrap())
                .unwrap();
        assert_eq!(m["scenario"], c.scenario.as_str());
        assert!(m["eval"]["tiny-target"]["rank1"].as_f64().is_some());
        assert!(m["latency_ms"]["cpu"]["batch32"].as_f64().unwrap() > 0.0);
        // rank-1 with its interval, and the per-query results it can be recomputed from
        let r1 = m["eval"]["tiny-target"]["rank1"].as_f64().unwrap();
        let ci = &m["eval"]["tiny-target"]["ci95"]["rank1"];
        let (lo, hi) = (ci["lo"].as_f64().unwrap(), ci["hi"].as_f64().unwrap());
        assert!(lo <= r1 && r1 <= hi, "{r1} outside [{lo}, {hi}]");
        let q = reid_run::RunFolder::new(&c.folder)
            .read_per_query()
            .unwrap();
        let q = &q["tiny-target"];
        assert_eq!(q.mean("rank1").unwrap(), r1);
        assert_eq!(
            reid_run::stats::bootstrap(q, "rank1", reid_run::stats::RESAMPLES, 0).unwrap(),
            reid_run::stats::Interval { lo, hi }
        );
    }
    // the table: every pruned row's paired difference to the unpruned model, with its interval
    let table = reid_prune::grid::render_table(&cells, None);
    assert!(table.contains("ΔR-1 vs row 1"), "{table}");
    for line in table.lines().skip(2) {
        assert!(
            line.contains(", "),
            "a row without its difference interval: {line}"
        );
    }
    // the paper's claims at C1, judged on the cells: (1) S1 vs unpruned, (3) S1 vs S3
    let claims = reid_prune::grid::judge_claims(&cfg, &cells)
        .unwrap()
        .expect("claims");
    let which: Vec<&str> = claims.rows.iter().map(|r| &r[0][..3]).collect();
    assert_eq!(which, ["(1)", "(3)"], "{}", claims.to_text());
    for r in &claims.rows {
        assert!(
            ["holds", "does not hold", "inconclusive at this size"].contains(&r[7].as_str()),
            "{r:?}"
        );
    }
    // a rerun (as after a crash) finds every step done
    let mut again = Runner::new(cfg.clone()).unwrap();
    let cells2 = again.run().unwrap();
    assert_eq!(again.steps_run(), 0);
    assert_eq!(cells2.len(), 4);
    // a finished step needs nothing above it: with S1's source-pruned model gone (a user
    // freeing space; S1 fine-tunes it on the target), a rerun computes nothing
    let plan = Runner::new(cfg.clone()).unwrap().plan().unwrap();
    let pruned = plan.iter().find(|s| s.what.ends_with("on source")).unwrap();
    let aside = tmp.path().join("aside");
    std::fs::rename(cfg.out.join("steps").join(&pruned.name), &aside).unwrap();
    let mut third = Runner::new(cfg.clone()).unwrap();
    third.run().unwrap();
    assert_eq!(third.computed, Vec::<String>::new());
    std::fs::rename(&aside, cfg.out.join("steps").join(&pruned.name)).unwrap();

    // one training image of the target replaced under the same path: every step that reads the
    // target is planned again, the source steps stay done
    let train_dir = cfg.target.root.join("bounding_box_train");
    let mut images: Vec<_> = std::fs::read_dir(&train_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    let bytes = std::fs::read(&images[0]).unwrap();
    std::fs::write(&images[0], [bytes.as_slice(), &[0u8; 16]].concat()).unwrap();
    let plan = Runner::new(cfg.clone()).unwrap().plan().unwrap();
    use reid_prune::grid::StepState;
    for s in &plan {
        let source_only = s.kind == "pretrain" || s.what.ends_with("on source");
        if source_only {
            assert_eq!(s.state, StepState::Done, "{}", s.what);
        } else {
            assert!(
                matches!(s.state, StepState::Ready | StepState::Waiting),
                "{}: {:?}",
                s.what,
                s.state
            );
        }
    }
    // the fine-tune starts from the (finished) pre-training: ready; what follows it waits
    assert!(plan
        .iter()
        .any(|s| s.kind == "finetune" && s.state == StepState::Ready));
    assert!(plan.iter().any(|s| s.state == StepState::Waiting));
    // a step whose lock is held is running, and the plan names who holds it
    let finetune = plan.iter().find(|s| s.kind == "finetune").unwrap();
    let reid_run::lock::Claim::Held(_lock) =
        reid_run::lock::try_claim(&cfg.out.join("steps").join(&finetune.name)).unwrap()
    else {
        panic!("nobody else holds it");
    };
    let plan = Runner::new(cfg.clone()).unwrap().plan().unwrap();
    let s = plan.iter().find(|s| s.name == finetune.name).unwrap();
    assert_eq!(s.state, StepState::Running);
    let owner = s.owner.as_deref().unwrap();
    assert!(
        owner.contains(&format!("pid {}", std::process::id())),
        "{owner}"
    );
}

#[test]
fn shipped_configs_parse() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    )
    .join("../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let cfg: ExperimentConfig = toml::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!cfg.levels.is_empty());
            cfg.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            if p.file_name().unwrap() == "market-duke-cuhk03.toml" {
                let grids = cfg.per_target();
                let labels: Vec<&str> = grids.iter().map(|g| g.target.label()).collect();
                assert_eq!(labels, ["market1501", "dukemtmc-reid", "cuhk03-np"]);
                // tested cross-domain on the next target
                assert_eq!(grids[2].cross.as_ref().unwrap().label(), "market1501");
                assert!(grids[1].out.ends_with("paper-resnet50/dukemtmc-reid"));
            }
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn several_targets_share_the_source_steps_and_test_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("ta"), "target", SynthLayout::Market);
    synth(&tmp.path().join("tb"), "target-b", SynthLayout::Market);
    let data = |dir: &str, name: &str| DataRef {
        dataset: "market1501".into(),
        root: tmp.path().join(dir),
        name: Some(name.into()),
    };
    let cfg = ExperimentConfig {
        name: "multi".into(),
        targets: vec![data("ta", "a"), data("tb", "b")],
        scenarios: vec![Scenario::S1],
        ..tiny_config(tmp.path(), None)
    };
    let shared = cfg.out.join("steps");
    let mut reused = Vec::new();
    for g in cfg.per_target() {
        let mut r = Runner::new(g.clone())
            .unwrap()
            .with_steps_dir(shared.clone());
        let cells = r.run().unwrap();
        reused.push(r.steps_reused);
        let other = if g.target.label() == "a" { "b" } else { "a" };
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(cells[2].folder.join("metrics.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(m["target_dataset"], g.target.label());
        assert!(m["eval"][g.target.label()]["mAP"].is_number());
        assert!(
            m["eval"][format!("{other}-cross")]["mAP"].is_number(),
            "{m}"
        );
        assert!(cells[2].folder.starts_with(cfg.out.join(g.target.label())));
    }
    // the second grid found the source pre-training (and the pruned source model) done
    assert_eq!(reused[0], 0);
    assert!(reused[1] >= 2, "{reused:?}");
}

#[test]
fn a_grid_can_prune_the_residual_streams_too() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig {
        name: "groups".into(),
        residual_groups: true,
        scenarios: vec![Scenario::S1],
        criteria: reid_prune::method::MethodName::list(&["l1", "psfp"]),
        ..tiny_config(tmp.path(), None)
    };
    let cells = Runner::new(cfg).unwrap().run().unwrap();
    // baseline, source, S1 l1 (psfp is skipped with residual groups)
    assert_eq!(cells.len(), 3);
    let base = reid_model::load_checkpoint(
        &cells[0].folder.join("model.safetensors"),
        &candle_core::Device::Cpu,
        false,
    )
    .unwrap();
    let pruned = reid_model::load_checkpoint(
        &cells[2].folder.join("model.safetensors"),
        &candle_core::Device::Cpu,
        false,
    )
    .unwrap();
    assert!(pruned.net.spec().feature_dim < base.net.spec().feature_dim);
    let ratio = cells[2].macs as f64 / cells[0].macs as f64;
    assert!((ratio - 0.5).abs() < 0.05, "{ratio}");
}

/// Names that become folders cannot leave the output folder, and bad numbers or names are
/// refused before the first step writes anything.
#[test]
fn hostile_names_and_numbers_are_refused_before_any_step() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_config(tmp.path(), None);
    let cases: Vec<(ExperimentConfig, &str)> = vec![
        (
            ExperimentConfig {
                levels: BTreeMap::from([("../../../../x".to_string(), 0.5)]),
                ..base.clone()
            },
            "levels",
        ),
        (
            ExperimentConfig {
                levels: BTreeMap::from([("C1".to_string(), 1.5)]),
                ..base.clone()
            },
            "levels.C1",
        ),
        (
            ExperimentConfig {
                target: DataRef {
                    name: Some("../x".into()),
                    ..base.target.clone()
                },
                ..base.clone()
            },
            "dataset label",
        ),
        (
            ExperimentConfig {
                width_mult: -3.0,
                ..base.clone()
            },
            "width_mult",
        ),
        (
            ExperimentConfig {
                lr: f64::NAN,
                ..base.clone()
            },
            "lr",
        ),
        (
            ExperimentConfig {
                batch_pk: reid_run::PkBatch::new(4, 0),
                ..base.clone()
            },
            "batch_pk",
        ),
        (
            ExperimentConfig {
                round_to: 0,
                ..base.clone()
            },
            "round_to = 0",
        ),
        (
            ExperimentConfig {
                round_to: 8,
                allocation: reid_prune::strategy::Allocation::Global,
                ..base.clone()
            },
            "round_to = 8 needs allocation",
        ),
        // checks that read the disk: before any step too
        (
            ExperimentConfig {
                target: DataRef {
                    root: tmp.path().join("no-such-root"),
                    ..base.target.clone()
                },
                ..base.clone()
            },
            "no-such-root",
        ),
        (
            ExperimentConfig {
                cross: Some(DataRef {
                    root: tmp.path().join("no-cross-root"),
                    ..base.target.clone()
                }),
                ..base.clone()
            },
            "cross: dataset = \"market1501\"",
        ),
        (
            ExperimentConfig {
                batch_pk: reid_run::PkBatch::new(99, 4),
                ..base.clone()
            },
            "P = 99 identities",
        ),
    ];
    for (cfg, field) in cases {
        let t = std::time::Instant::now();
        let e = format!("{:#}", Runner::new(cfg).unwrap().run().unwrap_err());
        assert!(e.contains(field), "expected an error naming {field}: {e}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{field}: refused after {:?}",
            t.elapsed()
        );
    }
    // an unknown scenario is refused where the config is read, naming it and the valid ones
    let e = format!(
        "{:#}",
        reid_prune::config_file::parse_toml::<ExperimentConfig>("scenarios = [\"S1\", \"S5\"]\n")
            .unwrap_err()
    );
    assert!(e.contains("S5") && e.contains("S4"), "{e}");
    // so is an unknown criterion, naming the key and every registered method
    let e = format!(
        "{:#}",
        reid_prune::config_file::parse_toml::<ExperimentConfig>("criteria = [\"l1\", \"l7\"]\n")
            .unwrap_err()
    );
    assert!(
        e.contains("criteria") && e.contains("l7") && e.contains("lamp"),
        "{e}"
    );
    // nothing was computed, and no folder named by a hostile key exists anywhere in the tree
    assert!(!base.out.join("steps").exists(), "a step ran");
    fn names(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                names(&e.path(), out);
            }
        }
    }
    let mut all = Vec::new();
    names(tmp.path(), &mut all);
    assert!(
        !all.iter().any(|n| n == "x"),
        "a hostile name became a folder"
    );
}

/// What the report reads under `out`: the current cells' ids, and the problems' folders with
/// their messages.
fn report_view(out: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let (runs, problems) = reid_report::runs::load_runs(out).unwrap();
    let rel = |p: &Path| {
        p.strip_prefix(out)
            .unwrap()
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    (
        runs.into_iter().map(|r| r.id).collect(),
        problems
            .into_iter()
            .map(|p| (rel(&p.path), p.message))
            .collect(),
    )
}

/// The grid's records say what its current cells were computed from: switching one folder
/// between one target and several, or changing the data under a grid that has not rewritten
/// its cells yet, leaves folders that the report names and skips instead of mixing them into
/// the tables.
#[test]
fn cells_left_by_another_target_list_or_other_data_are_told_apart() {
    let tmp = tempfile::tempdir().unwrap();
    synth(&tmp.path().join("tb"), "target-b", SynthLayout::Market);
    let single = ExperimentConfig {
        scenarios: vec![Scenario::S1],
        ..tiny_config(tmp.path(), Some("a"))
    };
    let a = single.target.clone();
    let b = DataRef {
        dataset: "market1501".into(),
        root: tmp.path().join("tb"),
        name: Some("b".into()),
    };
    let out = single.out.clone();
    let run = |cfg: &ExperimentConfig, max_steps: Option<usize>| {
        reid_prune::grid::record_several_targets(cfg).unwrap();
        for g in cfg.per_target() {
            let r = Runner::new(g)
                .unwrap()
                .with_steps_dir(out.join("steps"))
                .with_max_steps(max_steps)
                .run();
            if max_steps.is_none() {
                r.unwrap();
            }
        }
    };
    run(&single, None);
    let data: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(out.join(reid_run::metrics::EXPERIMENT_DATA_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["source", "target"],
        "{data:?}"
    );
    let cell = reid_run::metrics::read_metrics(&out.join("S1/l1-C1/metrics.json")).unwrap();
    assert_eq!(cell.data, data);
    let (ids, problems) = report_view(&out);
    assert!(ids.contains(&"S1/l1-C1".to_string()), "{ids:?}");
    assert!(problems.is_empty(), "{problems:?}");

    // one target → two: the single-target cells are left from an earlier config
    let multi = ExperimentConfig {
        targets: vec![a.clone(), b.clone()],
        ..single.clone()
    };
    run(&multi, None);
    let (ids, problems) = report_view(&out);
    assert!(
        ids.iter()
            .all(|i| i.starts_with("a/") || i.starts_with("b/")),
        "{ids:?}"
    );
    assert!(ids.contains(&"a/S1/l1-C1".to_string()) && ids.contains(&"b/S1/l1-C1".to_string()));
    assert!(
        problems.iter().any(|(f, _)| f == "S1/l1-C1"),
        "{problems:?}"
    );
    for (f, m) in &problems {
        assert!(!f.starts_with("a/") && !f.starts_with("b/"), "{f}: {m}");
        assert!(
            m.contains("left from an earlier config") && m.contains("targets"),
            "{f}: {m}"
        );
    }

    // two targets → one: the grids of a and b are no longer the experiment's
    run(&single, None);
    let (ids, problems) = report_view(&out);
    assert!(ids.contains(&"S1/l1-C1".to_string()), "{ids:?}");
    assert!(
        ids.iter()
            .all(|i| !i.starts_with("a/") && !i.starts_with("b/")),
        "{ids:?}"
    );
    let stale: Vec<&(String, String)> =
        problems.iter().filter(|(f, _)| f == "b/S1/l1-C1").collect();
    assert_eq!(stale.len(), 1, "{problems:?}");
    assert!(
        stale[0].1.contains(
            "is the grid of target 'b', which it no longer lists (it has one target now)"
        ),
        "{}",
        stale[0].1
    );

    // the target's images change and the grid stops before rewriting its cells
    let img = walk_first_jpg(&a.root.join("bounding_box_train"));
    let f = std::fs::File::options().write(true).open(&img).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
        .unwrap();
    drop(f);
    run(&single, Some(0));
    let (ids, problems) = report_view(&out);
    assert!(!ids.contains(&"S1/l1-C1".to_string()), "{ids:?}");
    let changed: Vec<&(String, String)> =
        problems.iter().filter(|(f, _)| f == "S1/l1-C1").collect();
    assert_eq!(changed.len(), 1, "{problems:?}");
    assert!(
        changed[0]
            .1
            .contains("the images of its target changed since"),
        "{}",
        changed[0].1
    );
}

fn walk_first_jpg(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    files.remove(0)
}

/// One folder, one experiment config at a time: a grid whose folder is in use by a grid of
/// another config is refused before it writes anything (two configs together left
/// experiment.toml of one and summary.txt and claims.txt of the other).
#[test]
fn a_grid_of_another_config_is_refused_while_one_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig {
        scenarios: vec![Scenario::S1],
        ..tiny_config(tmp.path(), None)
    };
    let running = ExperimentConfig {
        name: "other".into(),
        criteria: reid_prune::method::MethodName::list(&["taylor"]),
        device: "cuda:0".parse().unwrap(),
        ..cfg.clone()
    };
    let claim = running.claim_folder().unwrap();
    let err = Runner::new(cfg.clone()).unwrap().run().unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "a grid with another config is running here (experiment 'other', started by pid"
        ),
        "{msg}"
    );
    assert!(!cfg.out.join(reid_run::metrics::EXPERIMENT_FILE).exists());
    // the same config joins (a second worker), on another GPU, with another checkpoint
    // interval, naming the folder otherwise: what it computes is the same
    let same = running.claim_folder().unwrap();
    let elsewhere = ExperimentConfig {
        device: "cuda:1".parse().unwrap(),
        checkpoint_interval_s: 60.0,
        out: cfg.out.join("..").join(cfg.out.file_name().unwrap()),
        ..running.clone()
    };
    let worker = elsewhere.claim_folder().unwrap();
    drop((claim, same, worker));
    assert!(cfg.claim_folder().is_ok());
}

/// A grid and a single run never share a folder: a grid over a train run's folder is refused
/// before it writes anything.
#[test]
fn a_grid_over_a_single_runs_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), None);
    std::fs::create_dir_all(&cfg.out).unwrap();
    std::fs::write(cfg.out.join("config.toml"), "epochs = 1\n").unwrap();
    let err = format!("{:#}", Runner::new(cfg.clone()).unwrap().run().unwrap_err());
    assert!(err.contains("the folder holds a single run"), "{err}");
    assert!(!cfg.out.join(reid_run::metrics::EXPERIMENT_FILE).exists());
    assert!(!cfg.out.join(reid_run::lock::GRID_LOCK_FILE).exists());
}

/// Two targets with one label would write one folder (the second grid's table over the first's):
/// refused before any step, naming the label.
#[test]
fn two_targets_with_one_label_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_config(tmp.path(), None);
    let twice = ExperimentConfig {
        targets: vec![base.target.clone(), base.target.clone()],
        ..base.clone()
    };
    let err = format!("{:#}", twice.validate().unwrap_err());
    assert!(
        err.contains("two targets are labelled 'market1501'") && err.contains("distinct `name`"),
        "{err}"
    );
}

#[test]
fn every_scenario_has_one_recipe_and_is_reachable_from_a_config() {
    use reid_prune::grid::scenarios::{recipe, RECIPES};
    assert_eq!(
        RECIPES.len(),
        Scenario::ALL.len(),
        "a recipe without a name or a name without one"
    );
    for s in Scenario::ALL {
        assert_eq!(recipe(s).unwrap().scenario(), s);
        let n = RECIPES.iter().filter(|r| r.scenario() == s).count();
        assert_eq!(n, 1, "{s}: {n} recipes");
        // the name a user writes in experiment.toml
        let cfg: ExperimentConfig = toml::from_str(&format!("scenarios = [\"{s}\"]")).unwrap();
        assert_eq!(cfg.scenarios, [s]);
        cfg.validate().unwrap();
    }
}

/// The report's "What pruning changed" counts, for each S1 cell, the queries its unpruned model
/// answers at rank 1 and it does not (and the reverse) exactly as the two cells' per_query.json
/// imply, and draws the first of each from the cells' ranked lists.
#[test]
fn the_report_shows_the_queries_pruning_lost_and_gained() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig {
        scenarios: vec![Scenario::S1],
        ..tiny_config(tmp.path(), Some("tiny-target"))
    };
    let cells = Runner::new(cfg.clone()).unwrap().run().unwrap();
    let report = tmp.path().join("report");
    reid_report::write_report(&cfg.out, &report, &Default::default()).unwrap();
    let table = std::fs::read_to_string(report.join("tables/pruning-changes.csv")).unwrap();
    let per_query = |dir: &Path| {
        reid_run::RunFolder::new(dir)
            .read_per_query()
            .unwrap()
            .remove("tiny-target")
            .unwrap()
    };
    let unpruned = per_query(&cells[0].folder);
    let s1: Vec<_> = cells.iter().filter(|c| c.scenario == "S1").collect();
    assert!(!s1.is_empty());
    for c in s1 {
        let f = reid_run::ranks::flips(&unpruned, &per_query(&c.folder)).unwrap();
        let row = format!(
            "tiny-target,{},{},{},{},",
            c.criterion,
            unpruned.len(),
            f.lost.len(),
            f.gained.len()
        );
        assert!(table.contains(&row), "{row} not in\n{table}");
        for (kind, n) in [("lost", f.lost.len()), ("gained", f.gained.len())] {
            for i in 1..=4 {
                let png = report.join(format!(
                    "figures/ranks-S1-{}-C1-{kind}-{i}.png",
                    c.criterion
                ));
                assert_eq!(png.is_file(), i <= n.min(3), "{}", png.display());
                if png.is_file() {
                    // two rows: the unpruned model's list above the pruned one's
                    let img = image::open(&png).unwrap();
                    let (_, h) = reid_data::ranklist::CELL;
                    assert!(img.height() > 2 * h && img.height() < 3 * h);
                }
            }
        }
    }

    // lists that are not of the cell's evaluation, or that name files outside the dataset's
    // folder, are never drawn; unreadable per-query results are named, never counted as zeros
    let cell = cells.iter().find(|c| c.scenario == "S1").unwrap();
    let ranks_path = cell.folder.join("ranks.json");
    let original = std::fs::read_to_string(&ranks_path).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&original).unwrap();
    let queries = doc["tiny-target"]["queries"].as_array_mut().unwrap();
    queries.reverse();
    let tampered = [
        (doc.to_string(), "ranks.json is not of its per_query.json"),
        (
            original.replacen("\"bounding_box_test/", "\"/etc/", 1),
            "not a path inside the dataset",
        ),
    ];
    for (text, note) in tampered {
        std::fs::write(&ranks_path, text).unwrap();
        reid_report::write_report(&cfg.out, &report, &Default::default()).unwrap();
        let html = std::fs::read_to_string(report.join("index.html")).unwrap();
        assert!(html.contains(note), "{note}");
        let stem = format!("figures/ranks-S1-{}-C1-", cell.criterion);
        assert!(
            !html.contains(&stem),
            "{note}: a picture of {stem} is shown"
        );
    }
    std::fs::write(&ranks_path, &original).unwrap();
    std::fs::write(cell.folder.join("per_query.json"), "{\"tiny-target\": [").unwrap();
    let summary = reid_report::write_report(&cfg.out, &report, &Default::default()).unwrap();
    assert!(summary
        .problems
        .iter()
        .any(|p| p.path == cell.folder.join("per_query.json")));
    let table = std::fs::read_to_string(report.join("tables/pruning-changes.csv")).unwrap();
    assert!(
        table.contains(&format!("tiny-target,{},0,not compared", cell.criterion)),
        "{table}"
    );
}
