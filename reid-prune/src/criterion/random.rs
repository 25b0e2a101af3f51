//! Seeded random scores: the control every criterion should beat.

use reid_model::{PrunableConv, ReidNet};

use super::{ChannelScores, Criterion};
use crate::error::Result;

pub struct Random {
    pub seed: u64,
}

impl Criterion for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn scores(
        &self,
        _net: &ReidNet,
        layers: &[PrunableConv],
        _: Option<&super::ScoreData>,
    ) -> Result<ChannelScores> {
        let mut rng = reid_model::init::SplitMix64::new(self.seed);
        Ok(layers
            .iter()
            .map(|l| {
                (
                    l.conv.clone(),
                    (0..l.width).map(|_| rng.next_f64()).collect(),
                )
            })
            .collect())
    }
}
