//! `metrics.json`, typed: what every tool writes and the report reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{write_atomic, Result, RunFileError};

/// Accuracy of one model on one dataset (fractions in [0, 1]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalEntry {
    #[serde(rename = "mAP")]
    pub map: f64,
    pub rank1: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank5: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank10: Option<f64>,
    #[serde(rename = "mINP", default, skip_serializing_if = "Option::is_none")]
    pub minp: Option<f64>,
    /// CMC curve: rank-k accuracy at k = 1, 2, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmc: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_valid_queries: Option<u64>,
    /// 95 % bootstrap intervals over query identities, by metric name (`mAP`, `rank1`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ci95: BTreeMap<String, crate::stats::Interval>,
    /// The input size of this evaluation where it is not the size the model was trained at
    /// (an entry `<dataset>@HxW`): the run's MACs and latency are at its own size, not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<crate::InputSize>,
}

fn fraction(what: String, v: f64) -> std::result::Result<(), String> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{what} = {v} is not a fraction in [0, 1]"))
    }
}

impl EvalEntry {
    /// Fractions in [0, 1], intervals ordered, the CMC never decreasing; errors name the
    /// field under `at`.
    pub fn validate(&self, at: &str) -> std::result::Result<(), String> {
        let e = self;
        let optional = [("rank5", e.rank5), ("rank10", e.rank10), ("mINP", e.minp)];
        for (what, v) in [("mAP", Some(e.map)), ("rank1", Some(e.rank1))]
            .into_iter()
            .chain(optional)
        {
            if let Some(v) = v {
                fraction(format!("{at}.{what}"), v)?;
            }
        }
        for (m, ci) in &e.ci95 {
            fraction(format!("{at}.ci95.{m}.lo"), ci.lo)?;
            fraction(format!("{at}.ci95.{m}.hi"), ci.hi)?;
            if ci.lo > ci.hi {
                return Err(format!("{at}.ci95.{m}: lo > hi"));
            }
        }
        for (k, &v) in e.cmc.iter().enumerate() {
            fraction(format!("{at}.cmc[{k}]"), v)?;
        }
        if let Some(k) = (1..e.cmc.len()).find(|&k| e.cmc[k] < e.cmc[k - 1]) {
            return Err(format!(
                "{at}.cmc decreases at rank {}: a CMC curve never does",
                k + 1
            ));
        }
        // the numbers of one evaluation agree with each other
        for (what, k, v) in [
            ("rank1", 1, Some(e.rank1)),
            ("rank5", 5, e.rank5),
            ("rank10", 10, e.rank10),
        ] {
            if let (Some(v), Some(c)) = (v, e.cmc.get(k - 1)) {
                if (v - c).abs() > 1e-9 {
                    return Err(format!(
                        "{at}.{what} = {v} but {at}.cmc[{}] = {c}: the CMC curve at rank {k} is \
                         rank-{k} accuracy",
                        k - 1
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Measured inference time of one batch, in ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch32: Option<f64>,
}

/// What a training run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
}

/// `metrics.json`. A grid cell has every field; a single `train` run has no scenario,
/// criterion or level, a `prune` run no scenario (readers fill them in, see the report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub experiment: String,
    /// The re-ID target the run's grid trained on (several-target experiments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dataset: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scenario: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criterion: String,
    /// `C1`, `full`, or a prune command's numeric level (written as a string; older files
    /// with a number are read too).
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "String::is_empty"
    )]
    pub level: String,
    /// What the level is a fraction of (`flops`, `params`, `channels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub backbone: String,
    /// SHA-256 of the model this one was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Backbone multiply-adds at the run's input size, and parameters.
    pub macs: u64,
    pub params: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_channel_fraction: Option<f64>,
    /// Per device (`cpu`, `cuda:0`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_ms: BTreeMap<String, Latency>,
    /// Per dataset label; cross-domain results are keyed `<label>-cross`, re-ranked ones
    /// `<label>+rerank`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval: BTreeMap<String, EvalEntry>,
    /// The same cell trained again under other seeds (an experiment's `seeds`): by seed, the
    /// evaluations keyed as `eval` is, for mean ± sd over seeds beside the bootstrap interval.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seed_evals: BTreeMap<u64, BTreeMap<String, EvalEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_version: Option<String>,
    /// The data the model was made from, by role → the fingerprint of the images the dataset
    /// lists: a grid cell's `source`, `target`, `cross` (as in the experiment's
    /// [`EXPERIMENT_DATA_FILE`] when the cell was written), a training run's [`TRAIN_DATA`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// The sha256 of the model every evaluation here is of, where the folder holds no model of
    /// its own (`reid-eval --out` elsewhere): results of another model are refused, not merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Null => String::new(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "level must be a string or a number, got {other}"
            )))
        }
    })
}

