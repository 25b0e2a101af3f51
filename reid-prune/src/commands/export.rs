//! `reid-prune export`: a checkpoint as a standard ONNX graph (image tensor → re-ID feature).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use reid_model::onnx::{export, OnnxBatch, OnnxFeature, OnnxOptions};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Feature {
    /// The global-average-pooled backbone feature.
    Pool,
    /// The BNNeck output (the pooled feature for a net without a neck): what evaluation uses.
    Neck,
}

/// Write a checkpoint (unpruned, pruned, or plain torchvision weights) as an ONNX model.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A reid-prune checkpoint, or plain torchvision/timm ResNet weights (.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The .onnx file to write (atomically: a failed export leaves no file and replaces none).
    #[arg(long)]
    out: PathBuf,
    /// The feature the graph outputs.
    #[arg(long, value_enum, default_value = "neck")]
    feature: Feature,
    /// A fixed batch size (default: a dynamic batch dimension named `batch`).
    #[arg(long, conflicts_with = "dynamic_batch")]
    batch: Option<usize>,
    /// A dynamic batch dimension (the default).
    #[arg(long)]
    dynamic_batch: bool,
    /// Input HEIGHTxWIDTH (default: the size the model was trained at, from its provenance;
    /// 256x128 when it does not say).
    #[arg(long)]
    input: Option<reid_run::InputSize>,
    /// ONNX opset (13 or later).
    #[arg(long, default_value_t = 13)]
    opset: i64,
    /// Fold every BatchNorm into its conv (fewer nodes; the same features to float rounding).
    #[arg(long)]
    fold_bn: bool,
    /// Take RGB values in [0, 255] and normalise inside the graph (ImageNet mean/std);
    /// without it the input is the normalised NCHW tensor a torchvision model takes.
    #[arg(long)]
    bake_normalisation: bool,
    /// For plain weights: the architecture they must hold (checked).
    #[arg(long)]
    arch: Option<String>,
}

/// The largest fixed batch an export takes.
const MAX_BATCH: usize = 65_536;

