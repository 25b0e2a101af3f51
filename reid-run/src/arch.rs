//! `ArchSpec`: the complete, serialisable description of a (possibly pruned) ResNet re-ID network.
//!
//! Every conv's output width is explicit, so a pruned network is just another spec, and the same
//! spec rebuilds the network in PyTorch (torchvision tensor names, see [`ArchSpec::expected_tensors`]).

use serde::{Deserialize, Serialize};

/// A description that is no network, or an input the network cannot take.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArchError {
    #[error("invalid architecture: {0}")]
    Arch(String),
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, ArchError>;

/// Residual block family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3×3 convs (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1 (ResNet-50/101/152, v1.5: the stride sits on the 3×3).
    Bottleneck,
}

impl BlockKind {
    /// Number of convs on the residual branch.
    pub fn num_convs(self) -> usize {
        match self {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        }
    }

    /// Kernel size of conv `k` (0-based) on the residual branch.
    pub fn kernel(self, k: usize) -> usize {
        match (self, k) {
            (BlockKind::Basic, _) => 3,
            (BlockKind::Bottleneck, 1) => 3,
            (BlockKind::Bottleneck, _) => 1,
        }
    }

    /// Which conv of the branch carries the block's stride (torchvision v1.5).
    pub fn strided_conv(self) -> usize {
        match self {
            BlockKind::Basic => 0,
            BlockKind::Bottleneck => 1,
        }
    }

    /// Output width multiplier of the block (`expansion` in torchvision).
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The head after global average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Neck {
    /// BatchNorm1d between the pooled feature and the classifier (Luo et al., Bag of Tricks).
    BnNeck,
    /// Classifier directly on the pooled feature.
    None,
}

/// One residual block: the output width of each conv on its branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpec {
    /// Output channels of conv1..convK (K = 2 basic, 3 bottleneck). The last is the block's output width.
    pub widths: Vec<usize>,
    /// Stride of the block (on conv1 for basic, conv2 for bottleneck, and on the downsample).
    pub stride: usize,
    /// Whether the shortcut is a 1×1 conv + BN (`downsample.0`, `downsample.1`).
    pub downsample: bool,
}

impl BlockSpec {
    pub fn out_width(&self) -> usize {
        *self.widths.last().unwrap_or(&0)
    }
}

/// Full architecture of a ReidNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchSpec {
    /// Nominal depth: 18, 34, 50, 101 or 152.
    pub depth: usize,
    pub block: BlockKind,
    pub stem_width: usize,
    /// Four stages (`layer1`..`layer4`), each a list of blocks.
    pub stages: Vec<Vec<BlockSpec>>,
    /// Stride of the first block of `layer4` (1 = the re-ID "last stride" trick).
    pub last_stride: usize,
    pub neck: Neck,
    /// Width of the pooled feature (= output width of the last block).
    pub feature_dim: usize,
    /// Classifier outputs; 0 = no classifier (pure feature extractor).
    pub num_classes: usize,
    /// Width multiplier the spec was built with (1.0 for standard nets; informational after pruning).
    pub width_mult: f64,
}

/// The widest network built from a multiplier: a ResNet-50 four times as wide has ~410 M
/// parameters, more than any re-ID model.
pub const MAX_WIDTH_MULT: f64 = 4.0;
/// The narrowest: 64 × 1/64 is a one-channel stem (narrower ones were all clamped to one channel,
/// a network the multiplier does not describe).
pub const MIN_WIDTH_MULT: f64 = 1.0 / 64.0;

/// Block counts per stage of the standard depths.
pub fn stage_blocks(depth: usize) -> Result<(BlockKind, [usize; 4])> {
    Ok(match depth {
        18 => (BlockKind::Basic, [2, 2, 2, 2]),
        34 => (BlockKind::Basic, [3, 4, 6, 3]),
        50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
        101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
        152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
        _ => {
            return Err(ArchError::Arch(format!(
                "unknown ResNet depth {depth}: expected one of 18, 34, 50, 101, 152"
            )))
        }
    })
}

/// Where a conv sits in a ResNet: what its role is follows from the structure, never from its
/// name's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRole {
    /// The stem's conv (`conv1`).
    Stem,
    /// The conv at this 0-based index of a block's residual branch (`layerS.B.conv{k+1}`).
    Branch(usize),
    /// A block's projection shortcut (`layerS.B.downsample.0`).
    Shortcut,
}

