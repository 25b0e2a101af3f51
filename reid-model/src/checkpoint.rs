//! Self-describing checkpoints: `model.safetensors` with torchvision tensor names and the header
//! metadata `reid.arch` (the [`ArchSpec`] as JSON) and `reid.provenance` (JSON).
//!
//! Loading never half-succeeds: every missing, unexpected or mis-shaped tensor is listed in one error.
//! Writing is atomic: a temporary file in the same folder, synced, then renamed over the target.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::ArchSpec;
use crate::error::{ModelError, Result};
use crate::net::ReidNet;

pub const META_ARCH: &str = "reid.arch";
pub const META_PROVENANCE: &str = "reid.provenance";

/// Where a checkpoint came from. Every field is optional; unknown fields are kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// sha256 of the parent `model.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criterion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Pruning ratio or target, as the pruning step states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_weights: Option<String>,
    /// The input size the model was trained (or pruned) at: what it is evaluated at by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<reid_run::InputSize>,
    #[serde(default)]
    pub tool_version: String,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Provenance {
    pub fn new() -> Self {
        Self {
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }
}

/// Tensors read from a safetensors file, converted to f32, plus the header metadata.
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

/// The tensor shapes of a safetensors file, from its header only (a 100 MB ResNet-50 is not
/// read to learn its architecture).
pub fn read_safetensors_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>> {
    refuse_non_regular(path)?;
    let bad = |m: String| ModelError::file(path, m);
    let header = reid_run::header::read_safetensors_header(path).map_err(bad)?;
    let obj = &header.json;
    let data_len = header.file_len - 8 - header.header_len;
    obj.iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, t)| {
            let shape = t
                .get("shape")
                .and_then(|s| s.as_array())
                .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
                .ok_or_else(|| bad(format!("tensor '{k}': no shape in the header")))?;
            // a file cut short holds the header but not every tensor's bytes
            let end = t
                .get("data_offsets")
                .and_then(|o| o.get(1))
                .and_then(|e| e.as_u64())
                .ok_or_else(|| bad(format!("tensor '{k}': no data offsets in the header")))?;
            if end > data_len {
                return Err(bad(format!(
                    "not a valid safetensors file (truncated?): tensor '{k}' ends at byte {end} \
                     of a data section of {data_len}"
                )));
            }
            Ok((k.clone(), shape))
        })
        .collect()
}

/// Read every tensor of a safetensors file (f16 and bf16 become f32; f32, f64 and integer
/// tensors such as `num_batches_tracked` are kept as they are).
pub fn read_safetensors(path: &Path, device: &Device) -> Result<TensorFile> {
    refuse_non_regular(path)?;
    let bytes = std::fs::read(path)
        .map_err(|e| ModelError::file(path, format!("cannot read the weights file: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        ModelError::file(
            path,
            format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        )
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::file(path, format!("unreadable safetensors header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(device)
            .map_err(|e| ModelError::file(path, format!("tensor '{name}': {e}")))?;
        let t = match t.dtype() {
            DType::F16 | DType::BF16 => t.to_dtype(DType::F32)?,
            _ => t,
        };
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        path: path.to_path_buf(),
        tensors,
        metadata,
    })
}

/// A FIFO or device would block or never end: only regular files are read as weights.
fn refuse_non_regular(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Err(ModelError::file(
            path,
            "not a regular file (a folder, FIFO or device): expected a .safetensors file",
        )),
        _ => Ok(()),
    }
}

/// Weights must be finite: checked where they enter (a NaN weight evaluates to a plausible but
/// meaningless mAP otherwise). Not in [`read_safetensors`]: other files may hold NaN on purpose.
pub fn check_finite(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    let bad = match t.dtype() {
        DType::F32 => t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count(),
        DType::F64 => t
            .flatten_all()?
            .to_vec1::<f64>()?
            .iter()
            .filter(|v| !v.is_finite())
            .count(),
        _ => 0,
    };
    if bad > 0 {
        return Err(ModelError::file(
            path,
            format!(
                "tensor '{name}' has {bad} NaN or infinite value(s) of {}: the file is corrupt or \
                 was written by a diverged run",
                t.elem_count()
            ),
        ));
    }
    // a negative variance makes every feature NaN downstream, far from its cause
    if name.ends_with("running_var") && t.dtype() == DType::F32 {
        let negative = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .filter(|v| **v < 0.0)
            .count();
        if negative > 0 {
            return Err(ModelError::file(
                path,
                format!(
                    "tensor '{name}' has {negative} negative value(s) of {}: a batch-norm \
                     variance is never negative; the file is corrupt",
                    t.elem_count()
                ),
            ));
        }
    }
    Ok(())
}

/// [`check_finite`] over every tensor of a file, in name order (the first bad name is reported).
pub fn check_all_finite(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    names
        .into_iter()
        .try_for_each(|name| check_finite(path, name, &tensors[name]))
}

/// Missing, unexpected and mis-shaped tensors of a file against a spec.
#[derive(Debug, Default, PartialEq)]
pub struct MismatchReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, shape in the file)
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl MismatchReport {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }

    /// Compare `tensors` with what `spec` expects. Names matching `ignore` are neither expected nor
    /// unexpected (e.g. `num_batches_tracked`).
    pub fn compare(
        spec: &ArchSpec,
        tensors: &HashMap<String, Tensor>,
        ignore: impl Fn(&str) -> bool,
    ) -> Self {
        let expected = spec.expected_tensors();
        let mut report = MismatchReport::default();
        let mut known = std::collections::HashSet::new();
        for (name, shape) in &expected {
            known.insert(name.as_str());
            match tensors.get(name) {
                None => report.missing.push(name.clone()),
                Some(t) if t.dims() != shape.as_slice() => {
                    report
                        .misshaped
                        .push((name.clone(), shape.clone(), t.dims().to_vec()))
                }
                Some(_) => {}
            }
        }
        let mut unexpected: Vec<String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()) && !ignore(k))
            .cloned()
            .collect();
        unexpected.sort();
        report.unexpected = unexpected;
        report
    }
}

