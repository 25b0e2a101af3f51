//! Surgery removes channels for real and computes exactly what masking them computes.

use candle_core::{Device, Tensor};
use common::trained_tiny;
use reid_model::complexity::complexity;
use reid_model::{ActivationTrace, ArchSpec, Neck, ReidNet};
use reid_prune::criterion::by_name;
use reid_prune::strategy::{plan, Allocation, PrunePlan, PruneTarget, TargetKind};
use reid_prune::surgery::apply;

mod common;

/// Masks keeping, in every prunable conv's post-BN activation, the channels the plan keeps.
fn branch_masks(net: &ReidNet, p: &PrunePlan) -> ActivationTrace {
    let mut masked = ActivationTrace::default();
    for l in net.prunable_convs() {
        let mut m = vec![0f32; l.width];
        for &c in &p.keep[&l.conv] {
            m[c] = 1.0;
        }
        masked = masked.with_mask(
            l.conv.clone(),
            Tensor::from_vec(m, l.width, net.device()).unwrap(),
        );
    }
    masked
}

/// A target removing `level` of the prunable channels of a 64×32 net.
fn channels_at(level: f64, allocation: Allocation) -> PruneTarget {
    PruneTarget {
        kind: TargetKind::Channels,
        level,
        allocation,
        floor: 1.0 / 16.0,
        round_to: 1,
        input: (64, 32),
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

#[test]
fn surgery_equals_masking_for_every_depth() {
    let dev = Device::Cpu;
    for depth in [18, 34, 50] {
        let net = trained_tiny(depth, 0.25);
        let scores = by_name("random", 3)
            .unwrap()
            .scores(&net, &net.prunable_convs(), None)
            .unwrap();
        for allocation in [Allocation::Layerwise, Allocation::Global] {
            let target = channels_at(0.4, allocation);
            let p = plan(net.spec(), net.spec(), &scores, &target).unwrap();
            let pruned = apply(&net, &p).unwrap();
            let x = Tensor::randn(0f32, 1.0, (3, 3, 64, 32), &dev).unwrap();
            let mut masked = branch_masks(&net, &p);
            let a = net.forward_traced(&x, false, &mut masked).unwrap();
            let b = pruned.forward_t(&x, false).unwrap();
            for (u, v) in [
                (&a.pooled, &b.pooled),
                (&a.neck, &b.neck),
                (a.logits.as_ref().unwrap(), b.logits.as_ref().unwrap()),
            ] {
                let d = max_abs(&(u - v).unwrap());
                assert!(
                    d <= 1e-5 * max_abs(u).max(1.0),
                    "resnet{depth} {allocation:?}: {d}"
                );
            }
            // the pruned spec is smaller and its counts follow from it
            let before = complexity(net.spec(), 64, 32).unwrap();
            let after = complexity(pruned.spec(), 64, 32).unwrap();
            assert!(
                after.backbone.macs < before.backbone.macs
                    && after.backbone.params < before.backbone.params
            );
            let kept: usize = pruned.spec().prunable_convs().iter().map(|l| l.width).sum();
            let all: usize = net.spec().prunable_convs().iter().map(|l| l.width).sum();
            assert!(
                kept as f64 <= 0.6 * all as f64 + 1.0,
                "resnet{depth} {allocation:?}: kept {kept} of {all}"
            );
        }
    }
}

#[test]
fn resnet50_at_half_the_flops() {
    let spec = ArchSpec::resnet_with(50, 0, 1.0, 2, Neck::None).unwrap();
    // weight-free plan: synthetic scores are enough to size the layers
    let scores = spec
        .prunable_convs()
        .into_iter()
        .map(|l| {
            (
                l.conv.clone(),
                (0..l.width).map(|c| ((c * 7919) % 1000) as f64).collect(),
            )
        })
        .collect();
    let full = complexity(&spec, 256, 128).unwrap().backbone.macs as f64;
    for allocation in [Allocation::Layerwise, Allocation::Global] {
        let target = PruneTarget {
            kind: TargetKind::Flops,
            level: 0.5,
            allocation,
            floor: 1.0 / 16.0,
            round_to: 1,
            input: (256, 128),
        };
        let p = plan(&spec, &spec, &scores, &target).unwrap();
        let pruned = spec.with_conv_widths(&p.widths()).unwrap();
        let ratio = complexity(&pruned, 256, 128).unwrap().backbone.macs as f64 / full;
        assert!(
            (ratio - 0.5).abs() <= 0.02,
            "{allocation:?}: MACs ratio {ratio}"
        );
        // with the residual streams pruned too
        let groups = spec
            .residual_groups()
            .into_iter()
            .map(|g| {
                (
                    g.name,
                    (0..g.width).map(|c| ((c * 104729) % 997) as f64).collect(),
                )
            })
            .collect();
        let p =
            reid_prune::strategy::plan_with_groups(&spec, &spec, &scores, Some(&groups), &target)
                .unwrap();
        let pruned = p.apply_to(&spec).unwrap();
        assert!(pruned.feature_dim < 2048);
        let ratio = complexity(&pruned, 256, 128).unwrap().backbone.macs as f64 / full;
        assert!(
            (ratio - 0.5).abs() <= 0.02,
            "residual groups, {allocation:?}: MACs ratio {ratio}"
        );
    }
}

#[test]
fn bad_requests_are_refused() {
    let net = trained_tiny(18, 0.25);
    let scores = by_name("l1", 0)
        .unwrap()
        .scores(&net, &net.prunable_convs(), None)
        .unwrap();
    let mut t = PruneTarget {
        kind: TargetKind::Flops,
        level: 1.0,
        allocation: Allocation::Layerwise,
        floor: 1.0 / 16.0,
        round_to: 1,
        input: (64, 32),
    };
    assert!(plan(net.spec(), net.spec(), &scores, &t)
        .unwrap_err()
        .to_string()
        .contains("must be in (0, 1)"));
    t.level = 0.99;
    assert!(plan(net.spec(), net.spec(), &scores, &t)
        .unwrap_err()
        .to_string()
        .contains("out of reach"));
    let mut bad = PrunePlan::default();
    bad.keep.insert("layer9.0.conv1".into(), vec![0]);
    assert!(apply(&net, &bad)
        .unwrap_err()
        .to_string()
        .contains("not a prunable conv"));
}

#[test]
fn auto_balanced_regulariser_moves_capacity_from_pruned_to_kept_channels() {
    use reid_prune::method::auto_balanced::BalancedRegularizer;
    let net = trained_tiny(18, 0.25);
    let layers = net.prunable_convs();
    let l1 = by_name("l1", 0)
        .unwrap()
        .scores(&net, &layers, None)
        .unwrap();
    let target = PruneTarget {
        kind: TargetKind::Channels,
        level: 0.5,
        allocation: Allocation::Layerwise,
        floor: 1.0 / 16.0,
        round_to: 1,
        input: (64, 32),
    };
    let p = plan(net.spec(), net.spec(), &l1, &target).unwrap();
    let reg = BalancedRegularizer::new(&net, &l1, &p, 1e-2).unwrap();
    let norms = |name: &str| -> Vec<f32> {
        let w = &net.conv_unit(name).unwrap().conv.weight;
        let c = w.dim(0).unwrap();
        w.reshape((c, ()))
            .unwrap()
            .sqr()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let conv = &layers[0].conv;
    let before = norms(conv);
    let params = net.named_parameters();
    for _ in 0..20 {
        let loss = reg.loss(&net).unwrap();
        // α·S(P) + τ·S(R) is zero in value by the choice of τ; only its gradient acts
        assert!(loss.to_scalar::<f32>().unwrap().abs() < 1e-3);
        let g = loss.backward().unwrap();
        for (_, v) in &params {
            if let Some(gr) = g.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (gr * 1.0).unwrap()).unwrap())
                    .unwrap();
            }
        }
    }
    let after = norms(conv);
    let keep = &p.keep[conv];
    for c in 0..before.len() {
        if keep.contains(&c) {
            assert!(
                after[c] > before[c],
                "kept channel {c} should grow: {} -> {}",
                before[c],
                after[c]
            );
        } else {
            assert!(
                after[c] < before[c],
                "pruned channel {c} should shrink: {} -> {}",
                before[c],
                after[c]
            );
        }
    }
}