/// Location of one conv in the network (used by pruning and complexity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvInfo {
    pub role: ConvRole,
    /// torchvision module name, e.g. `layer3.2.conv2` or `layer1.0.downsample.0`.
    pub name: String,
    /// Name of the BatchNorm that follows it.
    pub bn: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// What a tensor of the network is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    ConvWeight(ConvRole),
    BnWeight,
    BnBias,
    BnRunningMean,
    BnRunningVar,
    ClassifierWeight,
}

impl TensorRole {
    /// Whether weight decay applies: conv and classifier weights; not the BN affine parameters
    /// (the usual re-ID recipe) nor the running statistics, which are no parameters.
    pub fn decays(self) -> bool {
        matches!(self, Self::ConvWeight(_) | Self::ClassifierWeight)
    }
}

/// One tensor of the network: its torchvision name, shape and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
    /// Part of the re-ID head (BNNeck, classifier) rather than of the backbone.
    pub head: bool,
    /// A BN tensor's conv (None for the BNNeck's and for other tensors).
    pub follows: Option<ConvRole>,
}

/// A conv whose output channels can be removed without touching the residual path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrunableConv {
    /// The conv whose filters are scored and removed, e.g. `layer2.1.conv1`.
    pub conv: String,
    /// The BN after it (its channels go with the filters).
    pub bn: String,
    /// The conv that reads this conv's output (its input channels go too).
    pub consumer: String,
    pub stage: usize,
    pub block: usize,
    /// 0-based index of the conv on the block's branch.
    pub index: usize,
    pub width: usize,
}

/// Channels that flow along one residual stream: every conv writing into it (the stem or a
/// downsample, and the last conv of each block adding to it) must keep the same channels, and
/// every conv reading it loses the same input channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidualGroup {
    /// Where the stream starts: `stem`, or the block whose downsample opens it (`layer2.0`).
    pub name: String,
    pub width: usize,
    /// (conv, BN) pairs whose outputs are summed into the stream.
    pub producers: Vec<(String, String)>,
    /// Convs that read the stream (their input channels go with it).
    pub readers: Vec<String>,
    /// Whether the stream is the network's feature (the neck and classifier read it).
    pub feeds_head: bool,
}

impl ArchSpec {
    /// A standard torchvision-shaped ResNet of `depth` with a BNNeck re-ID head.
    pub fn resnet(depth: usize, num_classes: usize) -> Result<Self> {
        Self::resnet_with(depth, num_classes, 1.0, 1, Neck::BnNeck)
    }

