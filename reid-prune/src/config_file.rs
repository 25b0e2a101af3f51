//! Config files from users: TOML parsed once at the edge, every struct `deny_unknown_fields`,
//! and a misspelt key answered with the nearest valid one instead of a silent default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Read and parse a TOML config file; errors name the file, the key and what was expected.
/// A top-level `base = "other.toml"` (a path relative to the file; fast-reid's `_BASE_`) is
/// read first and this file's keys are laid over it, tables merged key by key.
pub fn read_toml<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    read_toml_with(path, what, &[])
}

/// [`read_toml`] with `--set` overrides laid over the file (and its bases) before it is parsed,
/// so an override is checked exactly like a key of the file.
pub fn read_toml_with<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    sets: &[SetOverride],
) -> Result<T> {
    let mut chain = Vec::new();
    let file = read_with_bases(path, &mut chain)?;
    let files = if chain.len() > 1 {
        format!(" (with its base {})", display_list(&chain[1..]))
    } else {
        String::new()
    };
    let in_file = || format!("{}{files}: not a valid {what}", path.display());
    let mut table = file.clone();
    for s in sets {
        s.apply(&mut table)?;
    }
    let text = toml::to_string(&table).context("re-serialising the merged config")?;
    let merged_err = match parse_toml::<T>(&text) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    // The merged text is internal, so its line snippet points at no line the user wrote: a
    // value that came from --set is named by its flag, one of the file by the file itself.
    let file_text = toml::to_string(&file).context("re-serialising the merged config")?;
    if let Err(e) = parse_toml::<T>(&file_text) {
        if chain.len() == 1 {
            // the file as written: its own line numbers
            let original = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            if let Err(e) = parse_toml::<T>(&original) {
                return Err(e).with_context(in_file);
            }
        }
        return Err(e).with_context(in_file);
    }
    // the file alone is valid: the first --set that breaks it is named
    let mut table = file;
    for s in sets {
        s.apply(&mut table)?;
        let text = toml::to_string(&table).context("re-serialising the merged config")?;
        if let Err(e) = toml::from_str::<T>(&text) {
            return Err(set_error(&[s.key()], &e))
                .with_context(|| format!("{}: not a valid {what} with --set", path.display()));
        }
    }
    Err(merged_err).with_context(in_file)
}

/// A parse error of a value given with `--set`: the flag and the message, without the line
/// snippet of the internal text it was parsed from.
fn set_error(keys: &[String], e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().to_string();
    let hint = did_you_mean(&msg).unwrap_or_default();
    anyhow::anyhow!("--set {}: {msg}{hint}", keys.join(", "))
}

/// The keys a config file (with its `base` files) sets, merged as [`read_toml`] merges them,
/// before any parse into a config: what the file names, as opposed to a default.
pub fn read_table(path: &Path) -> Result<toml::Table> {
    read_with_bases(path, &mut Vec::new())
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

/// One `--set KEY=VALUE` (fast-reid's command-line `opts`): any field of a config by its TOML
/// path (`train.schedule.base_lr=0.01`, `batch_pk="8x4"`), without a flag for each field. The
/// value is read as a TOML value (number, bool, array, quoted string); anything else is a string.
#[derive(Clone, Debug, PartialEq)]
pub struct SetOverride {
    path: Vec<String>,
    value: toml::Value,
}

impl std::str::FromStr for SetOverride {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}': expected KEY=VALUE, e.g. train.epochs=10"))?;
        // bounded before anything is built from it (a 20 000-part key overflowed the stack)
        if key.len() > MAX_SET_KEY_LEN || key.split('.').count() > MAX_SET_KEY_PARTS {
            let shown: String = key.chars().take(40).collect();
            return Err(format!(
                "--set key '{shown}…' ({} characters, {} dotted parts): expected at most \
                 {MAX_SET_KEY_LEN} characters and {MAX_SET_KEY_PARTS} parts (config fields \
                 are at most a few deep, e.g. train.schedule.base_lr)",
                key.len(),
                key.split('.').count()
            ));
        }
        let path: Vec<String> = key
            .trim()
            .split('.')
            .map(|p| p.trim().to_string())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "'{s}': the key '{key}' has an empty part; expected a dotted path such as train.epochs"
            ));
        }
        let value = value.trim();
        let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t
                .remove("v")
                .unwrap_or_else(|| toml::Value::String(value.into())),
            Err(_) => toml::Value::String(value.to_string()),
        };
        Ok(Self { path, value })
    }
}

