//! S4: prune the source model on the target (retraining there), without fine-tuning it first.

use anyhow::Result;
use reid_run::Scenario;

use super::{CellSteps, Recipe};
use crate::grid::StepOut;

pub struct S4;

impl Recipe for S4 {
    fn scenario(&self) -> Scenario {
        Scenario::S4
    }

    fn model(&self, steps: &mut dyn CellSteps, criterion: &str, level: f64) -> Result<StepOut> {
        let source = steps.source().clone();
        steps.prune(&source, criterion, level, false)
    }
}
