//! Channel surgery: remove the planned channels for real — the conv's filters, the BN after it and
//! the consumer conv's input channels — giving a smaller network with a new `ArchSpec`. With
//! residual groups, a whole stream goes: every conv adding into it, every reader, and the head
//! when it is the feature.

use std::collections::HashMap;

use candle_core::Tensor;
use reid_model::checkpoint::MismatchReport;
use reid_model::ReidNet;

use crate::error::{PruneError, Result};
use crate::strategy::PrunePlan;

/// The state dict being cut, one index set at a time.
struct Cut {
    tensors: HashMap<String, Tensor>,
    device: candle_core::Device,
}

impl Cut {
    /// The kept channels as an index tensor, after checking them against `width`.
    fn index(&self, what: &str, keep: &[usize], width: usize) -> Result<Tensor> {
        if keep.is_empty()
            || keep.iter().any(|&c| c >= width)
            || keep.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(PruneError::Request(format!(
                "{what}: kept channels must be sorted, distinct and below its width {width}"
            )));
        }
        Ok(Tensor::from_vec(
            keep.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            keep.len(),
            &self.device,
        )?)
    }

    fn select(&mut self, idx: &Tensor, name: String, dim: usize) -> Result<()> {
        let t = self
            .tensors
            .get(&name)
            .ok_or_else(|| PruneError::Request(format!("checkpoint has no tensor {name}")))?;
        let t = t.index_select(idx, dim)?;
        self.tensors.insert(name, t);
        Ok(())
    }

    /// A BatchNorm's four tensors.
    fn select_bn(&mut self, idx: &Tensor, bn: &str) -> Result<()> {
        for part in ["weight", "bias", "running_mean", "running_var"] {
            self.select(idx, format!("{bn}.{part}"), 0)?;
        }
        Ok(())
    }
}

/// A new, trainable network without the removed channels.
pub fn apply(net: &ReidNet, plan: &PrunePlan) -> Result<ReidNet> {
    let spec = net.spec();
    let layers = spec.prunable_convs();
    let mut cut = Cut {
        tensors: net.state_dict()?.into_iter().collect(),
        device: net.device().clone(),
    };
    for (conv, keep) in &plan.keep {
        let layer = layers.iter().find(|l| &l.conv == conv).ok_or_else(|| {
            PruneError::Request(format!(
                "'{conv}' is not a prunable conv of this {}",
                spec.name()
            ))
        })?;
        let idx = cut.index(conv, keep, layer.width)?;
        cut.select(&idx, format!("{conv}.weight"), 0)?;
        cut.select_bn(&idx, &layer.bn)?;
        cut.select(&idx, format!("{}.weight", layer.consumer), 1)?;
    }
    let groups = spec.residual_groups();
    for (name, keep) in &plan.groups {
        let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| {
            PruneError::Request(format!(
                "'{name}' is not a residual group of this {}",
                spec.name()
            ))
        })?;
        let idx = cut.index(&format!("group {name}"), keep, g.width)?;
        // Every conv writing into the stream keeps the same filters, with its BN...
        for (conv, bn) in &g.producers {
            cut.select(&idx, format!("{conv}.weight"), 0)?;
            cut.select_bn(&idx, bn)?;
        }
        // ...every conv reading it keeps the same input channels...
        for reader in &g.readers {
            cut.select(&idx, format!("{reader}.weight"), 1)?;
        }
        // ...and when the stream is the feature, the neck and classifier follow.
        if g.feeds_head {
            if spec.neck == reid_model::Neck::BnNeck {
                cut.select_bn(&idx, "bnneck")?;
            }
            if spec.num_classes > 0 {
                cut.select(&idx, "classifier.weight".into(), 1)?;
            }
        }
    }
    let new_spec = plan.apply_to(spec)?;
    let report = MismatchReport::compare(&new_spec, &cut.tensors, |_| false);
    if !report.is_empty() {
        return Err(PruneError::Request(format!(
            "surgery produced inconsistent tensors:\n{report}"
        )));
    }
    // the pruned net runs the ops the net it was cut from ran
    Ok(
        ReidNet::from_tensors_trainable(&new_spec, &cut.tensors, &cut.device, 0)?
            .with_kernels(net.kernels())?,
    )
}
