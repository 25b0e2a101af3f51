//! On a GPU: the CUDA build against the CPU, on the same seeded weights. Built only with the
//! `cuda` feature and ignored by default (no GPU in CI); `scripts/gpu-check.sh` builds these
//! and `scripts/gpu-device.sh` runs them with `--ignored` on the lent GPU.
//!
//! Tolerances: cuDNN/cuBLAS sum in other orders than our CPU kernels (and may pick other
//! algorithms), so outputs agree to float rounding amplified by depth, not bit for bit.
#![cfg(feature = "cuda")]

use candle_core::Device;
use common::{randn, rel_diff};
use reid_model::{ArchSpec, Neck, ReidNet};
use reid_train::{TrainConfig, Trainer};

mod common;

fn cuda() -> Device {
    Device::new_cuda(0).expect("CUDA device 0 (these tests need a GPU: run them on one)")
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn full_resnet50_features_on_cuda_match_the_cpu() {
    let spec = ArchSpec::resnet_with(50, 751, 1.0, 1, Neck::BnNeck).unwrap();
    let x = randn(&[4, 3, 256, 128], 1);
    let cpu = ReidNet::new(&spec, &Device::Cpu, 5).unwrap();
    let gpu = ReidNet::new(&spec, &cuda(), 5).unwrap();
    let a = cpu.forward_t(&x, false).unwrap();
    let b = gpu
        .forward_t(&x.to_device(&cuda()).unwrap(), false)
        .unwrap();
    let d = rel_diff(&b.pooled, &a.pooled);
    eprintln!("resnet50 256x128 eval features: CUDA vs CPU relative diff {d:.2e}");
    assert!(d < 1e-3, "features differ by {d}");
    // the folded inference copy (what evaluation and latency use)
    let (fa, fb) = (
        cpu.inference_copy().unwrap().fold_bn().unwrap(),
        gpu.inference_copy().unwrap().fold_bn().unwrap(),
    );
    let d = rel_diff(
        &fb.forward_t(&x.to_device(&cuda()).unwrap(), false)
            .unwrap()
            .pooled,
        &fa.forward_t(&x, false).unwrap().pooled,
    );
    eprintln!("resnet50 folded inference: CUDA vs CPU relative diff {d:.2e}");
    assert!(d < 1e-3, "folded features differ by {d}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn re_id_training_steps_on_cuda_track_the_cpu() {
    // quarter width at 128×64: big enough for stable batch statistics, small enough to be quick
    let spec = ArchSpec::resnet_with(50, 16, 0.25, 1, Neck::BnNeck).unwrap();
    let pids: Vec<i64> = (0..16).map(|i| i / 4).collect();
    let cpu = ReidNet::new(&spec, &Device::Cpu, 7).unwrap();
    let gpu = ReidNet::new(&spec, &cuda(), 7).unwrap();
    let mut tc = Trainer::new(&cpu, TrainConfig::default()).unwrap();
    let mut tg = Trainer::new(&gpu, TrainConfig::default()).unwrap();
    for step in 0..3 {
        let x = randn(&[16, 3, 128, 64], 100 + step);
        let a = tc.step(&cpu, &x, &pids, 3.5e-4, None).unwrap().loss;
        let b = tg
            .step(&gpu, &x.to_device(&cuda()).unwrap(), &pids, 3.5e-4, None)
            .unwrap()
            .loss;
        eprintln!("step {step}: loss CPU {a:.6} CUDA {b:.6}");
        assert!(
            b.is_finite() && ((a - b) / a).abs() < 1e-3,
            "step {step}: {a} vs {b}"
        );
    }
    let wg: std::collections::HashMap<_, _> = gpu.named_parameters().into_iter().collect();
    let mut worst = (0f32, String::new());
    for (name, a) in cpu.named_parameters() {
        let b = &wg[&name];
        let d = rel_diff(b.as_tensor(), a.as_tensor());
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!(
        "after 3 steps: worst parameter {} at {:.2e}",
        worst.1, worst.0
    );
    assert!(worst.0 < 1e-2, "{} differs by {}", worst.1, worst.0);
}
