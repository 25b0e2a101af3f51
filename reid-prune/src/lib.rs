//! reid-prune: a pruning library and the experiment application built on it.
//!
//! The library: pruning criteria (`criterion`, a registry: one file and one line a criterion),
//! methods (`method`: each criterion as cut-then-retrain, plus training-time rules that own their
//! retraining hooks), strategies (`strategy`: allocation, targets), channel surgery (`surgery`),
//! and resumable pruning runs (`prune_run`; training runs are reid-train's), with one error type
//! (`error::PruneError`: a refused request names its flag, a stop is its own variant, a failed
//! retraining keeps the training engine's causes).
//!
//! The application: the experiment grid (`grid`: the config schema, one file per scenario, steps
//! keyed by the hash of their resolved config and parents' keys, resumed mid-step after a crash,
//! claimed by one process at a time through `reid_run::lock` so that many workers share one grid,
//! the claims and the summary table, the Slurm job array), the default run (`default_run`) and
//! the `reid-prune` commands. Config files are parsed and checked at the edge (`config_file`,
//! `ExperimentConfig::validate` / `check_inputs`, `RunConfig::validate`); run folders are written
//! through `reid-run`.

pub mod config_file;
pub mod criterion;
pub mod default_run;
pub mod error;
pub mod flops;
pub mod grid;
pub mod method;
pub mod prune_run;
pub mod sensitivity;
pub mod strategy;
pub mod surgery;
