//! S1: prune the source model on the source (retraining there), then fine-tune on the target.

use anyhow::Result;
use reid_run::Scenario;

use super::{CellSteps, Recipe};
use crate::grid::StepOut;

pub struct S1;

impl Recipe for S1 {
    fn scenario(&self) -> Scenario {
        Scenario::S1
    }

    fn model(&self, steps: &mut dyn CellSteps, criterion: &str, level: f64) -> Result<StepOut> {
        let source = steps.source().clone();
        let pruned = steps.prune(&source, criterion, level, true)?;
        steps.finetune(&pruned)
    }
}
