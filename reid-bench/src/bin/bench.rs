//! Speed benchmark: `cargo run --release -p reid-bench --bin bench [-- --json] [--iters N]`.
//!
//! Prints images/s for a ResNet-18 training step (32×3×128×64), ResNet-50 inference at 256×128
//! (batch 1 and 32, BN folded and not), and a half-width pruned ResNet-50 at batch 32, with the
//! pruned/unpruned speed ratio. All figures come from this process, on this machine.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use clap::Parser;
use reid_model::complexity::complexity;
use reid_model::{ArchSpec, Neck, ReidNet};

reid_process::use_fast_allocator!();

#[derive(Parser)]
#[command(about = "reid-model speed benchmark (images/s)")]
struct Args {
    /// Timed iterations per case (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Time every conv of the full and the half-width ResNet-50 on its own (batch 32, BN folded)
    /// and print the time by kind of conv: where the half-width model loses its speed-up.
    #[arg(long)]
    per_layer: bool,
    /// Only the half-width ResNet-50 at batch 32 (for profiling it).
    #[arg(long)]
    half_only: bool,
    /// Memory layout of the folded nets' inference (the default is the library's).
    #[arg(long)]
    layout: Option<reid_model::InferenceLayout>,
    /// Only the ResNet-18 train step (for profiling it).
    #[arg(long)]
    train_only: bool,
    /// Also time full re-ID training steps (ID + triplet loss, Adam; 8×4 P×K batches) of
    /// ResNet-18 and ResNet-50 at 256×128 (slow on CPU: minutes).
    #[arg(long)]
    train_256: bool,
    /// Time one training step shape alone and print `{"case", "img_s"}` (with `--json`) or one
    /// line: what `bench/train_pairs.py` alternates with `pytorch_reference.py --train-case`.
    #[arg(long, value_enum)]
    train_case: Option<TrainCase>,
    /// Time the folded ResNet-50's inference at 256×128 with this batch alone (printed like
    /// `--train-case`; what the GPU check compares with PyTorch).
    #[arg(long)]
    infer_batch: Option<usize>,
    /// Device of `--train-case` and `--infer-batch` (cpu, cuda:N; the other cases are CPU-only).
    #[arg(long, default_value = "cpu")]
    device: reid_run::DeviceSpec,
}

/// The training steps that bound the project's runs, by name (the same names in
/// `bench/pytorch_reference.py`).
#[derive(Clone, Copy, clap::ValueEnum)]
enum TrainCase {
    /// torchvision's ResNet-18 (last stride 2), 32×3×128×64, 751 classes, cross-entropy, SGD.
    #[value(name = "r18-128x64")]
    R18At128x64,
    /// The default run's model: quarter-width ResNet-50 (last stride 1, BNNeck), 32×3×64×32
    /// (8×4 P×K), 100 identities, ID + triplet, Adam.
    #[value(name = "r50q-64x32")]
    R50QuarterAt64x32,
    /// Full ResNet-18 re-ID step at 32×3×256×128, 751 identities, ID + triplet, Adam.
    #[value(name = "r18-256x128")]
    R18At256x128,
    /// Full ResNet-50 re-ID step at 32×3×256×128, 751 identities, ID + triplet, Adam.
    #[value(name = "r50-256x128")]
    R50At256x128,
}

impl TrainCase {
    fn name(self) -> &'static str {
        match self {
            Self::R18At128x64 => "r18-128x64",
            Self::R50QuarterAt64x32 => "r50q-64x32",
            Self::R18At256x128 => "r18-256x128",
            Self::R50At256x128 => "r50-256x128",
        }
    }

    fn img_s(self, dev: &Device, iters: usize) -> Result<f64> {
        match self {
            Self::R18At128x64 => train_r18_img_s(dev, iters),
            Self::R50QuarterAt64x32 => train_reid_img_s(50, 0.25, (64, 32), 100, dev, iters),
            Self::R18At256x128 => train_reid_img_s(18, 1.0, (256, 128), 751, dev, iters),
            Self::R50At256x128 => train_reid_img_s(50, 1.0, (256, 128), 751, dev, iters),
        }
    }
}

