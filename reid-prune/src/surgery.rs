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

/// A new, trainable network without the removed channels.
pub fn apply(net: &ReidNet, plan: &PrunePlan) -> Result<ReidNet> {
    let spec = net.spec();
    let layers = spec.prunable_convs();
    let mut tensors: HashMap<String, Tensor> = net.state_dict()?.into_iter().collect();
    let device = net.device().clone();
    for (conv, keep) in &plan.keep {
        let layer = layers.iter().find(|l| &l.conv == conv).ok_or_else(|| {
            PruneError::Request(format!(
                "'{conv}' is not a prunable conv of this {}",
                spec.name()
            ))
        })?;
        if keep.is_empty()
            || keep.iter().any(|&c| c >= layer.width)
            || keep.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(PruneError::Request(format!(
                "{conv}: kept channels must be sorted, distinct and below its width {}",
                layer.width
            )));
        }
        let idx = Tensor::from_vec(
            keep.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            keep.len(),
            &device,
        )?;
        let mut select = |name: String, dim: usize| -> Result<()> {
            let t = tensors
                .get(&name)
                .ok_or_else(|| PruneError::Request(format!("checkpoint has no tensor {name}")))?;
            let t = t.index_select(&idx, dim)?;
            tensors.insert(name, t);
            Ok(())
        };
        select(format!("{conv}.weight"), 0)?;
        for part in ["weight", "bias", "running_mean", "running_var"] {
            select(format!("{}.{part}", layer.bn), 0)?;
        }
        select(format!("{}.weight", layer.consumer), 1)?;
    }
    let groups = spec.residual_groups();
    for (name, keep) in &plan.groups {
        let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| {
            PruneError::Request(format!(
                "'{name}' is not a residual group of this {}",
                spec.name()
            ))
        })?;
        if keep.is_empty()
            || keep.iter().any(|&c| c >= g.width)
            || keep.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(PruneError::Request(format!(
                "group {name}: kept channels must be sorted, distinct and below its width {}",
                g.width
            )));
        }
        let idx = Tensor::from_vec(
            keep.iter().map(|&c| c as u32).collect::<Vec<_>>(),
            keep.len(),
            &device,
        )?;
        let mut select = |name: String, dim: usize| -> Result<()> {
            let t = tensors
                .get(&name)
                .ok_or_else(|| PruneError::Request(format!("checkpoint has no tensor {name}")))?;
            let t = t.index_select(&idx, dim)?;
            tensors.insert(name, t);
            Ok(())
        };
        // Every conv writing into the stream keeps the same filters, with its BN...
        for (conv, bn) in &g.producers {
            select(format!("{conv}.weight"), 0)?;
            for part in ["weight", "bias", "running_mean", "running_var"] {
                select(format!("{bn}.{part}"), 0)?;
            }
        }
        // ...every conv reading it keeps the same input channels...
        for reader in &g.readers {
            select(format!("{reader}.weight"), 1)?;
        }
        // ...and when the stream is the feature, the neck and classifier follow.
        if g.feeds_head {
            if spec.neck == reid_model::Neck::BnNeck {
                for part in ["weight", "bias", "running_mean", "running_var"] {
                    select(format!("bnneck.{part}"), 0)?;
                }
            }
            if spec.num_classes > 0 {
                select("classifier.weight".into(), 1)?;
            }
        }
    }
    let new_spec = plan.apply_to(spec)?;
    let report = MismatchReport::compare(&new_spec, &tensors, |_| false);
    if !report.is_empty() {
        return Err(PruneError::Request(format!(
            "surgery produced inconsistent tensors:\n{report}"
        )));
    }
    Ok(ReidNet::from_tensors_trainable(
        &new_spec, &tensors, &device, 0,
    )?)
}
