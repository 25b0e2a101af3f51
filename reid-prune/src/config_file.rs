//! Config files from users: TOML parsed once at the edge, every struct `deny_unknown_fields`,
//! and a misspelt key answered with the nearest valid one instead of a silent default.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Read and parse a TOML config file; errors name the file, the key and what was expected.
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_toml(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

/// Parse TOML text; an unknown key gets a "did you mean" hint.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        match did_you_mean(&msg) {
            Some(hint) => anyhow::anyhow!("{msg}{hint}"),
            None => anyhow::anyhow!("{msg}"),
        }
    })
}

/// From serde's "unknown field `x`, expected one of `a`, `b`": the nearest expected name.
fn did_you_mean(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    let (unknown, tail) = rest.split_once('`')?;
    let expected: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let (best, d) = expected
        .iter()
        .map(|c| (*c, edit_distance(unknown, c)))
        .min_by_key(|&(_, d)| d)?;
    // only a plausible typo: a few edits relative to the length
    (d <= 2.max(unknown.len() / 3))
        .then(|| format!("\ndid you mean `{best}` instead of `{unknown}`?"))
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ExperimentConfig;
    use crate::training::RunConfig;

    #[test]
    fn misspelt_keys_are_refused_with_the_nearest_valid_one() {
        let e = format!(
            "{:#}",
            parse_toml::<ExperimentConfig>("batchpk = \"8x4\"\n").unwrap_err()
        );
        assert!(
            e.contains("batchpk") && e.contains("did you mean `batch_pk`"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse_toml::<RunConfig>("[train]\nepohcs = 3\n").unwrap_err()
        );
        assert!(e.contains("did you mean `epochs`"), "{e}");
        let e = format!(
            "{:#}",
            parse_toml::<ExperimentConfig>(
                "[target]\ndataset = \"market1501\"\nroot = \"d\"\nnmae = \"x\"\n"
            )
            .unwrap_err()
        );
        assert!(e.contains("did you mean `name`"), "{e}");
        // far from every key: no guess
        let e = format!(
            "{:#}",
            parse_toml::<ExperimentConfig>("completely_else = 1\n").unwrap_err()
        );
        assert!(
            e.contains("completely_else") && !e.contains("did you mean"),
            "{e}"
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("batchpk", "batch_pk"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
