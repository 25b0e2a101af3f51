//! Step keys come from everything a step computes: changing a field of an experiment reruns the
//! steps that read it and the steps below them, and nothing else; every field of a step's
//! config is in its key except the ones that cannot change its result.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use reid_prune::grid::{DataRef, ExperimentConfig, PlannedStep, Runner, Scenario};
use reid_prune::prune_run::PruneConfig;
use reid_prune::strategy::Allocation;
use reid_train::RunConfig;
use serde_json::Value;

fn data(dataset: &str, root: &str, name: Option<&str>) -> DataRef {
    DataRef {
        dataset: dataset.into(),
        root: PathBuf::from(root),
        name: name.map(str::to_string),
    }
}

/// A grid with every kind of step: S1–S4, a training-time method, a baseline and a cross set.
fn base() -> ExperimentConfig {
    ExperimentConfig {
        name: "keys".into(),
        out: PathBuf::from("/nonexistent/keys"),
        input: reid_run::InputSize::new(64, 32),
        arch: "resnet18".into(),
        width_mult: 0.125,
        baselines: vec!["resnet34".into()],
        source: data("imagefolder", "/data/source", None),
        target: data("market1501", "/data/target", Some("tgt")),
        cross: Some(data("market1501", "/data/cross", Some("crs"))),
        criteria: reid_prune::method::MethodName::list(&["l1", "psfp"]),
        levels: BTreeMap::from([("C1".to_string(), 0.5)]),
        batch_pk: reid_run::PkBatch::new(8, 4),
        ..ExperimentConfig::default()
    }
}

fn plan(cfg: &ExperimentConfig) -> Vec<PlannedStep> {
    Runner::new(cfg.clone()).unwrap().plan().unwrap()
}

/// What a change should do to the base grid's steps.
enum Expect {
    /// Steps whose own work reads the field (by their description) rerun, with every step below
    /// them; all other steps keep their keys.
    Reruns(fn(&str) -> bool),
    /// Steps are only added: every existing step keeps its key.
    Adds,
    /// Steps are only removed: every remaining step keeps its key.
    Removes,
}

