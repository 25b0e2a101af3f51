//! The grid as a graph of steps, built from the experiment's config and its data's fingerprints
//! alone: each step's work, key, parents and action, and the rows (cells) whose models and
//! evaluations are steps of it. Building reads no step folder and writes nothing; planning reads
//! the steps' states from disk ([`StepGraph::planned`]) and the runner executes the same graph.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use reid_model::checkpoint::file_sha256;
use reid_train::{RunConfig, Task};
use serde::Serialize;

use super::config::{DataRef, ExperimentConfig};
use super::scenarios;
use crate::prune_run::PruneConfig;
use crate::strategy::TargetKind;
use reid_run::Scenario;

/// Version of what the steps compute: bump it when a change alters a step's result (training
/// numerics, pruning rules), so that old finished steps are not reused. 2: the stem max pool's
/// gradient goes to the first maximum (session 2). 3: stride-1 conv input gradients as a
/// flipped-kernel conv, lane-wise BN reductions (float rounding), channels-last latency (session 3).
/// 4: Taylor scores from chunks of 8 images (float rounding can reorder near-ties; session 4).
/// 5: keys are the hash of each step's full resolved config and its parents' keys (session 5).
/// 6: keys hold the fingerprint of the data each step reads (session 6). 7: that fingerprint
/// covers the images the dataset lists, not every file under its root (session 17).
const STEP_ENGINE: u32 = 7;

/// A step's folder and key (the hash in its folder name).
#[derive(Clone, Debug)]
pub struct StepOut {
    pub dir: PathBuf,
    pub key: String,
    /// Its index in the graph's steps.
    pub(crate) node: usize,
}

impl StepOut {
    /// The model a training or pruning step writes.
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
}

/// What a step does when it runs, in its folder.
pub enum Action {
    /// Train with this config (its `out` is the step's folder).
    Train(Box<RunConfig>),
    /// Prune and retrain with this config (its `out` is the step's folder).
    Prune(Box<PruneConfig>),
    /// Evaluate `model` on `data`: `eval.json` and the per-query results.
    Eval { model: PathBuf, data: DataRef },
}

/// One step of the graph.
pub struct Step {
    pub out: StepOut,
    /// Folder name under `steps/`: `<kind>-<key>`.
    pub name: String,
    pub kind: &'static str,
    /// What it computes, in words (`prune l1 0.500 on source`).
    pub what: String,
    /// What its key hashes (written to its `step.json`).
    pub key: serde_json::Value,
    /// Indices of the steps whose results it reads.
    pub parents: Vec<usize>,
    pub action: Action,
    /// The first cell it is computed for (`S1/l1-C1`, `baseline/resnet18-full seed 1`); a step
    /// shared by several cells runs once, for the first.
    pub cell: String,
}

/// A model's evaluation steps: on the target, and on the cross set when there is one.
#[derive(Clone, Copy, Debug)]
pub struct Evals {
    pub target: usize,
    pub cross: Option<usize>,
}

impl Evals {
    fn nodes(&self) -> impl Iterator<Item = usize> {
        std::iter::once(self.target).chain(self.cross)
    }
}

/// One row of the grid: a cell's names, the step of its model and its evaluations.
pub struct Row {
    pub scenario: String,
    pub criterion: String,
    pub level: String,
    pub model: usize,
    pub evals: Evals,
    /// The same cell under the experiment's other seeds (key cells only).
    pub seed_evals: BTreeMap<u64, Evals>,
}

impl Row {
    /// The steps its cell reads under the experiment's seed: its model and evaluations.
    fn needs(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.model).chain(self.evals.nodes())
    }
}

/// Every step of one target's grid, shared steps once, parents before children; the rows in
/// the order their cells are made (the fine-tuned unpruned model first).
pub struct StepGraph {
    pub steps: Vec<Step>,
    pub rows: Vec<Row>,
    /// Cells the grid leaves out, and why (for the log).
    pub notes: Vec<String>,
}

/// The fingerprint of the images each dataset lists, by (loader name, root).
pub type Fingerprints = HashMap<(String, PathBuf), String>;

