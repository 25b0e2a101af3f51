//! MACs, FLOPs and parameters of an [`ArchSpec`] at a given input size.
//!
//! Convention (fvcore's conv + linear counts, as `golden/flops.json`): MACs of every conv and linear
//! layer at batch 1, no bias adds, BN, ReLU, pooling or residual adds; FLOPs = 2 × MACs. Parameters:
//! conv weights, BN weight + bias, classifier weights; BN running statistics are not parameters.
//! The backbone (feature extractor up to global average pooling) and the re-ID head (BNNeck +
//! classifier) are counted apart.

use serde::{Deserialize, Serialize};

use crate::arch::{ArchSpec, Neck};
use crate::error::{ModelError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Backbone,
    Head,
}

/// Cost of one conv (with its BN) or linear layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCost {
    pub name: String,
    /// `conv`, `bn1d` or `linear`.
    #[serde(rename = "type")]
    pub kind: String,
    pub part: Part,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Output height and width (1×1 for head layers).
    pub out_hw: [usize; 2],
    pub macs: u64,
    /// Weights of the layer itself (conv/linear weight, or BN weight + bias for `bn1d`).
    pub params: u64,
    /// Weight + bias of the BatchNorm after a conv (0 otherwise).
    pub bn_params: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub macs: u64,
    pub params: u64,
}

impl Totals {
    pub fn flops(&self) -> u64 {
        2 * self.macs
    }