#[test]
fn changing_a_field_reruns_the_steps_that_read_it_and_those_below_nothing_else() {
    let b = base();
    let base_plan = plan(&b);
    assert!(
        base_plan.len() > 20,
        "the base grid has every kind of step ({} steps)",
        base_plan.len()
    );
    let by_name: HashMap<&str, &PlannedStep> =
        base_plan.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &base_plan {
        for p in &s.parents {
            assert!(
                by_name.contains_key(p.as_str()),
                "{}: parent {p} listed",
                s.name
            );
        }
    }
    // Nothing is written by planning.
    assert!(!b.out.exists());

    let none: fn(&str) -> bool = |_| false;
    let all: fn(&str) -> bool = |_| true;
    let not_eval: fn(&str) -> bool = |w| !w.starts_with("evaluate");
    let prunes: fn(&str) -> bool = |w| w.starts_with("prune");
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, Box<dyn Fn(&mut ExperimentConfig)>, Expect)> = vec![
        (
            "name",
            Box::new(|c| c.name = "other".into()),
            Expect::Reruns(none),
        ),
        (
            "out",
            Box::new(|c| c.out = "/elsewhere".into()),
            Expect::Reruns(none),
        ),
        (
            "checkpoint_interval_s",
            Box::new(|c| c.checkpoint_interval_s = 7.0),
            Expect::Reruns(none),
        ),
        ("seed", Box::new(|c| c.seed = 1), Expect::Reruns(not_eval)),
        (
            "pretrain_seed",
            Box::new(|c| c.pretrain_seed = Some(1)),
            Expect::Reruns(|w| w.starts_with("pretrain")),
        ),
        (
            "input",
            Box::new(|c| c.input = reid_run::InputSize::new(96, 48)),
            Expect::Reruns(all),
        ),
        (
            "width_mult",
            Box::new(|c| c.width_mult = 0.25),
            Expect::Reruns(|w| w.starts_with("pretrain")),
        ),
        ("lr", Box::new(|c| c.lr = 1e-3), Expect::Reruns(not_eval)),
        (
            "augment",
            Box::new(|c| c.augment.erase_p = 0.0),
            Expect::Reruns(not_eval),
        ),
        (
            "arch",
            Box::new(|c| c.arch = "resnet50".into()),
            Expect::Reruns(|w| w == "pretrain resnet18"),
        ),
        (
            "pretrained",
            Box::new(|c| c.pretrained = Some("timm/resnet18.a1_in1k".into())),
            Expect::Reruns(|w| w == "pretrain resnet18"),
        ),
        (
            "source",
            Box::new(|c| c.source.root = "/data/source2".into()),
            Expect::Reruns(|w| w.starts_with("pretrain") || w.ends_with("on source")),
        ),
        (
            "target",
            Box::new(|c| c.target.root = "/data/target2".into()),
            Expect::Reruns(|w| {
                w.starts_with("finetune") || w.ends_with("on target") || w == "evaluate on tgt"
            }),
        ),
        (
            "cross",
            Box::new(|c| c.cross.as_mut().unwrap().root = "/data/cross2".into()),
            Expect::Reruns(|w| w == "evaluate on crs"),
        ),
        (
            "pretrain_epochs",
            Box::new(|c| c.pretrain_epochs += 1),
            Expect::Reruns(|w| w.starts_with("pretrain")),
        ),
        (
            "finetune_epochs",
            Box::new(|c| c.finetune_epochs += 1),
            Expect::Reruns(|w| w.starts_with("finetune")),
        ),
        (
            "retrain_epochs",
            Box::new(|c| c.retrain_epochs += 1),
            Expect::Reruns(prunes),
        ),
        (
            "allocation",
            Box::new(|c| c.allocation = Allocation::Global),
            Expect::Reruns(prunes),
        ),
        (
            "round_to",
            Box::new(|c| c.round_to = 8),
            Expect::Reruns(prunes),
        ),
        (
            "prune_step",
            Box::new(|c| c.prune_step = Some(0.25)),
            Expect::Reruns(prunes),
        ),
        // psfp is skipped with residual groups; every other prune changes
        (
            "residual_groups",
            Box::new(|c| c.residual_groups = true),
            Expect::Reruns(prunes),
        ),
        // the P×K batch is read by re-ID training only: not by pre-training nor by a prune
        // retrained on the source (classification)
        (
            "batch_pk",
            Box::new(|c| c.batch_pk = reid_run::PkBatch::new(4, 8)),
            Expect::Reruns(|w| w.starts_with("finetune") || w.ends_with("on target")),
        ),
        (
            "batch_size",
            Box::new(|c| c.batch_size = 32),
            Expect::Reruns(|w| w.starts_with("pretrain") || w.ends_with("on source")),
        ),
        (
            "baselines",
            Box::new(|c| c.baselines.push("resnet50".into())),
            Expect::Adds,
        ),
        (
            "criteria",
            Box::new(|c| c.criteria.push("taylor".parse().unwrap())),
            Expect::Adds,
        ),
        // the row trained on the target alone: one training step and its evaluations
        ("scratch", Box::new(|c| c.scratch = true), Expect::Adds),
        // other seeds add the key cells' steps under each seed and change none
        (
            "seeds",
            Box::new(|c| c.seeds = vec![c.seed, c.seed + 1]),
            Expect::Adds,
        ),
        (
            "levels",
            Box::new(|c| {
                c.levels.insert("C2".into(), 0.6);
            }),
            Expect::Adds,
        ),
        (
            "scenarios",
            Box::new(|c| c.scenarios.retain(|s| *s != Scenario::S4)),
            Expect::Removes,
        ),
    ];

    // Every field of the experiment is covered (a new field needs its row here); `device`
    // cannot be switched without a GPU (its kind is in every step's view: see below) and
    // `targets` splits one experiment into grids of this kind (`per_target`).
    let full = ExperimentConfig {
        targets: vec![b.target.clone()],
        residual_groups: true,
        seeds: vec![1],
        pretrain_seed: Some(0),
        scratch: true,
        ..b.clone()
    };
    let fields: HashSet<String> = match serde_json::to_value(&full).unwrap() {
        Value::Object(m) => m.keys().cloned().collect(),
        _ => unreachable!(),
    };
    let covered: HashSet<String> = cases
        .iter()
        .map(|c| c.0.to_string())
        .chain(["device".to_string(), "targets".to_string()])
        .collect();
    assert_eq!(
        fields, covered,
        "experiment fields vs the cases of this test"
    );

    for (field, change, expect) in cases {
        let mut c = b.clone();
        change(&mut c);
        let new_plan = plan(&c);
        let new_names: HashSet<&str> = new_plan.iter().map(|s| s.name.as_str()).collect();
        let old_names: HashSet<&str> = base_plan.iter().map(|s| s.name.as_str()).collect();
        match expect {
            Expect::Adds => {
                assert!(old_names.is_subset(&new_names), "{field}: a step changed");
                assert!(new_names.len() > old_names.len(), "{field}: no step added");
            }
            Expect::Removes => {
                assert!(new_names.is_subset(&old_names), "{field}: a step changed");
                assert!(
                    new_names.len() < old_names.len(),
                    "{field}: no step removed"
                );
            }
            Expect::Reruns(direct) => {
                // a step reruns when it reads the field or descends from one that does
                let mut reruns: HashMap<&str, bool> = HashMap::new();
                for s in &base_plan {
                    let r = direct(&s.what) || s.parents.iter().any(|p| reruns[p.as_str()]);
                    reruns.insert(&s.name, r);
                }
                for s in &base_plan {
                    assert_eq!(
                        !new_names.contains(s.name.as_str()),
                        reruns[s.name.as_str()],
                        "{field}: step '{}' ({}) {}",
                        s.what,
                        s.name,
                        if reruns[s.name.as_str()] {
                            "should rerun but kept its key"
                        } else {
                            "should keep its key but reruns"
                        }
                    );
                }
            }
        }
    }
}