#[test]
fn psfp_zeroes_the_weakest_filters_on_a_growing_schedule() {
    use reid_prune::method::psfp::{progressive_fraction, progressive_fraction_with, soft_prune};
    let f: Vec<f64> = (0..5).map(|e| progressive_fraction(e, 5)).collect();
    assert!(
        f[0] > 0.0 && f.windows(2).all(|w| w[1] > w[0]) && (f[4] - 1.0).abs() < 1e-12,
        "{f:?}"
    );
    // the schedule's three conditions (eqs. 16-17): 0 at the start, P/4 after D·T, P at T
    for (d, after) in [(0.125, 1), (0.25, 2), (0.375, 3), (0.5, 4)] {
        let at = |e: usize| progressive_fraction_with(e, 8, d); // after epoch e+1 of 8
        assert!(
            (at(after - 1) - 0.25).abs() < 1e-9,
            "D {d}: {}",
            at(after - 1)
        );
        assert!((at(7) - 1.0).abs() < 1e-12);
        assert!(at(0) > 0.0 && (0..7).all(|e| at(e) < at(e + 1)));
    }
    // D = 1/8: most of the zeroing early (concave), time left to recover
    let f: Vec<f64> = (0..8)
        .map(|e| progressive_fraction_with(e, 8, 0.125))
        .collect();
    assert!(f[1] - f[0] > f[7] - f[6], "{f:?}");
    let net = trained_tiny(18, 0.25);
    let layer = net.prunable_convs()[1].clone();
    let rates = std::collections::BTreeMap::from([(layer.conv.clone(), 0.5)]);
    let zero_filters = |net: &ReidNet| -> usize {
        let w = &net.conv_unit(&layer.conv).unwrap().conv.weight;
        let n: Vec<f32> = w
            .reshape((layer.width, ()))
            .unwrap()
            .abs()
            .unwrap()
            .sum(1)
            .unwrap()
            .to_vec1()
            .unwrap();
        n.iter().filter(|&&v| v == 0.0).count()
    };
    soft_prune(&net, &rates, 0, 5).unwrap();
    let early = zero_filters(&net);
    soft_prune(&net, &rates, 4, 5).unwrap();
    assert_eq!(zero_filters(&net), layer.width / 2);
    assert!(early > 0 && early < layer.width / 2, "{early}");
}

