//! `ReidNet`: a ResNet backbone with explicit per-conv widths, global average pooling, an optional
//! BNNeck and a bias-free classifier. Tensor names mirror torchvision's state dict.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::arch::{ArchSpec, ConvInfo, Neck, PrunableConv};
use crate::error::{ModelError, Result};
use crate::layers::{BatchNorm, BatchNormConfig, Conv2d, Kernels};
use reid_kernels::{global_avg_pool, max_pool_3x3_s2_p1, ActNhwc, ConvNhwc};

/// Standard deviation of the classifier's initial weights (Bag of Tricks).
const CLASSIFIER_INIT_STD: f64 = 0.001;

/// A conv followed by its BatchNorm; after folding, the BN lives in the conv's bias.
#[derive(Clone, Debug)]
pub struct ConvBn {
    pub name: String,
    pub bn_name: String,
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
}

impl ConvBn {
    fn new(vb: &VarBuilder, info: &ConvInfo, bn_cfg: BatchNormConfig) -> candle_core::Result<Self> {
        let conv = Conv2d::new(
            vb.pp(&info.name),
            info.in_channels,
            info.out_channels,
            info.kernel,
            info.stride,
            info.padding,
        )?;
        let bn = BatchNorm::new(vb.pp(&info.bn), info.out_channels, bn_cfg)?;
        Ok(Self {
            name: info.name.clone(),
            bn_name: info.bn.clone(),
            conv,
            bn: Some(bn),
        })
    }

    fn forward_t(
        &self,
        k: Kernels,
        x: &Tensor,
        train: bool,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        if let (None, Some(b)) = (&self.bn, &self.conv.bias) {
            let c = &self.conv;
            if let Some(y) =
                reid_kernels::conv2d_bias_inference(k, x, &c.weight, b, c.stride, c.padding, relu)?
            {
                return Ok(y);
            }
        }
        if let (true, Some(bn)) = (train, &self.bn) {
            if let Some(y) = bn.forward_conv_train(k, x, &self.conv, relu)? {
                return Ok(y);
            }
        }
        let y = self.conv.forward(k, x)?;
        match &self.bn {
            Some(bn) => bn.forward_t_relu(k, &y, train, relu),
            None if relu => reid_kernels::relu(k, &y),
            None => Ok(y),
        }
    }

    /// relu(self(x) + residual), a residual block's end: one fused op after the conv when the BN
    /// is folded (inference) or in train mode (CPU f32), composed otherwise.
    fn forward_residual_relu(
        &self,
        k: Kernels,
        x: &Tensor,
        residual: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        match (&self.bn, &self.conv.bias) {
            (None, Some(b)) => {
                if let Some(y) = reid_kernels::conv2d_bias_residual_inference(
                    k,
                    x,
                    &self.conv.weight,
                    b,
                    residual,
                    self.conv.stride,
                    self.conv.padding,
                )? {
                    return Ok(y);
                }
            }
            (Some(bn), _) => {
                return bn.forward_t_add_relu(k, &self.conv.forward(k, x)?, residual, train)
            }
            (None, None) => {}
        }
        reid_kernels::relu(k, &(self.forward_t(k, x, train, false)? + residual)?)
    }

    /// Conv with the eval-mode BN folded in: w' = w·γ/σ, b' = β − μ·γ/σ.
    fn folded(&self) -> candle_core::Result<Self> {
        let Some(bn) = &self.bn else {
            return Ok(self.clone());
        };
        // Detached: a folded net is inference-only, and a tracked weight (from a trainable
        // net's γ, β) would keep it off the fused inference ops.
        let (scale, shift) = bn.eval_affine()?;
        let (scale, shift) = (scale.detach(), shift.detach());
        let c = scale.elem_count();
        let weight = self
            .conv
            .weight
            .detach()
            .broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        let bias = match &self.conv.bias {
            Some(b) => (b.detach().mul(&scale)? + shift)?,
            None => shift,
        };
        Ok(Self {
            name: self.name.clone(),
            bn_name: self.bn_name.clone(),
            conv: Conv2d {
                weight,
                bias: Some(bias),
                stride: self.conv.stride,
                padding: self.conv.padding,
            },
            bn: None,
        })
    }

