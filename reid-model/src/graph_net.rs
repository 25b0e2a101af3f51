//! Any [`ModelGraph`] run on candle's ops, weights by torchvision names (issue #37's forward
//! pass from the graph). Inference only (BN with running statistics) and without the kernel
//! crate's fused paths: it checks that a graph describes its network (MobileNetV2 against
//! torchvision's outputs) before the fast paths and training read graphs too.

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};
use reid_run::graph::{ChannelGroup, ModelGraph, Op};

use crate::error::{ModelError, Result};

/// BatchNorm's epsilon (torchvision's default).
const BN_EPS: f64 = 1e-5;

/// A graph with its weights.
pub struct GraphNet {
    pub graph: ModelGraph,
    tensors: HashMap<String, Tensor>,
}

impl GraphNet {
    /// The graph's weights from `tensors` (torchvision names; any float dtype, kept as f32):
    /// every conv, BN and linear layer must find its tensors at their shapes, or the error names
    /// the first that does not.
    pub fn new(graph: ModelGraph, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let mut kept = HashMap::new();
        let mut take = |name: String, shape: Vec<usize>| -> Result<()> {
            let t = tensors
                .get(&name)
                .ok_or_else(|| ModelError::Arch(format!("missing tensor '{name}'")))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::Arch(format!(
                    "tensor '{name}' has shape {:?}; the graph expects {shape:?}",
                    t.dims()
                )));
            }
            kept.insert(name, t.to_dtype(DType::F32)?);
            Ok(())
        };
        for n in &graph.nodes {
            match &n.op {
                Op::Conv {
                    name,
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    ..
                } => take(
                    format!("{name}.weight"),
                    vec![*out_channels, in_channels / groups, *kernel, *kernel],
                )?,
                Op::BatchNorm { name, channels } => {
                    for t in ["weight", "bias", "running_mean", "running_var"] {
                        take(format!("{name}.{t}"), vec![*channels])?;
                    }
                }
                Op::Linear {
                    name,
                    in_features,
                    out_features,
                    bias,
                } => {
                    take(format!("{name}.weight"), vec![*out_features, *in_features])?;
                    if *bias {
                        take(format!("{name}.bias"), vec![*out_features])?;
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            graph,
            tensors: kept,
        })
    }

    /// The weights by name (torchvision's), as f32.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// This network with only the channels `keep` (sorted, distinct indices) of `group` (one of
    /// [`ModelGraph::channel_groups`]): its producers' filters and BN entries, a depthwise
    /// conv's filters, its norms' entries and its readers' input weights are cut together.
    pub fn prune(&self, group: &ChannelGroup, keep: &[usize]) -> Result<GraphNet> {
        if keep.is_empty()
            || keep.windows(2).any(|w| w[0] >= w[1])
            || keep[keep.len() - 1] >= group.width
        {
            return Err(ModelError::Arch(format!(
                "channels to keep must be sorted, distinct and below the group's width {}",
                group.width
            )));
        }
        let idx = Tensor::from_vec(
            keep.iter().map(|&k| k as u32).collect::<Vec<_>>(),
            keep.len(),
            &candle_core::Device::Cpu,
        )?;
        let mut tensors = self.tensors.clone();
        let mut cut = |name: String, dim: usize| -> Result<()> {
            let t = &tensors[&name];
            let i = idx.to_device(t.device())?;
            let v = t.index_select(&i, dim)?;
            tensors.insert(name, v);
            Ok(())
        };
        for (conv, _) in &group.producers {
            cut(format!("{conv}.weight"), 0)?;
        }
        for bn in &group.norms {
            for t in ["weight", "bias", "running_mean", "running_var"] {
                cut(format!("{bn}.{t}"), 0)?;
            }
        }
        for reader in &group.readers {
            // a conv's weight is [out, in, k, k], a linear layer's [out, in]
            cut(format!("{reader}.weight"), 1)?;
        }
        GraphNet::new(self.graph.with_group_width(group, keep.len()), &tensors)
    }

    fn t(&self, name: &str) -> &Tensor {
        // every name was checked by `new`
        &self.tensors[name]
    }

    /// Every node's output for the image batch `x` ([N, 3, H, W]), in node order.
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut out: Vec<Tensor> = Vec::with_capacity(self.graph.nodes.len());
        for n in &self.graph.nodes {
            let input = |k: usize| -> Result<&Tensor> {
                n.inputs
                    .get(k)
                    .map(|&i| &out[i])
                    .ok_or_else(|| ModelError::Arch("a node without its input".into()))
            };
            let y = match &n.op {
                Op::Input { .. } => x.clone(),
                Op::Conv {
                    name,
                    stride,
                    padding,
                    groups,
                    ..
                } => input(0)?.conv2d(
                    self.t(&format!("{name}.weight")),
                    *padding,
                    *stride,
                    1,
                    *groups,
                )?,
                Op::BatchNorm { name, channels } => {
                    let x = input(0)?;
                    // [1, C, 1, 1] over a map, [1, C] over a pooled feature
                    let mut shape = vec![1, *channels];
                    shape.resize(x.rank(), 1);
                    let p = |t: &str| self.t(&format!("{name}.{t}")).reshape(shape.as_slice());
                    let scale =
                        p("weight")?.broadcast_div(&(p("running_var")? + BN_EPS)?.sqrt()?)?;
                    x.broadcast_sub(&p("running_mean")?)?
                        .broadcast_mul(&scale)?
                        .broadcast_add(&p("bias")?)?
                }
                Op::Relu => input(0)?.relu()?,
                Op::Relu6 => input(0)?.clamp(0f32, 6f32)?,
                Op::Add => {
                    let mut sum = input(0)?.clone();
                    for k in 1..n.inputs.len() {
                        sum = (sum + input(k)?)?;
                    }
                    sum
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    // zero padding: the pool reads a ReLU's output (nothing below zero)
                    let x = input(0)?
                        .pad_with_zeros(2, *padding, *padding)?
                        .pad_with_zeros(3, *padding, *padding)?;
                    x.max_pool2d_with_stride(*kernel, *stride)?
                }
                Op::GlobalAvgPool => input(0)?.mean(D::Minus1)?.mean(D::Minus1)?,
                Op::Linear { name, bias, .. } => {
                    let y = input(0)?.matmul(&self.t(&format!("{name}.weight")).t()?)?;
                    if *bias {
                        y.broadcast_add(self.t(&format!("{name}.bias")))?
                    } else {
                        y
                    }
                }
            };
            out.push(y);
        }
        Ok(out)
    }
}
