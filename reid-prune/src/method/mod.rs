//! Pruning methods (Torch-Pruning's `pruner/algorithms` beside `importance`): a method names
//! the criterion that ranks channels and the training rule around the cut. Every criterion of
//! [`crate::criterion::CRITERIA`] is a method that cuts and then retrains; the training-time
//! methods of [`TRAINING_METHODS`] retrain the unpruned model under their own rule first
//! (a regulariser, a soft zeroing schedule) and cut after. How many channels and where is the
//! strategy's ([`crate::strategy`]); whether in one cut or several is the run's `step`.
//!
//! One registry ([`methods`]) gives the names the CLI accepts, its help and the grid's checks.

pub mod auto_balanced;
pub mod psfp;

use crate::error::{PruneError, Result};
use reid_model::ReidNet;
use reid_run::Scenario;

use crate::criterion::{criterion_entry, ChannelScores, CriterionEntry, CRITERIA};
use crate::prune_run::PruneConfig;
use crate::strategy::PrunePlan;
use reid_train::TrainHook;

/// Retrains a network before the cut: `(start, folder, the rule's hooks)` → the retrained
/// network. `folder` names the run's subfolder (`regularised`, `soft`).
pub type Retrain<'a> = dyn FnMut(&ReidNet, &str, &dyn TrainHook) -> Result<ReidNet> + 'a;

/// What a method does around the cut of one pruning step.
pub trait TrainingRule {
    /// Retrain the unpruned `net` under this rule (through `retrain`) and return the network
    /// to cut with the plan to apply. The default: nothing before the cut.
    fn before_cut(
        &self,
        net: ReidNet,
        _scores: &ChannelScores,
        plan: PrunePlan,
        _retrain: &mut Retrain<'_>,
    ) -> Result<(ReidNet, PrunePlan)> {
        Ok((net, plan))
    }

    /// Whether the run's ordinary retraining follows the cut (a rule that retrained before
    /// the cut does not retrain again).
    fn retrains_after_cut(&self) -> bool {
        true
    }

    /// Settings of the rule that are not in the run's config but change its result (they go
    /// into the grid's step keys).
    fn fixed_settings(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Cut, then retrain (the paper's one-shot and iterative pruning with any criterion).
pub struct CutThenRetrain;

impl TrainingRule for CutThenRetrain {}

/// A registered method.
#[derive(Clone, Copy)]
pub struct MethodEntry {
    pub name: &'static str,
    pub about: &'static str,
    /// The criterion (by name) whose scores rank the channels and make the plan.
    pub ranks_by: &'static str,
    /// Whether it acts while retraining (it then needs retraining epochs and data).
    pub training_time: bool,
    /// The scenarios it does not apply to (the paper's Table 6 marks PSFP N/A in S4: pruning
    /// the source model on the target without fine-tuning first).
    pub not_in: &'static [Scenario],
    /// Whether it can also prune residual groups (training-time rules act on branch convs).
    pub residual_groups: bool,
    /// Its rule for a run's settings.
    pub rule: fn(&PruneConfig) -> Box<dyn TrainingRule>,
}

impl MethodEntry {
    /// The criterion that ranks channels for this method.
    pub fn criterion(&self) -> &'static CriterionEntry {
        criterion_entry(self.ranks_by).expect("a training method ranks by a registered criterion")
    }
}

fn cut_then_retrain(_: &PruneConfig) -> Box<dyn TrainingRule> {
    Box::new(CutThenRetrain)
}

/// Methods with a training-time rule; a new one is a file with its rule and a line here.
pub const TRAINING_METHODS: &[MethodEntry] = &[
    MethodEntry {
        name: "auto-balanced",
        about: "Ding et al.: L1 ranking + balanced L2 regulariser while retraining",
        ranks_by: "l1",
        training_time: true,
        not_in: &[],
        residual_groups: false,
        rule: auto_balanced::rule,
    },
    MethodEntry {
        name: "psfp",
        about: "He et al.: progressive soft filter pruning on the L2 norm",
        ranks_by: "l2",
        training_time: true,
        not_in: &[Scenario::S4],
        residual_groups: false,
        rule: psfp::rule,
    },
];

/// Every method: each criterion as cut-then-retrain, then the training-time methods.
pub fn methods() -> Vec<MethodEntry> {
    CRITERIA
        .iter()
        .map(|c| MethodEntry {
            name: c.name,
            about: c.about,
            ranks_by: c.name,
            training_time: false,
            not_in: &[],
            residual_groups: true,
            rule: cut_then_retrain,
        })
        .chain(TRAINING_METHODS.iter().copied())
        .collect()
}

/// The registry's method names with their descriptions, as a CLI's possible values.
pub fn method_values() -> clap::builder::PossibleValuesParser {
    methods()
        .into_iter()
        .map(|m| clap::builder::PossibleValue::new(m.name).help(m.about))
        .collect::<Vec<_>>()
        .into()
}

/// The names users give (`--criterion`, the grid's `criteria`).
pub fn method_names() -> Vec<&'static str> {
    methods().iter().map(|m| m.name).collect()
}

/// A method by name; the error lists every name.
pub fn method(name: &str) -> Result<MethodEntry> {
    methods()
        .into_iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            let names = method_names();
            let hint = crate::config_file::nearest(name, &names)
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            PruneError::Request(format!(
                "unknown criterion '{name}'{hint}: expected one of {}",
                names.join(", ")
            ))
        })
}

/// A registered method's name, checked where a config is read (an unknown one is a parse
/// error listing every name); serialised as the plain string.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct MethodName(String);

impl MethodName {
    /// Names written in code (defaults, tests); each must be registered (a programming error
    /// otherwise, caught by the tests that use them).
    pub fn list(names: &[&str]) -> Vec<MethodName> {
        names
            .iter()
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The registry entry it names.
    pub fn entry(&self) -> MethodEntry {
        method(&self.0).expect("a MethodName is checked against the registry when made")
    }
}

impl std::str::FromStr for MethodName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        method(s).map_err(|e| e.to_string())?;
        Ok(MethodName(s.to_string()))
    }
}

impl TryFrom<String> for MethodName {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<MethodName> for String {
    fn from(m: MethodName) -> String {
        m.0
    }
}

impl std::ops::Deref for MethodName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name: what it is` lines for help texts.
pub fn method_help() -> String {
    methods()
        .iter()
        .map(|m| format!("{}: {}", m.name, m.about))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_training_methods_rank_by_criteria() {
        let names = method_names();
        let set: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len(), "{names:?}");
        for m in TRAINING_METHODS {
            assert_eq!(m.criterion().name, m.ranks_by);
        }
        let e = method("l7").err().unwrap().to_string();
        assert!(
            e.contains("l7") && e.contains("psfp") && e.contains("lamp"),
            "{e}"
        );
    }
}