    fn push_state(&self, out: &mut Vec<(String, Tensor)>) {
        out.push((format!("{}.weight", self.name), self.conv.weight.clone()));
        if let Some(bn) = &self.bn {
            out.push((format!("{}.weight", self.bn_name), bn.weight.clone()));
            out.push((format!("{}.bias", self.bn_name), bn.bias.clone()));
            out.push((
                format!("{}.running_mean", self.bn_name),
                bn.running_mean.as_tensor().clone(),
            ));
            out.push((
                format!("{}.running_var", self.bn_name),
                bn.running_var.as_tensor().clone(),
            ));
        }
    }
}

/// One residual block: the branch convs and the optional projection shortcut.
#[derive(Clone, Debug)]
pub struct Block {
    pub convs: Vec<ConvBn>,
    pub downsample: Option<ConvBn>,
    /// Trace name of the block's output (`layer2.1.out`).
    pub out_name: String,
}

/// Memory layout of a BN-folded net's inference on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceLayout {
    /// candle's N×C×H×W tensors and the NCHW gemm conv op.
    Nchw,
    /// Channels-last buffers: one gemm per block of pixels (`reid_kernels::channels_last`).
    #[default]
    Nhwc,
}

impl std::str::FromStr for InferenceLayout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nchw" => Ok(Self::Nchw),
            "nhwc" | "channels-last" => Ok(Self::Nhwc),
            other => Err(format!("unknown layout {other:?} (expected nchw or nhwc)")),
        }
    }
}

/// The folded backbone's convs in channels-last layout (CPU inference).
#[derive(Debug)]
struct ChannelsLastBackbone {
    stem: ConvNhwc,
    /// Per stage, per block: the block's convs and its downsample.
    stages: Vec<Vec<(Vec<ConvNhwc>, Option<ConvNhwc>)>>,
}