/// Beyond any ResNet these tools build (ResNet-152 at 2048×1024 is ~1e12 MACs, 6e7 parameters).
const MAX_MACS: u64 = 10_000_000_000_000;
const MAX_PARAMS: u64 = 10_000_000_000;

impl RunMetrics {
    /// Display name of the model: its criterion, or the backbone for baselines (and for runs
    /// with criterion `none`).
    pub fn model_name(&self) -> String {
        if self.scenario == "baseline" || self.criterion == "none" {
            self.backbone.clone()
        } else {
            self.criterion.clone()
        }
    }

    /// Every number where it can be: fractions in [0, 1], CMC never decreasing, counts
    /// plausible, times finite and positive. The message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, e) in &self.eval {
            e.validate(&format!("eval.{name}"))?;
        }
        for (seed, evals) in &self.seed_evals {
            for (name, e) in evals {
                e.validate(&format!("seed_evals.{seed}.{name}"))?;
            }
        }
        if let Some(f) = self.kept_channel_fraction {
            fraction("kept_channel_fraction".into(), f)?;
        }
        for (what, v) in [("macs", Some(self.macs)), ("macs_before", self.macs_before)] {
            if let Some(v) = v.filter(|&v| v == 0 || v > MAX_MACS) {
                return Err(format!("{what} = {v} is not a plausible count"));
            }
        }
        for (what, v) in [
            ("params", Some(self.params)),
            ("params_before", self.params_before),
        ] {
            if let Some(v) = v.filter(|&v| v == 0 || v > MAX_PARAMS) {
                return Err(format!("{what} = {v} is not a plausible count"));
            }
        }
        for (device, l) in &self.latency_ms {
            for (what, v) in [("batch1", l.batch1), ("batch32", l.batch32)] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(format!(
                        "latency_ms.{device}.{what} = {v} is not a positive time"
                    ));
                }
            }
        }
        if self.backbone.is_empty() {
            return Err("backbone is empty".into());
        }
        Ok(())
    }
}

/// Read a JSON file of type `T` and check it; errors name the file, and say it is not a `what`.
pub(crate) fn read_checked_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    check: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| RunFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| RunFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let v: T = serde_json::from_str(&text).map_err(|e| invalid(format!("not a {what}: {e}")))?;
    check(&v).map_err(invalid)?;
    Ok(v)
}

/// Read and check a `metrics.json`.
pub fn read_metrics(path: &Path) -> Result<RunMetrics> {
    read_checked_json(
        path,
        "metrics.json of reid-run's format",
        RunMetrics::validate,
    )
}