/// Longest `--set` key, in bytes, and most dotted parts (the deepest config field has 3).
pub const MAX_SET_KEY_LEN: usize = 256;
pub const MAX_SET_KEY_PARTS: usize = 8;

impl SetOverride {
    /// The dotted key (`train.schedule.base_lr`).
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    /// Set the value at the path, creating tables on the way (an unknown key is then refused
    /// by the typed parse, with the nearest valid one).
    fn apply(&self, table: &mut toml::Table) -> Result<()> {
        let (last, parents) = self.path.split_last().context("empty --set key")?;
        let mut t = table;
        for (i, p) in parents.iter().enumerate() {
            let entry = t
                .entry(p.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = match entry {
                toml::Value::Table(inner) => inner,
                other => anyhow::bail!(
                    "--set {}: '{}' is {} {other}, not a table of fields",
                    self.key(),
                    self.path[..=i].join("."),
                    other.type_str()
                ),
            };
        }
        t.insert(last.clone(), self.value.clone());
        Ok(())
    }
}

/// `cfg` with `sets` laid over it, parsed again as `T` (so every check of a config file holds).
/// Fields that are not serialised (`#[serde(skip)]`) come back as their defaults: set them after.
pub fn with_overrides<T: Serialize + DeserializeOwned>(cfg: T, sets: &[SetOverride]) -> Result<T> {
    if sets.is_empty() {
        return Ok(cfg);
    }
    let mut table = toml::Table::try_from(&cfg).context("serialising the config")?;
    for s in sets {
        s.apply(&mut table)?;
    }
    let keys: Vec<String> = sets.iter().map(SetOverride::key).collect();
    let text = toml::to_string(&table).context("re-serialising the config")?;
    // the merged text is internal: its line numbers and snippet would point nowhere the user
    // wrote, so only the message is shown
    toml::from_str(&text).map_err(|e| set_error(&keys, &e))
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
    use crate::grid::ExperimentConfig;
    use reid_train::RunConfig;

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
    fn set_overrides_reach_any_field_and_are_checked_like_the_file() {
        let sets: Vec<SetOverride> = ["train.schedule.base_lr=0.01", "batch_pk=\"8x4\"", "seed=7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let cfg = with_overrides(RunConfig::default(), &sets).unwrap();
        assert_eq!(cfg.train.schedule.base_lr, 0.01);
        assert_eq!(cfg.batch_pk, reid_run::PkBatch::new(8, 4));
        assert_eq!(cfg.seed, 7);
        // An unquoted string value is a string.
        let cfg = with_overrides(RunConfig::default(), &["batch_pk=4x8".parse().unwrap()]).unwrap();
        assert_eq!(cfg.batch_pk, reid_run::PkBatch::new(4, 8));
        let e = format!(
            "{:#}",
            with_overrides(RunConfig::default(), &["train.epoch=3".parse().unwrap()]).unwrap_err()
        );
        assert!(
            e.contains("--set train.epoch") && e.contains("did you mean `epochs`"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            with_overrides(RunConfig::default(), &["seed.x=3".parse().unwrap()]).unwrap_err()
        );
        assert!(e.contains("'seed' is integer"), "{e}");
        let e = format!(
            "{:#}",
            with_overrides(RunConfig::default(), &["batch_pk=99x0".parse().unwrap()]).unwrap_err()
        );
        assert!(e.contains("--set batch_pk") && e.contains("99x0"), "{e}");
        assert!("epochs"
            .parse::<SetOverride>()
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!("train..epochs=1"
            .parse::<SetOverride>()
            .unwrap_err()
            .contains("empty part"));
    }

    #[test]
    fn set_overrides_lie_over_a_file_and_its_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "seed = 3\nepochs_unused = 1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("run.toml"), "base = \"base.toml\"\n").unwrap();
        // The base's misspelt key is still refused, whatever the overrides.
        let e = format!(
            "{:#}",
            read_toml_with::<RunConfig>(
                &dir.path().join("run.toml"),
                "run config",
                &["seed=4".parse().unwrap()]
            )
            .unwrap_err()
        );
        assert!(e.contains("epochs_unused"), "{e}");
        std::fs::write(dir.path().join("base.toml"), "seed = 3\n").unwrap();
        let cfg: RunConfig = read_toml_with(
            &dir.path().join("run.toml"),
            "run config",
            &["seed=4".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(cfg.seed, 4);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("batchpk", "batch_pk"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