/// Where a step stands, as a plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    /// Finished (`DONE`): reused.
    Done,
    /// Being computed now (its lock is held: see [`PlannedStep::owner`]).
    Running,
    /// Started by a run that did not finish and nobody holds: the next worker resumes it from
    /// its checkpoint.
    Started,
    /// Not started, every parent finished: a worker can take it now.
    Ready,
    /// Not started, waiting for a parent.
    Waiting,
}

/// One step of a grid, listed without running it.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// Folder name under `steps/`: `<kind>-<key>`.
    pub name: String,
    pub kind: String,
    /// What it computes, in words (`prune l1 0.500 on source`).
    pub what: String,
    /// Folder names of the steps whose models it starts from.
    pub parents: Vec<String>,
    /// The first cell it is computed for.
    pub cell: String,
    pub state: StepState,
    /// Who computes it, when it is running (`pid 123 on node7 (claimed 40 s ago)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl StepGraph {
    /// The grid of `cfg` (validated), its steps kept in `steps_dir`.
    pub fn build(
        cfg: &ExperimentConfig,
        fingerprints: &Fingerprints,
        steps_dir: &Path,
    ) -> Result<StepGraph> {
        let mut b = Builder {
            cfg: cfg.clone(),
            fingerprints,
            steps_dir,
            steps: Vec::new(),
            by_name: HashMap::new(),
        };
        let mut notes = Vec::new();
        let jobs = jobs(cfg, &mut notes)?;
        let pre = b.pretrain(&cfg.arch)?;
        let tuned = b.finetune(&pre)?;
        let mut rows = vec![b.row("baseline", &cfg.arch, "full", &tuned)?];
        for job in &jobs {
            let model = b.job_model(job, &pre, &tuned)?;
            let (scenario, criterion, level) = job.names(cfg);
            rows.push(b.row(scenario, &criterion, &level, &model)?);
        }
        // the key cells again under the other seeds: the unpruned model, the baselines and every
        // scenario × criterion at the smallest level, from the one pre-trained model
        let smallest = cfg.levels.values().copied().fold(f64::INFINITY, f64::min);
        for seed in cfg.seeds.iter().copied().filter(|&s| s != cfg.seed) {
            b.cfg.seed = seed;
            b.cfg.pretrain_seed = Some(cfg.pretrain_seed.unwrap_or(cfg.seed));
            let pre = b.pretrain(&cfg.arch)?;
            let tuned = b.finetune(&pre)?;
            let evals = b.evals(&tuned)?;
            rows[0].seed_evals.insert(seed, evals);
            for (i, job) in jobs.iter().enumerate() {
                let key = match job {
                    Job::Source => false,
                    Job::Baseline(_) | Job::Scratch => true,
                    Job::Cell { level, .. } => *level == smallest,
                };
                if key {
                    let model = b.job_model(job, &pre, &tuned)?;
                    let evals = b.evals(&model)?;
                    rows[i + 1].seed_evals.insert(seed, evals);
                }
            }
        }
        let mut steps = b.steps;
        // each step's first cell, in the order the runner makes them: every row's own seed,
        // then the other seeds' rows
        let mut claims: Vec<(usize, String)> = Vec::new();
        for r in &rows {
            let name = format!("{}/{}-{}", r.scenario, r.criterion, r.level);
            claims.extend(r.needs().map(|n| (n, name.clone())));
        }
        for seed in rows[0].seed_evals.keys() {
            for r in rows.iter() {
                if let Some(e) = r.seed_evals.get(seed) {
                    let name = format!("{}/{}-{} seed {seed}", r.scenario, r.criterion, r.level);
                    claims.extend(e.nodes().map(|n| (n, name.clone())));
                }
            }
        }
        for (node, name) in claims {
            let mut stack = vec![node];
            while let Some(n) = stack.pop() {
                if steps[n].cell.is_empty() {
                    steps[n].cell = name.clone();
                    stack.extend(steps[n].parents.iter().copied());
                }
            }
        }
        Ok(StepGraph { steps, rows, notes })
    }

    /// Every step with its state on disk now (nothing is written).
    pub fn planned(&self) -> Vec<PlannedStep> {
        self.steps
            .iter()
            .map(|s| {
                let dir = &s.out.dir;
                let done = dir.join("DONE").is_file();
                let owner = (!done)
                    .then(|| reid_run::lock::running_holder(dir))
                    .flatten();
                let state = if done {
                    StepState::Done
                } else if owner.is_some() {
                    StepState::Running
                } else if dir.join("step.json").is_file() {
                    StepState::Started
                } else if s
                    .parents
                    .iter()
                    .all(|&p| self.steps[p].out.dir.join("DONE").is_file())
                {
                    StepState::Ready
                } else {
                    StepState::Waiting
                };
                PlannedStep {
                    name: s.name.clone(),
                    kind: s.kind.to_string(),
                    what: s.what.clone(),
                    parents: s
                        .parents
                        .iter()
                        .map(|&p| self.steps[p].name.clone())
                        .collect(),
                    cell: s.cell.clone(),
                    state,
                    owner: owner.map(|h| h.to_string()),
                }
            })
            .collect()
    }
}

