//! ONNX export of any model graph ([`export_graph`]: MobileNetV2, …) and of a [`ReidNet`] (any
//! width profile: unpruned, pruned branch convs, pruned residual groups) through its graph: a
//! standard opset-13 graph from the image tensor to the re-ID feature, one ONNX node per graph
//! node, with initializers named as the checkpoint's tensors (`layer2.0.conv1.weight`,
//! `layer2.0.bn1.running_mean`, …). The protobuf types are the maintained `onnx-protobuf`
//! crate's.

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{ModelError, Result};
use crate::ReidNet;

/// BatchNorm epsilon of every BN in the net (torchvision's and the BNNeck's).
const BN_EPS: f32 = 1e-5;

/// Which feature the graph outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxFeature {
    /// Global-average-pooled backbone feature.
    Pool,
    /// BNNeck output (the pooled feature when the net has no neck).
    Neck,
}

/// The batch dimension of the input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnnxBatch {
    Fixed(usize),
    /// A named dimension (`batch`): any batch size.
    Dynamic,
}

#[derive(Clone, Debug)]
pub struct OnnxOptions {
    pub feature: OnnxFeature,
    pub batch: OnnxBatch,
    /// Input height and width.
    pub input: (usize, usize),
    /// ONNX opset (13 or later: every op used is in opset 13).
    pub opset: i64,
    /// Fold every BatchNorm into its conv (weights and a bias) instead of BatchNormalization nodes.
    pub fold_bn: bool,
    /// The graph takes RGB values in [0, 255] and normalises them (ImageNet mean / std) itself;
    /// otherwise it takes the normalised tensor a torchvision model takes.
    pub bake_normalisation: bool,
    /// Metadata properties (`reid.arch`, `reid.provenance`, …).
    pub metadata: Vec<(String, String)>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            feature: OnnxFeature::Neck,
            batch: OnnxBatch::Dynamic,
            input: (256, 128),
            opset: 13,
            fold_bn: false,
            bake_normalisation: false,
            metadata: Vec::new(),
        }
    }
}

/// ImageNet normalisation of the inputs (torchvision's).
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Graph under construction: nodes, initializers, unique value names.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: v,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INTS.into(),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::FLOAT.into(),
        f: v,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], data: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT as i32,
        float_data: data,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = |d: &Option<usize>| tensor_shape_proto::Dimension {
        value: Some(match d {
            Some(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
            None => tensor_shape_proto::dimension::Value::DimParam("batch".into()),
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

impl Builder {
    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        });
        output.to_string()
    }

    fn init(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.inits.push(float_tensor(name, dims, data));
        name.to_string()
    }
}

/// The f32 values of a named tensor of the net's state dict.
fn tensor(sd: &[(String, candle_core::Tensor)], name: &str) -> Result<Vec<f32>> {
    let t = sd
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| ModelError::Arch(format!("the net has no tensor {name}")))?;
    let v = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::Arch(format!(
            "{name}[{i}] = {} is not finite: nothing to export",
            v[i]
        )));
    }
    Ok(v)
}

/// Per-channel scale and shift of an inference BatchNorm: y = x · scale + shift.
fn bn_affine(sd: &[(String, candle_core::Tensor)], bn: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let g = tensor(sd, &format!("{bn}.weight"))?;
    let b = tensor(sd, &format!("{bn}.bias"))?;
    let m = tensor(sd, &format!("{bn}.running_mean"))?;
    let v = tensor(sd, &format!("{bn}.running_var"))?;
    let scale: Vec<f32> = g
        .iter()
        .zip(&v)
        .map(|(g, v)| g / (v + BN_EPS).sqrt())
        .collect();
    let shift = b
        .iter()
        .zip(&m)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((scale, shift))
}

/// Whether `bytes` are an ONNX model with a graph (what an export may replace: never a model of
/// another format, an image or a record under an `.onnx` name).
pub fn is_onnx_model(bytes: &[u8]) -> bool {
    ModelProto::parse_from_bytes(bytes).is_ok_and(|m| m.graph.is_some())
}

/// The newest opset this writer declares: every operator it emits (Conv, BatchNormalization,
/// Relu, Add, Mul, MaxPool, GlobalAveragePool, Flatten) changed only in the types it
/// accepts up to ONNX 1.17's opset 22.
pub const MAX_OPSET: i64 = 22;

/// The ONNX model of `net` as protobuf bytes: its architecture's model graph
/// ([`reid_run::graph::ModelGraph::of_resnet`]) with its weights, through [`export_graph`].
pub fn export(net: &ReidNet, opts: &OnnxOptions) -> Result<Vec<u8>> {
    let (h, w) = opts.input;
    let spec = net.spec();
    spec.check_input(h, w, false)?;
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        net.state_dict()?.into_iter().collect();
    let graph = reid_run::graph::ModelGraph::of_resnet(spec);
    let net = crate::graph_net::GraphNet::new(graph, &tensors)?;
    export_graph_named(&net, opts, &spec.name())
}