    fn add(&mut self, l: &LayerCost) {
        self.macs += l.macs;
        self.params += l.params + l.bn_params;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Complexity {
    pub arch: String,
    /// Input height and width.
    pub input: [usize; 2],
    pub backbone: Totals,
    pub head: Totals,
    pub total: Totals,
    pub layers: Vec<LayerCost>,
}

fn out_size(len: usize, kernel: usize, stride: usize, padding: usize) -> Result<usize> {
    if len + 2 * padding < kernel {
        return Err(ModelError::Input(format!(
            "feature map of size {len} is smaller than a {kernel}-wide kernel"
        )));
    }
    Ok((len + 2 * padding - kernel) / stride + 1)
}

/// Cost of `spec` on an `h`×`w` RGB input.
pub fn complexity(spec: &ArchSpec, h: usize, w: usize) -> Result<Complexity> {
    spec.validate()?;
    let mut layers = Vec::new();
    // Track the spatial size at the input of every block; convs() is in forward order.
    let (mut block_h, mut block_w) = (0, 0);
    let (mut cur_h, mut cur_w) = (h, w);
    for c in spec.convs() {
        let is_shortcut = c.role == crate::arch::ConvRole::Shortcut;
        let is_first_of_block = c.role == crate::arch::ConvRole::Branch(0);
        if is_first_of_block {
            (block_h, block_w) = (cur_h, cur_w);
        }
        let (in_h, in_w) = if is_shortcut {
            (block_h, block_w)
        } else {
            (cur_h, cur_w)
        };
        let oh = out_size(in_h, c.kernel, c.stride, c.padding)?;
        let ow = out_size(in_w, c.kernel, c.stride, c.padding)?;
        let weight = (c.out_channels * c.in_channels * c.kernel * c.kernel) as u64;
        layers.push(LayerCost {
            name: c.name.clone(),
            kind: "conv".into(),
            part: Part::Backbone,
            in_channels: c.in_channels,
            out_channels: c.out_channels,
            kernel: c.kernel,
            stride: c.stride,
            padding: c.padding,
            out_hw: [oh, ow],
            macs: weight * (oh * ow) as u64,
            params: weight,
            bn_params: 2 * c.out_channels as u64,
        });
        if !is_shortcut {
            (cur_h, cur_w) = (oh, ow);
        }
        if c.role == crate::arch::ConvRole::Stem {
            // stem max-pool 3×3 / 2 / 1
            cur_h = out_size(cur_h, 3, 2, 1)?;
            cur_w = out_size(cur_w, 3, 2, 1)?;
        }
    }
    let head_layer = |name: &str, kind: &str, out: usize, macs: u64, params: u64| LayerCost {
        name: name.into(),
        kind: kind.into(),
        part: Part::Head,
        in_channels: spec.feature_dim,
        out_channels: out,
        kernel: 1,
        stride: 1,
        padding: 0,
        out_hw: [1, 1],
        macs,
        params,
        bn_params: 0,
    };
    if spec.neck == Neck::BnNeck {
        layers.push(head_layer(
            "bnneck",
            "bn1d",
            spec.feature_dim,
            0,
            2 * spec.feature_dim as u64,
        ));
    }
    if spec.num_classes > 0 {
        let n = (spec.feature_dim * spec.num_classes) as u64;
        layers.push(head_layer("classifier", "linear", spec.num_classes, n, n));
    }
    let mut backbone = Totals::default();
    let mut head = Totals::default();
    for l in &layers {
        match l.part {
            Part::Backbone => backbone.add(l),
            Part::Head => head.add(l),
        }
    }
    let total = Totals {
        macs: backbone.macs + head.macs,
        params: backbone.params + head.params,
    };
    Ok(Complexity {
        arch: spec.name(),
        input: [h, w],
        backbone,
        head,
        total,
        layers,
    })
}

/// Lower estimate of the memory, in bytes, that a batch of `batch` images needs: for training,
/// every conv's output kept once for the backward (the real peak is higher: BN and ReLU
/// outputs, gradients in flight) plus weights, gradients and two optimiser moments; for
/// inference, the largest map twice (input and output). Used to refuse a run the machine
/// cannot hold before it allocates, so it errs low: a refused run could never have fit.
pub fn memory_estimate(c: &Complexity, batch: usize, training: bool) -> u64 {
    let maps = c
        .layers
        .iter()
        .map(|l| (l.out_channels * l.out_hw[0] * l.out_hw[1]) as u64);
    let per_image = if training {
        maps.sum::<u64>()
    } else {
        2 * maps.max().unwrap_or(0)
    } + (3 * c.input[0] * c.input[1]) as u64;
    let params = c.total.params * if training { 4 } else { 1 };
    4 * (batch as u64)
        .saturating_mul(per_image)
        .saturating_add(params)
}

/// This machine's memory in bytes (`MemTotal` of /proc/meminfo), when it can be read.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuse a batch whose [`memory_estimate`] exceeds this machine's memory, naming what to change.
pub fn check_fits(c: &Complexity, batch: usize, training: bool) -> Result<()> {
    let need = memory_estimate(c, batch, training);
    match machine_memory() {
        Some(have) if need > have => Err(ModelError::Input(format!(
            "{} {} at {}x{}, {batch} images a batch, needs at least {:.1} GB (estimated) and \
             this machine has {:.1} GB: use a smaller input size, batch or width",
            if training { "training" } else { "running" },
            c.arch,
            c.input[0],
            c.input[1],
            need as f64 / 1e9,
            have as f64 / 1e9
        ))),
        _ => Ok(()),
    }
}

/// `256x128` → (256, 128).
pub fn parse_hw(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        ModelError::Input(format!(
            "input size '{s}': expected HEIGHTxWIDTH, e.g. 256x128"
        ))
    };
    let (a, b) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let h = a.trim().parse().map_err(|_| bad())?;
    let w = b.trim().parse().map_err(|_| bad())?;
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model graph's conv multiply-adds (its own shape inference) are this module's, conv
    /// by conv, for ResNet-18/34/50 at the re-ID and the default run's sizes.
    #[test]
    fn the_model_graph_counts_the_same_conv_macs() {
        for depth in [18, 34, 50] {
            for last_stride in [1, 2] {
                let spec =
                    ArchSpec::resnet_with(depth, 751, 0.5, last_stride, crate::arch::Neck::BnNeck)
                        .unwrap();
                for (h, w) in [(256, 128), (64, 32)] {
                    let c = complexity(&spec, h, w).unwrap();
                    let ours: Vec<(String, u64)> = c
                        .layers
                        .iter()
                        .filter(|l| l.kind == "conv")
                        .map(|l| (l.name.clone(), l.macs))
                        .collect();
                    let graph = reid_run::graph::ModelGraph::of_resnet(&spec)
                        .conv_macs(h, w)
                        .unwrap();
                    let mut sorted = graph.clone();
                    sorted.sort();
                    let mut want = ours.clone();
                    want.sort();
                    assert_eq!(sorted, want, "R{depth} stride {last_stride} at {h}x{w}");
                }
            }
        }
    }

    #[test]
    fn memory_estimate_is_below_the_measured_peak_and_refuses_the_impossible() {
        let r50 = ArchSpec::resnet_with(50, 751, 1.0, 1, Neck::BnNeck).unwrap();
        let c = complexity(&r50, 256, 128).unwrap();
        // BENCHMARKS.md: the R50 256x128 re-ID step at batch 32 peaks at 2 960 MB (ours)
        let est = memory_estimate(&c, 32, true);
        assert!(est > 1_000_000_000 && est < 2_960_000_000, "{est}");
        assert_eq!(
            memory_estimate(&c, 64, true) - memory_estimate(&c, 32, true),
            memory_estimate(&c, 33, true) - memory_estimate(&c, 1, true)
        );
        assert!(memory_estimate(&c, 32, false) < est);
        let huge = complexity(&r50, 2048, 2048).unwrap();
        let e = check_fits(&huge, 4096, true).unwrap_err().to_string();
        assert!(
            e.contains("needs at least") && e.contains("2048x2048"),
            "{e}"
        );
        assert!(check_fits(&c, 64, true).is_ok());
    }

    #[test]
    fn resnet50_by_hand() {
        let spec = ArchSpec::resnet_with(50, 751, 1.0, 2, Neck::BnNeck).unwrap();
        let c = complexity(&spec, 256, 128).unwrap();
        // golden/flops.json, resnet50 3x256x128 without fc
        assert_eq!(c.backbone.macs, 2_669_150_208);
        assert_eq!(c.backbone.params, 23_508_032);
        assert_eq!(c.head.macs, 2048 * 751);
        assert_eq!(c.head.params, 2048 * 751 + 2 * 2048);
        assert_eq!(parse_hw("256x128").unwrap(), (256, 128));
        assert!(parse_hw("256").is_err());
    }
}