/// Check and write a `metrics.json` atomically.
pub fn write_metrics(path: &Path, m: &RunMetrics) -> Result<()> {
    let invalid = |message: String| RunFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    m.validate()
        .map_err(|e| invalid(format!("refusing to write metrics: {e}")))?;
    let text = serde_json::to_string_pretty(m).map_err(|e| invalid(e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// A run's config, beside its results.
pub const CONFIG_FILE: &str = "config.toml";

/// The experiment config a grid writes at the top of its output folder (each cell's
/// [`CONFIG_FILE`] is a copy of it when the cell was written).
pub const EXPERIMENT_FILE: &str = "experiment.toml";

/// The key of a training run's data in [`RunMetrics::data`] (a grid cell's are `source`,
/// `target`, `cross`).
pub const TRAIN_DATA: &str = "train";

/// What an experiment config computes, as a table: without the fields that change no result
/// (`checkpoint_interval_s`; `out`, the folder it is read in, however it is spelled) and with
/// the device as its kind (workers on `cuda:0` and `cuda:1` run one grid). The grid's claim on
/// its folder and the report's stale-cell check compare configs through it.
pub fn experiment_view(config: &toml::Table) -> toml::Table {
    let mut v = config.clone();
    v.remove("checkpoint_interval_s");
    v.remove("out");
    if let Some(toml::Value::String(d)) = v.get("device") {
        if let Ok(spec) = d.parse::<crate::DeviceSpec>() {
            v.insert("device".into(), toml::Value::String(spec.kind().into()));
        }
    }
    v
}

/// Beside [`EXPERIMENT_FILE`]: the fingerprints of the data the grid read, by role (`source`,
/// `target`, `cross`), a JSON object. With the config, it says what every current cell was
/// computed from: a cell whose `data` differs is left from before the data changed.
pub const EXPERIMENT_DATA_FILE: &str = "experiment-data.json";

/// The files a run writes in its folder (train, prune, export, reid-eval, the ONNX check, and a
/// grid step's markers).
pub const RUN_FILES: [&str; 15] = [
    CONFIG_FILE,
    "sensitivity.json",
    crate::ranks::RANKS_FILE,
    "model.safetensors",
    "trainer_state.safetensors",
    "metrics.json",
    crate::stats::PER_QUERY_FILE,
    "log.jsonl",
    crate::deploy::DEPLOY_FILE,
    "pruned.safetensors",
    "unpruned.safetensors",
    "model.onnx",
    "features.safetensors",
    "DONE",
    "step.json",
];

/// The largest per-query or ranked-list file read (MSMT17's 11 659 queries take a few MiB).
const MAX_LABELLED_FILE: u64 = 256 << 20;

/// The text of `path` when it is a regular file of at most `max` bytes: a FIFO would block the
/// reader, a device or a huge file exhaust its memory (`what` names the content in the error).
pub(crate) fn read_regular_file(path: &Path, max: u64, what: &str) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| RunFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() || meta.len() > max {
        return Err(RunFileError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "not {what}: expected a regular file of at most {} MiB",
                max >> 20
            ),
        });
    }
    std::fs::read_to_string(path).map_err(|source| RunFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Where `--overwrite` keeps the replaced run until the new one has succeeded.
pub const REPLACED_DIR: &str = ".replaced";

/// The folders a run makes inside its own: a prune's retraining runs (by its method's rule).
pub const RUN_SUBFOLDERS: [&str; 3] = ["retrain", "regularised", "soft"];

/// `step01`, `step02`, …: an iterative prune's steps.
fn is_step_folder(name: &str) -> bool {
    name.strip_prefix("step")
        .is_some_and(|n| n.len() >= 2 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A run folder: where its files are and how they are written.
#[derive(Clone, Debug)]
pub struct RunFolder {
    dir: PathBuf,
}

impl RunFolder {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }
    /// Whether the folder holds a run (its config, model, trainer state or metrics): a fresh
    /// run into it would replace that run.
    pub fn holds_run(&self) -> bool {
        [
            CONFIG_FILE,
            "model.safetensors",
            "trainer_state.safetensors",
            "metrics.json",
        ]
        .iter()
        .any(|f| self.dir.join(f).exists())
    }

    /// The entries of the folder that the tools wrote ([`RUN_FILES`], [`RUN_SUBFOLDERS`], a
    /// prune's `stepNN` folders): what a run consists of. A user's own files are not among them.
    pub fn run_entries(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ours: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    // a folder of that name that holds no run files is the user's own
                    (RUN_SUBFOLDERS.contains(&name.as_str()) || is_step_folder(&name))
                        && RUN_FILES.iter().any(|f| e.path().join(f).exists())
                } else {
                    RUN_FILES.contains(&name.as_str())
                }
            })
            .map(|e| e.path())
            .collect();
        ours.sort();
        ours
    }

    /// Whether `path` (links resolved) is one of this folder's run entries or lies inside one:
    /// a file that `--overwrite` would take away from under the run that reads it.
    pub fn owns(&self, path: &Path) -> bool {
        let (Ok(file), Ok(dir)) = (path.canonicalize(), self.dir.canonicalize()) else {
            return false;
        };
        self.run_entries().iter().any(|e| {
            e.canonicalize()
                .is_ok_and(|e| file == e || file.starts_with(&e))
        }) && file.starts_with(dir)
    }

    /// Start replacing the folder's run (`--overwrite`): its entries move into [`REPLACED_DIR`],
    /// so that nothing of the old run is left beside the new one, yet a failing new run can put
    /// it back ([`Replacement::restore`]); [`Replacement::commit`] deletes it once the new run
    /// has succeeded. A replacement left by a killed process is restored first.
    /// A run in the folder has finished: a replaced run still kept aside (its replacement was
    /// interrupted, then resumed to the end) goes for good, so that no later failure can bring
    /// it back over the finished one.
    pub fn discard_replaced(&self) -> Result<()> {
        let keep = self.dir.join(REPLACED_DIR);
        if keep.is_dir() {
            std::fs::remove_dir_all(&keep)
                .map_err(|source| RunFileError::Write { path: keep, source })?;
        }
        Ok(())
    }

    /// Per-query results and ranked lists start afresh (a new model's evaluations must not sit
    /// beside an earlier model's under other labels).
    pub fn reset_per_query(&self) -> Result<()> {
        for file in [crate::stats::PER_QUERY_FILE, crate::ranks::RANKS_FILE] {
            let path = self.dir.join(file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RunFileError::Write { path, source: e })
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn begin_replace(&self) -> Result<Replacement> {
        let keep = self.dir.join(REPLACED_DIR);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunFileError::Write { path, source }
        };
        if keep.is_dir() {
            // a killed replacement: the old run was never replaced by a finished one
            Replacement::of(self).restore()?;
        }
        std::fs::create_dir_all(&keep).map_err(io(&keep))?;
        for e in self.run_entries() {
            let to = keep.join(e.file_name().unwrap_or_default());
            std::fs::rename(&e, &to).map_err(io(&e))?;
        }
        Ok(Replacement::of(self))
    }
    /// The resolved config, as TOML.
    pub fn write_config<T: Serialize>(&self, config: &T) -> Result<()> {
        let path = self.config_path();
        let text = toml::to_string_pretty(config).map_err(|e| RunFileError::Invalid {
            path: path.clone(),
            message: format!("cannot serialise the config: {e}"),
        })?;
        write_atomic(&path, text.as_bytes())
    }
    pub fn write_metrics(&self, m: &RunMetrics) -> Result<()> {
        write_metrics(&self.metrics_path(), m)
    }
    /// Per-query results by evaluation label ([`crate::stats::PER_QUERY_FILE`]); empty when
    /// the folder has none.
    pub fn read_per_query(&self) -> Result<BTreeMap<String, crate::stats::PerQuery>> {
        self.read_labelled(
            crate::stats::PER_QUERY_FILE,
            "per-query results",
            crate::stats::PerQuery::validate,
        )
    }

    /// Store per-query results under `label`, keeping the other labels'.
    pub fn write_per_query(&self, label: &str, q: &crate::stats::PerQuery) -> Result<()> {
        self.write_labelled(
            crate::stats::PER_QUERY_FILE,
            "per-query results",
            crate::stats::PerQuery::validate,
            label,
            q,
        )
    }

    /// The ranked lists by evaluation label ([`crate::ranks::RANKS_FILE`]); empty when the
    /// folder has none.
    pub fn read_ranks(&self) -> Result<BTreeMap<String, crate::ranks::Ranks>> {
        self.read_labelled(
            crate::ranks::RANKS_FILE,
            "ranked lists",
            crate::ranks::Ranks::validate,
        )
    }

    /// Store ranked lists under `label`, keeping the other labels'.
    pub fn write_ranks(&self, label: &str, r: &crate::ranks::Ranks) -> Result<()> {
        self.write_labelled(
            crate::ranks::RANKS_FILE,
            "ranked lists",
            crate::ranks::Ranks::validate,
            label,
            r,
        )
    }

    /// A JSON object of `what` by evaluation label in `file`, each checked by `validate`.
    fn read_labelled<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
        what: &str,
        validate: fn(&T) -> std::result::Result<(), String>,
    ) -> Result<BTreeMap<String, T>> {
        let path = self.dir.join(file);
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let text = read_regular_file(&path, MAX_LABELLED_FILE, what)?;
        let m: BTreeMap<String, T> =
            serde_json::from_str(&text).map_err(|e| RunFileError::Invalid {
                path: path.clone(),
                message: format!("not {what}: {e}"),
            })?;
        for (label, v) in &m {
            validate(v).map_err(|e| RunFileError::Invalid {
                path: path.clone(),
                message: format!("{label}: {e}"),
            })?;
        }
        Ok(m)
    }

    /// `value` under `label` in `file` (checked first), keeping the other labels'.
    fn write_labelled<T: serde::de::DeserializeOwned + Serialize + Clone>(
        &self,
        file: &str,
        what: &str,
        validate: fn(&T) -> std::result::Result<(), String>,
        label: &str,
        value: &T,
    ) -> Result<()> {
        let path = self.dir.join(file);
        validate(value).map_err(|e| RunFileError::Invalid {
            path: path.clone(),
            message: format!("refusing to write {label}: {e}"),
        })?;
        let mut all = self.read_labelled(file, what, validate)?;
        all.insert(label.to_string(), value.clone());
        let text = serde_json::to_string(&all).map_err(|e| RunFileError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, text.as_bytes())
    }

    /// The folder's metrics, `None` when it has none yet.
    pub fn read_metrics(&self) -> Result<Option<RunMetrics>> {
        let path = self.metrics_path();
        if !path.exists() {
            return Ok(None);
        }
        read_metrics(&path).map(Some)
    }
}

