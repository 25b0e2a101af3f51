//! The paper's scenarios, one file each: how a cell's model is made from the source model (the
//! network pre-trained on the source data) and that model fine-tuned on the target, with the
//! grid's steps (each cached and resumable; a step two scenarios share runs once).
//!
//! A new scenario is a file here with a [`Recipe`], its line in [`RECIPES`] and its name in
//! `reid_run::Scenario` (the name the run folders, the report and the claims use);
//! `tests/scenario.rs` checks that every name has a recipe.

mod s1;
mod s2;
mod s3;
mod s4;

use anyhow::Result;
use reid_run::Scenario;

use super::StepOut;

/// The steps a recipe composes, run by the grid.
pub trait CellSteps {
    /// The source model: pre-trained on the source data.
    fn source(&self) -> &StepOut;
    /// The source model fine-tuned on the target.
    fn tuned(&self) -> &StepOut;
    /// `from` pruned by `level` (a fraction of the target measure) with `criterion`, retrained
    /// on the source (classification, `on_source`) or on the target (re-ID).
    fn prune(
        &mut self,
        from: &StepOut,
        criterion: &str,
        level: f64,
        on_source: bool,
    ) -> Result<StepOut>;
    /// `from` fine-tuned on the target.
    fn finetune(&mut self, from: &StepOut) -> Result<StepOut>;
}

/// How one scenario makes a cell's model.
pub trait Recipe: Sync {
    fn scenario(&self) -> Scenario;
    /// The cell's final model for `criterion` at `level`.
    fn model(&self, steps: &mut dyn CellSteps, criterion: &str, level: f64) -> Result<StepOut>;
}

/// Every scenario's recipe; a new scenario is a file and a line here.
pub const RECIPES: &[&dyn Recipe] = &[&s1::S1, &s2::S2, &s3::S3, &s4::S4];

/// The recipe of `scenario`.
pub fn recipe(scenario: Scenario) -> Result<&'static dyn Recipe> {
    RECIPES
        .iter()
        .copied()
        .find(|r| r.scenario() == scenario)
        .ok_or_else(|| anyhow::anyhow!("scenario {scenario} has no recipe in grid::scenarios"))
}
