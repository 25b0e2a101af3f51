//! reid-prune: pruning criteria, strategies, channel surgery and the experiment runner.
//! This first part holds the complexity report shared by the `flops` command and the default run.

pub mod config_file;
pub mod criterion;
pub mod default_run;
pub mod error;
pub mod flops;
pub mod prune_run;
pub mod scenario;
pub mod step_lock;
pub mod strategy;
pub mod surgery;
pub mod training;