/// One row of the grid after the unpruned model.
enum Job {
    /// The source model before fine-tuning: how much the domain shift costs.
    Source,
    Baseline(String),
    /// `arch` trained on the target alone.
    Scratch,
    Cell {
        scenario: Scenario,
        criterion: String,
        level_name: String,
        level: f64,
    },
}

impl Job {
    /// The row's (scenario, criterion, level) names.
    fn names(&self, cfg: &ExperimentConfig) -> (&'static str, String, String) {
        match self {
            Job::Source => ("source", cfg.arch.clone(), "full".into()),
            Job::Baseline(b) => ("baseline", b.clone(), "full".into()),
            Job::Scratch => ("scratch", cfg.arch.clone(), "full".into()),
            Job::Cell {
                scenario,
                criterion,
                level_name,
                ..
            } => (scenario.name(), criterion.clone(), level_name.clone()),
        }
    }
}

/// The grid's rows after the unpruned model, in order; the cells left out are noted.
fn jobs(cfg: &ExperimentConfig, notes: &mut Vec<String>) -> Result<Vec<Job>> {
    let mut jobs = vec![Job::Source];
    jobs.extend(cfg.baselines.iter().cloned().map(Job::Baseline));
    if cfg.scratch {
        jobs.push(Job::Scratch);
    }
    for scenario in &cfg.scenarios {
        for criterion in &cfg.criteria {
            let method = criterion.entry();
            if method.not_in.contains(scenario) {
                notes.push(format!(
                    "{scenario} {criterion}: not applicable (the paper's Table 6 marks it N/A)"
                ));
                continue;
            }
            if cfg.residual_groups && !method.residual_groups {
                notes.push(format!(
                    "{scenario} {criterion}: skipped (its training-time rule acts on branch convs, not residual groups)"
                ));
                continue;
            }
            for (lname, &level) in &cfg.levels {
                jobs.push(Job::Cell {
                    scenario: *scenario,
                    criterion: criterion.to_string(),
                    level_name: lname.clone(),
                    level,
                });
            }
        }
    }
    Ok(jobs)
}

/// Adds steps (a step already there is returned, not added twice).
struct Builder<'a> {
    /// The config the steps are made from (its seed changes for the other seeds' rows).
    cfg: ExperimentConfig,
    fingerprints: &'a Fingerprints,
    steps_dir: &'a Path,
    steps: Vec<Step>,
    by_name: HashMap<String, usize>,
}

