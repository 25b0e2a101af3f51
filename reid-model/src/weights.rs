//! The one loader of network weights: a reid checkpoint (architecture in its `reid.arch` header)
//! or a plain torchvision/timm ResNet state dict (architecture inferred from the tensor shapes).
//! Whatever the caller, every tensor is checked: finite values, and no missing, unexpected or
//! mis-shaped tensor against the architecture (`MismatchReport`) — never a silent partial load.
//! Callers differ only in [`LoadOptions`]: trainable or frozen, the architecture they expect, and
//! what a plain file's `fc` and head become.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::arch::{ArchSpec, Neck};
use crate::checkpoint::{
    check_all_finite, checkpoint_from_file, read_safetensors, MismatchReport, Provenance,
    TensorFile, META_ARCH,
};
use crate::error::{ModelError, Result};
use crate::hub::{infer_backbone_spec, HeadOptions};
use crate::net::ReidNet;

/// What a plain state dict's `fc.weight` / `fc.bias` become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlainFc {
    /// Dropped; the head comes from [`LoadOptions::head`] (fresh classifier, if any).
    Drop,
    /// `fc.weight` becomes the classifier (its row count the class count); the bias, which a
    /// re-ID classifier does not have, is dropped.
    AsClassifier,
}

/// How to load a weights file.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `Var`s for training, or a detached eval-only net.
    pub trainable: bool,
    /// The architecture the user said the file holds (`--arch` / `arch`: `resnet50`, `50`); a
    /// file holding another depth is an error naming both, never silently used.
    pub expect_arch: Option<String>,
    /// Whether a reid checkpoint is accepted (a source of ImageNet weights must be plain).
    pub accept_checkpoint: bool,
    /// For a plain state dict: the last stride, neck, class count and head seed.
    pub head: HeadOptions,
    /// For a plain state dict: what `fc.*` becomes.
    pub fc: PlainFc,
}

impl LoadOptions {
    /// An eval-only net for feature extraction: a checkpoint as saved, or a plain backbone with
    /// no neck and no classifier.
    pub fn inference(last_stride: usize) -> Self {
        Self {
            trainable: false,
            expect_arch: None,
            accept_checkpoint: true,
            head: HeadOptions {
                num_classes: 0,
                last_stride,
                neck: Neck::None,
                seed: 0,
            },
            fc: PlainFc::Drop,
        }
    }

    /// A trainable net from any weights (pruning, scoring, export): a plain file's `fc` becomes
    /// its classifier, so class-aware criteria can score an ImageNet model.
    pub fn any_trainable() -> Self {
        Self {
            trainable: true,
            expect_arch: None,
            accept_checkpoint: true,
            head: HeadOptions {
                num_classes: 0,
                last_stride: 2,
                neck: Neck::None,
                seed: 0,
            },
            fc: PlainFc::AsClassifier,
        }
    }

    /// ImageNet initialisation of a re-ID net: plain weights only, `fc` dropped, the head of
    /// `head` initialised fresh.
    pub fn imagenet(head: HeadOptions) -> Self {
        Self {
            trainable: true,
            expect_arch: None,
            accept_checkpoint: false,
            head,
            fc: PlainFc::Drop,
        }
    }

    pub fn expecting(mut self, arch: Option<&str>) -> Self {
        self.expect_arch = arch.map(str::to_string);
        self
    }
}

/// A loaded net and where it came from.
pub struct LoadedWeights {
    pub net: ReidNet,
    /// A checkpoint's provenance; for a plain file, one naming it as the source weights.
    pub provenance: Provenance,
    /// Whether the file was a reid checkpoint (`reid.arch` header) rather than a plain state dict.
    pub is_checkpoint: bool,
}

/// Load `path` as [`LoadOptions`] say.
pub fn load_weights(path: &Path, opts: &LoadOptions, device: &Device) -> Result<LoadedWeights> {
    let file = read_safetensors(path, device)?;
    let loaded = if file.metadata.contains_key(META_ARCH) {
        if !opts.accept_checkpoint {
            return Err(ModelError::file(
                path,
                "is a reid checkpoint (it has a 'reid.arch' header), not plain ImageNet weights: \
                 start from it with a checkpoint option (`init`, `--checkpoint`) instead",
            ));
        }
        let (ck, _) = checkpoint_from_file(file, device, opts.trainable, None)?;
        LoadedWeights {
            net: ck.net,
            provenance: ck.provenance,
            is_checkpoint: true,
        }
    } else {
        let net = net_from_plain(file, opts, device)?;
        let mut provenance = Provenance::new();
        provenance.source_weights = Some(path.display().to_string());
        LoadedWeights {
            net,
            provenance,
            is_checkpoint: false,
        }
    };
    if let Some(want) = &opts.expect_arch {
        check_expected_arch(path, want, loaded.net.spec())?;
    }
    Ok(loaded)
}

/// An `--arch` the user gave (`resnet50`, `50`) against the architecture a file holds.
pub fn check_expected_arch(path: &Path, want: &str, held: &ArchSpec) -> Result<()> {
    let expected = ArchSpec::from_name(want, 0)?;
    if expected.depth != held.depth {
        return Err(ModelError::file(
            path,
            format!("--arch {want} given, but the file holds a {}", held.name()),
        ));
    }
    Ok(())
}

fn net_from_plain(file: TensorFile, opts: &LoadOptions, device: &Device) -> Result<ReidNet> {
    let path = file.path.clone();
    let mut tensors: HashMap<String, Tensor> = file
        .tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    check_all_finite(&path, &tensors)?;
    let fc = tensors.remove("fc.weight");
    tensors.remove("fc.bias");
    let mut spec = infer_backbone_spec(&path, &tensors, opts.head.last_stride)?;
    let report = MismatchReport::compare(&spec, &tensors, |_| false);
    if !report.is_empty() {
        return Err(ModelError::Mismatch {
            path,
            report: format!("not a plain ResNet state dict:\n{report}"),
        });
    }
    spec.neck = opts.head.neck;
    spec.num_classes = opts.head.num_classes;
    match (opts.fc, fc) {
        (PlainFc::AsClassifier, Some(w)) => {
            if w.dims().len() != 2 || w.dim(1)? != spec.feature_dim {
                return Err(ModelError::file(
                    &path,
                    format!(
                        "fc.weight has shape {:?}; expected [classes, {}]",
                        w.dims(),
                        spec.feature_dim
                    ),
                ));
            }
            spec.num_classes = w.dim(0)?;
            tensors.insert("classifier.weight".into(), w);
        }
        (PlainFc::AsClassifier, None) | (PlainFc::Drop, _) => {}
    }
    // Head tensors absent from the map are initialised by the builder.
    if opts.trainable {
        ReidNet::from_tensors_trainable(&spec, &tensors, device, opts.head.seed)
    } else {
        ReidNet::from_tensors_frozen(&spec, &tensors, device)
    }
}