/// `v` with one leaf (by path) changed to another value of the same type; `None` when no
/// candidate deserialises.
fn mutate<T: serde::de::DeserializeOwned>(v: &Value, path: &[String]) -> Option<T> {
    let leaf = path.iter().fold(v, |x, k| &x[k.as_str()]);
    let mut candidates: Vec<Value> = match leaf {
        Value::Bool(b) => vec![Value::Bool(!b)],
        Value::Number(n) if n.is_u64() => vec![(n.as_u64().unwrap() + 1).into()],
        Value::Number(n) => vec![(n.as_f64().unwrap() * 1.5 + 0.125).into()],
        Value::String(s) => vec![format!("{s}0").into()],
        Value::Array(a) => {
            let mut a = a.clone();
            a.push(7.into());
            vec![Value::Array(a)]
        }
        // an unset option: a value of any type
        Value::Null => vec!["/some/file".into(), 3.into(), 0.5.into()],
        _ => vec![],
    };
    if let Value::String(s) = leaf {
        // enum-like strings: any other variant
        for alt in [
            "classify",
            "reid",
            "global",
            "layerwise",
            "params",
            "flops",
            "cuda",
        ] {
            if alt != s {
                candidates.push(alt.into());
            }
        }
    }
    candidates.into_iter().find_map(|c| {
        let mut m = v.clone();
        let slot = path.iter().fold(&mut m, |x, k| &mut x[k.as_str()]);
        *slot = c;
        serde_json::from_value(m).ok()
    })
}

fn leaf_paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let mut p = prefix.clone();
                p.push(k.clone());
                leaf_paths(x, p, out);
            }
        }
        _ => out.push(prefix),
    }
}

/// Change each leaf of a config in turn: the result view changes exactly when the leaf is not
/// one of `free`; `untyped` lists the leaves (serde tags) no single-value change can express.
fn check_every_leaf<T>(cfg: &T, view: impl Fn(&T) -> Value, free: &[&str], untyped: &[&str])
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let v = serde_json::to_value(cfg).unwrap();
    let base_view = view(cfg);
    let mut paths = Vec::new();
    leaf_paths(&v, Vec::new(), &mut paths);
    let mut unmutable = Vec::new();
    for p in paths {
        let dotted = p.join(".");
        let Some(changed) = mutate::<T>(&v, &p) else {
            unmutable.push(dotted);
            continue;
        };
        let differs = view(&changed) != base_view;
        assert_eq!(
            differs,
            !free.contains(&dotted.as_str()),
            "{dotted}: {}",
            if differs {
                "changes the view but is listed as free"
            } else {
                "is not in the view (a step would be reused after it changed)"
            }
        );
    }
    unmutable.sort();
    assert_eq!(unmutable, untyped, "leaves this test cannot change");
}

