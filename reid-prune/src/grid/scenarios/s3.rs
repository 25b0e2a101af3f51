//! S3: fine-tune the source model on the target, then prune it there (retraining on the target).

use anyhow::Result;
use reid_run::Scenario;

use super::{CellSteps, Recipe};
use crate::grid::StepOut;

pub struct S3;

impl Recipe for S3 {
    fn scenario(&self) -> Scenario {
        Scenario::S3
    }

    fn model(&self, steps: &mut dyn CellSteps, criterion: &str, level: f64) -> Result<StepOut> {
        let tuned = steps.tuned().clone();
        steps.prune(&tuned, criterion, level, false)
    }
}