impl Builder<'_> {
    fn fingerprint(&self, data: &DataRef) -> Result<String> {
        self.fingerprints
            .get(&(data.dataset.clone(), data.root.clone()))
            .cloned()
            .with_context(|| {
                format!(
                    "the {} dataset in {} was not fingerprinted before the grid was built",
                    data.dataset,
                    data.root.display()
                )
            })
    }

    /// The step that computes `work` from `parents`: its key is the hash of `work` (a result
    /// view, [`reid_run::step_key`]), the parents' keys and [`STEP_ENGINE`].
    fn add(
        &mut self,
        kind: &'static str,
        what: String,
        work: serde_json::Value,
        parents: &[&StepOut],
        action: Action,
    ) -> StepOut {
        let key = serde_json::json!({
            "kind": kind,
            "work": work,
            "parents": parents.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
            "engine": STEP_ENGINE,
        });
        let hash = reid_run::step_key::key_hash(&key);
        let name = format!("{kind}-{hash}");
        if let Some(&i) = self.by_name.get(&name) {
            return self.steps[i].out.clone();
        }
        let out = StepOut {
            dir: self.steps_dir.join(&name),
            key: hash,
            node: self.steps.len(),
        };
        self.by_name.insert(name.clone(), out.node);
        self.steps.push(Step {
            out: out.clone(),
            name,
            kind,
            what,
            key,
            parents: parents.iter().map(|p| p.node).collect(),
            action,
            cell: String::new(),
        });
        out
    }

    /// A training step: `rc` resolved, its starting model (if any) the parent's.
    fn train(
        &mut self,
        kind: &'static str,
        what: String,
        mut rc: RunConfig,
        parent: Option<&StepOut>,
        extra: Option<serde_json::Value>,
    ) -> Result<StepOut> {
        rc.init_checkpoint = parent.map(StepOut::model);
        let mut work = rc.result_view()?;
        let data = self.fingerprint(&DataRef {
            dataset: rc.dataset.clone(),
            root: rc.root.clone(),
            name: None,
        })?;
        if let serde_json::Value::Object(m) = &mut work {
            m.insert("data_fingerprint".into(), data.into());
            // the starting model is known by its parent's key (its path is where the steps live)
            m.remove("init_checkpoint");
            if let Some(e) = extra {
                m.insert("inputs".into(), e);
            }
        }
        let parents: Vec<&StepOut> = parent.into_iter().collect();
        Ok(self.add(kind, what, work, &parents, Action::Train(Box::new(rc))))
    }

    /// Pre-train `arch` on the source (classification), or load ImageNet weights.
    fn pretrain(&mut self, arch: &str) -> Result<StepOut> {
        let cfg = &self.cfg;
        let mut rc = cfg.run_config(
            &cfg.source,
            Task::Classify,
            cfg.pretrain_epochs,
            Path::new(""),
        );
        rc.arch = arch.to_string();
        rc.seed = cfg.pretrain_seed.unwrap_or(cfg.seed);
        rc.pretrained = cfg.pretrained.clone().filter(|_| arch == cfg.arch);
        // weights given as a file are known by their content, not their path
        let extra = match rc.pretrained.as_deref().map(Path::new) {
            Some(p) if p.is_file() => {
                Some(serde_json::json!({"pretrained_sha256": file_sha256(p)?}))
            }
            _ => None,
        };
        self.train("pretrain", format!("pretrain {arch}"), rc, None, extra)
    }

    /// Fine-tune `parent` on the target (re-ID).
    fn finetune(&mut self, parent: &StepOut) -> Result<StepOut> {
        self.train_on_target("finetune", "finetune on", Some(parent))
    }

    /// A fine-tuning-length re-ID training step on the target, from `parent` or from scratch
    /// (random initialisation).
    fn train_on_target(
        &mut self,
        kind: &'static str,
        what: &str,
        parent: Option<&StepOut>,
    ) -> Result<StepOut> {
        let cfg = &self.cfg;
        let rc = cfg.run_config(&cfg.target, Task::Reid, cfg.finetune_epochs, Path::new(""));
        let what = format!("{what} {}", cfg.target.label());
        self.train(kind, what, rc, parent, None)
    }

    /// `parent` pruned to `level` on the source (classification retraining) or the target.
    fn prune(
        &mut self,
        parent: &StepOut,
        criterion: &str,
        level: f64,
        on_source: bool,
    ) -> Result<StepOut> {
        let cfg = &self.cfg;
        let data = if on_source { &cfg.source } else { &cfg.target };
        let pc = PruneConfig {
            checkpoint: parent.model(),
            criterion: criterion.to_string(),
            level,
            target: TargetKind::Flops,
            allocation: cfg.allocation,
            round_to: cfg.round_to,
            residual_groups: cfg.residual_groups,
            input: cfg.input,
            dataset: Some(data.dataset.clone()),
            root: Some(data.root.clone()),
            score_images: 128,
            step: cfg.prune_step,
            retrain_epochs: cfg.retrain_epochs,
            retrain_lr: cfg.lr,
            batch_pk: cfg.batch_pk,
            retrain_task: if on_source {
                Task::Classify
            } else {
                Task::Reid
            },
            batch_size: cfg.batch_size,
            retrain_augment: cfg.augment,
            seed: cfg.seed,
            device: cfg.device,
            checkpoint_interval_s: cfg.checkpoint_interval_s,
            ..PruneConfig::default()
        };
        let mut work = pc.result_view()?;
        let fingerprint = self.fingerprint(data)?;
        if let serde_json::Value::Object(m) = &mut work {
            m.insert("data_fingerprint".into(), fingerprint.into());
            m.remove("checkpoint"); // the parent's key stands for it
            if let Some(fixed) = (crate::method::method(criterion)?.rule)(&pc).fixed_settings() {
                m.insert("method_settings".into(), fixed);
            }
        }
        let what = format!(
            "prune {criterion} {level:.3} on {}",
            if on_source { "source" } else { "target" }
        );
        Ok(self.add("prune", what, work, &[parent], Action::Prune(Box::new(pc))))
    }

    /// `model` evaluated on a re-ID set.
    fn evaluate(&mut self, model: &StepOut, data: &DataRef) -> Result<StepOut> {
        let work = serde_json::json!({
            "data": data.identity(),
            "data_fingerprint": self.fingerprint(data)?,
            "input": self.cfg.input,
        });
        let what = format!("evaluate on {}", data.label());
        let action = Action::Eval {
            model: model.model(),
            data: data.clone(),
        };
        Ok(self.add("eval", what, work, &[model], action))
    }

    /// `model` evaluated on the target and the cross set.
    fn evals(&mut self, model: &StepOut) -> Result<Evals> {
        let target = self.cfg.target.clone();
        let target = self.evaluate(model, &target)?.node;
        let cross = match self.cfg.cross.clone() {
            Some(c) => Some(self.evaluate(model, &c)?.node),
            None => None,
        };
        Ok(Evals { target, cross })
    }

    fn row(
        &mut self,
        scenario: &str,
        criterion: &str,
        level: &str,
        model: &StepOut,
    ) -> Result<Row> {
        Ok(Row {
            scenario: scenario.into(),
            criterion: criterion.into(),
            level: level.into(),
            model: model.node,
            evals: self.evals(model)?,
            seed_evals: BTreeMap::new(),
        })
    }

    /// The final model of a row.
    fn job_model(&mut self, job: &Job, pre: &StepOut, tuned: &StepOut) -> Result<StepOut> {
        Ok(match job {
            Job::Source => pre.clone(),
            Job::Scratch => self.train_on_target("scratch", "train from scratch on", None)?,
            Job::Baseline(b) => {
                let p = self.pretrain(b)?;
                self.finetune(&p)?
            }
            Job::Cell {
                scenario,
                criterion,
                level,
                ..
            } => {
                let mut steps = CellBuild {
                    builder: self,
                    source: pre,
                    tuned,
                };
                scenarios::recipe(*scenario)?.model(&mut steps, criterion, *level)?
            }
        })
    }
}

/// A cell's steps as its scenario's recipe sees them.
struct CellBuild<'a, 'b> {
    builder: &'a mut Builder<'b>,
    source: &'a StepOut,
    tuned: &'a StepOut,
}

impl scenarios::CellSteps for CellBuild<'_, '_> {
    fn source(&self) -> &StepOut {
        self.source
    }

    fn tuned(&self) -> &StepOut {
        self.tuned
    }

    fn prune(
        &mut self,
        from: &StepOut,
        criterion: &str,
        level: f64,
        on_source: bool,
    ) -> Result<StepOut> {
        self.builder.prune(from, criterion, level, on_source)
    }

    fn finetune(&mut self, from: &StepOut) -> Result<StepOut> {
        self.builder.finetune(from)
    }
}
