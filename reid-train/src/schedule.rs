//! Learning-rate schedules: linear warm-up, then multi-step or cosine decay (per epoch, as BoT).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decay", rename_all = "lowercase")]
pub enum Decay {
    /// × gamma at each milestone epoch.
    Step { milestones: Vec<usize>, gamma: f64 },
    /// Cosine from the base rate to `min_lr` over the run.
    Cosine { min_lr: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_epochs: usize,
    /// Warm-up starts at base_lr × this factor.
    pub warmup_factor: f64,
    #[serde(flatten)]
    pub decay: Decay,
}

impl Schedule {
    /// Bag of Tricks: 3.5e-4, 10 warm-up epochs from 0.1×, ×0.1 at 40 and 70.
    pub fn bag_of_tricks() -> Self {
        Self {
            base_lr: 3.5e-4,
            warmup_epochs: 10,
            warmup_factor: 0.1,
            decay: Decay::Step {
                milestones: vec![40, 70],
                gamma: 0.1,
            },
        }
    }

    /// Learning rate of (0-based) `epoch` in a run of `total` epochs.
    pub fn lr(&self, epoch: usize, total: usize) -> f64 {
        let warm = if epoch < self.warmup_epochs {
            let a = epoch as f64 / self.warmup_epochs as f64;
            self.warmup_factor * (1.0 - a) + a
        } else {
            1.0
        };
        let decay = match &self.decay {
            Decay::Step { milestones, gamma } => {
                gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
            }
            Decay::Cosine { min_lr } => {
                let t = epoch.saturating_sub(self.warmup_epochs) as f64;
                let span = total.saturating_sub(self.warmup_epochs).max(1) as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * (t / span).min(1.0)).cos());
                return warm * (min_lr + (self.base_lr - min_lr) * c);
            }
        };
        self.base_lr * warm * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_schedule() {
        let s = Schedule::bag_of_tricks();
        assert!((s.lr(0, 120) - 3.5e-5).abs() < 1e-12);
        assert!((s.lr(5, 120) - 3.5e-4 * 0.55).abs() < 1e-12);
        assert!((s.lr(10, 120) - 3.5e-4).abs() < 1e-12);
        assert!((s.lr(40, 120) - 3.5e-5).abs() < 1e-12);
        assert!((s.lr(70, 120) - 3.5e-6).abs() < 1e-12);
        let c = Schedule {
            warmup_epochs: 0,
            decay: Decay::Cosine { min_lr: 0.0 },
            ..s
        };
        assert!((c.lr(0, 10) - 3.5e-4).abs() < 1e-12);
        assert!(c.lr(9, 10) < 1e-5);
    }
}
