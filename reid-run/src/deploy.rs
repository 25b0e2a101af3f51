//! `deploy.json`: the latency of a run's model measured in a deployment runtime (ONNX Runtime
//! by `bench/onnx_check.py --runs`), beside our own in `metrics.json`. Kept in a file of its own
//! because another program writes it, after the run: the run's files stay the tools' own.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Latency, Result, RunFileError};

/// The file name in a run folder.
pub const DEPLOY_FILE: &str = "deploy.json";

/// One runtime's measurement of the run's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployLatency {
    /// The runtime and its version (`onnxruntime 1.32.0`).
    pub runtime: String,
    /// SHA-256 of the `model.safetensors` measured: a measurement of another model (the folder
    /// rewritten by a later run) is refused by readers, never shown as this one's.
    pub model_sha256: String,
    /// Input size the model was exported and timed at (`64x32`).
    pub input: crate::InputSize,
    /// Threads the runtime used.
    pub threads: u32,
    /// Median time of one batch, in ms.
    pub latency_ms: Latency,
    /// Largest |feature difference| against our own extraction, relative to the feature scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rel_diff: Option<f64>,
}

/// `deploy.json`: by runtime key (`onnxruntime-cpu`), one measurement each.
pub type DeployLatencies = BTreeMap<String, DeployLatency>;

/// Hex SHA-256 of a file (the identity of a model file).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let read_err = |source| RunFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A run folder's `deploy.json`, if it has one, checked against the folder's model: the
/// measurements of another model than its `model.safetensors` are an error naming both.
pub fn read_deploy_for_model(dir: &Path) -> Result<DeployLatencies> {
    let path = dir.join(DEPLOY_FILE);
    if !path.is_file() {
        return Ok(DeployLatencies::new());
    }
    let d = read_deploy(&path)?;
    let model = dir.join("model.safetensors");
    let sha = file_sha256(&model)?;
    for (key, m) in &d {
        if m.model_sha256 != sha {
            return Err(RunFileError::Invalid {
                path,
                message: format!(
                    "{key} measured another model (sha256 {}…) than {} ({}…): measure it again \
                     with bench/onnx_check.py --runs",
                    &m.model_sha256[..12],
                    model.display(),
                    &sha[..12]
                ),
            });
        }
    }
    Ok(d)
}

/// Read and check a `deploy.json`: every time finite and positive, keys and runtimes named.
pub fn read_deploy(path: &Path) -> Result<DeployLatencies> {
    crate::metrics::read_checked_json(path, "deploy.json (runtime key → measurement)", check)
}

fn check(d: &DeployLatencies) -> std::result::Result<(), String> {
    for (key, m) in d {
        if key.trim().is_empty() || m.runtime.trim().is_empty() {
            return Err(format!("{key:?}: runtime key and name must be named"));
        }
        if m.model_sha256.len() != 64 || !m.model_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{key}.model_sha256 is not a SHA-256 in hex"));
        }
        if m.threads == 0 {
            return Err(format!("{key}.threads = 0"));
        }
        let times = [
            ("batch1", m.latency_ms.batch1),
            ("batch32", m.latency_ms.batch32),
        ];
        if times.iter().all(|(_, v)| v.is_none()) {
            return Err(format!("{key}.latency_ms has no time"));
        }
        for (what, v) in times {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(format!(
                    "{key}.latency_ms.{what} = {v} is not a positive time"
                ));
            }
        }
        if let Some(r) = m.max_rel_diff.filter(|r| !(r.is_finite() && *r >= 0.0)) {
            return Err(format!("{key}.max_rel_diff = {r} is not a difference"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> std::result::Result<DeployLatencies, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DEPLOY_FILE);
        std::fs::write(&p, text).unwrap();
        read_deploy(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_a_measurement_and_refuses_what_is_not_one() {
        let good = r#"{"onnxruntime-cpu": {"runtime": "onnxruntime 1.32.0", "input": "64x32",
            "model_sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "threads": 2, "latency_ms": {"batch1": 0.5, "batch32": 4.25}, "max_rel_diff": 3e-7}}"#;
        let d = read(good).unwrap();
        assert_eq!(d["onnxruntime-cpu"].latency_ms.batch32, Some(4.25));
        assert_eq!(d["onnxruntime-cpu"].input, crate::InputSize::new(64, 32));
        for (bad, says) in [
            (good.replace("4.25", "-1"), "batch32 = -1"),
            (
                good.replace("\"threads\": 2", "\"threads\": 0"),
                "threads = 0",
            ),
            (
                good.replace("\"batch1\": 0.5, \"batch32\": 4.25", ""),
                "has no time",
            ),
            (good.replace("64x32", "64by32"), "64by32"),
            (
                good.replace("\"threads\"", "\"thread\""),
                "unknown field `thread`",
            ),
            (good.replace("3e-7", "-3e-7"), "max_rel_diff"),
            ("[1, 2]".to_string(), "not a deploy.json"),
            (good.replace("0123456789abcdef0123", "0123"), "model_sha256"),
        ] {
            let e = read(&bad).unwrap_err();
            assert!(e.contains(DEPLOY_FILE) && e.contains(says), "{says}: {e}");
        }
    }

    #[test]
    fn a_measurement_of_another_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"model one").unwrap();
        let sha = file_sha256(&dir.path().join("model.safetensors")).unwrap();
        // sha256("model one"), computed independently (coreutils sha256sum)
        assert_eq!(
            sha,
            "726ca901a6141e040fee289c8cd48eedf8bd515dc06bed8e691637fb39261514"
        );
        let text = format!(
            r#"{{"onnxruntime-cpu": {{"runtime": "onnxruntime 1.32.0", "input": "64x32",
            "model_sha256": "{sha}", "threads": 2, "latency_ms": {{"batch32": 4.0}}}}}}"#
        );
        std::fs::write(dir.path().join(DEPLOY_FILE), text).unwrap();
        assert_eq!(read_deploy_for_model(dir.path()).unwrap().len(), 1);
        std::fs::write(dir.path().join("model.safetensors"), b"model two").unwrap();
        let e = read_deploy_for_model(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(DEPLOY_FILE) && e.contains("another model"),
            "{e}"
        );
        // no deploy.json: nothing to show
        std::fs::remove_file(dir.path().join(DEPLOY_FILE)).unwrap();
        assert!(read_deploy_for_model(dir.path()).unwrap().is_empty());
    }
}
