//! Reading run folders: every `metrics.json` under a root, plus the widths stored in the
//! `reid.arch` metadata of the `model.safetensors` beside it (read from the header only, so
//! this crate needs no tensor library).

use std::path::{Path, PathBuf};

/// `metrics.json`, with the types the tools write it with ([`reid_run`]).
pub use reid_run::{EvalEntry as EvalMetrics, Latency, RunMetrics as Metrics, TrainSummary};

/// Widths of one prunable conv: kept and original (unpruned) output channels.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWidth {
    pub name: String,
    pub kept: usize,
    pub original: usize,
}

/// One run folder.
#[derive(Clone, Debug)]
pub struct Run {
    /// Folder relative to the runs root, `/`-separated (stable across machines).
    pub id: String,
    pub dir: PathBuf,
    pub metrics: Metrics,
    /// Per prunable conv, when the folder has a readable `model.safetensors`.
    pub widths: Option<Vec<LayerWidth>>,
    /// Latency in deployment runtimes (`deploy.json`, written by `bench/onnx_check.py --runs`).
    pub deploy: reid_run::DeployLatencies,
}

impl Run {
    pub fn is_baseline(&self) -> bool {
        self.metrics.scenario == "baseline"
    }
    /// GFLOPs as the paper counts them: 2 × multiply-adds.
    pub fn gflops(&self) -> f64 {
        2.0 * self.metrics.macs as f64 / 1e9
    }
    pub fn params_m(&self) -> f64 {
        self.metrics.params as f64 / 1e6
    }
    /// The paper's scenario of a grid cell (None for baselines, the source model, single runs).
    pub fn scenario(&self) -> Option<reid_run::Scenario> {
        self.metrics.scenario.parse().ok()
    }
    /// The input size of the evaluation on `dataset` where it is not the run's own: the run's
    /// MACs and latency do not describe it.
    pub fn other_input(&self, dataset: &str) -> Option<reid_run::InputSize> {
        self.metrics.eval.get(dataset).and_then(|e| e.input)
    }
    /// Latency in ms on the first device that has it, for batch 1 or 32.
    pub fn latency(&self, batch32: bool) -> Option<f64> {
        self.metrics
            .latency_ms
            .values()
            .find_map(|l| if batch32 { l.batch32 } else { l.batch1 })
    }
    /// Batch-32 latency in ms in a deployment runtime (a key of `deploy.json`).
    pub fn deploy_latency(&self, runtime: &str) -> Option<f64> {
        self.deploy.get(runtime).and_then(|d| d.latency_ms.batch32)
    }
    /// Display name of the model: a criterion, or the backbone for baselines.
    pub fn model_name(&self) -> String {
        self.metrics.model_name()
    }
}

/// A file that could not be used, with why; the report goes on without it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("runs folder {0} does not exist (run `cargo run --release -p reid-prune` first, or pass --runs DIR)")]
    Missing(PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every run under `root` (sorted by id), and the files that were skipped.
pub fn load_runs(root: &Path) -> Result<(Vec<Run>, Vec<Problem>), RunsError> {
    if !root.is_dir() {
        return Err(RunsError::Missing(root.to_path_buf()));
    }
    let mut files = Vec::new();
    collect_metrics(root, &mut files)?;
    files.sort();
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let dir = file.parent().unwrap_or(root).to_path_buf();
        let (metrics, grid_cell) = match read_metrics(&file) {
            Ok(m) => m,
            Err(message) => {
                problems.push(Problem {
                    path: file,
                    message,
                });
                continue;
            }
        };
        if grid_cell {
            if let Some(message) = left_from_earlier_run(&dir, &metrics.data) {
                problems.push(Problem {
                    path: dir.join(reid_run::metrics::CONFIG_FILE),
                    message,
                });
                continue;
            }
        }
        let model = dir.join("model.safetensors");
        let widths = if model.is_file() {
            match read_widths(&model) {
                Ok(w) => Some(w),
                Err(message) => {
                    problems.push(Problem {
                        path: model,
                        message,
                    });
                    None
                }
            }
        } else {
            None
        };
        let deploy = reid_run::read_deploy_for_model(&dir).unwrap_or_else(|e| {
            problems.push(Problem {
                path: e.path().to_path_buf(),
                message: e.message(),
            });
            Default::default()
        });
        let id = dir
            .strip_prefix(root)
            .unwrap_or(&dir)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        runs.push(Run {
            id,
            dir,
            metrics,
            widths,
            deploy,
        });
    }
    Ok((runs, problems))
}

