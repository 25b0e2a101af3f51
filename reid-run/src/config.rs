//! The settings every run's `config.toml` records under the same names — a training's
//! (`RunConfig`), a prune's (`PruneConfig`) and a grid cell's (its experiment's config) — read
//! typed by the report. Each writer's config keeps its own schema; the writers' tests check
//! that what they write reads back through [`RecordedSettings`] with their values.

use serde::Deserialize;

use crate::{DeviceSpec, InputSize};

/// What a `config.toml` says about the run that the metrics do not repeat (each absent where a
/// config has no such setting).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RecordedSettings {
    /// The input size it trained or pruned at.
    #[serde(default)]
    pub input: Option<InputSize>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub width_mult: Option<f64>,
    #[serde(default)]
    pub device: Option<DeviceSpec>,
}

impl RecordedSettings {
    /// The settings of a `config.toml`'s text; other fields are the writer's and are skipped.
    /// A malformed value is an error naming its field.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_string() + &span_field(text, &e))
    }
}

/// What the report reads of an `experiment.toml` or a grid cell's `config.toml` (the grid's full
/// schema lives with the grid): its name and its targets, to tell a several-target experiment's
/// current grids from those of targets it no longer lists, and where a cell's target images are.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RecordedExperiment {
    #[serde(default)]
    pub name: String,
    /// The re-ID target of a grid (each target's grid of a several-target experiment has its own).
    #[serde(default)]
    pub target: Option<RecordedData>,
    #[serde(default)]
    pub targets: Vec<RecordedData>,
}

/// A dataset an experiment names: its loader, its folder and its label.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RecordedData {
    pub dataset: String,
    #[serde(default)]
    pub root: Option<std::path::PathBuf>,
    #[serde(default)]
    pub name: Option<String>,
}

impl RecordedData {
    /// The label results are filed under (the dataset's name when it has none).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.dataset)
    }
}

impl RecordedExperiment {
    /// The experiment of an `experiment.toml`'s text; other fields are skipped.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_string() + &span_field(text, &e))
    }

    /// The labels of its targets, in order (empty for a single-target experiment).
    pub fn target_labels(&self) -> Vec<&str> {
        self.targets.iter().map(RecordedData::label).collect()
    }
}

/// The name of the grid a several-target experiment `experiment` runs for its target `label`
/// (in its folder `<out>/<label>/`).
pub fn target_grid_name(experiment: &str, label: &str) -> String {
    format!("{experiment}-{label}")
}

/// " (field `name`)" for the key on the line a TOML error points at, when there is one.
fn span_field(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => format!(" (field `{}`)", key.trim()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_settings_read_typed_and_a_bad_one_is_named() {
        let s = RecordedSettings::from_toml(
            "arch = \"resnet50\"\ninput = \"64x32\"\nseed = 5\nwidth_mult = 1\ndevice = \"cpu\"\n",
        )
        .unwrap();
        assert_eq!(s.input.unwrap().to_string(), "64x32");
        assert_eq!((s.seed, s.width_mult), (Some(5), Some(1.0)));
        assert_eq!(s.device, Some(DeviceSpec::Cpu));
        assert_eq!(
            RecordedSettings::from_toml("").unwrap(),
            RecordedSettings::default()
        );
        let e = RecordedSettings::from_toml("seed = 1\ninput = \"big\"\n").unwrap_err();
        assert!(e.contains("input"), "{e}");
    }
}