/// Inference img/s of the folded nets in one memory layout.
struct LayoutTimes {
    layout: reid_model::InferenceLayout,
    b1: f64,
    b32: f64,
    half_b32: f64,
    /// Median over alternating (full, half) pairs of the per-pair speed ratio.
    half_over_full: f64,
}

fn median_secs(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

fn r50(half: bool) -> Result<ArchSpec> {
    let spec = ArchSpec::resnet_with(50, 0, 1.0, 2, Neck::None)?;
    if !half {
        return Ok(spec);
    }
    let halves: Vec<(String, usize)> = spec
        .prunable_convs()
        .into_iter()
        .map(|p| (p.conv, p.width / 2))
        .collect();
    Ok(spec.with_conv_widths(&halves)?)
}

fn infer_img_s(net: &ReidNet, batch: usize, iters: usize) -> Result<f64> {
    let x = Tensor::randn(0f32, 1., (batch, 3, 256, 128), net.device())?;
    let s = median_secs(iters, || {
        net.forward_t(&x, false)?;
        Ok(())
    })?;
    Ok(batch as f64 / s)
}

/// img/s of `a` and `b` timed alternately (so both see the same machine load), and the median
/// of the per-pair ratios b/a: the honest speed-up on a machine with ±15 % run-to-run noise.
fn paired_img_s(a: &ReidNet, b: &ReidNet, batch: usize, iters: usize) -> Result<(f64, f64, f64)> {
    let x = Tensor::randn(0f32, 1., (batch, 3, 256, 128), a.device())?;
    let time = |net: &ReidNet| -> Result<f64> {
        let s = Instant::now();
        net.forward_t(&x, false)?;
        Ok(s.elapsed().as_secs_f64())
    };
    time(a)?;
    time(b)?; // warm-up
    let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iters.max(1) {
        let (sa, sb) = (time(a)?, time(b)?);
        ta.push(sa);
        tb.push(sb);
        ratio.push(sa / sb);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|p, q| p.total_cmp(q));
        v[v.len() / 2]
    };
    let n = batch as f64;
    Ok((n / median(ta), n / median(tb), median(ratio)))
}

/// torchvision's ResNet-18 classification step (last stride 2, classifier on the pooled feature),
/// as `bench/pytorch_reference.py` times it. Until 2026-12 this used last stride 1 — 1.68× the
/// MACs of the PyTorch side (498 M against 296 M an image), so earlier ratios understated ours.
fn train_r18_img_s(dev: &Device, iters: usize) -> Result<f64> {
    let spec = ArchSpec::resnet_with(18, 751, 1.0, 2, Neck::None)?;
    let net = ReidNet::new(&spec, dev, 0)?;
    use reid_train::optim::{Optimizer, OptimizerConfig, OptimizerKind, ParamSlot};
    // torch.optim.SGD(lr=0.01): no momentum, no weight decay
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        weight_decay: 0.0,
    };
    let params = net.named_parameters().into_iter();
    let slots = params.map(|(name, var)| ParamSlot {
        name,
        var,
        lr_mult: 1.0,
        decay: false,
    });
    let mut opt = Optimizer::new(sgd, slots.collect());
    let x = Tensor::randn(0f32, 1., (32, 3, 128, 64), &Device::Cpu)?.to_device(dev)?;
    let labels = Tensor::from_vec(
        (0..32u32).map(|i| i * 23 % 751).collect::<Vec<_>>(),
        32,
        dev,
    )?;
    let s = median_secs(iters, || {
        let out = net.forward_t(&x, true)?;
        let logits = out.logits.expect("classifier");
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        opt.step(&loss.backward()?, 0.01)?;
        dev.synchronize()?;
        Ok(())
    })?;
    Ok(32.0 / s)
}