impl std::fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOW: usize = 20;
        let list = |f: &mut std::fmt::Formatter<'_>, title: &str, items: &[String]| {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {title}:", items.len())?;
            for i in items.iter().take(SHOW) {
                writeln!(f, "    {i}")?;
            }
            if items.len() > SHOW {
                writeln!(f, "    ... and {} more", items.len() - SHOW)?;
            }
            Ok(())
        };
        list(f, "missing tensors", &self.missing)?;
        list(f, "unexpected tensors", &self.unexpected)?;
        let shaped: Vec<String> = self
            .misshaped
            .iter()
            .map(|(n, e, g)| format!("{n}: expected {e:?}, file has {g:?}"))
            .collect();
        list(f, "mis-shaped tensors", &shaped)
    }
}

fn is_ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Write `bytes` to `path` atomically ([`reid_run::write_atomic`]: a unique temp file in the
/// same folder, fsync, rename; a failure replaces nothing).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    reid_run::write_atomic(path, bytes).map_err(|e| match e {
        reid_run::RunFileError::Write { path, source } => ModelError::file(
            &path,
            format!("cannot write (nothing was replaced): {source}"),
        ),
        other => ModelError::file(path, other.to_string()),
    })
}

pub use reid_run::remove_stale_temp_files;

/// The bytes of a checkpoint file: the net's tensors with its architecture and provenance in
/// the header, plus `extra` tensors (named apart from the net's, e.g. `optim.…`) and `meta`.
pub fn checkpoint_bytes(
    net: &ReidNet,
    provenance: &Provenance,
    extra: &[(String, Tensor)],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut state = net.state_dict()?;
    let mut meta = meta;
    let arch = serde_json::to_string(net.spec())
        .map_err(|e| ModelError::Arch(format!("cannot serialise the architecture: {e}")))?;
    let prov = serde_json::to_string(provenance)
        .map_err(|e| ModelError::Arch(format!("cannot serialise the provenance: {e}")))?;
    meta.insert(META_ARCH.to_string(), arch);
    meta.insert(META_PROVENANCE.to_string(), prov);
    state.extend(extra.iter().cloned());
    // Tensors must be on the CPU and contiguous for serialisation.
    let cpu: Vec<(String, Tensor)> = state
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| ModelError::Arch(format!("cannot serialise tensors: {e}")))?;
    // the same network and provenance always give the same bytes (and sha256)
    reid_run::canonical::safetensors(bytes)
        .map_err(|e| ModelError::Arch(format!("cannot serialise tensors: {e}")))
}

