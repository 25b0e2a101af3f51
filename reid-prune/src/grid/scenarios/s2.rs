//! S2: half the reduction on the source, fine-tune on the target, the other half there.

use anyhow::Result;
use reid_run::Scenario;

use super::{CellSteps, Recipe};
use crate::grid::StepOut;

pub struct S2;

impl Recipe for S2 {
    fn scenario(&self) -> Scenario {
        Scenario::S2
    }

    fn model(&self, steps: &mut dyn CellSteps, criterion: &str, level: f64) -> Result<StepOut> {
        // the FLOPs reduction split geometrically: (1 − h)² = 1 − level, h on the source, then
        // h of what is left on the target
        let half = 1.0 - (1.0 - level).sqrt();
        let source = steps.source().clone();
        let pruned = steps.prune(&source, criterion, half, true)?;
        let tuned = steps.finetune(&pruned)?;
        steps.prune(&tuned, criterion, half, false)
    }
}