/// A run being replaced: the old run's entries wait in [`REPLACED_DIR`] (see
/// [`RunFolder::begin_replace`]). Dropped without [`Self::commit`] (an error returned early),
/// it restores the old run.
#[must_use = "commit the replacement once the new run has succeeded"]
pub struct Replacement {
    dir: RunFolder,
    settled: bool,
}

impl Replacement {
    fn of(dir: &RunFolder) -> Self {
        Self {
            dir: dir.clone(),
            settled: false,
        }
    }

    /// The new run succeeded: the old one goes for good.
    pub fn commit(mut self) -> Result<()> {
        self.settled = true;
        let keep = self.dir.dir.join(REPLACED_DIR);
        std::fs::remove_dir_all(&keep).map_err(|source| RunFileError::Write { path: keep, source })
    }

    /// The new run stopped unfinished (interrupted, resumable): the old run stays aside in
    /// [`REPLACED_DIR`] — gone once a resume finishes the new one, back if a later replacement
    /// fails first.
    pub fn keep_aside(mut self) {
        self.settled = true;
    }

    /// The new run failed: what it wrote goes, and the old run comes back as it was.
    pub fn restore(mut self) -> Result<()> {
        self.settled = true;
        self.put_back()
    }

    fn put_back(&self) -> Result<()> {
        let keep = self.dir.dir.join(REPLACED_DIR);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunFileError::Write { path, source }
        };
        for e in self.dir.run_entries() {
            if e.is_dir() {
                std::fs::remove_dir_all(&e).map_err(io(&e))?;
            } else {
                std::fs::remove_file(&e).map_err(io(&e))?;
            }
        }
        if let Ok(entries) = std::fs::read_dir(&keep) {
            for e in entries.flatten() {
                let to = self.dir.dir.join(e.file_name());
                std::fs::rename(e.path(), &to).map_err(io(&to))?;
            }
        }
        std::fs::remove_dir_all(&keep).map_err(io(&keep))
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.settled {
            if let Err(e) = self.put_back() {
                eprintln!(
                    "{}: could not restore the replaced run: {e}",
                    self.dir.dir.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_replacement_puts_the_old_run_back_and_a_committed_one_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let f = RunFolder::new(tmp.path());
        std::fs::create_dir_all(tmp.path().join("step01")).unwrap();
        std::fs::write(tmp.path().join("step01/pruned.safetensors"), "old").unwrap();
        for name in ["model.safetensors", "metrics.json", "notes.txt"] {
            std::fs::write(tmp.path().join(name), "old").unwrap();
        }
        let listing = || {
            let mut v: Vec<String> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = listing();
        {
            let _r = f.begin_replace().unwrap();
            assert_eq!(listing(), [".replaced", "notes.txt"]);
            std::fs::write(tmp.path().join("model.safetensors"), "new, half").unwrap();
            // dropped: an error returned early
        }
        assert_eq!(listing(), before);
        assert_eq!(
            std::fs::read(tmp.path().join("model.safetensors")).unwrap(),
            b"old"
        );
        let r = f.begin_replace().unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), "new").unwrap();
        r.commit().unwrap();
        assert_eq!(listing(), ["model.safetensors", "notes.txt"]);
        assert!(f.owns(&tmp.path().join("model.safetensors")));
        // kept aside (interrupted), then the new run finished: a later failing replacement
        // brings back the finished run, not the one replaced before it
        std::fs::write(tmp.path().join("model.safetensors"), "B, half").unwrap();
        f.begin_replace().unwrap().keep_aside();
        std::fs::write(tmp.path().join("model.safetensors"), "C, finished").unwrap();
        f.discard_replaced().unwrap();
        drop(f.begin_replace().unwrap());
        assert_eq!(
            std::fs::read(tmp.path().join("model.safetensors")).unwrap(),
            b"C, finished"
        );
        // a folder named like a tool's that holds no run files is the user's own
        std::fs::create_dir_all(tmp.path().join("retrain")).unwrap();
        std::fs::write(tmp.path().join("retrain/notes.txt"), "mine").unwrap();
        f.begin_replace().unwrap().commit().unwrap();
        assert!(tmp.path().join("retrain/notes.txt").exists());
        assert!(!f.owns(&tmp.path().join("notes.txt")));
    }

    fn sample() -> RunMetrics {
        RunMetrics {
            scenario: "S1".into(),
            criterion: "l1".into(),
            level: "C1".into(),
            backbone: "resnet50".into(),
            macs: 10,
            params: 5,
            latency_ms: BTreeMap::from([(
                "cpu".to_string(),
                Latency {
                    batch1: Some(1.0),
                    batch32: Some(20.0),
                },
            )]),
            eval: BTreeMap::from([(
                "market1501".to_string(),
                EvalEntry {
                    map: 0.5,
                    rank1: 0.7,
                    cmc: vec![0.7, 0.8],
                    ..Default::default()
                },
            )]),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_and_older_numeric_levels() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::new(dir.path());
        assert_eq!(f.read_metrics().unwrap(), None);
        f.write_metrics(&sample()).unwrap();
        assert_eq!(f.read_metrics().unwrap(), Some(sample()));
        let seeded = RunMetrics {
            seed_evals: BTreeMap::from([(7, sample().eval)]),
            ..sample()
        };
        f.write_metrics(&seeded).unwrap();
        assert_eq!(f.read_metrics().unwrap(), Some(seeded));
        let old: RunMetrics =
            serde_json::from_str(r#"{"backbone":"resnet18","level":0.5,"macs":1,"params":1}"#)
                .unwrap();
        assert_eq!(old.level, "0.5");
    }

    #[test]
    fn out_of_range_numbers_are_refused_on_write_and_read_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = RunFolder::new(dir.path());
        type Change = Box<dyn Fn(&mut RunMetrics)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|m| m.eval.get_mut("market1501").unwrap().map = f64::NAN),
                "eval.market1501.mAP",
            ),
            (
                Box::new(|m| m.eval.get_mut("market1501").unwrap().rank5 = Some(-3.0)),
                "rank5",
            ),
            (
                Box::new(|m| m.eval.get_mut("market1501").unwrap().cmc = vec![0.9, 0.8]),
                "decreases",
            ),
            (
                Box::new(|m| {
                    let mut e = m.eval["market1501"].clone();
                    e.rank1 = 1.5;
                    m.seed_evals = BTreeMap::from([(2, BTreeMap::from([("tgt".into(), e)]))]);
                }),
                "seed_evals.2.tgt.rank1",
            ),
            (
                Box::new(|m| m.eval.get_mut("market1501").unwrap().rank1 = 0.5),
                "eval.market1501.rank1 = 0.5 but eval.market1501.cmc[0] = 0.7",
            ),
            (Box::new(|m| m.macs = u64::MAX), "macs"),
            (Box::new(|m| m.params = 0), "params"),
            (
                Box::new(|m| m.latency_ms.get_mut("cpu").unwrap().batch32 = Some(f64::INFINITY)),
                "batch32",
            ),
        ];
        f.write_metrics(&sample()).unwrap();
        for (change, field) in cases {
            let mut m = sample();
            change(&mut m);
            let e = f.write_metrics(&m).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
            // the good file is still there
            assert_eq!(f.read_metrics().unwrap(), Some(sample()));
        }
        std::fs::write(
            f.metrics_path(),
            r#"{"backbone":"r","macs":1,"params":1,"eval":{"x":{"mAP":7,"rank1":0.1}}}"#,
        )
        .unwrap();
        let e = f.read_metrics().unwrap_err().to_string();
        assert!(
            e.contains("metrics.json") && e.contains("eval.x.mAP = 7"),
            "{e}"
        );
    }
}