/// Save the net's weights with its architecture and provenance in the header; atomic.
pub fn save_checkpoint(net: &ReidNet, path: &Path, provenance: &Provenance) -> Result<()> {
    let bytes = checkpoint_bytes(net, provenance, &[], HashMap::new())
        .map_err(|e| ModelError::file(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub net: ReidNet,
    pub provenance: Provenance,
    pub sha256: String,
}

/// Parse `reid.arch` from a file's metadata.
pub fn arch_from_metadata(path: &Path, metadata: &HashMap<String, String>) -> Result<ArchSpec> {
    let arch = metadata.get(META_ARCH).ok_or_else(|| {
        ModelError::file(
            path,
            format!(
                "no '{META_ARCH}' in the safetensors metadata: this is not a reid-prune checkpoint. \
                 Plain torchvision/timm weights start a training run with `train --pretrained \
                 FILE`; flops, prune, export and reid-eval read them as they are"
            ),
        )
    })?;
    let spec: ArchSpec = serde_json::from_str(arch).map_err(|e| {
        ModelError::file(
            path,
            format!("'{META_ARCH}' is not a valid architecture: {e}"),
        )
    })?;
    spec.validate()
        .map_err(|e| ModelError::file(path, format!("'{META_ARCH}': {e}")))?;
    Ok(spec)
}

/// The architecture of a checkpoint from its header alone (no tensor is read).
pub fn read_arch_spec(path: &Path) -> Result<ArchSpec> {
    refuse_non_regular(path)?;
    let header =
        reid_run::header::read_safetensors_header(path).map_err(|m| ModelError::file(path, m))?;
    let metadata: HashMap<String, String> = header
        .json
        .get("__metadata__")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default();
    arch_from_metadata(path, &metadata)
}

/// Load a checkpoint written by [`save_checkpoint`] (or any file with `reid.arch` metadata).
/// `trainable` builds `Var`s for training; otherwise a detached eval-only net.
pub fn load_checkpoint(path: &Path, device: &Device, trainable: bool) -> Result<Checkpoint> {
    let file = read_safetensors(path, device)?;
    Ok(checkpoint_from_file(file, device, trainable, None)?.0)
}

/// A checkpoint read with the other tensors of its file.
pub struct CheckpointWithExtra {
    pub checkpoint: Checkpoint,
    /// The tensors named under the prefix, prefix removed.
    pub extra: HashMap<String, Tensor>,
    /// The whole header metadata.
    pub metadata: HashMap<String, String>,
}

/// A checkpoint from a file read with [`read_safetensors`] that also holds other tensors,
/// written by [`checkpoint_bytes`] with `extra` names under `extra_prefix` (e.g. a training
/// state). Takes the file already read, so a caller that looked at its metadata reads it once.
pub fn checkpoint_with_extra(
    file: TensorFile,
    device: &Device,
    trainable: bool,
    extra_prefix: &str,
) -> Result<CheckpointWithExtra> {
    let metadata = file.metadata.clone();
    let (checkpoint, extra) = checkpoint_from_file(file, device, trainable, Some(extra_prefix))?;
    Ok(CheckpointWithExtra {
        checkpoint,
        extra,
        metadata,
    })
}

pub(crate) fn checkpoint_from_file(
    file: TensorFile,
    device: &Device,
    trainable: bool,
    extra_prefix: Option<&str>,
) -> Result<(Checkpoint, HashMap<String, Tensor>)> {
    let path = file.path.as_path();
    let spec = arch_from_metadata(path, &file.metadata)?;
    check_all_finite(path, &file.tensors)?;
    let provenance = match file.metadata.get(META_PROVENANCE) {
        Some(p) => serde_json::from_str(p).map_err(|e| {
            // a well-formed record with a bad value (an input of 0x0) is not a JSON problem
            let what = if e.classify() == serde_json::error::Category::Data {
                "holds an invalid value"
            } else {
                "is not valid JSON"
            };
            ModelError::file(path, format!("'{META_PROVENANCE}' {what}: {e}"))
        })?,
        None => Provenance::default(),
    };
    let (mut tensors, mut extra) = (HashMap::new(), HashMap::new());
    for (k, t) in file.tensors {
        match extra_prefix.and_then(|p| k.strip_prefix(p)) {
            Some(rest) => {
                extra.insert(rest.to_string(), t);
            }
            None => {
                tensors.insert(k, t);
            }
        }
    }
    let report = MismatchReport::compare(&spec, &tensors, is_ignorable);
    if !report.is_empty() {
        return Err(ModelError::Mismatch {
            path: path.to_path_buf(),
            report: report.to_string(),
        });
    }
    tensors.retain(|k, _| !is_ignorable(k));
    let net = if trainable {
        ReidNet::from_tensors_trainable(&spec, &tensors, device, 0)?
    } else {
        ReidNet::from_tensors_frozen(&spec, &tensors, device)?
    };
    let ck = Checkpoint {
        net,
        provenance,
        sha256: file_sha256(path)?,
    };
    Ok((ck, extra))
}

/// Hex sha256 of a file (checkpoint identity for provenance and step reuse).
pub fn file_sha256(path: &Path) -> Result<String> {
    reid_run::file_sha256(path).map_err(|e| match e {
        reid_run::RunFileError::Read { source, .. } => {
            ModelError::file(path, format!("cannot read: {source}"))
        }
        other => ModelError::file(path, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Neck;

    fn tiny_pruned() -> ArchSpec {
        ArchSpec::resnet_with(50, 7, 0.125, 1, Neck::BnNeck)
            .unwrap()
            .with_conv_widths(&[
                ("layer1.0.conv1".into(), 3),
                ("layer2.1.conv2".into(), 5),
                ("layer4.2.conv1".into(), 1),
            ])
            .unwrap()
    }

    #[test]
    fn roundtrip_is_bit_exact_with_no_side_file() {
        let dev = Device::Cpu;
        let spec = tiny_pruned();
        let net = ReidNet::new(&spec, &dev, 0).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 32), &dev).unwrap();
        net.forward_t(&x, true).unwrap(); // move the running stats
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut prov = Provenance::new();
        prov.criterion = Some("l1".into());
        prov.extra.insert("note".into(), serde_json::json!("hello"));
        save_checkpoint(&net, &path, &prov).unwrap();
        let ck = load_checkpoint(&path, &dev, false).unwrap();
        assert_eq!(ck.net.spec(), &spec);
        assert_eq!(ck.provenance, prov);
        let a = net.state_dict().unwrap();
        let b = ck.net.state_dict().unwrap();
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
            let vb: Vec<f32> = tb.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{na}"
            );
        }
        // no temp files left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_same_checkpoint_is_the_same_bytes() {
        // trainer states carry a dozen metadata keys; a hash map's order is per map
        let net = ReidNet::new(&tiny_pruned(), &Device::Cpu, 0).unwrap();
        let meta = || -> HashMap<String, String> {
            (0..12)
                .map(|i| (format!("key{i}"), i.to_string()))
                .collect()
        };
        let prov = Provenance::new();
        let first = checkpoint_bytes(&net, &prov, &[], meta()).unwrap();
        for _ in 0..6 {
            assert!(
                checkpoint_bytes(&net, &prov, &[], meta()).unwrap() == first,
                "two writes of one checkpoint differ in their bytes"
            );
        }
        let (_, header) = safetensors::SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["key7"], "7");
    }

    #[test]
    fn a_bad_value_in_the_provenance_is_named_as_such_not_as_bad_json() {
        let net = ReidNet::new(&tiny_pruned(), &Device::Cpu, 0).unwrap();
        let mut prov = Provenance::new();
        prov.input = Some(reid_run::InputSize::new(64, 32));
        let bytes = checkpoint_bytes(&net, &prov, &[], HashMap::new()).unwrap();
        // the same length, so the header stays well-formed: an input of 0x32
        let at = bytes.windows(5).position(|w| w == b"64x32").unwrap();
        let mut tampered = bytes.clone();
        tampered[at..at + 5].copy_from_slice(b"0x032");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &tampered).unwrap();
        let e = load_checkpoint(&path, &Device::Cpu, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("'reid.provenance' holds an invalid value: input size '0x032'"),
            "{e}"
        );
    }

    #[test]
    fn shapes_from_the_header_equal_the_loaded_tensors() {
        let net = ReidNet::new(&tiny_pruned(), &Device::Cpu, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        save_checkpoint(&net, &path, &Provenance::new()).unwrap();
        let shapes = read_safetensors_shapes(&path).unwrap();
        let file = read_safetensors(&path, &Device::Cpu).unwrap();
        assert_eq!(shapes.len(), file.tensors.len());
        for (k, t) in &file.tensors {
            assert_eq!(&shapes[k], t.dims(), "{k}");
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..20]).unwrap();
        let e = read_safetensors_shapes(&path).err().unwrap().to_string();
        assert!(
            e.contains("a header of") && e.contains("in a file of 20"),
            "{e}"
        );
        // the header whole, the tensors cut
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_safetensors_shapes(&path).err().unwrap().to_string();
        assert!(
            e.contains("truncated?): tensor '") && e.contains("ends at byte"),
            "{e}"
        );
    }

    #[test]
    fn mismatches_are_listed() {
        let dev = Device::Cpu;
        let spec = tiny_pruned();
        let net = ReidNet::new(&spec, &dev, 0).unwrap();
        let mut map: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        map.remove("layer1.0.bn1.running_var");
        map.insert(
            "layer9.0.conv1.weight".into(),
            Tensor::zeros(1, DType::F32, &dev).unwrap(),
        );
        map.insert(
            "layer2.1.conv2.weight".into(),
            Tensor::zeros((4, 4, 3, 3), DType::F32, &dev).unwrap(),
        );
        let r = MismatchReport::compare(&spec, &map, is_ignorable);
        assert_eq!(r.missing, vec!["layer1.0.bn1.running_var".to_string()]);
        assert_eq!(r.unexpected, vec!["layer9.0.conv1.weight".to_string()]);
        assert_eq!(r.misshaped.len(), 1);
        let text = r.to_string();
        assert!(
            text.contains("layer2.1.conv2.weight: expected [5, 16, 3, 3]"),
            "{text}"
        );
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.safetensors");
        let e = load_checkpoint(&missing, &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("nope.safetensors") && e.contains("cannot read"),
            "{e}"
        );

        let net = ReidNet::new(&tiny_pruned(), &dev, 0).unwrap();
        let path = dir.path().join("model.safetensors");
        save_checkpoint(&net, &path, &Provenance::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let trunc = dir.path().join("trunc.safetensors");
        std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        let e = load_checkpoint(&trunc, &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("trunc.safetensors") && e.contains("truncated"),
            "{e}"
        );

        // a plain safetensors file without reid.arch
        let plain = dir.path().join("plain.safetensors");
        let t = Tensor::zeros(3, DType::F32, &dev).unwrap();
        safetensors::serialize_to_file([("a", &t)], None, &plain).unwrap();
        let e = load_checkpoint(&plain, &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reid.arch"), "{e}");

        // a NaN weight is named, not evaluated
        let mut map: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        let w = map["conv1.weight"].clone();
        let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        v[3] = f32::NAN;
        map.insert(
            "conv1.weight".into(),
            Tensor::from_vec(v, w.dims(), &dev).unwrap(),
        );
        let nan = dir.path().join("nan.safetensors");
        let mut meta = HashMap::new();
        meta.insert(
            META_ARCH.to_string(),
            serde_json::to_string(net.spec()).unwrap(),
        );
        safetensors::serialize_to_file(map.iter().map(|(k, t)| (k.as_str(), t)), Some(meta), &nan)
            .unwrap();
        let e = load_checkpoint(&nan, &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("nan.safetensors") && e.contains("conv1.weight") && e.contains("NaN"),
            "{e}"
        );
        // a folder (or FIFO) is refused, not read
        let e = load_checkpoint(dir.path(), &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");

        // unknown arch in metadata
        let mut meta = HashMap::new();
        meta.insert(META_ARCH.to_string(), "{\"depth\": 20}".to_string());
        let odd = dir.path().join("odd.safetensors");
        safetensors::serialize_to_file([("a", &t)], Some(meta), &odd).unwrap();
        let e = load_checkpoint(&odd, &dev, false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("odd.safetensors") && e.contains("reid.arch"),
            "{e}"
        );
    }
}
