//! A network as a graph of operations (issue #37's first part): convolutions (with groups),
//! batch norms, activations, additions, pools and the re-ID head, each node with its channel
//! counts and torchvision tensor names. From the graph alone come the channel-dependency
//! groups: which convs must lose the same output channels and which readers lose the same
//! input channels (through BN, activations, additions, depthwise convs and the head), as
//! Torch-Pruning's `DependencyGraph` traces them from a model run — here the graph is the model.
//!
//! Today [`ModelGraph::of_resnet`] builds it from the ResNet schema ([`crate::arch::ArchSpec`])
//! and [`ModelGraph::mobilenet_v2`] builds torchvision's MobileNetV2. The tests check the ResNet
//! groups against the schema's hand-written prunable convs and residual streams (ResNet-18/34/50)
//! and MobileNetV2's against torch-pruning's 25 groups and fvcore's MACs (the golden files).
//! Not yet: the forward pass, checkpoints (`reid.arch`) and pruning read the graph.

use std::collections::BTreeMap;

use crate::arch::{ArchSpec, Neck};

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The image (3 channels).
    Input {
        channels: usize,
    },
    /// A 2-d convolution without bias; `groups == in_channels == out_channels` is depthwise.
    Conv {
        name: String,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    },
    /// Batch norm over the channels of its input (2-d after a conv; the BNNeck over the pooled
    /// feature).
    BatchNorm {
        name: String,
        channels: usize,
    },
    Relu,
    Relu6,
    /// The elementwise sum of its inputs (a residual addition).
    Add,
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Global average pooling to one value a channel (the feature before the head).
    GlobalAvgPool,
    /// A fully connected layer (the classifier).
    Linear {
        name: String,
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
}

/// A node: its operation and the nodes it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<usize>,
}

/// A network: nodes in forward order (every input before its reader), the re-ID feature and
/// the classifier's output.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelGraph {
    pub nodes: Vec<Node>,
    /// The node whose output is the re-ID feature (after the neck, when there is one).
    pub feature: usize,
    /// The classifier's node, when there is one.
    pub logits: Option<usize>,
    /// torchvision's module outputs by name (`features.3`, `layer2.1`), for checks against
    /// references.
    pub outputs: BTreeMap<String, usize>,
}

/// Channels that must be removed together: one channel space of the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelGroup {
    pub width: usize,
    /// Convs whose output channels are this space, each with the BN that follows it (a
    /// depthwise conv inside the space is one too: its filters go with their channels).
    pub producers: Vec<(String, Option<String>)>,
    /// Convs (not depthwise) and linear layers whose input channels are this space.
    pub readers: Vec<String>,
    /// Batch norms over this space (after its producers, and the BNNeck).
    pub norms: Vec<String>,
    /// Whether the space is summed (a residual stream) or read by several layers: its
    /// channels are then shared along a path, not one conv's own.
    pub shared: bool,
    /// Whether the re-ID feature is this space (the head reads it).
    pub feeds_head: bool,
}