/// Residual-group mode: removing a stream's channels everywhere equals zeroing them at every
/// BN that writes into the stream (the stream channel is then 0 all along, so its readers see
/// nothing from it), output for output on the kept feature channels.
#[test]
fn residual_group_surgery_equals_masking_the_streams() {
    use reid_prune::criterion::group_scores;
    use reid_prune::strategy::plan_with_groups;
    let dev = Device::Cpu;
    for depth in [18, 34, 50] {
        let net = trained_tiny(depth, 0.25);
        let random = by_name("random", 5).unwrap();
        let scores = random.scores(&net, &net.prunable_convs(), None).unwrap();
        let gs = group_scores(random.as_ref(), &net, None).unwrap();
        for allocation in [Allocation::Layerwise, Allocation::Global] {
            let target = channels_at(0.4, allocation);
            let p = plan_with_groups(net.spec(), net.spec(), &scores, Some(&gs), &target).unwrap();
            assert_eq!(p.groups.len(), net.spec().residual_groups().len());
            let pruned = apply(&net, &p).unwrap();

            // the masked reference: zero γ and β of every producer BN at the removed channels
            let mut t: std::collections::HashMap<String, Tensor> =
                net.state_dict().unwrap().into_iter().collect();
            let groups = net.spec().residual_groups();
            for g in &groups {
                let mut m = vec![0f32; g.width];
                for &c in &p.groups[&g.name] {
                    m[c] = 1.0;
                }
                let m = Tensor::from_vec(m, g.width, &dev).unwrap();
                for (_, bn) in &g.producers {
                    for part in ["weight", "bias"] {
                        let k = format!("{bn}.{part}");
                        let v = (&t[&k] * &m).unwrap();
                        t.insert(k, v);
                    }
                }
            }
            let masked_net = ReidNet::from_tensors_trainable(net.spec(), &t, &dev, 0).unwrap();
            let mut masked = branch_masks(&net, &p);
            let x = Tensor::randn(0f32, 1.0, (3, 3, 64, 32), &dev).unwrap();
            let a = masked_net.forward_traced(&x, false, &mut masked).unwrap();
            let b = pruned.forward_t(&x, false).unwrap();
            let head = groups.last().unwrap();
            let kept = &p.groups[&head.name];
            let idx = Tensor::from_vec(
                kept.iter().map(|&c| c as u32).collect::<Vec<_>>(),
                kept.len(),
                &dev,
            )
            .unwrap();
            for (u, v) in [(&a.pooled, &b.pooled), (&a.neck, &b.neck)] {
                let u = u.index_select(&idx, 1).unwrap();
                let d = max_abs(&(&u - v).unwrap());
                assert!(
                    d <= 1e-5 * max_abs(&u).max(1.0),
                    "resnet{depth} {allocation:?}: {d}"
                );
            }
            // the removed feature channels really were silent in the masked network
            let total: f32 = a
                .pooled
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            let kept_sum: f32 = a
                .pooled
                .index_select(&idx, 1)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!((total - kept_sum).abs() <= 1e-5 * total.max(1.0));
            // the network is narrower everywhere: stem, block outputs, feature and classifier
            let s = pruned.spec();
            let streams =
                |spec: &ArchSpec| -> usize { spec.residual_groups().iter().map(|g| g.width).sum() };
            assert!(streams(s) < streams(net.spec()));
            assert_eq!(s.feature_dim, kept.len());
            assert!(s.feature_dim < net.spec().feature_dim);
            assert_eq!(b.logits.unwrap().dims(), &[3, 5]);
            let before = complexity(net.spec(), 64, 32).unwrap().backbone.params;
            let after = complexity(s, 64, 32).unwrap().backbone.params;
            assert!(
                (after as f64) < 0.75 * before as f64,
                "resnet{depth}: {after} of {before}"
            );
        }
    }
}

#[test]
fn data_criteria_score_residual_groups_on_the_stream() {
    use reid_prune::criterion::{group_scores, ScoreData};
    let net = trained_tiny(18, 0.25);
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (6, 3, 64, 32), &dev).unwrap();
    let labels = Tensor::from_vec(vec![0u32, 1, 2, 3, 4, 0], 6, &dev).unwrap();
    let data = ScoreData {
        batches: vec![(x, Some(labels))],
    };
    for name in ["taylor", "entropy"] {
        let c = by_name(name, 0).unwrap();
        let gs = group_scores(c.as_ref(), &net, Some(&data)).unwrap();
        for g in net.spec().residual_groups() {
            let s = &gs[&g.name];
            assert_eq!(s.len(), g.width, "{name} {}", g.name);
            assert!(
                s.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{name} {}",
                g.name
            );
            assert!(s.iter().any(|v| *v > 0.0), "{name} {}: all zero", g.name);
        }
        // without data: the same clear error as for branch convs
        assert!(group_scores(c.as_ref(), &net, None).is_err());
    }
}
