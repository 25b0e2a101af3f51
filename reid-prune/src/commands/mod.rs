//! The subcommands of `reid-prune`, one module each (`Args` + `run`).

pub mod data;
pub mod experiment;
pub mod export;
pub mod flops;
pub mod prune;
pub mod scores;
pub mod synth;
pub mod train;

/// The pruning methods of the registry, with their descriptions, as the CLI's values.
pub fn method_values() -> clap::builder::PossibleValuesParser {
    reid_prune::method::methods()
        .into_iter()
        .map(|m| clap::builder::PossibleValue::new(m.name).help(m.about))
        .collect::<Vec<_>>()
        .into()
}
