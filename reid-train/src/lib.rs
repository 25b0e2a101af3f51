//! reid-train: the training engine of the workspace.
//!
//! - the step ([`Trainer`], [`TrainConfig`], [`Task`]): one batch of re-ID fine-tuning (ID with
//!   label smoothing + batch-hard triplet, optional center loss) or source classification
//!   (cross-entropy), through the checkpointable optimisers of [`optim`] (SGD with momentum /
//!   Nesterov, Adam, AdamW; parameter roles from the network's description) and the learning-rate
//!   [`schedule`]; losses in [`loss`];
//! - the run ([`run_training`], [`RunConfig`]): data, the epoch loop, checkpoints every few
//!   seconds and at each epoch, resume exactly where a run stopped (refused when the config, the
//!   start or the data changed), the run folder's records (`config.toml`, `log.jsonl`,
//!   `metrics.json`, `model.safetensors`), evaluation after training;
//! - [`TrainHook`]: what a caller hooks into a run (a loss term, work after each epoch), so the
//!   loop stays small — training-time pruning methods are hooks.
//!
//! The step is a library (`reid_model::ModelError`); the run, which reads user files and writes
//! folders, reports with `anyhow` context naming the file and the field.

pub mod loss;
pub mod optim;
mod run;
pub mod schedule;
mod step;

pub use run::*;
pub use step::*;
