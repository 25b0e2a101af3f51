//! ImageNet weights (torchvision / timm ResNets) from a local `.safetensors` file or a Hugging Face
//! hub repo id, turned into a trainable ReidNet: `fc.*` dropped, re-ID head freshly initialised.
//!
//! Hub resolution goes through `hf-hub`: the local cache first (`HF_HUB_CACHE`, else `HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), then a download unless `HF_HUB_OFFLINE` is set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
#[cfg(feature = "hub")]
use hf_hub::{Cache, Repo, RepoType};

use crate::arch::{stage_blocks, ArchSpec, BlockKind, BlockSpec, Neck};
use crate::error::{ModelError, Result};
use crate::net::ReidNet;

/// File fetched from a hub repo.
pub const HUB_WEIGHTS_FILE: &str = "model.safetensors";

#[cfg(feature = "hub")]
fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) if !p.is_empty() => Cache::new(PathBuf::from(p)),
        _ => Cache::from_env(),
    }
}

#[cfg(feature = "hub")]
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Resolve a weights source to a local file: an existing path is used as is; otherwise it is a hub
/// repo id (`owner/name`, optionally `owner/name@revision`).
pub fn resolve_weights(source: &str) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    return resolve_weights_in(source, &hub_cache(), offline());
    #[cfg(not(feature = "hub"))]
    {
        local_weights(source)?;
        Err(ModelError::Hub(format!(
            "'{source}' is not a file, and this build has no hub support (reid-model's `hub` \
             feature): pass a local .safetensors path"
        )))
    }
}

/// An existing file is used as is (`Some`); a source that looks like a path but is not a
/// file is an error; anything else may be a hub id (`None`).
fn local_weights(source: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(source);
    if path.is_file() {
        return Ok(Some(path.to_path_buf()));
    }
    let looks_like_path = source.ends_with(".safetensors")
        || source.starts_with('.')
        || source.starts_with('/')
        || source.matches('/').count() != 1;
    if looks_like_path {
        return Err(ModelError::file(
            path,
            "weights file not found (give an existing .safetensors file or a hub id such as timm/resnet50.tv_in1k)",
        ));
    }
    Ok(None)
}

