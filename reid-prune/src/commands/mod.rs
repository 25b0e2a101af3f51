//! The subcommands of `reid-prune`, one module each (`Args` + `run`).

pub mod data;
pub mod experiment;
pub mod export;
pub mod flops;
pub mod prune;
pub mod scores;
pub mod signals;
pub mod slurm;
pub mod synth;
pub mod train;

pub use reid_prune::method::method_values;
