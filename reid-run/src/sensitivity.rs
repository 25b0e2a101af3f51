//! The record of a per-layer sensitivity run (`sensitivity.json`, written by `reid-prune
//! sensitivity`, read by the report): each prunable conv pruned alone at several ratios and
//! evaluated without retraining on held-out training identities.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::RunFileError;

/// The file a sensitivity run writes in its folder.
pub const SENSITIVITY_FILE: &str = "sensitivity.json";

/// What to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityConfig {
    pub checkpoint: PathBuf,
    /// The re-ID dataset whose training identities are held out for the evaluation.
    pub dataset: String,
    pub root: PathBuf,
    /// A criterion of the registry (a training-time method: the criterion it ranks by).
    pub criterion: String,
    /// Fractions of a layer's channels removed, each in (0, 1).
    pub ratios: Vec<f64>,
    /// Fraction of the training identities held out (the last ones in identity order).
    pub held_out: f64,
    pub input: crate::InputSize,
    pub seed: u64,
}

/// One measurement: a ratio, the channels kept, and the held-out rank-1 and mAP (fractions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub ratio: f64,
    pub kept: usize,
    pub rank1: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
}

/// One prunable conv and its measurements, in the order of `ratios`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSensitivity {
    pub conv: String,
    pub width: usize,
    pub points: Vec<Point>,
}

/// A sensitivity run's record (`sensitivity.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    pub config: SensitivityConfig,
    /// The held-out identities (their training labels) and the evaluation's valid queries.
    pub held_out_ids: Vec<i64>,
    pub queries: usize,
    /// The unpruned network on the same split.
    pub unpruned: Point,
    pub layers: Vec<LayerSensitivity>,
}

impl Sensitivity {
    /// Every layer measured at every ratio, every value a fraction.
    pub fn validate(&self) -> Result<(), String> {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        if !fraction(self.unpruned.rank1) || !fraction(self.unpruned.map) {
            return Err("the unpruned network's rank-1 or mAP is not a fraction".into());
        }
        for l in &self.layers {
            if l.points.len() != self.config.ratios.len() {
                return Err(format!(
                    "{}: {} measurements for {} ratios",
                    l.conv,
                    l.points.len(),
                    self.config.ratios.len()
                ));
            }
            if let Some(p) = l
                .points
                .iter()
                .find(|p| !fraction(p.rank1) || !fraction(p.map) || p.kept > l.width)
            {
                return Err(format!(
                    "{} at ratio {}: rank-1 {}, mAP {}, {} of {} channels kept",
                    l.conv, p.ratio, p.rank1, p.map, p.kept, l.width
                ));
            }
        }
        Ok(())
    }

    /// The record in `path`, checked (a regular file of at most 64 MiB).
    pub fn read(path: &Path) -> Result<Sensitivity, RunFileError> {
        let invalid = |message: String| RunFileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = crate::metrics::read_regular_file(path, 64 << 20, "a sensitivity record")?;
        let s: Sensitivity = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not a sensitivity record: {e}")))?;
        s.validate().map_err(invalid)?;
        Ok(s)
    }
}