    /// A standard ResNet scaled by `width_mult` (every width rounded, at least 1).
    pub fn resnet_with(
        depth: usize,
        num_classes: usize,
        width_mult: f64,
        last_stride: usize,
        neck: Neck,
    ) -> Result<Self> {
        if !(MIN_WIDTH_MULT..=MAX_WIDTH_MULT).contains(&width_mult) {
            return Err(ArchError::Arch(format!(
                "width_mult = {width_mult}: expected a number from 1/64 (a one-channel stem) to \
                 {MAX_WIDTH_MULT} (a {MAX_WIDTH_MULT}x-wide ResNet-50 already has ~{} M parameters)",
                (25.6 * MAX_WIDTH_MULT * MAX_WIDTH_MULT) as u64
            )));
        }
        if last_stride != 1 && last_stride != 2 {
            return Err(ArchError::Arch(format!(
                "last_stride must be 1 or 2, got {last_stride}"
            )));
        }
        let (block, counts) = stage_blocks(depth)?;
        let scale = |w: usize| ((w as f64 * width_mult).round() as usize).max(1);
        let stem_width = scale(64);
        let mut stages = Vec::with_capacity(4);
        let mut in_w = stem_width;
        for (s, &n) in counts.iter().enumerate() {
            let base = scale(64 << s);
            let out = scale((64 << s) * block.expansion());
            let mut blocks = Vec::with_capacity(n);
            for b in 0..n {
                let stride = match (s, b) {
                    (0, _) | (_, 1..) => 1,
                    (3, 0) => last_stride,
                    _ => 2,
                };
                let widths = match block {
                    BlockKind::Basic => vec![base, out],
                    BlockKind::Bottleneck => vec![base, base, out],
                };
                let downsample = b == 0 && (stride != 1 || in_w != out);
                blocks.push(BlockSpec {
                    widths,
                    stride,
                    downsample,
                });
                in_w = out;
            }
            stages.push(blocks);
        }
        let spec = ArchSpec {
            depth,
            block,
            stem_width,
            stages,
            last_stride,
            neck,
            feature_dim: in_w,
            num_classes,
            width_mult,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Parse a name such as `resnet50` (or `50`).
    pub fn from_name(name: &str, num_classes: usize) -> Result<Self> {
        let digits = name.trim().to_ascii_lowercase();
        let digits = digits.strip_prefix("resnet").unwrap_or(&digits);
        let depth: usize = digits.parse().map_err(|_| {
            ArchError::Arch(format!(
                "unknown architecture '{name}': expected resnet18, resnet34, resnet50, resnet101 or resnet152"
            ))
        })?;
        Self::resnet(depth, num_classes)
    }

    /// Short name, e.g. `resnet50`.
    pub fn name(&self) -> String {
        format!("resnet{}", self.depth)
    }

    /// Check internal consistency: widths per block, residual shapes, strides.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(ArchError::Arch(m));
        let (kind, counts) = stage_blocks(self.depth)?;
        if kind != self.block {
            return err(format!(
                "depth {} uses {:?} blocks, spec says {:?}",
                self.depth, kind, self.block
            ));
        }
        if self.stages.len() != 4 {
            return err(format!("expected 4 stages, got {}", self.stages.len()));
        }
        if self.stem_width == 0 {
            return err("stem width is 0".into());
        }
        if self.last_stride != 1 && self.last_stride != 2 {
            return err(format!(
                "last_stride must be 1 or 2, got {}",
                self.last_stride
            ));
        }
        let mut in_w = self.stem_width;
        for (s, blocks) in self.stages.iter().enumerate() {
            if blocks.len() != counts[s] {
                return err(format!(
                    "layer{} has {} blocks, resnet{} has {}",
                    s + 1,
                    blocks.len(),
                    self.depth,
                    counts[s]
                ));
            }
            for (b, blk) in blocks.iter().enumerate() {
                let name = format!("layer{}.{}", s + 1, b);
                if blk.widths.len() != self.block.num_convs() {
                    return err(format!(
                        "{name}: {} widths given, a {:?} block has {} convs",
                        blk.widths.len(),
                        self.block,
                        self.block.num_convs()
                    ));
                }
                if blk.widths.contains(&0) {
                    return err(format!("{name}: a conv has width 0"));
                }
                if blk.stride == 0 || blk.stride > 2 {
                    return err(format!("{name}: stride {} (expected 1 or 2)", blk.stride));
                }
                if !blk.downsample && (blk.stride != 1 || in_w != blk.out_width()) {
                    return err(format!(
                        "{name}: no downsample but input width {in_w} / stride {} differs from output width {}",
                        blk.stride,
                        blk.out_width()
                    ));
                }
                in_w = blk.out_width();
            }
        }
        if self.stages[3][0].stride != self.last_stride {
            return err(format!(
                "layer4.0 stride {} differs from last_stride {}",
                self.stages[3][0].stride, self.last_stride
            ));
        }
        if self.feature_dim != in_w {
            return err(format!(
                "feature_dim {} differs from the last block's width {in_w}",
                self.feature_dim
            ));
        }
        Ok(())
    }

    /// Every conv of the backbone in forward order, with the BN that follows it.
    pub fn convs(&self) -> Vec<ConvInfo> {
        let mut out = vec![ConvInfo {
            role: ConvRole::Stem,
            name: "conv1".into(),
            bn: "bn1".into(),
            in_channels: 3,
            out_channels: self.stem_width,
            kernel: 7,
            stride: 2,
            padding: 3,
        }];
        let mut in_w = self.stem_width;
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{}", s + 1, b);
                let mut c_in = in_w;
                for (k, &w) in blk.widths.iter().enumerate() {
                    let kernel = self.block.kernel(k);
                    let stride = if k == self.block.strided_conv() {
                        blk.stride
                    } else {
                        1
                    };
                    out.push(ConvInfo {
                        role: ConvRole::Branch(k),
                        name: format!("{prefix}.conv{}", k + 1),
                        bn: format!("{prefix}.bn{}", k + 1),
                        in_channels: c_in,
                        out_channels: w,
                        kernel,
                        stride,
                        padding: kernel / 2,
                    });
                    c_in = w;
                }
                if blk.downsample {
                    out.push(ConvInfo {
                        role: ConvRole::Shortcut,
                        name: format!("{prefix}.downsample.0"),
                        bn: format!("{prefix}.downsample.1"),
                        in_channels: in_w,
                        out_channels: blk.out_width(),
                        kernel: 1,
                        stride: blk.stride,
                        padding: 0,
                    });
                }
                in_w = blk.out_width();
            }
        }
        out
    }

    /// The unpruned network this one was cut from: the same depth, width multiplier and last
    /// stride, without a head.
    pub fn unpruned(&self) -> Result<ArchSpec> {
        ArchSpec::resnet_with(self.depth, 0, self.width_mult, self.last_stride, Neck::None)
    }

    /// The convs the paper prunes: all but the last conv of every block's branch
    /// (so block output widths, and with them the residual additions, stay intact).
    pub fn prunable_convs(&self) -> Vec<PrunableConv> {
        let mut out = Vec::new();
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{}", s + 1, b);
                for k in 0..blk.widths.len() - 1 {
                    out.push(PrunableConv {
                        conv: format!("{prefix}.conv{}", k + 1),
                        bn: format!("{prefix}.bn{}", k + 1),
                        consumer: format!("{prefix}.conv{}", k + 2),
                        stage: s,
                        block: b,
                        index: k,
                        width: blk.widths[k],
                    });
                }
            }
        }
        out
    }

    /// The residual streams, from the stem's to the one the head reads.
    pub fn residual_groups(&self) -> Vec<ResidualGroup> {
        let last = self.block.num_convs();
        let mut groups = Vec::new();
        let mut cur = ResidualGroup {
            name: "stem".into(),
            width: self.stem_width,
            producers: vec![("conv1".into(), "bn1".into())],
            readers: Vec::new(),
            feeds_head: false,
        };
        for (s, blocks) in self.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{}", s + 1, b);
                cur.readers.push(format!("{prefix}.conv1"));
                if blk.downsample {
                    cur.readers.push(format!("{prefix}.downsample.0"));
                    groups.push(cur);
                    cur = ResidualGroup {
                        name: prefix.clone(),
                        width: blk.out_width(),
                        producers: vec![(
                            format!("{prefix}.downsample.0"),
                            format!("{prefix}.downsample.1"),
                        )],
                        readers: Vec::new(),
                        feeds_head: false,
                    };
                }
                cur.producers
                    .push((format!("{prefix}.conv{last}"), format!("{prefix}.bn{last}")));
            }
        }
        cur.feeds_head = true;
        groups.push(cur);
        groups
    }

    /// This spec with residual streams (by [`ResidualGroup::name`]) set to new widths.
    pub fn with_group_widths(&self, widths: &[(String, usize)]) -> Result<Self> {
        let mut spec = self.clone();
        let groups = self.residual_groups();
        for (name, w) in widths {
            let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| {
                ArchError::Arch(format!(
                    "no residual group '{name}' in this {}",
                    self.name()
                ))
            })?;
            for (conv, _) in &g.producers {
                if conv == "conv1" {
                    spec.stem_width = *w;
                } else if let Some((s, b, _)) = parse_branch_conv(conv) {
                    if let Some(last) = spec.stages[s][b].widths.last_mut() {
                        *last = *w;
                    }
                }
            }
            if g.feeds_head {
                spec.feature_dim = *w;
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Name and shape of every tensor a checkpoint of this spec holds (torchvision names plus
    /// `bnneck.*` and `classifier.weight`).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect()
    }

    /// Every tensor of the network with its shape and role, in checkpoint order: what the
    /// optimiser decays, what belongs to the re-ID head, what initialisation fills, known from
    /// the structure.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        let mut out = Vec::new();
        let bn = |out: &mut Vec<TensorInfo>, name: &str, c: usize, follows: Option<ConvRole>| {
            for (t, role) in [
                ("weight", TensorRole::BnWeight),
                ("bias", TensorRole::BnBias),
                ("running_mean", TensorRole::BnRunningMean),
                ("running_var", TensorRole::BnRunningVar),
            ] {
                out.push(TensorInfo {
                    name: format!("{name}.{t}"),
                    shape: vec![c],
                    role,
                    head: follows.is_none(),
                    follows,
                });
            }
        };
        for c in self.convs() {
            out.push(TensorInfo {
                name: format!("{}.weight", c.name),
                shape: vec![c.out_channels, c.in_channels, c.kernel, c.kernel],
                role: TensorRole::ConvWeight(c.role),
                head: false,
                follows: None,
            });
            bn(&mut out, &c.bn, c.out_channels, Some(c.role));
        }
        if self.neck == Neck::BnNeck {
            bn(&mut out, "bnneck", self.feature_dim, None);
        }
        if self.num_classes > 0 {
            out.push(TensorInfo {
                name: "classifier.weight".into(),
                shape: vec![self.num_classes, self.feature_dim],
                role: TensorRole::ClassifierWeight,
                head: true,
                follows: None,
            });
        }
        out
    }

    /// Smallest input the network accepts; H and W must also keep equal parity at every
    /// stride-2 conv (candle's conv backward requires it).
    pub fn check_input(&self, h: usize, w: usize, for_training: bool) -> Result<()> {
        if h < 32 || w < 32 {
            return Err(ArchError::Input(format!(
                "input {h}x{w} is too small: height and width must be at least 32"
            )));
        }
        if for_training {
            let (mut ch, mut cw) = (h, w);
            for c in self.convs() {
                if c.role == ConvRole::Shortcut {
                    continue;
                }
                if c.stride == 2 && ch % 2 != cw % 2 {
                    return Err(ArchError::Input(format!(
                        "input {h}x{w}: at {} the feature map is {ch}x{cw}; height and width must have \
                         the same parity at every stride-2 conv for training (use multiples of 32, e.g. 256x128)",
                        c.name
                    )));
                }
                ch = (ch + 2 * c.padding - c.kernel) / c.stride + 1;
                cw = (cw + 2 * c.padding - c.kernel) / c.stride + 1;
                if c.role == ConvRole::Stem {
                    if ch % 2 != cw % 2 {
                        return Err(ArchError::Input(format!(
                            "input {h}x{w}: the stem max-pool sees {ch}x{cw}; height and width must have \
                             the same parity (use multiples of 32, e.g. 256x128)"
                        )));
                    }
                    ch = (ch - 1) / 2 + 1;
                    cw = (cw - 1) / 2 + 1;
                }
            }
        }
        Ok(())
    }

    /// Spec in which the listed convs have new output widths (the consumers follow automatically,
    /// as input widths are derived). Used by channel surgery.
    pub fn with_conv_widths(&self, widths: &[(String, usize)]) -> Result<Self> {
        let mut spec = self.clone();
        for (name, w) in widths {
            let loc = parse_branch_conv(name).ok_or_else(|| {
                ArchError::Arch(format!("'{name}' is not a residual-branch conv name"))
            })?;
            let blk = spec
                .stages
                .get_mut(loc.0)
                .and_then(|s| s.get_mut(loc.1))
                .ok_or_else(|| ArchError::Arch(format!("no block for '{name}'")))?;
            let slot = blk
                .widths
                .get_mut(loc.2)
                .ok_or_else(|| ArchError::Arch(format!("no conv '{name}'")))?;
            *slot = *w;
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// `layer{s}.{b}.conv{k}` → (stage, block, conv index), all 0-based.
pub fn parse_branch_conv(name: &str) -> Option<(usize, usize, usize)> {
    let rest = name.strip_prefix("layer")?;
    let mut parts = rest.split('.');
    let s: usize = parts.next()?.parse().ok()?;
    let b: usize = parts.next()?.parse().ok()?;
    let k: usize = parts.next()?.strip_prefix("conv")?.parse().ok()?;
    if parts.next().is_some() || s == 0 || k == 0 {
        return None;
    }
    Some((s - 1, b, k - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roles come from the structure: the BNs (the shortcut's and the neck's included) get no
    /// decay, every conv weight and the classifier do; the head is the neck and classifier; a
    /// BN knows its conv (the last branch BN is what zero-init-residual zeroes).
    #[test]
    fn tensor_roles_follow_the_structure() {
        let spec = ArchSpec::resnet(50, 10).unwrap();
        let t = spec.tensors();
        let decayed: Vec<&str> = t
            .iter()
            .filter(|t| t.role.decays())
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(decayed.len(), spec.convs().len() + 1);
        assert!(decayed.contains(&"layer1.0.downsample.0.weight"));
        assert!(decayed.contains(&"classifier.weight"));
        assert!(!decayed
            .iter()
            .any(|n| n.contains("bn") || n.ends_with("downsample.1.weight")));
        let head: Vec<&str> = t
            .iter()
            .filter(|t| t.head)
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(
            head,
            [
                "bnneck.weight",
                "bnneck.bias",
                "bnneck.running_mean",
                "bnneck.running_var",
                "classifier.weight"
            ]
        );
        let last = t.iter().find(|t| t.name == "layer2.1.bn3.weight").unwrap();
        assert_eq!(last.follows, Some(ConvRole::Branch(2)));
        let ds = t
            .iter()
            .find(|t| t.name == "layer2.0.downsample.1.weight")
            .unwrap();
        assert_eq!(ds.follows, Some(ConvRole::Shortcut));
        assert_eq!(spec.expected_tensors().len(), t.len());
    }

    #[test]
    fn standard_specs_validate() {
        for d in [18, 34, 50, 101, 152] {
            let s = ArchSpec::resnet(d, 10).unwrap();
            assert_eq!(s.feature_dim, if d < 50 { 512 } else { 2048 });
        }
        assert!(ArchSpec::resnet(20, 10).is_err());
    }

    #[test]
    fn resnet50_conv_count_and_prunables() {
        let s = ArchSpec::resnet(50, 0).unwrap();
        assert_eq!(s.convs().len(), 53);
        // 16 blocks × 2 prunable convs
        assert_eq!(s.prunable_convs().len(), 32);
        let r18 = ArchSpec::resnet(18, 0).unwrap();
        assert_eq!(r18.convs().len(), 20);
        assert_eq!(r18.prunable_convs().len(), 8);
        assert!(!r18.stages[0][0].downsample);
        assert!(r18.stages[1][0].downsample);
    }

    #[test]
    fn width_mult_and_json_roundtrip() {
        let s = ArchSpec::resnet_with(50, 5, 0.25, 2, Neck::None).unwrap();
        assert_eq!(s.stem_width, 16);
        assert_eq!(s.feature_dim, 512);
        let j = serde_json::to_string(&s).unwrap();
        let back: ArchSpec = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn with_conv_widths_changes_only_named() {
        let s = ArchSpec::resnet(50, 0).unwrap();
        let p = s.with_conv_widths(&[("layer2.1.conv2".into(), 7)]).unwrap();
        assert_eq!(p.stages[1][1].widths, vec![128, 7, 512]);
        // residual output cannot change without a downsample
        assert!(s.with_conv_widths(&[("layer2.1.conv3".into(), 7)]).is_err());
    }

    #[test]
    fn parity_rule() {
        let s = ArchSpec::resnet(18, 0).unwrap();
        assert!(s.check_input(256, 128, true).is_ok());
        let e = s.check_input(250, 125, true).unwrap_err().to_string();
        assert!(e.contains("parity"), "{e}");
        assert!(s.check_input(250, 125, false).is_ok());
        assert!(s.check_input(16, 128, false).is_err());
    }

    #[test]
    fn residual_groups_follow_the_streams() {
        let r50 = ArchSpec::resnet(50, 10).unwrap();
        let g = r50.residual_groups();
        let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            ["stem", "layer1.0", "layer2.0", "layer3.0", "layer4.0"]
        );
        assert_eq!(g[0].readers, ["layer1.0.conv1", "layer1.0.downsample.0"]);
        assert_eq!(g[1].producers.len(), 1 + 3);
        assert_eq!(g[1].producers[0].0, "layer1.0.downsample.0");
        assert_eq!(
            g[1].readers,
            [
                "layer1.1.conv1",
                "layer1.2.conv1",
                "layer2.0.conv1",
                "layer2.0.downsample.0"
            ]
        );
        assert!(g[4].feeds_head && g[4].width == 2048 && g[4].producers.len() == 4);
        // ResNet-18's first stage has no downsample: the stem's stream runs through it.
        let r18 = ArchSpec::resnet(18, 10).unwrap();
        let g = r18.residual_groups();
        assert_eq!(g.len(), 4);
        let p: Vec<&str> = g[0].producers.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(p, ["conv1", "layer1.0.conv2", "layer1.1.conv2"]);
        let s = r18
            .with_group_widths(&[("stem".into(), 40), ("layer4.0".into(), 300)])
            .unwrap();
        assert_eq!(
            (s.stem_width, s.stages[0][1].widths[1], s.feature_dim),
            (40, 40, 300)
        );
        assert!(r18.with_group_widths(&[("layer9.0".into(), 3)]).is_err());
    }
}
