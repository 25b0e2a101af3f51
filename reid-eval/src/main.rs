//! `reid-eval`: feature extraction now; evaluation subcommands follow (see the evaluation issue).

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use reid_data::{list_images, Preprocess};
use reid_eval::{extract_features, load_model_for_inference, save_features, FeatureKind};
use reid_model::complexity::parse_hw;

#[derive(Parser)]
#[command(
    name = "reid-eval",
    version,
    about = "Re-ID feature extraction and evaluation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract one feature per image of a folder into a safetensors file.
    Extract {
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
        #[arg(long, value_enum, default_value = "pool")]
        feature: FeatureKind,
        /// Network input HEIGHTxWIDTH; other image sizes are resized.
        #[arg(long, default_value = "256x128")]
        input: String,
        /// Last stride of plain ImageNet weights (their files do not record it).
        #[arg(long, default_value_t = 2)]
        last_stride: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// cpu or cuda:N
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = s
        .strip_prefix("cuda:")
        .or_else(|| (s == "cuda").then_some("0"))
        .with_context(|| format!("device '{s}': expected cpu or cuda:N"))?
        .parse::<usize>()
        .with_context(|| format!("device '{s}': bad GPU index"))?;
    Device::new_cuda(ordinal).with_context(|| {
        format!(
            "device '{s}': CUDA unavailable (build with --features cuda on a machine with a GPU)"
        )
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Extract {
            weights,
            arch,
            images,
            out,
            feature,
            input,
            last_stride,
            batch_size,
            device,
        } => {
            let device = parse_device(&device)?;
            let (h, w) = parse_hw(&input)?;
            let net = load_model_for_inference(&weights, arch.as_deref(), last_stride, &device)
                .with_context(|| format!("loading weights {}", weights.display()))?;
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
            save_features(&out, &feats, &names, feature)?;
            println!(
                "{} features of dim {} ({:?}, {}) -> {}",
                names.len(),
                feats.dim(1)?,
                feature,
                net.spec().name(),
                out.display()
            );
        }
    }
    Ok(())
}