impl ChannelsLastBackbone {
    fn new(stem: &ConvBn, stages: &[Vec<Block>]) -> candle_core::Result<Self> {
        let conv = |u: &ConvBn| -> candle_core::Result<ConvNhwc> {
            match (&u.bn, &u.conv.bias) {
                (None, Some(b)) => ConvNhwc::new(&u.conv.weight, b, u.conv.stride, u.conv.padding),
                _ => candle_core::bail!("{}: channels-last inference needs a folded BN", u.name),
            }
        };
        Ok(Self {
            stem: conv(stem)?,
            stages: stages
                .iter()
                .map(|blocks| {
                    blocks
                        .iter()
                        .map(|b| {
                            Ok((
                                b.convs
                                    .iter()
                                    .map(conv)
                                    .collect::<candle_core::Result<_>>()?,
                                b.downsample.as_ref().map(conv).transpose()?,
                            ))
                        })
                        .collect::<candle_core::Result<_>>()
                })
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// The global-average-pooled feature (N × C) of an N×3×H×W batch.
    fn pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let device = x.device().clone();
        let a = ActNhwc::from_nchw(x)?;
        let mut y = self.stem.forward(&a, None, true)?.max_pool_3x3_s2_p1();
        for (convs, downsample) in self.stages.iter().flatten() {
            let Some((last, inner)) = convs.split_last() else {
                continue;
            };
            let mut h: Option<ActNhwc> = None;
            for c in inner {
                h = Some(c.forward(h.as_ref().unwrap_or(&y), None, true)?);
            }
            let shortcut = match downsample {
                Some(ds) => Some(ds.forward(&y, None, false)?),
                None => None,
            };
            let out = last.forward(
                h.as_ref().unwrap_or(&y),
                Some(shortcut.as_ref().unwrap_or(&y)),
                true,
            )?;
            y = out;
        }
        let pooled = y.global_avg_pool();
        Tensor::from_vec(pooled, (y.n, y.c), &Device::Cpu)?.to_device(&device)
    }
}

/// What a forward pass returns.
#[derive(Clone, Debug)]
pub struct ReidOutput {
    /// Global-average-pooled backbone feature (N × feature_dim).
    pub pooled: Tensor,
    /// The BNNeck output (equals `pooled` without a neck): the feature used for retrieval in BoT.
    pub neck: Tensor,
    /// Classifier logits, when the net has a classifier.
    pub logits: Option<Tensor>,
}

/// Records intermediate activations during a forward pass and, optionally, makes their gradients
/// readable after `backward()` (pruning criteria use both).
///
/// Names: a prunable conv's name (`layer2.0.conv1`) records H = relu(bn(conv(x))), the tensor
/// the criteria score; `stem` and `layer1`..`layer4` record the stage outputs.
#[derive(Debug, Default)]
pub struct ActivationTrace {
    wanted: HashSet<String>,
    with_grad: bool,
    pub activations: BTreeMap<String, Tensor>,
    probes: BTreeMap<String, Var>,
    /// Per-channel multipliers applied to H (soft pruning, and checking surgery against masking).
    masks: HashMap<String, Tensor>,
}

impl ActivationTrace {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I, with_grad: bool) -> Self {
        Self {
            wanted: names.into_iter().map(Into::into).collect(),
            with_grad,
            ..Default::default()
        }
    }

    /// Multiply the activation `name` channel-wise by `mask` ([C], 0 = channel removed).
    pub fn with_mask(mut self, name: impl Into<String>, mask: Tensor) -> Self {
        self.masks.insert(name.into(), mask);
        self
    }

    /// Nothing to record, mask or differentiate: any forward path will do.
    fn is_idle(&self) -> bool {
        self.wanted.is_empty() && self.masks.is_empty() && !self.with_grad
    }

    /// Record `h` under `name` if wanted; returns the tensor to continue the forward with.
    /// With gradients, a zero `Var` is added so that its gradient is dL/dH (candle drops
    /// the gradients of intermediate tensors).
    fn hook(&mut self, name: &str, h: Tensor) -> candle_core::Result<Tensor> {
        let h = match self.masks.get(name) {
            Some(m) => {
                h.broadcast_mul(&m.to_dtype(h.dtype())?.reshape((1, m.elem_count(), 1, 1))?)?
            }
            None => h,
        };
        if !self.wanted.contains(name) {
            return Ok(h);
        }
        self.activations.insert(name.to_string(), h.detach());
        if self.with_grad {
            let probe = Var::zeros(h.shape(), h.dtype(), h.device())?;
            let out = h.add(probe.as_tensor())?;
            self.probes.insert(name.to_string(), probe);
            Ok(out)
        } else {
            Ok(h)
        }
    }

    /// dL/dH of a traced activation after `loss.backward()`.
    pub fn gradient(&self, grads: &GradStore, name: &str) -> Option<Tensor> {
        self.probes
            .get(name)
            .and_then(|p| grads.get(p.as_tensor()).cloned())
    }
}

/// A clone shares its parameters with the original (candle tensors share storage), as a view
/// of the same network: e.g. the same weights through other kernels (`with_kernels`).
#[derive(Clone)]
pub struct ReidNet {
    spec: ArchSpec,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    neck: Option<BatchNorm>,
    classifier: Option<Tensor>,
    /// Present when the net is trainable: the map of its `Var`s (weights and running stats).
    varmap: Option<VarMap>,
    folded: bool,
    /// Set on folded CPU nets: the same convs in channels-last layout.
    channels_last: Option<std::sync::Arc<ChannelsLastBackbone>>,
    layout: InferenceLayout,
    /// Which implementation the layers' ops run (the generic one is how the path every other
    /// device runs is tested on the CPU).
    kernels: Kernels,
    device: Device,
}

impl std::fmt::Debug for ReidNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReidNet")
            .field("arch", &self.spec.name())
            .field("feature_dim", &self.spec.feature_dim)
            .field("num_classes", &self.spec.num_classes)
            .field("trainable", &self.is_trainable())
            .field("folded", &self.folded)
            .field("layout", &self.layout)
            .field("kernels", &self.kernels)
            .finish()
    }
}

