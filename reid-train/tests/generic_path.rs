//! The code path CUDA runs, checked on the CPU: with `Kernels::Generic` every layer uses
//! candle's generic ops (conv2d and its stock backward, composed BN, ReLU and pools) instead of
//! this crate's CPU kernels. Forward, gradients, a few training steps and inference must agree
//! with the fast CPU path, so that a GPU runs code already known to be right.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{randn, rel_diff};
use reid_model::layers::Kernels;
use reid_model::{ArchSpec, Neck, ReidNet};
use reid_train::{TrainConfig, Trainer};

mod common;

fn spec(depth: usize) -> ArchSpec {
    ArchSpec::resnet_with(depth, 6, 0.125, 1, Neck::BnNeck).unwrap()
}

/// The outputs of a train-mode forward and the gradient of every parameter of a loss that
/// weights every output with fixed random numbers.
fn forward_backward(
    net: &ReidNet,
    x: &Tensor,
    train: bool,
) -> (Vec<Tensor>, HashMap<String, Tensor>) {
    let out = net.forward_t(x, train).unwrap();
    let logits = out.logits.clone().unwrap();
    let loss = ((&out.pooled * randn(out.pooled.dims(), 11))
        .unwrap()
        .sum_all()
        .unwrap()
        + (&logits * randn(logits.dims(), 12))
            .unwrap()
            .sum_all()
            .unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let g = net
        .named_parameters()
        .into_iter()
        .map(|(name, var)| {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .clone();
            (name, g)
        })
        .collect();
    (vec![out.pooled, out.neck, logits], g)
}

/// `x` scaled by 1 + 1e-6·noise: a change of the size of float rounding. How much the fast
/// path's results move under it is the noise floor the generic path is held to where the
/// problem amplifies rounding (a train-mode BN over a channel of tiny batch variance in a
/// random-init net: there finite differences disagree with *both* paths' gradients).
fn nudged(x: &Tensor) -> Tensor {
    let noise = (randn(x.dims(), 99) * 1e-6).unwrap();
    (x * (noise + 1.0).unwrap()).unwrap()
}

#[test]
fn forward_and_every_gradient_agree_with_the_cpu_kernels() {
    for depth in [18, 50] {
        let net = ReidNet::new(&spec(depth), &Device::Cpu, 3).unwrap();
        // the same parameters through candle's generic ops
        let generic = net.clone().with_kernels(Kernels::Generic).unwrap();
        // 8 images at 128×64, so that every train-mode BN has 32+ values a channel: at 64×32 a
        // channel of ResNet-50's layer4.2.bn1 has a tiny batch variance, and there finite
        // differences (which agree with both forward paths) disagree with *both* backward
        // paths by up to 5× — rounding amplified, not a wrong op
        let x = randn(&[8, 3, 128, 64], 5);
        // Eval mode (running statistics): well conditioned, every gradient to 1e-4.
        let (fast_out, fast_grads) = forward_backward(&net, &x, false);
        let (gen_out, gen_grads) = forward_backward(&generic, &x, false);
        for (i, (a, b)) in gen_out.iter().zip(&fast_out).enumerate() {
            let d = rel_diff(a, b);
            assert!(d < 1e-4, "resnet{depth} eval output {i}: relative diff {d}");
        }
        // other code ran: candle's conv sums in another order than our gemm
        assert!(
            rel_diff(&gen_out[0], &fast_out[0]) > 0.0,
            "resnet{depth}: the generic path gave bit-identical features: did it run?"
        );
        assert_eq!(fast_grads.len(), gen_grads.len());
        for (name, g) in &fast_grads {
            let d = rel_diff(&gen_grads[name], g);
            assert!(
                d < 1e-4,
                "resnet{depth} eval: gradient of {name} differs by {d}"
            );
        }
        // Train mode (batch statistics): within 10× the fast path's own noise floor.
        let (fast_out, fast_grads) = forward_backward(&net, &x, true);
        let (_, floor_grads) = forward_backward(&net, &nudged(&x), true);
        let (gen_out, gen_grads) = forward_backward(&generic, &x, true);
        for (i, (a, b)) in gen_out.iter().zip(&fast_out).enumerate() {
            let d = rel_diff(a, b);
            assert!(
                d < 1e-3,
                "resnet{depth} train output {i}: relative diff {d}"
            );
        }
        let mut worst = (0f32, 0f32, String::new());
        for (name, g) in &fast_grads {
            let (d, floor) = (
                rel_diff(&gen_grads[name], g),
                rel_diff(&floor_grads[name], g),
            );
            if d - 10.0 * floor > worst.0 - 10.0 * worst.1 {
                worst = (d, floor, name.clone());
            }
            assert!(
                d <= 10.0 * floor + 1e-4,
                "resnet{depth} train: gradient of {name} differs by {d} (noise floor {floor})"
            );
        }
        eprintln!(
            "resnet{depth} train: closest to the bound: {} differs by {:.2e}, noise floor {:.2e}",
            worst.2, worst.0, worst.1
        );
    }
}

#[test]
fn training_steps_agree_with_the_cpu_kernels() {
    for depth in [18, 50] {
        let fresh = || ReidNet::new(&spec(depth), &Device::Cpu, 7).unwrap();
        let (fast, floor) = (fresh(), fresh());
        let generic = fresh().with_kernels(Kernels::Generic).unwrap();
        // ID + triplet as Bag of Tricks, with SGD: its update is proportional to the gradient,
        // so the weights compare as the gradients do (Adam divides each element by its own
        // gradient's size, which turns float noise in a near-zero gradient into a full step)
        let mut config = TrainConfig::default();
        config.optimizer.kind = reid_train::optim::OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        };
        let trainer = |net: &ReidNet| Trainer::new(net, config.clone()).unwrap();
        let (mut t_fast, mut t_floor, mut t_gen) =
            (trainer(&fast), trainer(&floor), trainer(&generic));
        let pids: Vec<i64> = vec![0, 0, 1, 1, 2, 2, 3, 3];
        for step in 0..3 {
            let x = randn(&[8, 3, 64, 32], 100 + step);
            let a = t_fast.step(&fast, &x, &pids, 0.01, None).unwrap().loss;
            let f = t_floor
                .step(&floor, &nudged(&x), &pids, 0.01, None)
                .unwrap()
                .loss;
            let b = t_gen.step(&generic, &x, &pids, 0.01, None).unwrap().loss;
            let bound = 10.0 * (f - a).abs() + 1e-5 * a.abs();
            assert!(
                (b - a).abs() <= bound,
                "resnet{depth} step {step}: loss {a} (fast) vs {b} (generic); noise floor {}",
                (f - a).abs()
            );
        }
        let sd = |n: &ReidNet| -> HashMap<String, Tensor> {
            n.state_dict().unwrap().into_iter().collect()
        };
        let (sa, sf, sb) = (sd(&fast), sd(&floor), sd(&generic));
        for (name, a) in &sa {
            if a.dtype() != DType::F32 {
                continue;
            }
            let (d, fl) = (rel_diff(&sb[name], a), rel_diff(&sf[name], a));
            assert!(
                d <= 10.0 * fl + 1e-4,
                "resnet{depth} {name}: relative diff {d} after 3 steps (noise floor {fl})"
            );
        }
    }
}