#[test]
fn every_field_of_a_training_config_is_in_its_key_except_where_it_writes() {
    let cfg = RunConfig {
        pretrained: Some("timm/resnet18.a1_in1k".into()),
        stop_after_batches: Some(3),
        ..RunConfig::default()
    };
    // from a checkpoint, the network's shape and initialisation come from the file
    let from_checkpoint = RunConfig {
        init_checkpoint: Some("/parent/model.safetensors".into()),
        ..cfg.clone()
    };
    check_every_leaf(
        &from_checkpoint,
        |c| c.result_view().unwrap(),
        &[
            "out",
            "checkpoint_interval_s",
            "stop_after_batches",
            "evaluate",
            "batch_size",
            "arch",
            "width_mult",
            "last_stride",
            "pretrained",
            "zero_init_residual",
        ],
        &["train.optimizer.kind", "train.schedule.decay"],
    );
    // re-ID training reads the P×K batch, not the classification batch size
    check_every_leaf(
        &cfg,
        |c| c.result_view().unwrap(),
        &[
            "out",
            "checkpoint_interval_s",
            "stop_after_batches",
            "evaluate",
            "batch_size",
        ],
        &["train.optimizer.kind", "train.schedule.decay"],
    );
    let mut classify = cfg.clone();
    classify.train.task = reid_train::Task::Classify;
    check_every_leaf(
        &classify,
        |c| c.result_view().unwrap(),
        &[
            "out",
            "checkpoint_interval_s",
            "stop_after_batches",
            "evaluate",
            "batch_pk",
        ],
        &["train.optimizer.kind", "train.schedule.decay"],
    );
    // the serde-tagged variants: another optimiser or decay is another key
    let mut sgd = cfg.clone();
    sgd.train.optimizer.kind = reid_train::optim::OptimizerKind::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    assert_ne!(sgd.result_view().unwrap(), cfg.result_view().unwrap());
    let mut step = cfg.clone();
    step.train.schedule.decay = reid_train::schedule::Decay::Cosine { min_lr: 0.0 };
    assert_ne!(step.result_view().unwrap(), cfg.result_view().unwrap());
    // which of two equal GPUs ran a step does not change it; the kind of device does
    let on = |d: &str| {
        RunConfig {
            device: d.parse().unwrap(),
            ..cfg.clone()
        }
        .result_view()
        .unwrap()
    };
    assert_eq!(on("cuda:0"), on("cuda:1"));
    assert_ne!(on("cuda:0"), on("cpu"));
}

#[test]
fn every_field_of_a_prune_config_is_in_its_key_except_where_it_writes() {
    let cfg = PruneConfig {
        checkpoint: "/parent/model.safetensors".into(),
        arch: Some("resnet50".into()),
        dataset: Some("market1501".into()),
        root: Some("/data".into()),
        batch: Some("/batch.safetensors".into()),
        step: Some(0.25),
        retrain_epochs: 2,
        ..PruneConfig::default()
    };
    check_every_leaf(
        &cfg,
        |c| c.result_view().unwrap(),
        &["out", "checkpoint_interval_s", "batch_size"],
        &[],
    );
}

/// `plan --set KEY=VALUE` is the plan of the config with that key changed in the file: the same
/// step keys, and a misspelt key is refused like one in the file.
#[test]
fn plan_with_a_set_override_equals_the_plan_of_the_edited_file() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, cfg: &ExperimentConfig| {
        let p = tmp.path().join(name);
        std::fs::write(&p, toml::to_string(cfg).unwrap()).unwrap();
        p
    };
    let plan_json = |config: &std::path::Path, sets: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_reid-prune"));
        c.arg("plan").arg("--config").arg(config).arg("--json");
        for s in sets {
            c.arg("--set").arg(s);
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let original = write("keys.toml", &base());
    let edited = write(
        "edited.toml",
        &ExperimentConfig {
            batch_pk: reid_run::PkBatch::new(4, 8),
            finetune_epochs: 7,
            ..base()
        },
    );
    let (ok, unchanged, e) = plan_json(&original, &[]);
    assert!(ok, "{e}");
    let (ok, overridden, e) = plan_json(&original, &["batch_pk=4x8", "finetune_epochs=7"]);
    assert!(ok, "{e}");
    let (ok, from_file, e) = plan_json(&edited, &[]);
    assert!(ok, "{e}");
    assert_eq!(overridden, from_file);
    assert_ne!(overridden, unchanged);
    let (ok, _, e) = plan_json(&original, &["batchpk=4x8"]);
    assert!(!ok);
    assert!(e.contains("did you mean `batch_pk`"), "{e}");
}