fn collect_metrics(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RunsError> {
    collect_named(dir, "metrics.json", out)
}

/// Every file named `file` under `root`, where run folders are looked for (sorted).
pub fn find_files(root: &Path, file: &str) -> Result<Vec<PathBuf>, RunsError> {
    let mut out = Vec::new();
    collect_named(root, file, &mut out)?;
    out.sort();
    Ok(out)
}

fn collect_named(dir: &Path, file: &str, out: &mut Vec<PathBuf>) -> Result<(), RunsError> {
    let io = |source| RunsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name();
        // `steps/` holds the runner's intermediate results and `data/` the generated datasets;
        // the report is about the published run folders. Symlinked folders are not followed
        // (a link loop would repeat runs without end, a link out of the tree report foreign ones).
        let is_dir = entry.file_type().map_err(io)?.is_dir();
        // hidden folders (`.replaced/`: a run being replaced) are no results either
        if is_dir && name != "steps" && name != "data" && !name.to_string_lossy().starts_with('.') {
            collect_named(&path, file, out)?;
        } else if name == file {
            out.push(path);
        }
    }
    Ok(())
}

/// A grid's cell folder (`<out>/<scenario>/<criterion>-<level>`) records the experiment config
/// it was computed under and the fingerprints of the data it read; the grid rewrites the cells
/// of its current config on every run. A cell is left from an earlier run when its config
/// differs from its experiment's `experiment.toml` (a criterion or level since removed, a
/// changed field), when its data fingerprints differ from `experiment-data.json` (the images
/// changed and the grid has not rewritten it yet), or when its experiment is the grid of a
/// target that the enclosing several-target experiment no longer lists (a switch to one
/// target, or a target removed). The message says which. `None` when the cell is current or
/// when there is nothing to compare with (a folder from before these records).
fn left_from_earlier_run(
    dir: &Path,
    data: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    use reid_run::metrics::{CONFIG_FILE, EXPERIMENT_DATA_FILE, EXPERIMENT_FILE};
    // A cell is `<out>/<scenario>/<criterion>-<level>`: its experiment is two folders up, and
    // an enclosing several-target experiment one more (looked up whatever `--runs` names, even
    // `.` inside `<out>/S1`; never further up, where an unrelated experiment may sit).
    let dir = dir.canonicalize().ok()?;
    let exp_dir = dir.parent()?.parent()?;
    if !exp_dir.join(EXPERIMENT_FILE).is_file() {
        return None;
    }
    let read = |p: &Path| -> Option<toml::Table> {
        std::fs::read_to_string(p).ok()?.parse::<toml::Table>().ok()
    };
    let experiment = read(&exp_dir.join(EXPERIMENT_FILE))?;
    let rerun = "not reported. Rerun the grid to refresh it, or delete the folder";
    if let Some(cell) = read(&dir.join(CONFIG_FILE)) {
        let view = reid_run::metrics::experiment_view;
        let differ = differing_keys(&view(&experiment), &view(&cell));
        if !differ.is_empty() {
            return Some(format!(
                "left from an earlier config of the experiment in {} (its config.toml differs \
                 from experiment.toml in: {}); {rerun}",
                exp_dir.display(),
                differ.join(", ")
            ));
        }
    }
    let recorded = std::fs::read_to_string(exp_dir.join(EXPERIMENT_DATA_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<std::collections::BTreeMap<String, String>>(&t).ok());
    if let Some(recorded) = recorded.filter(|_| !data.is_empty()) {
        let table = |m: &std::collections::BTreeMap<String, String>| -> toml::Table {
            m.iter()
                .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                .collect()
        };
        let changed = differing_keys(&table(&recorded), &table(data));
        if !changed.is_empty() {
            return Some(format!(
                "computed over other data than the experiment in {} last read (the images of \
                 its {} changed since: {EXPERIMENT_DATA_FILE} differs from the cell's \
                 metrics.json); {rerun}",
                exp_dir.display(),
                changed.join(", ")
            ));
        }
    }
    let outer_dir = exp_dir
        .parent()
        .filter(|p| p.join(EXPERIMENT_FILE).is_file())?;
    let recorded = |p: &Path| -> Option<reid_run::config::RecordedExperiment> {
        reid_run::config::RecordedExperiment::from_toml(&std::fs::read_to_string(p).ok()?).ok()
    };
    let outer = recorded(&outer_dir.join(EXPERIMENT_FILE))?;
    let inner = recorded(&exp_dir.join(EXPERIMENT_FILE))?;
    let folder = exp_dir.file_name()?.to_str()?;
    // the grid of one target of the enclosing experiment: named as it names them, in its
    // folder (however either `out` was spelled)
    let target_grid = exp_dir.parent() == Some(outer_dir)
        && inner.name == reid_run::config::target_grid_name(&outer.name, folder);
    if !target_grid {
        return None;
    }
    let labels = outer.target_labels();
    if labels.contains(&folder) {
        return None;
    }
    Some(format!(
        "left from an earlier config of the experiment in {}: {} is the grid of target '{folder}', \
         which it no longer lists ({}); {rerun}",
        outer_dir.display(),
        exp_dir.display(),
        if labels.is_empty() {
            "it has one target now".to_string()
        } else {
            format!("its targets: {}", labels.join(", "))
        }
    ))
}

/// The top-level keys whose values differ between two tables (or that only one has), sorted.
fn differing_keys(a: &toml::Table, b: &toml::Table) -> Vec<String> {
    let mut differ: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    differ.sort_unstable();
    differ.dedup();
    differ
}

/// The metrics, and whether the grid wrote them (a cell of an experiment: it names a scenario).
fn read_metrics(path: &Path) -> Result<(Metrics, bool), String> {
    let mut m = reid_run::metrics::read_metrics(path).map_err(|e| e.message())?;
    let grid_cell = !m.scenario.is_empty();
    // Single-step run folders: `train` writes neither scenario nor criterion, `prune` no scenario.
    if m.scenario.is_empty() {
        m.scenario = if m.criterion.is_empty() {
            "train"
        } else {
            "prune"
        }
        .into();
    }
    if m.criterion.is_empty() {
        m.criterion = m.backbone.clone();
    }
    if m.level.is_empty() {
        m.level = "full".into();
    }
    Ok((m, grid_cell))
}

/// The `reid.arch` JSON of a checkpoint, from its header only.
fn read_arch(path: &Path) -> Result<serde_json::Value, String> {
    let header = reid_run::header::read_safetensors_header(path)?;
    let arch = header
        .metadata("reid.arch")
        .ok_or("no reid.arch metadata (not a reid-prune checkpoint)")?;
    serde_json::from_str(arch).map_err(|e| format!("reid.arch: {e}"))
}

/// Kept and original widths of every prunable conv (the first two of a bottleneck, the
/// first of a basic block), named as in the state dict. The original width is the
/// standard ResNet's at the checkpoint's `width_mult`, as the model crate builds it.
fn read_widths(path: &Path) -> Result<Vec<LayerWidth>, String> {
    use reid_run::arch::ArchSpec;
    let bad = |what: String| format!("reid.arch: {what}");
    // the schema every checkpoint is written with, checked as the model crate checks it
    let spec: ArchSpec =
        serde_json::from_value(read_arch(path)?).map_err(|e| bad(e.to_string()))?;
    spec.validate().map_err(|e| bad(e.to_string()))?;
    let original: std::collections::HashMap<String, usize> = spec
        .unpruned()
        .map_err(|e| bad(e.to_string()))?
        .prunable_convs()
        .into_iter()
        .map(|c| (c.conv, c.width))
        .collect();
    spec.prunable_convs()
        .into_iter()
        .map(|c| {
            let original = *original
                .get(&c.conv)
                .ok_or_else(|| bad(format!("{} is not in the unpruned {}", c.conv, spec.name())))?;
            // pruning only removes channels: a width beyond the architecture's is corrupt
            if c.width == 0 || c.width > original {
                return Err(bad(format!(
                    "{} keeps {} channels of {original}",
                    c.conv, c.width
                )));
            }
            Ok(LayerWidth {
                name: c.conv,
                kept: c.width,
                original,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_metrics_are_rejected_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.json");
        let base = r#""scenario":"S1","criterion":"l1","level":"C1","backbone":"resnet50""#;
        for (body, field) in [
            (
                r#""macs":1,"params":1,"eval":{"m":{"mAP":0.4,"rank1":0.5,"cmc":[0.5,5.0]}}"#,
                "cmc[1] = 5",
            ),
            (
                r#""macs":1,"params":1,"eval":{"m":{"mAP":0.4,"rank1":0.5,"rank5":-3}}"#,
                "rank5 = -3",
            ),
            (
                r#""macs":1,"params":1,"eval":{"m":{"mAP":0.4,"rank1":0.5,"mINP":7}}"#,
                "mINP = 7",
            ),
            (
                r#""macs":1,"params":1,"eval":{"m":{"mAP":0.4,"rank1":0.5,"cmc":[0.6,0.5]}}"#,
                "decreases",
            ),
            (r#""macs":18446744073709551615,"params":1"#, "macs"),
            (r#""macs":1,"params":0"#, "params"),
        ] {
            std::fs::write(&p, format!("{{{base},{body}}}")).unwrap();
            let err = read_metrics(&p).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn a_symlink_loop_in_the_runs_folder_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("S1/l1-C1");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("metrics.json"),
            r#"{"scenario":"S1","criterion":"l1","level":"C1","backbone":"resnet50","macs":1,"params":1}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path(), run.join("loop")).unwrap();
        let (runs, _) = load_runs(dir.path()).unwrap();
        assert_eq!(runs.len(), 1);
    }

    #[test]
    fn metrics_with_a_rank_outside_0_1_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.json");
        std::fs::write(
            &p,
            r#"{"scenario":"S1","criterion":"l1","level":"C1","backbone":"resnet50","macs":1,"params":1,
               "eval":{"m":{"mAP":45.0,"rank1":0.5}}}"#,
        )
        .unwrap();
        let err = read_metrics(&p).unwrap_err();
        assert!(err.contains("eval.m.mAP = 45"), "{err}");
    }

    #[test]
    fn single_step_run_folders_are_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.json");
        // what `reid-prune train` and `reid-prune prune` write
        std::fs::write(
            &p,
            r#"{"backbone":"resnet18","macs":10,"params":5,"eval":{"m":{"mAP":0.5,"rank1":0.6}}}"#,
        )
        .unwrap();
        let (m, grid_cell) = read_metrics(&p).unwrap();
        assert_eq!(
            (m.scenario.as_str(), m.criterion.as_str(), m.level.as_str()),
            ("train", "resnet18", "full")
        );
        assert!(!grid_cell);
        std::fs::write(
            &p,
            r#"{"backbone":"resnet18","criterion":"l1","level":0.5,"target":"flops","macs":10,"params":5}"#,
        )
        .unwrap();
        let (m, grid_cell) = read_metrics(&p).unwrap();
        assert_eq!((m.scenario.as_str(), m.level.as_str()), ("prune", "0.5"));
        assert!(!grid_cell);
    }
}
