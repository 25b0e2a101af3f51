//! Config files from users: TOML parsed once at the edge, every struct `deny_unknown_fields`,
//! and a misspelt key answered with the nearest valid one instead of a silent default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Read and parse a TOML config file; errors name the file, the key and what was expected.
/// A top-level `base = "other.toml"` (a path relative to the file; fast-reid's `_BASE_`) is
/// read first and this file's keys are laid over it, tables merged key by key.
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let mut chain = Vec::new();
    let table = read_with_bases(path, &mut chain)?;
    let text = toml::to_string(&table).context("re-serialising the merged config")?;
    let files = if chain.len() > 1 {
        format!(" (with its base {})", display_list(&chain[1..]))
    } else {
        String::new()
    };
    parse_toml(&text).with_context(|| format!("{}{files}: not a valid {what}", path.display()))
}

fn display_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest `base` chain followed (a loop is caught before this).
const MAX_BASE_DEPTH: usize = 16;

fn read_with_bases(path: &Path, chain: &mut Vec<PathBuf>) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{}: not valid TOML", path.display()))?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain.iter().any(|p| p == &canonical) {
        anyhow::bail!(
            "{}: `base` files form a loop ({} -> {})",
            path.display(),
            display_list(chain),
            canonical.display()
        );
    }
    if chain.len() >= MAX_BASE_DEPTH {
        anyhow::bail!(
            "{}: more than {MAX_BASE_DEPTH} nested `base` files",
            path.display()
        );
    }
    chain.push(canonical);
    let Some(base) = table.remove("base") else {
        return Ok(table);
    };
    let toml::Value::String(base) = base else {
        anyhow::bail!(
            "{}: base = {base}: expected the path of another config file, as a string",
            path.display()
        );
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    let mut merged = read_with_bases(&base_path, chain)
        .with_context(|| format!("{}: base = \"{base}\"", path.display()))?;
    merge_into(&mut merged, table);
    Ok(merged)
}

/// Lay `over` onto `base`: tables merge key by key, any other value replaces.
fn merge_into(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_into(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
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

/// The name in `candidates` nearest to `unknown`, if it is a plausible typo of it (a few edits
/// relative to its length).
pub(crate) fn nearest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let (best, d) = candidates
        .iter()
        .map(|c| (*c, edit_distance(unknown, c)))
        .min_by_key(|&(_, d)| d)?;
    (d <= 2.max(unknown.len() / 3)).then_some(best)
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
    nearest(unknown, &expected)
        .map(|best| format!("\ndid you mean `{best}` instead of `{unknown}`?"))
}

/// Levenshtein distance over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
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
    fn base_files_are_laid_under_and_loops_refused() {
        let dir = std::env::temp_dir().join(format!("reid-base-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("common.toml"),
            "seed = 3\nbatch_pk = \"8x4\"\n[levels]\nC1 = 0.5\n[target]\ndataset = \"market1501\"\nroot = \"t\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/exp.toml"),
            "base = \"../common.toml\"\nseed = 4\n[levels]\nC2 = 0.6\n",
        )
        .unwrap();
        let c: ExperimentConfig = read_toml(&dir.join("sub/exp.toml"), "experiment").unwrap();
        assert_eq!(c.seed, 4);
        assert_eq!(c.batch_pk.to_string(), "8x4");
        assert_eq!(c.levels.len(), 2, "tables merge key by key");
        assert_eq!(c.target.root, std::path::PathBuf::from("t"));
        // a typo in the base is named with the file chain
        std::fs::write(dir.join("common.toml"), "sede = 3\n").unwrap();
        let e = format!(
            "{:#}",
            read_toml::<ExperimentConfig>(&dir.join("sub/exp.toml"), "experiment").unwrap_err()
        );
        assert!(
            e.contains("common.toml") && e.contains("did you mean `seed`"),
            "{e}"
        );
        // a loop
        std::fs::write(dir.join("common.toml"), "base = \"sub/exp.toml\"\n").unwrap();
        let e = format!(
            "{:#}",
            read_toml::<ExperimentConfig>(&dir.join("sub/exp.toml"), "experiment").unwrap_err()
        );
        assert!(e.contains("loop"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("batchpk", "batch_pk"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
