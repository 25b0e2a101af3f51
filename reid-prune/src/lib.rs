//! reid-prune: pruning criteria (`criterion`, a registry: one file and one line a criterion) and
//! methods (`method`: each criterion as cut-then-retrain, plus training-time rules that own their
//! retraining hooks), strategies, channel surgery, resumable training and pruning runs, and the
//! experiment grid (`scenario`: steps keyed by the hash of their resolved config and parents'
//! keys — `step_key` —, resumed mid-step after a crash, claimed by one process at a time through
//! `reid_run::lock`, so that many workers share one grid; `slurm` writes it as a Slurm job array).
//! Config files are parsed and checked at the edge (`config_file`, `ExperimentConfig::validate` /
//! `check_inputs`, `RunConfig::validate`); run folders are written through `reid-run`.

pub mod config_file;
pub mod criterion;
pub mod default_run;
pub mod error;
pub mod flops;
pub mod method;
pub mod prune_run;
pub mod scenario;
pub mod slurm;
pub mod step_key;
pub mod strategy;
pub mod surgery;
pub mod training;