/// A Bag-of-Tricks re-ID training step (the engine the trainer runs) on 8×4 P×K batches.
fn train_reid_img_s(
    depth: usize,
    width: f64,
    (h, w): (usize, usize),
    classes: usize,
    dev: &Device,
    iters: usize,
) -> Result<f64> {
    use reid_train::{TrainConfig, Trainer};
    let spec = ArchSpec::resnet_with(depth, classes, width, 1, Neck::BnNeck)?;
    let net = ReidNet::new(&spec, dev, 0)?;
    let mut trainer = Trainer::new(&net, TrainConfig::default())?;
    let batch = 32;
    let x = Tensor::randn(0f32, 1., (batch, 3, h, w), &Device::Cpu)?.to_device(dev)?;
    let pids: Vec<i64> = (0..batch as i64)
        .map(|i| (i / 4) * 37 % classes as i64)
        .collect();
    let s = median_secs(iters, || {
        trainer.step(&net, &x, &pids, 3.5e-4, None)?;
        dev.synchronize()?;
        Ok(())
    })?;
    Ok(batch as f64 / s)
}

/// The folded ResNet-50 (what evaluation runs) at 256×128 on any device.
fn infer_on_img_s(dev: &Device, batch: usize, iters: usize) -> Result<f64> {
    let net = ReidNet::new(&r50(false)?, dev, 0)?
        .inference_copy()?
        .fold_bn()?;
    let x = Tensor::randn(0f32, 1., (batch, 3, 256, 128), &Device::Cpu)?.to_device(dev)?;
    let s = median_secs(iters, || {
        net.forward_t(&x, false)?;
        dev.synchronize()?;
        Ok(())
    })?;
    Ok(batch as f64 / s)
}

/// Milliseconds of each conv kind (stem, conv1, conv2, conv3, downsample) and their MACs.
fn per_kind_ms(
    spec: &ArchSpec,
    iters: usize,
    layout: reid_model::InferenceLayout,
) -> Result<std::collections::BTreeMap<String, (f64, u64)>> {
    let dev = Device::Cpu;
    let mut out = std::collections::BTreeMap::new();
    let roles: std::collections::HashMap<String, reid_model::arch::ConvRole> =
        spec.convs().into_iter().map(|c| (c.name, c.role)).collect();
    for l in complexity(spec, 256, 128)?
        .layers
        .iter()
        .filter(|l| l.kind == "conv")
    {
        use reid_model::arch::ConvRole;
        let kind = match roles.get(&l.name) {
            Some(ConvRole::Stem) => "stem".to_string(),
            Some(ConvRole::Shortcut) => "downsample".to_string(),
            Some(ConvRole::Branch(k)) => format!("conv{}", k + 1),
            None => "?".to_string(),
        };
        let ih = (l.out_hw[0] - 1) * l.stride + l.kernel - 2 * l.padding;
        let iw = (l.out_hw[1] - 1) * l.stride + l.kernel - 2 * l.padding;
        let x = Tensor::randn(0f32, 1., (32, l.in_channels, ih, iw), &dev)?;
        let w = Tensor::randn(
            0f32,
            0.1,
            (l.out_channels, l.in_channels, l.kernel, l.kernel),
            &dev,
        )?;
        let b = Tensor::zeros(l.out_channels, candle_core::DType::F32, &dev)?;
        let secs = match layout {
            reid_model::InferenceLayout::Nchw => median_secs(iters, || {
                reid_model::kernels::conv2d_bias_inference(
                    reid_model::kernels::Kernels::Native,
                    &x,
                    &w,
                    &b,
                    l.stride,
                    l.padding,
                    true,
                )?;
                Ok(())
            })?,
            reid_model::InferenceLayout::Nhwc => {
                use reid_model::kernels::channels_last::{ActNhwc, ConvNhwc};
                let conv = ConvNhwc::new(&w, &b, l.stride, l.padding)?;
                let x = ActNhwc::from_nchw(&x)?;
                median_secs(iters, || {
                    conv.forward(&x, None, true)?;
                    Ok(())
                })?
            }
        };
        let e = out.entry(kind).or_insert((0.0, 0u64));
        e.0 += secs * 1e3;
        e.1 += l.macs * 32;
    }
    Ok(out)
}