#[test]
fn inference_agrees_unfolded_and_folded() {
    for depth in [18, 50] {
        let net = ReidNet::new(&spec(depth), &Device::Cpu, 9).unwrap();
        // move the running statistics away from the identity
        for s in 0..2 {
            net.forward_t(&randn(&[4, 3, 64, 32], 20 + s), true)
                .unwrap();
        }
        let x = randn(&[3, 3, 64, 32], 30);
        let fast = net.forward_t(&x, false).unwrap().neck;
        let fast_folded = net.fold_bn().unwrap().forward_t(&x, false).unwrap().neck;
        let gen_net = net.clone().with_kernels(Kernels::Generic).unwrap();
        let generic = gen_net.forward_t(&x, false).unwrap().neck;
        let generic_folded = gen_net
            .fold_bn()
            .unwrap()
            .forward_t(&x, false)
            .unwrap()
            .neck;
        // a net folded natively and switched to generic kernels runs the generic path too
        let switched = net
            .fold_bn()
            .unwrap()
            .with_kernels(Kernels::Generic)
            .unwrap();
        let switched = switched.forward_t(&x, false).unwrap().neck;
        assert_eq!(
            switched.to_vec2::<f32>().unwrap(),
            generic_folded.to_vec2::<f32>().unwrap(),
            "resnet{depth}: with_kernels after fold_bn"
        );
        for (what, a, b) in [
            ("unfolded", &generic, &fast),
            ("folded", &generic_folded, &fast_folded),
            ("folded vs unfolded", &generic_folded, &fast),
        ] {
            let d = rel_diff(a, b);
            assert!(d < 1e-4, "resnet{depth} {what}: relative diff {d}");
        }
    }
}