/// [`resolve_weights`] with an explicit hub cache and offline flag.
#[cfg(feature = "hub")]
pub fn resolve_weights_in(source: &str, cache: &Cache, offline: bool) -> Result<PathBuf> {
    if let Some(p) = local_weights(source)? {
        return Ok(p);
    }
    let (id, revision) = match source.split_once('@') {
        Some((id, rev)) => (id.to_string(), rev.to_string()),
        None => (source.to_string(), "main".to_string()),
    };
    let repo = Repo::with_revision(id.clone(), RepoType::Model, revision.clone());
    if let Some(p) = cache.repo(repo.clone()).get(HUB_WEIGHTS_FILE) {
        return Ok(p);
    }
    if offline {
        return Err(ModelError::Hub(format!(
            "{id}@{revision}: {HUB_WEIGHTS_FILE} is not in the hub cache {} and HF_HUB_OFFLINE is set; \
             download it on a connected machine (or unset HF_HUB_OFFLINE), or pass a local .safetensors path",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::Hub(format!("cannot start the hub client: {e}")))?;
    api.repo(repo).get(HUB_WEIGHTS_FILE).map_err(|e| {
        ModelError::Hub(format!(
            "{id}@{revision}: cannot download {HUB_WEIGHTS_FILE} ({e}); cache {} holds no copy. \
             Check the repo id and the network, or pass a local .safetensors path",
            cache.path().display()
        ))
    })
}

/// Infer the backbone of a torchvision/timm-named ResNet from its tensor shapes (so pruned
/// torchvision models load too). `last_stride` cannot be seen in weights and is given.
pub fn infer_backbone_spec(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    last_stride: usize,
) -> Result<ArchSpec> {
    let shapes: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    infer_backbone_spec_from_shapes(path, &shapes, last_stride)
}

/// [`infer_backbone_spec`] from tensor shapes alone (a file's header:
/// [`crate::checkpoint::read_safetensors_shapes`]), without reading the weights.
pub fn infer_backbone_spec_from_shapes(
    path: &Path,
    tensors: &HashMap<String, Vec<usize>>,
    last_stride: usize,
) -> Result<ArchSpec> {
    let dim0 = |name: &str| -> Result<usize> {
        tensors
            .get(name)
            .and_then(|t| t.first().copied())
            .ok_or_else(|| {
                ModelError::file(
                    path,
                    format!("missing tensor '{name}': not a torchvision/timm ResNet state dict"),
                )
            })
    };
    let stem_width = dim0("conv1.weight")?;
    let block = if tensors.contains_key("layer1.0.conv3.weight") {
        BlockKind::Bottleneck
    } else {
        BlockKind::Basic
    };
    let mut stages = Vec::with_capacity(4);
    let mut counts = [0usize; 4];
    for (s, count) in counts.iter_mut().enumerate() {
        let mut blocks = Vec::new();
        while tensors.contains_key(&format!("layer{}.{}.conv1.weight", s + 1, blocks.len())) {
            let b = blocks.len();
            let widths = (0..block.num_convs())
                .map(|k| dim0(&format!("layer{}.{b}.conv{}.weight", s + 1, k + 1)))
                .collect::<Result<Vec<_>>>()?;
            let stride = match (s, b) {
                (0, _) | (_, 1..) => 1,
                (3, 0) => last_stride,
                _ => 2,
            };
            let downsample =
                tensors.contains_key(&format!("layer{}.{b}.downsample.0.weight", s + 1));
            blocks.push(BlockSpec {
                widths,
                stride,
                downsample,
            });
        }
        *count = blocks.len();
        stages.push(blocks);
    }
    let depth = [18, 34, 50, 101, 152]
        .into_iter()
        .find(|&d| stage_blocks(d).map(|(k, c)| k == block && c == counts).unwrap_or(false))
        .ok_or_else(|| {
            ModelError::file(
                path,
                format!("{block:?} blocks per stage {counts:?} match no ResNet depth (18/34/50/101/152)"),
            )
        })?;
    let feature_dim = stages[3].last().map(BlockSpec::out_width).unwrap_or(0);
    let spec = ArchSpec {
        depth,
        block,
        stem_width,
        stages,
        last_stride,
        neck: Neck::None,
        feature_dim,
        num_classes: 0,
        width_mult: 1.0,
    };
    spec.validate().map_err(|e| {
        ModelError::file(path, format!("inferred architecture is inconsistent: {e}"))
    })?;
    Ok(spec)
}

/// Options for the re-ID head put on ImageNet weights.
#[derive(Clone, Copy, Debug)]
pub struct HeadOptions {
    pub num_classes: usize,
    pub last_stride: usize,
    pub neck: Neck,
    /// Seed of the head's initialisation.
    pub seed: u64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            num_classes: 0,
            last_stride: 1,
            neck: Neck::BnNeck,
            seed: 0,
        }
    }
}

/// Build a trainable ReidNet from ImageNet weights (`source`: path or hub id). `fc.*` is dropped;
/// the BNNeck and classifier are initialised fresh. Any other tensor the backbone does not use
/// is an error (never a silent partial load).
pub fn load_imagenet(
    source: &str,
    head: HeadOptions,
    device: &Device,
) -> Result<(ReidNet, PathBuf)> {
    let path = resolve_weights(source)?;
    let net = load_imagenet_file(&path, head, device)?;
    Ok((net, path))
}

/// [`load_imagenet`] from a resolved local file.
pub fn load_imagenet_file(path: &Path, head: HeadOptions, device: &Device) -> Result<ReidNet> {
    Ok(
        crate::weights::load_weights(path, &crate::weights::LoadOptions::imagenet(head), device)?
            .net,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn infers_tiny_bottleneck_and_rejects_stray_tensors() {
        let dev = Device::Cpu;
        let spec = ArchSpec::resnet_with(50, 0, 0.125, 2, Neck::None).unwrap();
        let net = ReidNet::new(&spec, &dev, 0).unwrap();
        let mut map: HashMap<String, Tensor> = net.state_dict().unwrap().into_iter().collect();
        let got = infer_backbone_spec(Path::new("x"), &map, 2).unwrap();
        // width_mult is not recorded in weights; everything else is recovered
        assert_eq!(
            ArchSpec {
                width_mult: spec.width_mult,
                ..got
            },
            spec
        );
        map.insert(
            "layer1.0.se.fc1.weight".into(),
            Tensor::zeros(2, DType::F32, &dev).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let named: Vec<(String, Tensor)> = map.into_iter().collect();
        safetensors::serialize_to_file(named.iter().map(|(n, t)| (n.as_str(), t)), None, &path)
            .unwrap();
        let e = load_imagenet(path.to_str().unwrap(), HeadOptions::default(), &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unexpected") && e.contains("layer1.0.se.fc1.weight"),
            "{e}"
        );
    }

    #[test]
    fn missing_local_file_is_named() {
        let e = resolve_weights("/nonexistent/resnet50.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/resnet50.safetensors"), "{e}");
    }
}