fn main() -> Result<()> {
    reid_process::default_sigpipe();
    reid_process::alloc::configure();
    reid_process::tune_thread_pools();
    let args = Args::parse();
    let dev = Device::Cpu;
    if args.train_case.is_some() || args.infer_batch.is_some() {
        let on = reid_model::device::open_device(args.device)?;
        let (name, v) = match (args.train_case, args.infer_batch) {
            (Some(case), _) => (
                format!("train {}", case.name()),
                case.img_s(&on, args.iters)?,
            ),
            (None, Some(b)) => (
                format!("infer r50-256x128-b{b}"),
                infer_on_img_s(&on, b, args.iters)?,
            ),
            (None, None) => unreachable!("checked above"),
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({"case": name, "device": args.device, "img_s": v})
            );
        } else {
            println!("{name} on {}: {v:.2} img/s", args.device);
        }
        return Ok(());
    }
    let train_r18 = train_r18_img_s(&dev, args.iters)?;
    if args.train_only {
        println!("train step resnet18 32x3x128x64 (751 ids): {train_r18:.2} img/s");
        if args.train_256 {
            for depth in [18, 50] {
                let v = train_reid_img_s(depth, 1.0, (256, 128), 751, &dev, args.iters.min(2))?;
                println!("train re-ID resnet{depth} 32x3x256x128 (ID+tri): {v:.2} img/s");
            }
        }
        return Ok(());
    }
    let full = ReidNet::new(&r50(false)?, &dev, 0)?.inference_copy()?;
    let full_folded = full.fold_bn()?;
    let half_spec = r50(true)?;
    let half_folded = ReidNet::new(&half_spec, &dev, 1)?.fold_bn()?;
    let macs_ratio = complexity(&half_spec, 256, 128)?.backbone.macs as f64
        / complexity(&r50(false)?, 256, 128)?.backbone.macs as f64;

    if args.per_layer {
        let layout = args.layout.unwrap_or_default();
        println!("layout {layout:?}");
        let full = per_kind_ms(&r50(false)?, args.iters, layout)?;
        let half = per_kind_ms(&r50(true)?, args.iters, layout)?;
        println!(
            "{:<12} {:>10} {:>10} {:>8} {:>8} {:>9} {:>9}",
            "convs", "full ms", "half ms", "speed", "MACs", "full GF/s", "half GF/s"
        );
        let (mut tf, mut th) = (0.0, 0.0);
        for (k, (fm, fmacs)) in &full {
            let (hm, hmacs) = half[k];
            tf += fm;
            th += hm;
            println!(
                "{k:<12} {fm:>10.1} {hm:>10.1} {:>7.2}x {:>7.3}x {:>9.1} {:>9.1}",
                fm / hm,
                hmacs as f64 / *fmacs as f64,
                2.0 * *fmacs as f64 / fm / 1e6,
                2.0 * hmacs as f64 / hm / 1e6
            );
        }
        println!(
            "{:<12} {tf:>10.1} {th:>10.1} {:>7.2}x (convs only, batch 32 at 256x128)",
            "all",
            tf / th
        );
        return Ok(());
    }
    if args.half_only {
        let layout = args.layout.unwrap_or_default();
        let half = ReidNet::new(&r50(true)?, &dev, 1)?
            .fold_bn()?
            .with_inference_layout(layout);
        let v = infer_img_s(&half, 32, args.iters)?;
        println!("infer half-width resnet50 batch 32 (folded, {layout:?}): {v:.2} img/s");
        let full = full_folded.with_inference_layout(layout);
        let v = infer_img_s(&full, 32, args.iters)?;
        println!("infer resnet50 batch 32 (folded, {layout:?}): {v:.2} img/s");
        return Ok(());
    }
    // The library's default layout, and the other one for comparison.
    let default_layout = reid_model::InferenceLayout::default();
    let other_layout = match default_layout {
        reid_model::InferenceLayout::Nhwc => reid_model::InferenceLayout::Nchw,
        reid_model::InferenceLayout::Nchw => reid_model::InferenceLayout::Nhwc,
    };
    let mut by_layout = Vec::new();
    for layout in [default_layout, other_layout] {
        let full = full_folded.fold_bn()?.with_inference_layout(layout);
        let half = half_folded.fold_bn()?.with_inference_layout(layout);
        let b1 = infer_img_s(&full, 1, args.iters.max(5))?;
        let (b32, half_b32, half_over_full) = paired_img_s(&full, &half, 32, args.iters)?;
        by_layout.push(LayoutTimes {
            layout,
            b1,
            b32,
            half_b32,
            half_over_full,
        });
    }
    let b32_unfolded = infer_img_s(&full, 32, args.iters)?;
    let (b1, b32, half_b32) = (by_layout[0].b1, by_layout[0].b32, by_layout[0].half_b32);
    let train_256 = if args.train_256 {
        Some((
            TrainCase::R18At256x128.img_s(&dev, args.iters.min(2))?,
            TrainCase::R50At256x128.img_s(&dev, args.iters.min(2))?,
        ))
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "train_r18_img_s": train_r18,
                "infer_r50_b1_img_s": b1,
                "infer_r50_b32_img_s": b32,
                "infer_r50_b32_unfolded_img_s": b32_unfolded,
                "infer_r50_half_b32_img_s": half_b32,
                "half_over_full_speed": by_layout[0].half_over_full,
                "half_over_full_macs": macs_ratio,
                "threads": candle_core::utils::get_num_threads(),
                "train_reid_r18_256x128_img_s": train_256.map(|t| t.0),
                "train_reid_r50_256x128_img_s": train_256.map(|t| t.1),
                "layout": by_layout[0].layout,
                "layouts": by_layout.iter().map(|t| serde_json::json!({
                    "layout": t.layout,
                    "infer_r50_b1_img_s": t.b1,
                    "infer_r50_b32_img_s": t.b32,
                    "infer_r50_half_b32_img_s": t.half_b32,
                    "half_over_full_speed": t.half_over_full,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "reid-model bench, {} threads, median of {} iterations",
            candle_core::utils::get_num_threads(),
            args.iters
        );
        println!("{:<52} {:>10}", "case", "img/s");
        println!(
            "{:<52} {:>10.2}",
            "train step resnet18 32x3x128x64 (751 ids)", train_r18
        );
        println!(
            "{:<52} {:>10.2}",
            format!(
                "infer resnet50 256x128 batch 1 (folded, {:?})",
                default_layout
            ),
            b1
        );
        println!(
            "{:<52} {:>10.2}",
            format!(
                "infer resnet50 256x128 batch 32 (folded, {:?})",
                default_layout
            ),
            b32
        );
        println!(
            "{:<52} {:>10.2}",
            "infer resnet50 256x128 batch 32 (BN unfolded, nchw)", b32_unfolded
        );
        println!(
            "{:<52} {:>10.2}",
            format!("infer half-width resnet50 batch 32 ({:?})", default_layout),
            half_b32
        );
        if let Some((r18, r50)) = train_256 {
            println!(
                "{:<52} {:>10.2}",
                "train re-ID resnet18 32x3x256x128 (ID+tri)", r18
            );
            println!(
                "{:<52} {:>10.2}",
                "train re-ID resnet50 32x3x256x128 (ID+tri)", r50
            );
        }
        println!(
            "half-width / full: {:.2}x faster at {:.3}x the MACs (median of paired runs)",
            by_layout[0].half_over_full, macs_ratio
        );
        println!();
        println!(
            "{:<8} {:>12} {:>12} {:>14} {:>10}",
            "layout", "r50 b1", "r50 b32", "half r50 b32", "half/full"
        );
        for t in &by_layout {
            println!(
                "{:<8} {:>12.2} {:>12.2} {:>14.2} {:>9.2}x",
                format!("{:?}", t.layout).to_lowercase(),
                t.b1,
                t.b32,
                t.half_b32,
                t.half_over_full
            );
        }
    }
    Ok(())
}
