//! `reid-eval extract`: one feature per image of a folder into a safetensors file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use reid_data::{list_images, Preprocess};
use reid_eval::{extract_features, save_features, FeatureKind};

/// Extract one feature per image of a folder into a safetensors file.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weights: a reid-prune checkpoint, or torchvision/timm ResNet weights (.safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Expected architecture (checked against the file), e.g. resnet50.
    #[arg(long)]
    arch: Option<String>,
    /// Folder of images (sorted by file name).
    #[arg(long)]
    images: PathBuf,
    /// Output file (tensor `features`, N × D f32; file names in the metadata).
    #[arg(long)]
    out: PathBuf,
    /// The feature: pool (before BNNeck) or neck.
    #[arg(long, value_enum, default_value = "pool")]
    feature: FeatureKind,
    /// Network input HEIGHTxWIDTH; other image sizes are resized (default: the size the model
    /// was trained at, from its provenance; 256x128 when it does not say).
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// Last stride of plain ImageNet weights (their files do not record it).
    #[arg(long, default_value_t = 2)]
    last_stride: usize,
    /// Images a batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
}

pub fn run(a: Args) -> Result<()> {
    let Args {
        weights,
        arch,
        images,
        out,
        feature,
        input,
        last_stride,
        batch_size,
        device,
    } = a;
    refuse_foreign_out(&out)?;
    let device = reid_model::device::open_device(device)?;
    let loaded = reid_model::load_weights(
        &weights,
        &reid_model::LoadOptions::inference(last_stride).expecting(arch.as_deref()),
        &device,
    )
    .with_context(|| format!("loading weights {}", weights.display()))?;
    let net = loaded.net;
    let input = input
        .or(loaded.provenance.input)
        .unwrap_or(reid_run::InputSize::new(256, 128));
    let (h, w) = input.hw();
    let paths = list_images(&images)?;
    anyhow::ensure!(
        !paths.is_empty(),
        "{}: no images found (jpg, png, bmp, webp)",
        images.display()
    );
    let feats = extract_features(
        &net,
        &paths,
        &Preprocess::imagenet(h, w),
        batch_size,
        feature,
        true,
    )?;
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    // one writer a folder while the features are written
    let folder = reid_run::folder_of(&out);
    let _lock = reid_run::lock::claim_folder(folder, "extract")?;
    save_features(&out, &feats, &names, feature)?;
    println!(
        "{} features of dim {} ({:?}, {}) -> {}",
        names.len(),
        feats.dim(1)?,
        feature,
        net.spec().name(),
        out.display()
    );
    Ok(())
}

/// `--out` may replace only an earlier feature file (a safetensors file with a `features`
/// tensor): never a model, a record or an image.
fn refuse_foreign_out(out: &std::path::Path) -> Result<()> {
    if out.is_dir() {
        anyhow::bail!(
            "--out {}: is a folder; expected a file name such as features.safetensors",
            out.display()
        );
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    if name
        .as_deref()
        .is_some_and(|n| n != "features.safetensors" && reid_run::metrics::RUN_FILES.contains(&n))
    {
        anyhow::bail!(
            "--out {}: that name is a run folder's own record; give another name, e.g. \
             features.safetensors",
            out.display()
        );
    }
    if !out.exists() {
        return Ok(());
    }
    let ours = reid_model::checkpoint::read_safetensors(out, &candle_core::Device::Cpu)
        .is_ok_and(|f| f.tensors.contains_key("features") && f.metadata.contains_key("files"));
    if !ours {
        anyhow::bail!(
            "--out {} exists and is not a feature file of `reid-eval extract`: it would be \
             replaced; give another name",
            out.display()
        );
    }
    Ok(())
}