impl ModelGraph {
    fn push(&mut self, op: Op, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node { op, inputs });
        self.nodes.len() - 1
    }

    /// conv → BN (→ ReLU when `relu`), returning the last node.
    fn conv_bn(&mut self, from: usize, conv: Op, bn: &str, relu: bool) -> usize {
        let channels = match &conv {
            Op::Conv { out_channels, .. } => *out_channels,
            _ => unreachable!("conv_bn takes a conv"),
        };
        let c = self.push(conv, vec![from]);
        let b = self.push(
            Op::BatchNorm {
                name: bn.to_string(),
                channels,
            },
            vec![c],
        );
        if relu {
            self.push(Op::Relu, vec![b])
        } else {
            b
        }
    }

    /// The graph of a ResNet of the schema, torchvision's names (`layer2.0.downsample.0`) and
    /// the re-ID head's (`bnneck`, `classifier`).
    pub fn of_resnet(spec: &ArchSpec) -> ModelGraph {
        let mut g = ModelGraph {
            nodes: Vec::new(),
            feature: 0,
            logits: None,
            outputs: BTreeMap::new(),
        };
        let conv = |name: String, i: usize, o: usize, k: usize, s: usize| Op::Conv {
            name,
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: k / 2,
            groups: 1,
        };
        let x = g.push(Op::Input { channels: 3 }, vec![]);
        let stem = g.conv_bn(
            x,
            conv("conv1".into(), 3, spec.stem_width, 7, 2),
            "bn1",
            true,
        );
        let mut cur = g.push(
            Op::MaxPool {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            vec![stem],
        );
        let mut in_w = spec.stem_width;
        for (s, blocks) in spec.stages.iter().enumerate() {
            for (b, blk) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{}", s + 1, b);
                let (mut h, mut c_in) = (cur, in_w);
                let last = blk.widths.len() - 1;
                for (k, &w) in blk.widths.iter().enumerate() {
                    let stride = if k == spec.block.strided_conv() {
                        blk.stride
                    } else {
                        1
                    };
                    h = g.conv_bn(
                        h,
                        conv(
                            format!("{prefix}.conv{}", k + 1),
                            c_in,
                            w,
                            spec.block.kernel(k),
                            stride,
                        ),
                        &format!("{prefix}.bn{}", k + 1),
                        k < last,
                    );
                    c_in = w;
                }
                let shortcut = if blk.downsample {
                    let mut ds = conv(
                        format!("{prefix}.downsample.0"),
                        in_w,
                        blk.out_width(),
                        1,
                        blk.stride,
                    );
                    if let Op::Conv { padding, .. } = &mut ds {
                        *padding = 0;
                    }
                    g.conv_bn(cur, ds, &format!("{prefix}.downsample.1"), false)
                } else {
                    cur
                };
                let sum = g.push(Op::Add, vec![h, shortcut]);
                cur = g.push(Op::Relu, vec![sum]);
                g.outputs.insert(prefix.clone(), cur);
                in_w = blk.out_width();
            }
        }
        let mut feature = g.push(Op::GlobalAvgPool, vec![cur]);
        if spec.neck == Neck::BnNeck {
            feature = g.push(
                Op::BatchNorm {
                    name: "bnneck".into(),
                    channels: spec.feature_dim,
                },
                vec![feature],
            );
        }
        g.feature = feature;
        if spec.num_classes > 0 {
            g.logits = Some(g.push(
                Op::Linear {
                    name: "classifier".into(),
                    in_features: spec.feature_dim,
                    out_features: spec.num_classes,
                    bias: false,
                },
                vec![feature],
            ));
        }
        g
    }

    /// torchvision's MobileNetV2 (`features.K…`, `classifier.1`) at `width_mult`, with
    /// `num_classes` outputs (0: none) and each inverted-residual block's expanded width taken
    /// from `expanded` (by its expand conv's name, `features.K.conv.0.0`) where given — a
    /// pruned network's widths.
    pub fn mobilenet_v2(
        width_mult: f64,
        num_classes: usize,
        expanded: &BTreeMap<String, usize>,
    ) -> ModelGraph {
        // torchvision's `_make_divisible`: the nearest multiple of 8, never 10 % below
        let divisible = |v: f64| {
            let d = 8.0;
            let mut n = ((v + d / 2.0) / d).floor() * d;
            n = n.max(d);
            if n < 0.9 * v {
                n += d;
            }
            n as usize
        };
        let mut g = ModelGraph {
            nodes: Vec::new(),
            feature: 0,
            logits: None,
            outputs: BTreeMap::new(),
        };
        let conv = |name: String, i: usize, o: usize, k: usize, s: usize, groups: usize| Op::Conv {
            name,
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: s,
            padding: (k - 1) / 2,
            groups,
        };
        // conv → BN (→ ReLU6)
        let conv_bn_relu6 = |g: &mut ModelGraph, from: usize, c: Op, bn: String, act: bool| {
            let b = g.conv_bn(from, c, &bn, false);
            if act {
                g.push(Op::Relu6, vec![b])
            } else {
                b
            }
        };
        let x = g.push(Op::Input { channels: 3 }, vec![]);
        let mut in_c = divisible(32.0 * width_mult);
        let mut cur = conv_bn_relu6(
            &mut g,
            x,
            conv("features.0.0".into(), 3, in_c, 3, 2, 1),
            "features.0.1".into(),
            true,
        );
        g.outputs.insert("features.0".into(), cur);
        // (expand ratio, channels, blocks, stride)
        let settings = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ];
        let mut k = 1;
        for (t, c, n, s) in settings {
            let out_c = divisible(c as f64 * width_mult);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let p = format!("features.{k}.conv");
                let mut h = cur;
                let mut j = 0;
                let hidden = if t == 1 {
                    in_c
                } else {
                    let name = format!("{p}.0.0");
                    let hidden = expanded.get(&name).copied().unwrap_or(in_c * t);
                    h = conv_bn_relu6(
                        &mut g,
                        h,
                        conv(name, in_c, hidden, 1, 1, 1),
                        format!("{p}.0.1"),
                        true,
                    );
                    j = 1;
                    hidden
                };
                h = conv_bn_relu6(
                    &mut g,
                    h,
                    conv(format!("{p}.{j}.0"), hidden, hidden, 3, stride, hidden),
                    format!("{p}.{j}.1"),
                    true,
                );
                h = conv_bn_relu6(
                    &mut g,
                    h,
                    conv(format!("{p}.{}", j + 1), hidden, out_c, 1, 1, 1),
                    format!("{p}.{}", j + 2),
                    false,
                );
                cur = if stride == 1 && in_c == out_c {
                    g.push(Op::Add, vec![cur, h])
                } else {
                    h
                };
                g.outputs.insert(format!("features.{k}"), cur);
                in_c = out_c;
                k += 1;
            }
        }
        let last = divisible(1280.0 * width_mult.max(1.0));
        cur = conv_bn_relu6(
            &mut g,
            cur,
            conv(format!("features.{k}.0"), in_c, last, 1, 1, 1),
            format!("features.{k}.1"),
            true,
        );
        g.outputs.insert(format!("features.{k}"), cur);
        g.feature = g.push(Op::GlobalAvgPool, vec![cur]);
        if num_classes > 0 {
            g.logits = Some(g.push(
                Op::Linear {
                    name: "classifier.1".into(),
                    in_features: last,
                    out_features: num_classes,
                    bias: true,
                },
                vec![g.feature],
            ));
        }
        g
    }

    /// Output channels of every node, in node order.
    pub fn channels(&self) -> Vec<usize> {
        let mut c = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let v = match &n.op {
                Op::Input { channels } => *channels,
                Op::Conv { out_channels, .. } => *out_channels,
                Op::Linear { out_features, .. } => *out_features,
                _ => n.inputs.first().map_or(0, |&i| c[i]),
            };
            c.push(v);
        }
        c
    }

    /// Each conv's multiply-adds on an `h`×`w` image, in node order (the spatial sizes follow
    /// from the graph: convs and pools shrink them, other nodes keep their input's). `None`
    /// when the image is too small for some layer.
    pub fn conv_macs(&self, h: usize, w: usize) -> Option<Vec<(String, u64)>> {
        let out =
            |x: usize, k: usize, s: usize, p: usize| (x + 2 * p).checked_sub(k).map(|v| v / s + 1);
        let mut hw: Vec<(usize, usize)> = Vec::with_capacity(self.nodes.len());
        let mut macs = Vec::new();
        for n in &self.nodes {
            let input = n.inputs.first().map(|&i| hw[i]);
            let size = match &n.op {
                Op::Input { .. } => (h, w),
                Op::Conv {
                    name,
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                } => {
                    let (ih, iw) = input?;
                    let (oh, ow) = (
                        out(ih, *kernel, *stride, *padding)?,
                        out(iw, *kernel, *stride, *padding)?,
                    );
                    let weight = out_channels * (in_channels / groups) * kernel * kernel;
                    macs.push((name.clone(), (weight * oh * ow) as u64));
                    (oh, ow)
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                } => {
                    let (ih, iw) = input?;
                    (
                        out(ih, *kernel, *stride, *padding)?,
                        out(iw, *kernel, *stride, *padding)?,
                    )
                }
                Op::GlobalAvgPool | Op::Linear { .. } => (1, 1),
                _ => input?,
            };
            hw.push(size);
        }
        Some(macs)
    }

    /// Learned parameters, as torchvision counts them: conv and linear weights (and biases),
    /// BN weights and biases (not the running statistics).
    pub fn params(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    ..
                } => (out_channels * (in_channels / groups) * kernel * kernel) as u64,
                Op::BatchNorm { channels, .. } => 2 * *channels as u64,
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                    ..
                } => (out_features * (in_features + usize::from(*bias))) as u64,
                _ => 0,
            })
            .sum()
    }

    /// This graph with `group`'s channels cut to `width`: its producers' outputs (a depthwise
    /// conv's inputs and groups too), its norms, its readers' inputs.
    pub fn with_group_width(&self, group: &ChannelGroup, width: usize) -> ModelGraph {
        let mut g = self.clone();
        let producer = |name: &str| group.producers.iter().any(|(c, _)| c == name);
        for n in &mut g.nodes {
            match &mut n.op {
                Op::Conv {
                    name,
                    in_channels,
                    out_channels,
                    groups,
                    ..
                } => {
                    if producer(name) {
                        if *groups > 1 && *groups == *in_channels {
                            (*in_channels, *groups) = (width, width);
                        }
                        *out_channels = width;
                    } else if group.readers.contains(name) {
                        *in_channels = width;
                    }
                }
                Op::BatchNorm { name, channels } if group.norms.contains(name) => {
                    *channels = width;
                }
                Op::Linear {
                    name, in_features, ..
                } if group.readers.contains(name) => *in_features = width,
                _ => {}
            }
        }
        g
    }

    /// The channel-dependency groups: every channel space some conv produces, with the convs
    /// and norms that must lose the same channels and the layers whose inputs go with them. In
    /// order of their first node.
    pub fn channel_groups(&self) -> Vec<ChannelGroup> {
        let n = self.nodes.len();
        // union-find over node outputs: two outputs are one space when an operation keeps its
        // input's channels (norms, activations, pools, depthwise convs) or sums them (Add)
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        let depthwise = |op: &Op| {
            matches!(op, Op::Conv { in_channels, out_channels, groups, .. }
                if *groups > 1 && groups == in_channels && groups == out_channels)
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let keeps_channels = match &node.op {
                Op::Input { .. } | Op::Linear { .. } => false,
                op @ Op::Conv { .. } => depthwise(op),
                _ => true,
            };
            if keeps_channels {
                for &j in &node.inputs {
                    let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let channels = self.channels();
        let mut readers_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in self.nodes.iter().enumerate() {
            for &j in &node.inputs {
                readers_of[j].push(i);
            }
        }
        let mut groups: BTreeMap<usize, (usize, ChannelGroup)> = BTreeMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Op::Conv { name, .. } = &node.op {
                let root = find(&mut parent, i);
                // the BN that follows a conv goes with its filters
                let bn = readers_of[i].iter().find_map(|&r| match &self.nodes[r].op {
                    Op::BatchNorm { name, .. } => Some(name.clone()),
                    _ => None,
                });
                let g = groups.entry(root).or_insert_with(|| {
                    (
                        i,
                        ChannelGroup {
                            width: channels[i],
                            producers: Vec::new(),
                            readers: Vec::new(),
                            norms: Vec::new(),
                            shared: false,
                            feeds_head: false,
                        },
                    )
                });
                g.1.producers.push((name.clone(), bn));
            }
        }
        let feature_root = find(&mut parent, self.feature);
        for (i, node) in self.nodes.iter().enumerate() {
            let root = find(&mut parent, i);
            match &node.op {
                Op::BatchNorm { name, .. } => {
                    if let Some(g) = groups.get_mut(&root) {
                        g.1.norms.push(name.clone());
                    }
                }
                Op::Add => {
                    if let Some(g) = groups.get_mut(&root) {
                        g.1.shared = true;
                    }
                }
                _ => {}
            }
            // readers: a layer whose input channels are a group's (not one inside it)
            let reads_across = match &node.op {
                op @ Op::Conv { name, .. } if !depthwise(op) => Some(name),
                Op::Linear { name, .. } => Some(name),
                _ => None,
            };
            if let Some(name) = reads_across {
                for &j in &node.inputs {
                    let r = find(&mut parent, j);
                    if let Some(g) = groups.get_mut(&r) {
                        g.1.readers.push(name.clone());
                    }
                }
            }
        }
        let mut out: Vec<(usize, ChannelGroup)> = groups
            .into_iter()
            .map(|(root, (first, mut g))| {
                g.feeds_head = root == feature_root;
                // a space read by several layers is a path others share (a block's input read
                // by its branch and its shortcut)
                g.shared |= g.readers.len() > 1 || g.feeds_head;
                (first, g)
            })
            .collect();
        out.sort_by_key(|(first, _)| *first);
        out.into_iter().map(|(_, g)| g).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ArchSpec;

    /// The groups of the graph are the schema's hand-written lists: every prunable branch conv
    /// is a group of its own (one producer, its BN, one reader), and every residual stream is a
    /// shared group with the same producers, readers and width — for ResNet-18, -34 and -50,
    /// unpruned and with pruned widths.
    #[test]
    fn resnet_groups_are_the_prunable_convs_and_residual_streams() {
        for depth in [18, 34, 50] {
            let full = ArchSpec::resnet_with(depth, 751, 0.25, 1, Neck::BnNeck).unwrap();
            // a pruned net: every branch conv and stream at another width
            let mut widths: Vec<(String, usize)> = full
                .prunable_convs()
                .iter()
                .enumerate()
                .map(|(i, p)| (p.conv.clone(), 1 + (p.width + i) % p.width))
                .collect();
            widths.sort();
            let pruned = full.with_conv_widths(&widths).unwrap();
            for spec in [&full, &pruned] {
                let groups = ModelGraph::of_resnet(spec).channel_groups();
                let (shared, own): (Vec<_>, Vec<_>) = groups.iter().partition(|g| g.shared);
                let prunable = spec.prunable_convs();
                assert_eq!(own.len(), prunable.len(), "R{depth}");
                for (g, p) in own.iter().zip(&prunable) {
                    assert_eq!(g.producers, [(p.conv.clone(), Some(p.bn.clone()))]);
                    assert_eq!(g.readers, std::slice::from_ref(&p.consumer));
                    assert_eq!(g.norms, std::slice::from_ref(&p.bn));
                    assert_eq!(g.width, p.width);
                    assert!(!g.feeds_head);
                }
                let streams = spec.residual_groups();
                assert_eq!(shared.len(), streams.len(), "R{depth}");
                for (g, r) in shared.iter().zip(&streams) {
                    let mut got: Vec<(String, Option<String>)> = g.producers.clone();
                    let mut want: Vec<(String, Option<String>)> = r
                        .producers
                        .iter()
                        .map(|(c, b)| (c.clone(), Some(b.clone())))
                        .collect();
                    got.sort();
                    want.sort();
                    assert_eq!(got, want, "R{depth} {}", r.name);
                    // the head's readers: the classifier; the schema lists convs only
                    let readers: Vec<&String> =
                        g.readers.iter().filter(|n| *n != "classifier").collect();
                    let mut want_readers: Vec<&String> = r.readers.iter().collect();
                    let mut got_readers = readers.clone();
                    got_readers.sort();
                    want_readers.sort();
                    assert_eq!(got_readers, want_readers, "R{depth} {}", r.name);
                    assert_eq!((g.width, g.feeds_head), (r.width, r.feeds_head));
                    if g.feeds_head {
                        assert!(g.norms.contains(&"bnneck".to_string()));
                        assert!(g.readers.contains(&"classifier".to_string()));
                    }
                }
            }
        }
    }

    fn golden_mobilenet() -> serde_json::Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/golden/mobilenet/mobilenet_v2.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (the golden files are needed)", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// A group as torch-pruning lists it: `conv:out`, `bn:out` of what loses output channels,
    /// `conv:in` of what loses input channels (the classifier left out, as the golden does).
    fn as_torch_pruning(g: &ChannelGroup) -> Vec<String> {
        let mut v: Vec<String> = g
            .producers
            .iter()
            .map(|(c, _)| format!("{c}:out"))
            .chain(g.norms.iter().map(|b| format!("{b}:out")))
            .chain(
                g.readers
                    .iter()
                    .filter(|r| !r.starts_with("classifier"))
                    .map(|r| format!("{r}:in")),
            )
            .collect();
        v.sort();
        v
    }

    /// MobileNetV2's graph: torch-pruning's 25 dependency groups (through depthwise convs and
    /// the residual additions), and fvcore's MACs conv by conv and in total, unpruned and with
    /// every expansion halved.
    #[test]
    fn mobilenet_v2_groups_and_macs_are_torch_prunings_and_fvcores() {
        let golden = golden_mobilenet();
        let g = ModelGraph::mobilenet_v2(1.0, 1000, &BTreeMap::new());
        let mut ours: Vec<Vec<String>> = g.channel_groups().iter().map(as_torch_pruning).collect();
        let mut want: Vec<Vec<String>> = golden["dependency_groups"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grp| {
                let mut v: Vec<String> = grp
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                v.sort();
                v
            })
            .collect();
        ours.sort();
        want.sort();
        assert_eq!(want.len(), 25);
        assert_eq!(ours, want);

        let macs = |g: &ModelGraph| {
            let convs = g.conv_macs(256, 128).unwrap();
            let linear = g.nodes.iter().find_map(|n| match &n.op {
                Op::Linear {
                    in_features,
                    out_features,
                    ..
                } => Some((in_features * out_features) as u64),
                _ => None,
            });
            (convs, linear.unwrap_or(0))
        };
        let (convs, linear) = macs(&g);
        let mut matched = 0;
        for layer in golden["per_layer_256x128"].as_array().unwrap() {
            let name = layer["name"].as_str().unwrap();
            if let Some((_, m)) = convs.iter().find(|(n, _)| n == name) {
                assert_eq!(*m, layer["macs"].as_u64().unwrap(), "{name}");
                matched += 1;
            }
        }
        assert_eq!(
            matched,
            convs.len(),
            "every conv of the graph is one of torchvision's"
        );
        let total: u64 = convs.iter().map(|(_, m)| m).sum::<u64>() + linear;
        assert_eq!(total, golden["macs_256x128"]["macs"].as_u64().unwrap());
        assert_eq!(g.params(), golden["params"].as_u64().unwrap());

        let half: BTreeMap<String, usize> = golden["half_expansion"]["kept_expansion"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
            .collect();
        let halved = ModelGraph::mobilenet_v2(1.0, 1000, &half);
        let (convs, linear) = macs(&halved);
        let total: u64 = convs.iter().map(|(_, m)| m).sum::<u64>() + linear;
        assert_eq!(total, golden["half_expansion"]["macs"].as_u64().unwrap());
        assert_eq!(
            halved.params(),
            golden["half_expansion"]["params"].as_u64().unwrap()
        );
        // the same network by cutting each expansion group of the full graph
        let mut cut = g.clone();
        for group in g.channel_groups() {
            let expand = &group.producers[0].0;
            if let Some(&w) = half.get(expand) {
                cut = cut.with_group_width(&group, w);
            }
        }
        assert_eq!(cut, halved);
    }

    /// A depthwise conv keeps its input's channels: the conv before it, the depthwise conv and
    /// their BNs are one group, read by the conv after (MobileNetV2's inverted residual).
    #[test]
    fn a_depthwise_conv_joins_the_group_of_its_input() {
        let mut g = ModelGraph {
            nodes: Vec::new(),
            feature: 0,
            logits: None,
            outputs: BTreeMap::new(),
        };
        let conv = |name: &str, i: usize, o: usize, k: usize, groups: usize| Op::Conv {
            name: name.into(),
            in_channels: i,
            out_channels: o,
            kernel: k,
            stride: 1,
            padding: k / 2,
            groups,
        };
        let x = g.push(Op::Input { channels: 3 }, vec![]);
        let a = g.conv_bn(x, conv("expand", 3, 24, 1, 1), "bn_e", true);
        let b = g.conv_bn(a, conv("dw", 24, 24, 3, 24), "bn_dw", true);
        let c = g.conv_bn(b, conv("project", 24, 8, 1, 1), "bn_p", false);
        g.feature = g.push(Op::GlobalAvgPool, vec![c]);
        let groups = g.channel_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].producers,
            [
                ("expand".into(), Some("bn_e".into())),
                ("dw".into(), Some("bn_dw".into()))
            ]
        );
        assert_eq!(groups[0].readers, ["project"]);
        assert_eq!(groups[0].norms, ["bn_e", "bn_dw"]);
        assert!(!groups[0].shared);
        assert!(groups[1].feeds_head && groups[1].readers.is_empty());
    }
}