/// A step's key holds the fingerprint of the images its dataset lists, not of every file under
/// the dataset's root: notes or a second dataset stored beside the target keep every key (they
/// reran the whole grid before), a changed target image reruns the steps that read the target.
#[test]
fn keys_follow_the_images_a_dataset_lists_not_other_files_under_its_root() {
    use reid_data::synth::{generate, SynthConfig, SynthLayout};
    let dir = tempfile::tempdir().unwrap();
    let synth = |domain: &str, layout: SynthLayout, out: PathBuf| {
        let cfg = SynthConfig {
            domain: domain.into(),
            ids: 4,
            cams: 2,
            per_cam: 1,
            seed: 0,
            height: 32,
            width: 16,
            difficulty: 0.2,
            layout,
            extra_test_ids: 0,
            distractors: 0,
        };
        generate(&cfg, &out, |_| {}).unwrap();
    };
    let root = dir.path();
    synth("source", SynthLayout::ImageFolder, root.join("source"));
    synth(
        "target",
        SynthLayout::Market,
        root.join("target/market1501"),
    );
    let cfg = ExperimentConfig {
        out: root.join("out"),
        source: data("imagefolder", &root.join("source").to_string_lossy(), None),
        target: data(
            "market1501",
            &root.join("target").to_string_lossy(),
            Some("tgt"),
        ),
        cross: None,
        ..base()
    };
    let keys = |cfg: &ExperimentConfig| -> HashSet<String> {
        plan(cfg).into_iter().map(|s| s.name).collect()
    };
    let before = keys(&cfg);
    std::fs::write(root.join("target/README.md"), b"where the data came from").unwrap();
    std::fs::write(root.join("target/market1501/notes.txt"), b"checked").unwrap();
    synth(
        "target-b",
        SynthLayout::Market,
        root.join("target/dukemtmc-reid"),
    );
    assert_eq!(
        keys(&cfg),
        before,
        "files the loader does not read changed keys"
    );

    // one gallery image with other bytes
    let gallery = root.join("target/market1501/bounding_box_test");
    let first = std::fs::read_dir(&gallery)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes.extend_from_slice(b"\0\0"); // decoders stop at the end-of-image marker
    std::fs::write(&first, bytes).unwrap();
    let after = plan(&cfg);
    for s in &after {
        let reads_target = s.what.contains("on tgt") || s.what.contains("on target");
        assert_eq!(
            before.contains(&s.name),
            !reads_target && !s.parents.iter().any(|p| !before.contains(p)),
            "{} ({})",
            s.name,
            s.what
        );
    }
}

/// Each step names the first cell it is computed for (the grid's progress lines show it): the
/// steps of the unpruned model are the first row's, a pruned cell's own steps are its own, and
/// a step shared with an earlier cell keeps that cell's name.
#[test]
fn every_step_names_the_first_cell_it_is_computed_for() {
    use reid_prune::grid::graph::{Fingerprints, StepGraph};
    let mut b = base();
    b.seeds = vec![0, 7];
    let fingerprints: Fingerprints = [&b.source, &b.target, b.cross.as_ref().unwrap()]
        .into_iter()
        .map(|d| ((d.dataset.clone(), d.root.clone()), "f".to_string()))
        .collect();
    let g = StepGraph::build(
        &b,
        &fingerprints,
        std::path::Path::new("/nonexistent/steps"),
    )
    .unwrap();
    let names: Vec<String> = g
        .rows
        .iter()
        .map(|r| format!("{}/{}-{}", r.scenario, r.criterion, r.level))
        .collect();
    assert_eq!(names[0], "baseline/resnet18-full");
    for s in &g.steps {
        assert!(!s.cell.is_empty(), "{}: no cell", s.what);
    }
    let first_pretrain = g.steps.iter().find(|s| s.kind == "pretrain").unwrap();
    assert_eq!(first_pretrain.cell, names[0]);
    for (i, r) in g.rows.iter().enumerate() {
        let model = &g.steps[r.model].cell;
        // its own name, or a cell before it (a shared step: S3's fine-tuned model is the
        // unpruned one's)
        let at = names.iter().position(|n| n == model);
        assert!(
            at.is_some_and(|a| a <= i),
            "{}: model step for {model}",
            names[i]
        );
        assert_eq!(
            g.steps[r.evals.target].cell, names[i],
            "evaluations are the cell's own"
        );
    }
    let s1_prune = g
        .steps
        .iter()
        .find(|s| s.what == "prune l1 0.500 on source")
        .unwrap();
    assert_eq!(s1_prune.cell, "S1/l1-C1");
    // the other seed's steps are named with it
    let seeded = g
        .steps
        .iter()
        .filter(|s| s.cell.ends_with(" seed 7"))
        .count();
    assert!(seeded > 0);
}