impl ReidNet {
    /// A freshly initialised, trainable network (torchvision init, repeatable from `seed`).
    pub fn new(spec: &ArchSpec, device: &Device, seed: u64) -> Result<Self> {
        Self::from_tensors_trainable(spec, &HashMap::new(), device, seed)
    }

    /// A freshly initialised, trainable network with initialisation options.
    pub fn new_with(
        spec: &ArchSpec,
        device: &Device,
        seed: u64,
        options: crate::init::InitOptions,
    ) -> Result<Self> {
        Self::build_trainable(spec, &HashMap::new(), device, seed, options)
    }

    /// A trainable network whose tensors come from `tensors` (names as in [`ArchSpec::expected_tensors`]);
    /// tensors the map lacks are initialised from `seed` (e.g. the re-ID head on ImageNet weights).
    pub fn from_tensors_trainable(
        spec: &ArchSpec,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::build_trainable(spec, tensors, device, seed, Default::default())
    }

    fn build_trainable(
        spec: &ArchSpec,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
        seed: u64,
        options: crate::init::InitOptions,
    ) -> Result<Self> {
        spec.validate()?;
        let fresh = crate::init::init_missing(spec, tensors, seed, device, options)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Arch("var map lock poisoned".into()))?;
            for (k, t) in tensors.iter().chain(fresh.iter()) {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                data.insert(k.clone(), Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        Self::build(spec, &vb, Some(varmap), device)
    }

    /// An eval-only network over plain (detached) tensors: its forward records no autograd graph.
    /// Every expected tensor must be present.
    pub fn from_tensors_frozen(
        spec: &ArchSpec,
        tensors: &HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        spec.validate()?;
        let mut map = HashMap::with_capacity(tensors.len());
        for (k, t) in tensors {
            map.insert(
                k.clone(),
                t.detach().to_dtype(DType::F32)?.to_device(device)?,
            );
        }
        let vb = VarBuilder::from_tensors(map, DType::F32, device);
        Self::build(spec, &vb, None, device)
    }

    fn build(
        spec: &ArchSpec,
        vb: &VarBuilder,
        varmap: Option<VarMap>,
        device: &Device,
    ) -> Result<Self> {
        let bn_cfg = BatchNormConfig::default();
        let convs = spec.convs();
        let mut by_name: HashMap<&str, &ConvInfo> =
            convs.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut take = |name: &str| -> Result<ConvBn> {
            let info = by_name
                .remove(name)
                .ok_or_else(|| ModelError::Arch(format!("no conv named {name}")))?;
            Ok(ConvBn::new(vb, info, bn_cfg)?)
        };
        let stem = take("conv1")?;
        let mut stages = Vec::with_capacity(4);
        for (s, blocks) in spec.stages.iter().enumerate() {
            let mut built = Vec::with_capacity(blocks.len());
            for (b, blk) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{}", s + 1, b);
                let convs = (0..blk.widths.len())
                    .map(|k| take(&format!("{prefix}.conv{}", k + 1)))
                    .collect::<Result<Vec<_>>>()?;
                let downsample = if blk.downsample {
                    Some(take(&format!("{prefix}.downsample.0"))?)
                } else {
                    None
                };
                built.push(Block {
                    convs,
                    downsample,
                    out_name: format!("{prefix}.out"),
                });
            }
            stages.push(built);
        }
        let neck = match spec.neck {
            Neck::BnNeck => Some(BatchNorm::new(vb.pp("bnneck"), spec.feature_dim, bn_cfg)?),
            Neck::None => None,
        };
        let classifier = if spec.num_classes > 0 {
            Some(vb.get_with_hints(
                (spec.num_classes, spec.feature_dim),
                "classifier.weight",
                candle_nn::Init::Randn {
                    mean: 0.0,
                    stdev: CLASSIFIER_INIT_STD,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            spec: spec.clone(),
            stem,
            stages,
            neck,
            classifier,
            varmap,
            folded: false,
            channels_last: None,
            layout: InferenceLayout::default(),
            kernels: Kernels::default(),
            device: device.clone(),
        })
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn is_trainable(&self) -> bool {
        self.varmap.is_some()
    }

    pub fn is_folded(&self) -> bool {
        self.folded
    }

    /// The convs whose filters the paper prunes, with their BN and consumer conv.
    pub fn prunable_convs(&self) -> Vec<PrunableConv> {
        self.spec.prunable_convs()
    }

    /// Every conv+BN unit in forward order (stem, then block convs and shortcuts).
    pub fn conv_units(&self) -> Vec<&ConvBn> {
        let mut out = vec![&self.stem];
        for blk in self.stages.iter().flatten() {
            out.extend(blk.convs.iter());
            out.extend(blk.downsample.iter());
        }
        out
    }

    /// A conv+BN unit by conv name.
    pub fn conv_unit(&self, name: &str) -> Option<&ConvBn> {
        self.conv_units().into_iter().find(|u| u.name == name)
    }

    /// Trainable parameters by name (running statistics excluded), sorted by name.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        let Some(vm) = &self.varmap else {
            return Vec::new();
        };
        let data = match vm.data().lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        let mut v: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The tensors a new head over other classes keeps: the state dict without the classifier
    /// (found by its role in the spec).
    pub fn state_dict_without_classifier(&self) -> Result<HashMap<String, Tensor>> {
        let classifier: HashSet<String> = self
            .spec
            .tensors()
            .into_iter()
            .filter(|t| t.role == crate::arch::TensorRole::ClassifierWeight)
            .map(|t| t.name)
            .collect();
        Ok(self
            .state_dict()?
            .into_iter()
            .filter(|(k, _)| !classifier.contains(k))
            .collect())
    }

    /// Every tensor of the checkpoint, in [`ArchSpec::expected_tensors`] order (BN running stats
    /// included). Folded nets have no BN tensors and cannot be saved as checkpoints.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        if self.folded {
            return Err(ModelError::Arch(
                "a BN-folded inference net has no BatchNorm tensors; save the unfolded net".into(),
            ));
        }
        let mut out = Vec::new();
        for u in self.conv_units() {
            u.push_state(&mut out);
        }
        if let Some(bn) = &self.neck {
            out.push(("bnneck.weight".into(), bn.weight.clone()));
            out.push(("bnneck.bias".into(), bn.bias.clone()));
            out.push((
                "bnneck.running_mean".into(),
                bn.running_mean.as_tensor().clone(),
            ));
            out.push((
                "bnneck.running_var".into(),
                bn.running_var.as_tensor().clone(),
            ));
        }
        if let Some(w) = &self.classifier {
            out.push(("classifier.weight".into(), w.clone()));
        }
        // Order as the spec lists them, so files are stable and diffable.
        let order: HashMap<String, usize> = self
            .spec
            .expected_tensors()
            .into_iter()
            .enumerate()
            .map(|(i, (n, _))| (n, i))
            .collect();
        out.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Detached copy for evaluation: same values, plain tensors, no autograd graph in its forward.
    pub fn inference_copy(&self) -> Result<Self> {
        let map: HashMap<String, Tensor> = self
            .state_dict()?
            .into_iter()
            .map(|(n, t)| (n, t.detach()))
            .collect();
        Self::from_tensors_frozen(&self.spec, &map, &self.device)?.with_kernels(self.kernels)
    }

    /// Eval-only copy with every BatchNorm2d folded into its conv (fewer passes over memory).
    pub fn fold_bn(&self) -> Result<Self> {
        let fold_block = |b: &Block| -> candle_core::Result<Block> {
            Ok(Block {
                convs: b
                    .convs
                    .iter()
                    .map(ConvBn::folded)
                    .collect::<candle_core::Result<_>>()?,
                downsample: b.downsample.as_ref().map(ConvBn::folded).transpose()?,
                out_name: b.out_name.clone(),
            })
        };
        let detach_bn = |bn: &BatchNorm| -> candle_core::Result<BatchNorm> {
            Ok(BatchNorm {
                weight: bn.weight.detach(),
                bias: bn.bias.detach(),
                running_mean: Var::from_tensor(&bn.running_mean.as_tensor().copy()?)?,
                running_var: Var::from_tensor(&bn.running_var.as_tensor().copy()?)?,
                config: bn.config,
            })
        };
        let stem = self.stem.folded()?;
        let stages: Vec<Vec<Block>> = self
            .stages
            .iter()
            .map(|s| s.iter().map(fold_block).collect::<candle_core::Result<_>>())
            .collect::<candle_core::Result<_>>()?;
        // the channels-last copy where the native kernels run (`with_kernels` decides)
        Self {
            spec: self.spec.clone(),
            stem,
            stages,
            neck: self.neck.as_ref().map(detach_bn).transpose()?,
            classifier: self.classifier.as_ref().map(|c| c.detach()),
            varmap: None,
            folded: true,
            channels_last: None,
            layout: self.layout,
            kernels: self.kernels,
            device: self.device.clone(),
        }
        .with_kernels(self.kernels)
    }

    /// Memory layout a folded CPU net runs inference in (others always run NCHW).
    pub fn with_inference_layout(mut self, layout: InferenceLayout) -> Self {
        self.layout = layout;
        self
    }

    pub fn inference_layout(&self) -> InferenceLayout {
        self.layout
    }

    /// The same net running `kernels`' implementation of every op; a folded net gains or loses
    /// its channels-last copy accordingly (it exists only where the native CPU kernels run).
    pub fn with_kernels(mut self, kernels: Kernels) -> Result<Self> {
        self.kernels = kernels;
        self.channels_last = match (self.folded, kernels.native_on(&self.device)) {
            (true, true) => Some(std::sync::Arc::new(ChannelsLastBackbone::new(
                &self.stem,
                &self.stages,
            )?)),
            _ => None,
        };
        Ok(self)
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<ReidOutput> {
        self.forward_traced(x, train, &mut ActivationTrace::default())
    }

    /// Forward pass that records the activations named in `trace`.
    pub fn forward_traced(
        &self,
        x: &Tensor,
        train: bool,
        trace: &mut ActivationTrace,
    ) -> Result<ReidOutput> {
        let (_, c, h, w) = x.dims4().map_err(|_| {
            ModelError::Input(format!(
                "expected an N×3×H×W image batch, got shape {:?}",
                x.dims()
            ))
        })?;
        if c != 3 {
            return Err(ModelError::Input(format!(
                "expected 3 input channels, got {c} (shape {:?})",
                x.dims()
            )));
        }
        if train && self.folded {
            return Err(ModelError::Arch(
                "a BN-folded net is inference-only; train the unfolded net".into(),
            ));
        }
        // candle's stock conv backward (used off the CPU) needs equal H/W parity at stride-2
        // convs; our CPU gemm conv does not. Check before any work.
        let stock_backward = !self.kernels.native_on(&self.device) && (train || trace.with_grad);
        self.spec.check_input(h, w, stock_backward)?;
        let x = x.to_dtype(DType::F32)?;
        let pooled = match &self.channels_last {
            Some(cl) if self.layout == InferenceLayout::Nhwc && !train && trace.is_idle() => {
                cl.pooled(&x)?
            }
            _ => self.backbone_nchw(&x, train, trace)?,
        };
        let neck = match &self.neck {
            Some(bn) => bn.forward_t(self.kernels, &pooled, train)?,
            None => pooled.clone(),
        };
        let logits = match &self.classifier {
            Some(wc) => Some(neck.matmul(&wc.t()?)?),
            None => None,
        };
        Ok(ReidOutput {
            pooled,
            neck,
            logits,
        })
    }

    /// The pooled backbone feature in candle's NCHW ops (training, tracing, other devices).
    fn backbone_nchw(
        &self,
        x: &Tensor,
        train: bool,
        trace: &mut ActivationTrace,
    ) -> Result<Tensor> {
        let k = self.kernels;
        let stem = self.stem.forward_t(k, x, train, true)?;
        let mut y = trace.hook("stem", max_pool_3x3_s2_p1(k, &stem)?)?;
        for (s, blocks) in self.stages.iter().enumerate() {
            for blk in blocks {
                let mut h = y.clone();
                let last = blk.convs.len() - 1;
                for unit in blk.convs.iter().take(last) {
                    h = unit.forward_t(k, &h, train, true)?;
                    h = trace.hook(&unit.name, h)?;
                }
                let shortcut = match &blk.downsample {
                    Some(ds) => ds.forward_t(k, &y, train, false)?,
                    None => y,
                };
                let unit = &blk.convs[last];
                y = unit.forward_residual_relu(k, &h, &shortcut, train)?;
                // the block's output: what a residual stream carries (`layer2.1.out`)
                y = trace.hook(&blk.out_name, y)?;
            }
            y = trace.hook(&format!("layer{}", s + 1), y)?;
        }
        Ok(global_avg_pool(&y)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Neck;

    fn tiny(depth: usize, classes: usize) -> ArchSpec {
        ArchSpec::resnet_with(depth, classes, 0.125, 1, Neck::BnNeck).unwrap()
    }

    #[test]
    fn shapes_and_modes() {
        let dev = Device::Cpu;
        let spec = tiny(18, 5);
        let net = ReidNet::new(&spec, &dev, 0).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 32), &dev).unwrap();
        let out = net.forward_t(&x, true).unwrap();
        assert_eq!(out.pooled.dims(), &[2, spec.feature_dim]);
        assert_eq!(out.logits.unwrap().dims(), &[2, 5]);
        // the state dict has exactly the names and shapes the spec expects
        let sd = net.state_dict().unwrap();
        let expected = spec.expected_tensors();
        assert_eq!(sd.len(), expected.len());
        for ((n, t), (en, es)) in sd.iter().zip(&expected) {
            assert_eq!(n, en);
            assert_eq!(t.dims(), es.as_slice(), "{n}");
        }
    }

    #[test]
    fn inference_copy_records_no_graph_and_folding_preserves_output() {
        let dev = Device::Cpu;
        let spec = tiny(50, 3);
        let net = ReidNet::new(&spec, &dev, 0).unwrap();
        // a few train steps so running stats are not the identity
        for _ in 0..2 {
            let x = Tensor::randn(0f32, 1., (4, 3, 64, 32), &dev).unwrap();
            net.forward_t(&x, true).unwrap();
        }
        let eval = net.inference_copy().unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 32), &dev).unwrap();
        let a = eval.forward_t(&x, false).unwrap();
        assert!(!a.pooled.track_op(), "inference forward built a graph");
        let b = net.forward_t(&x, false).unwrap();
        let diff = (a.pooled.clone() - b.pooled)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        // folded straight from the trainable net: no graph, so the fused inference ops run
        let folded = net.fold_bn().unwrap();
        let c = folded.forward_t(&x, false).unwrap();
        assert!(!c.pooled.track_op(), "a folded net built a graph");
        let scale = max_abs(&a.pooled);
        assert!(max_abs(&(a.pooled - &c.pooled).unwrap()) <= 1e-5 * scale.max(1.0));
        assert!(folded.forward_t(&x, true).is_err());
        // both inference layouts of the folded net give the same feature
        assert_eq!(folded.inference_layout(), InferenceLayout::Nhwc);
        let nchw = folded
            .fold_bn()
            .unwrap()
            .with_inference_layout(InferenceLayout::Nchw);
        let d = nchw.forward_t(&x, false).unwrap();
        assert!(max_abs(&(c.pooled - d.pooled).unwrap()) <= 1e-5 * scale.max(1.0));
    }