/// The ONNX model of any model graph with its weights ([`crate::graph_net::GraphNet`]: e.g.
/// MobileNetV2), from the image tensor to the re-ID feature (`OnnxFeature::Pool`: the pooled
/// map, before any neck): one ONNX node per graph node (ReLU6 as `Clip`, a depthwise conv as a
/// grouped `Conv`; `fold_bn` folds a BN into the conv it follows when that conv feeds it alone).
pub fn export_graph(net: &crate::graph_net::GraphNet, opts: &OnnxOptions) -> Result<Vec<u8>> {
    export_graph_named(net, opts, "model-graph")
}

/// [`export_graph`], the ONNX graph named `name`.
fn export_graph_named(
    net: &crate::graph_net::GraphNet,
    opts: &OnnxOptions,
    name: &str,
) -> Result<Vec<u8>> {
    use reid_run::graph::Op;
    if !(13..=MAX_OPSET).contains(&opts.opset) {
        return Err(ModelError::Input(format!(
            "--opset {}: expected 13..={MAX_OPSET} (the graph uses opset-13 operators, whose \
             meaning for these f32 graphs is unchanged up to opset {MAX_OPSET})",
            opts.opset
        )));
    }
    if let OnnxBatch::Fixed(0) = opts.batch {
        return Err(ModelError::Input("batch 0: at least 1".into()));
    }
    let g = &net.graph;
    let (h, w) = opts.input;
    if g.conv_macs(h, w).is_none() {
        return Err(ModelError::Input(format!(
            "{h}x{w}: too small an image for this network"
        )));
    }
    let pool = g
        .nodes
        .iter()
        .position(|n| n.op == Op::GlobalAvgPool)
        .ok_or_else(|| ModelError::Arch("the graph has no global pool".into()))?;
    let output = match opts.feature {
        OnnxFeature::Pool => pool,
        OnnxFeature::Neck => g.feature,
    };
    let sd: Vec<(String, candle_core::Tensor)> = net
        .tensors()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let readers = |i: usize| g.nodes.iter().filter(|n| n.inputs.contains(&i)).count();
    // a BN folded into the conv before it: BN node → conv node
    let mut folded_into: std::collections::HashMap<usize, usize> = Default::default();
    if opts.fold_bn {
        for (i, n) in g.nodes.iter().enumerate() {
            if let (Op::BatchNorm { .. }, [c]) = (&n.op, n.inputs.as_slice()) {
                if matches!(g.nodes[*c].op, Op::Conv { .. }) && readers(*c) == 1 {
                    folded_into.insert(i, *c);
                }
            }
        }
    }
    let folding: std::collections::HashMap<usize, usize> =
        folded_into.iter().map(|(&bn, &c)| (c, bn)).collect();
    let mut b = Builder {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let mut names: Vec<String> = Vec::with_capacity(g.nodes.len());
    // whether a node's output is a pooled [N, C] feature rather than a map
    let mut flat: Vec<bool> = Vec::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.iter().enumerate() {
        flat.push(match n.op {
            Op::GlobalAvgPool | Op::Linear { .. } => true,
            Op::Input { .. } => false,
            _ => n.inputs.first().is_some_and(|&j| flat[j]),
        });
        let input = |k: usize| names[n.inputs[k]].clone();
        let out = format!("n{i}");
        let name = match &n.op {
            Op::Input { .. } => {
                let mut x = "input".to_string();
                if opts.bake_normalisation {
                    let scale: Vec<f32> = STD.iter().map(|s| 1.0 / (255.0 * s)).collect();
                    let shift: Vec<f32> = MEAN.iter().zip(&STD).map(|(m, s)| -m / s).collect();
                    let s = b.init("normalise.scale", &[1, 3, 1, 1], scale);
                    let t = b.init("normalise.shift", &[1, 3, 1, 1], shift);
                    let y = b.node(
                        "Mul",
                        "normalise.mul",
                        &[&x, &s],
                        "normalise.scaled",
                        vec![],
                    );
                    x = b.node("Add", "normalise.add", &[&y, &t], "normalised", vec![]);
                }
                x
            }
            Op::Conv {
                name,
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                groups,
            } => {
                let wname = format!("{name}.weight");
                let mut weight = tensor(&sd, &wname)?;
                let dims = [*out_channels, in_channels / groups, *kernel, *kernel];
                let p = *padding as i64;
                let attrs = vec![
                    attr_ints("kernel_shape", &[*kernel as i64, *kernel as i64]),
                    attr_ints("strides", &[*stride as i64, *stride as i64]),
                    attr_ints("pads", &[p, p, p, p]),
                    attr_int("group", *groups as i64),
                ];
                let mut inputs = vec![input(0)];
                if let Some(&bn) = folding.get(&i) {
                    let Op::BatchNorm { name: bn_name, .. } = &g.nodes[bn].op else {
                        unreachable!("a folded node is a BN")
                    };
                    let (scale, shift) = bn_affine(&sd, bn_name)?;
                    let per = weight.len() / out_channels;
                    for (k, v) in weight.iter_mut().enumerate() {
                        *v *= scale[k / per];
                    }
                    inputs.push(b.init(&wname, &dims, weight));
                    inputs.push(b.init(&format!("{name}.bias"), &[*out_channels], shift));
                } else {
                    inputs.push(b.init(&wname, &dims, weight));
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                b.node("Conv", name, &refs, &out, attrs)
            }
            Op::BatchNorm { name, channels } => {
                if folded_into.contains_key(&i) {
                    input(0)
                } else if opts.fold_bn {
                    // a BN after no conv of its own (the BNNeck): one multiply and one add
                    let (scale, shift) = bn_affine(&sd, name)?;
                    let dims = if flat[i] {
                        vec![*channels]
                    } else {
                        vec![1, *channels, 1, 1]
                    };
                    let sc = b.init(&format!("{name}.scale"), &dims, scale);
                    let sh = b.init(&format!("{name}.shift"), &dims, shift);
                    let x = input(0);
                    let y = b.node(
                        "Mul",
                        &format!("{name}.mul"),
                        &[&x, &sc],
                        &format!("{out}.scaled"),
                        vec![],
                    );
                    b.node("Add", name, &[&y, &sh], &out, vec![])
                } else {
                    let t: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
                        .iter()
                        .map(|t| {
                            let n = format!("{name}.{t}");
                            tensor(&sd, &n).map(|v| b.init(&n, &[*channels], v))
                        })
                        .collect::<Result<_>>()?;
                    let x = input(0);
                    b.node(
                        "BatchNormalization",
                        name,
                        &[&x, &t[0], &t[1], &t[2], &t[3]],
                        &out,
                        vec![attr_float("epsilon", BN_EPS)],
                    )
                }
            }
            Op::Relu => {
                let x = input(0);
                b.node("Relu", &out, &[&x], &out, vec![])
            }
            Op::Relu6 => {
                let lo = b.init(&format!("{out}.min"), &[], vec![0.0]);
                let hi = b.init(&format!("{out}.max"), &[], vec![6.0]);
                let x = input(0);
                b.node("Clip", &out, &[&x, &lo, &hi], &out, vec![])
            }
            Op::Add => {
                let xs: Vec<String> = (0..n.inputs.len()).map(input).collect();
                let refs: Vec<&str> = xs.iter().map(String::as_str).collect();
                b.node(
                    if refs.len() == 2 { "Add" } else { "Sum" },
                    &out,
                    &refs,
                    &out,
                    vec![],
                )
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            } => {
                let p = *padding as i64;
                let x = input(0);
                b.node(
                    "MaxPool",
                    &out,
                    &[&x],
                    &out,
                    vec![
                        attr_ints("kernel_shape", &[*kernel as i64, *kernel as i64]),
                        attr_ints("strides", &[*stride as i64, *stride as i64]),
                        attr_ints("pads", &[p, p, p, p]),
                    ],
                )
            }
            Op::GlobalAvgPool => {
                let x = input(0);
                let gap = b.node(
                    "GlobalAveragePool",
                    &out,
                    &[&x],
                    &format!("{out}.map"),
                    vec![],
                );
                b.node(
                    "Flatten",
                    &format!("{out}.flatten"),
                    &[&gap],
                    &out,
                    vec![attr_int("axis", 1)],
                )
            }
            // the classifier is not part of the re-ID feature's graph
            Op::Linear { .. } => String::new(),
        };
        names.push(name);
        if i == output {
            break;
        }
    }
    // the output is named `feature`: an Identity from the node it is
    let last = names[output].clone();
    b.node("Identity", "feature", &[&last], "feature", vec![]);
    let channels = g.channels()[output];
    let n = match opts.batch {
        OnnxBatch::Fixed(n) => Some(n),
        OnnxBatch::Dynamic => None,
    };
    let graph = GraphProto {
        name: name.into(),
        node: b.nodes,
        initializer: b.inits,
        input: vec![value_info("input", &[n, Some(3), Some(h), Some(w)])],
        output: vec![value_info("feature", &[n, Some(channels)])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
            ..Default::default()
        }],
        producer_name: "reid-prune".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph).into(),
        metadata_props: opts
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    model
        .write_to_bytes()
        .map_err(|e| ModelError::Arch(format!("encoding the ONNX model: {e}")))
}
