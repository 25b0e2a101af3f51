//! Helpers shared by the tests: tiny synthetic domains, tiny nets with trained BN statistics,
//! bit-exact weight comparison.

use std::path::Path;

use reid_data::synth::{generate, SynthConfig, SynthLayout};
use reid_prune::grid::{DataRef, ExperimentConfig};

/// A tiny synthetic domain (12 identities, 3 cameras, 64×32) in `dir`.
#[allow(dead_code)] // each test binary includes this module and uses part of it
pub fn synth(dir: &Path, domain: &str, layout: SynthLayout) {
    let cfg = SynthConfig {
        domain: domain.into(),
        ids: 12,
        cams: 3,
        per_cam: 3,
        seed: 2,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout,
        extra_test_ids: 0,
        distractors: 0,
    };
    generate(&cfg, dir, |_| {}).unwrap();
}

/// Every tensor of two safetensors files equal bit for bit (`what` names the comparison).
#[allow(dead_code)]
pub fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let dev = candle_core::Device::Cpu;
    let wa = reid_model::checkpoint::read_safetensors(a, &dev).unwrap();
    let wb = reid_model::checkpoint::read_safetensors(b, &dev).unwrap();
    assert_eq!(wa.tensors.len(), wb.tensors.len(), "{what}: tensor count");
    for (k, ta) in &wa.tensors {
        if ta.dtype() != candle_core::DType::F32 {
            continue;
        }
        let x: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = wb.tensors[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{what}: {k} differs"
        );
    }
}

/// A tiny grid (ResNet-18/8 at 64×32, one epoch a step, l1 at C1) on domains generated under
/// `tmp` (once), writing to `out`; callers change the rest with struct update syntax.
#[allow(dead_code)]
pub fn tiny_experiment(tmp: &Path, name: &str, out: &Path) -> ExperimentConfig {
    if !tmp.join("target").is_dir() {
        synth(&tmp.join("source"), "source", SynthLayout::ImageFolder);
        synth(&tmp.join("target"), "target", SynthLayout::Market);
    }
    ExperimentConfig {
        name: name.into(),
        out: out.to_path_buf(),
        input: reid_run::InputSize::new(64, 32),
        arch: "resnet18".into(),
        width_mult: 0.125,
        baselines: vec![],
        source: DataRef {
            dataset: "imagefolder".into(),
            root: tmp.join("source"),
            name: None,
        },
        target: DataRef {
            dataset: "market1501".into(),
            root: tmp.join("target"),
            name: None,
        },
        cross: None,
        criteria: reid_prune::method::MethodName::list(&["l1"]),
        levels: std::collections::BTreeMap::from([("C1".to_string(), 0.5)]),
        pretrain_epochs: 1,
        finetune_epochs: 1,
        retrain_epochs: 1,
        batch_size: 16,
        ..ExperimentConfig::default()
    }
}

/// Every file under `dir` whose name marks it as a temporary file of an atomic write.
#[allow(dead_code)]
pub fn temp_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(temp_files_under(&p));
        } else if e
            .file_name()
            .to_string_lossy()
            .contains(reid_run::TEMP_MARK)
        {
            out.push(p);
        }
    }
    out
}

/// A tiny grid of `scenarios` for process tests (several batches an epoch, a checkpoint after
/// every batch, so a kill lands inside an epoch), written to `<tmp>/<name>.toml` with its output
/// in `<tmp>/<name>`.
#[allow(dead_code)]
pub fn killable_grid(
    tmp: &Path,
    name: &str,
    scenarios: Vec<reid_prune::grid::Scenario>,
    finetune_epochs: usize,
) -> (std::path::PathBuf, ExperimentConfig) {
    let cfg = ExperimentConfig {
        scenarios,
        finetune_epochs,
        // 6 training identities: several batches an epoch
        batch_pk: reid_run::PkBatch::new(2, 2),
        checkpoint_interval_s: 0.001,
        ..tiny_experiment(tmp, name, &tmp.join(name))
    };
    let path = tmp.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    (path, cfg)
}

/// `reid-prune run --config <config>` with its output captured.
#[allow(dead_code)]
pub fn grid_command(config: &Path) -> std::process::Command {
    use std::process::Stdio;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_reid-prune"));
    c.arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A tiny ResNet (5 classes, BNNeck) whose BN statistics were moved away from the identity by two
/// train-mode passes, seeded by its depth.
#[allow(dead_code)]
pub fn trained_tiny(depth: usize, width_mult: f64) -> reid_model::ReidNet {
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    let spec = reid_model::ArchSpec::resnet_with(depth, 5, width_mult, 1, reid_model::Neck::BnNeck)
        .unwrap();
    let net = reid_model::ReidNet::new(&spec, &dev, depth as u64).unwrap();
    for _ in 0..2 {
        net.forward_t(
            &Tensor::randn(0.3f32, 1.0, (4, 3, 64, 32), &dev).unwrap(),
            true,
        )
        .unwrap();
    }
    net
}