    /// max |t| over all elements.
    fn max_abs(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn both_layouts_agree_on_basic_and_bottleneck_nets() {
        let dev = Device::Cpu;
        for depth in [18, 50] {
            let net = ReidNet::new(&tiny(depth, 4), &dev, 3).unwrap();
            for _ in 0..2 {
                let x = Tensor::randn(0f32, 1., (4, 3, 64, 32), &dev).unwrap();
                net.forward_t(&x, true).unwrap();
            }
            // odd sizes: every stride-2 conv and the max pool meet odd H and W
            let x = Tensor::randn(0f32, 1., (3, 3, 67, 35), &dev).unwrap();
            let run = |layout| {
                let folded = net.fold_bn().unwrap().with_inference_layout(layout);
                folded.forward_t(&x, false).unwrap()
            };
            let (a, b) = (run(InferenceLayout::Nhwc), run(InferenceLayout::Nchw));
            for (u, v) in [(a.pooled, b.pooled), (a.neck, b.neck)] {
                let scale = max_abs(&v);
                assert!(max_abs(&(u - v).unwrap()) <= 1e-5 * scale.max(1.0));
            }
        }
    }

    #[test]
    fn trace_gives_activation_and_gradient() {
        let dev = Device::Cpu;
        let spec = tiny(18, 4);
        let net = ReidNet::new(&spec, &dev, 0)
            .unwrap()
            .inference_copy()
            .unwrap();
        let x = Tensor::randn(0f32, 1., (2, 3, 64, 32), &dev).unwrap();
        let mut trace = ActivationTrace::new(["layer2.0.conv1", "layer3"], true);
        let out = net.forward_traced(&x, false, &mut trace).unwrap();
        let logits = out.logits.unwrap();
        let loss = logits.sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let h = &trace.activations["layer2.0.conv1"];
        assert_eq!(h.dims()[1], spec.stages[1][0].widths[0]);
        let g = trace.gradient(&grads, "layer2.0.conv1").unwrap();
        assert_eq!(g.dims(), h.dims());
        // gradient of sum(logits) w.r.t. the layer3 output: nonzero somewhere
        let g3 = trace.gradient(&grads, "layer3").unwrap();
        assert!(
            g3.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let dev = Device::Cpu;
        let net = ReidNet::new(&tiny(18, 0), &dev, 0).unwrap();
        let x = Tensor::zeros((1, 1, 64, 32), DType::F32, &dev).unwrap();
        assert!(net
            .forward_t(&x, false)
            .unwrap_err()
            .to_string()
            .contains("3 input channels"));
        let x = Tensor::zeros((2, 3, 16, 32), DType::F32, &dev).unwrap();
        assert!(net
            .forward_t(&x, true)
            .unwrap_err()
            .to_string()
            .contains("too small"));
        // sizes of different parity train on the CPU (gemm conv backward)
        let x = Tensor::randn(0f32, 1., (2, 3, 65, 34), &dev).unwrap();
        let out = net.forward_t(&x, true).unwrap();
        let grads = out.pooled.sum_all().unwrap().backward().unwrap();
        let (_, w) = &net.named_parameters()[0];
        assert!(grads.get(w.as_tensor()).is_some());
    }
}