pub fn run(a: Args) -> Result<()> {
    let (net, provenance) =
        reid_prune::prune_run::load_any(&a.checkpoint, a.arch.as_deref(), &Device::Cpu)
            .with_context(|| format!("reading checkpoint {}", a.checkpoint.display()))?;
    if a.out.is_dir() {
        bail!(
            "--out {}: is a folder; expected a file name such as model.onnx",
            a.out.display()
        );
    }
    // an export replaces only an earlier export: never a model, a record or a dataset image
    let name = a.out.file_name().map(|n| n.to_string_lossy().into_owned());
    let is_onnx = a.out.extension().is_some_and(|e| e == "onnx");
    if a.out.exists() && !is_onnx {
        bail!(
            "--out {} exists and is not an .onnx file: the export would replace it; give a \
             name ending in .onnx",
            a.out.display()
        );
    }
    if a.out.is_file() && !std::fs::read(&a.out).is_ok_and(|b| reid_model::onnx::is_onnx_model(&b))
    {
        bail!(
            "--out {} exists and is not an ONNX model (its name says .onnx, its content does \
             not): the export would replace it; give another name",
            a.out.display()
        );
    }
    if !is_onnx
        && name
            .as_deref()
            .is_some_and(|n| reid_run::metrics::RUN_FILES.contains(&n))
    {
        bail!(
            "--out {}: that name is a run folder's own file; give a name ending in .onnx",
            a.out.display()
        );
    }
    if let Some(b) = a.batch.filter(|&b| b > MAX_BATCH) {
        bail!("--batch {b}: at most {MAX_BATCH} images (the graph stores it as a dimension)");
    }
    let input = a
        .input
        .or(provenance.input)
        .unwrap_or(reid_run::InputSize::new(256, 128));
    let feature = match a.feature {
        Feature::Pool => OnnxFeature::Pool,
        Feature::Neck => OnnxFeature::Neck,
    };
    let opts = OnnxOptions {
        feature,
        batch: a.batch.map_or(OnnxBatch::Dynamic, OnnxBatch::Fixed),
        input: input.hw(),
        opset: a.opset,
        fold_bn: a.fold_bn,
        bake_normalisation: a.bake_normalisation,
        metadata: vec![
            (
                reid_model::checkpoint::META_ARCH.into(),
                serde_json::to_string(net.spec())?,
            ),
            (
                reid_model::checkpoint::META_PROVENANCE.into(),
                serde_json::to_string(&provenance)?,
            ),
            (
                "reid.feature".into(),
                format!("{:?}", a.feature).to_lowercase(),
            ),
            ("reid.input".into(), input.to_string()),
            (
                "reid.normalisation".into(),
                if a.bake_normalisation {
                    "in the graph: input is RGB in [0, 255]".into()
                } else {
                    format!(
                        "expected: (RGB/255 - {:?}) / {:?}",
                        reid_model::onnx::MEAN,
                        reid_model::onnx::STD
                    )
                },
            ),
        ],
    };
    let bytes = export(&net, &opts).context("building the ONNX graph")?;
    check_finite_features(&net, input, opts.feature, opts.fold_bn)?;
    // one writer a folder: the export's own, while it writes
    let folder = reid_run::folder_of(&a.out);
    super::refuse_grid_folder(folder, "export")?;
    let _lock = reid_run::lock::claim_folder(folder, "export")?;
    reid_run::write_atomic(&a.out, &bytes)?;
    eprintln!(
        "wrote {} ({:.1} MB): {} {}, input {}x3x{}, output {} x {} ({:?} feature)",
        a.out.display(),
        bytes.len() as f64 / 1e6,
        net.spec().name(),
        if provenance.parent.is_some() {
            "(pruned or fine-tuned)"
        } else {
            ""
        },
        a.batch.map_or("batch".to_string(), |b| b.to_string()),
        input,
        a.batch.map_or("batch".to_string(), |b| b.to_string()),
        net.spec().feature_dim,
        a.feature
    );
    Ok(())
}

/// `n` values in [−2, 2] from a fixed linear congruential sequence (the same every export).
fn noise(n: usize) -> Vec<f32> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Finite weights can still overflow on the way through (a corrupt or diverged model): the
/// graph's feature for a neutral, a bright and a noise image is computed first, and a NaN or infinite
/// one refuses the export instead of writing a model that answers NaN.
fn check_finite_features(
    net: &reid_model::ReidNet,
    input: reid_run::InputSize,
    feature: OnnxFeature,
    fold_bn: bool,
) -> Result<()> {
    let (h, w) = input.hw();
    let dev = Device::Cpu;
    let x = candle_core::Tensor::cat(
        &[
            candle_core::Tensor::zeros((1, 3, h, w), candle_core::DType::F32, &dev)?,
            // white in ImageNet normalisation: the largest values a real image gives
            candle_core::Tensor::full(2.6f32, (1, 3, h, w), &dev)?,
            // seeded noise: plain images can leave late layers at zero, which hides their
            // overflow (a ±3e38 layer4 conv passed the two plain images)
            candle_core::Tensor::from_vec(noise(3 * h * w), (1, 3, h, w), &dev)?,
        ],
        0,
    )?;
    // the net the graph holds: with BN folded, a huge weight times its BN scale can overflow
    // where the unfolded net stays finite
    let inference = net.inference_copy()?;
    let out = if fold_bn {
        inference.fold_bn()?.forward_t(&x, false)?
    } else {
        inference.forward_t(&x, false)?
    };
    let f = match feature {
        OnnxFeature::Pool => out.pooled,
        OnnxFeature::Neck => out.neck,
    };
    let bad = f
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|v| !v.is_finite())
        .count();
    if bad > 0 {
        bail!(
            "the model's feature has {bad} NaN or infinite value(s) on a test image (plain or noise): its \
             weights overflow (a corrupt or diverged model); nothing was written"
        );
    }
    Ok(())
}
