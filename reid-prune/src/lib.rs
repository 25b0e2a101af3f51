//! reid-prune: pruning criteria, strategies, channel surgery, resumable training and pruning
//! runs, and the experiment grid (steps cached by key, resumed mid-step after a crash, claimed
//! by one process at a time through `step_lock`). Config files are parsed and checked at the edge
//! (`config_file`, `ExperimentConfig::validate`, `RunConfig::validate`).

pub mod config_file;
pub mod criterion;
pub mod default_run;
pub mod error;
pub mod flops;
pub mod method;
pub mod prune_run;
pub mod scenario;
pub mod step_key;
pub mod step_lock;
pub mod strategy;
pub mod surgery;
pub mod training;
