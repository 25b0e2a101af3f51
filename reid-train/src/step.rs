//! The training engine: one step of re-ID fine-tuning (ID + triplet loss) or source
//! classification (cross-entropy) with our checkpointable optimisers. The epoch loop, data and
//! run folder live with the caller (the `train` command), which hands batches in.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::loss;
use crate::optim::{Optimizer, OptimizerConfig, ParamSlot};
use crate::schedule::Schedule;
use reid_model::{ModelError, ReidNet, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// ID (label-smoothed CE on the BNNeck output) + batch-hard triplet (on the pooled feature).
    Reid,
    /// Cross-entropy classification on a source domain (stands in for ImageNet pre-training).
    Classify,
}

/// Everything that defines the optimisation (serialised next to every run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub task: Task,
    pub epochs: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub label_smoothing: f64,
    /// Triplet margin; `None` = soft margin.
    pub triplet_margin: Option<f64>,
    pub triplet_weight: f64,
    /// Weight of the center loss on the pooled feature (0 = off; Bag of Tricks: 0.0005).
    pub center_loss_weight: f64,
    /// SGD learning rate of the centres (their gradient is taken without the loss weight).
    pub center_lr: f64,
    /// Learning-rate multiplier of the backbone (0 freezes it; the head keeps 1).
    pub backbone_lr_mult: f64,
}

impl Default for TrainConfig {
    /// The Bag-of-Tricks re-ID preset.
    fn default() -> Self {
        Self {
            task: Task::Reid,
            epochs: 120,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::bag_of_tricks(),
            label_smoothing: 0.1,
            triplet_margin: Some(0.3),
            triplet_weight: 1.0,
            center_loss_weight: 0.0,
            center_lr: 0.5,
            backbone_lr_mult: 1.0,
        }
    }
}

/// An extra loss term computed from the network (e.g. the auto-balanced pruning regulariser).
pub type Regularizer = dyn Fn(&ReidNet) -> Result<Tensor>;

/// What one step measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepStats {
    pub loss: f64,
    pub correct: usize,
    pub images: usize,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub optimizer: Optimizer,
    /// Class centres of the center loss [classes, feature dim], when it is on.
    centers: Option<candle_core::Var>,
}

/// Name of the centres among the optimiser state tensors of a checkpoint.
const CENTERS_KEY: &str = "center_loss.centers";

impl Trainer {
    pub fn new(net: &ReidNet, config: TrainConfig) -> Result<Self> {
        if !net.is_trainable() {
            return Err(ModelError::Arch(
                "the network was built for inference; load it trainable".into(),
            ));
        }
        if net.spec().num_classes == 0 {
            return Err(ModelError::Arch(
                "training needs a classifier (num_classes > 0)".into(),
            ));
        }
        // each parameter's role from the network's description: the head learns at the full
        // rate, and BN affine parameters get no weight decay (the usual re-ID recipe)
        let roles: HashMap<String, reid_run::arch::TensorInfo> = net
            .spec()
            .tensors()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let params = net
            .named_parameters()
            .into_iter()
            .map(|(name, var)| {
                let info = roles.get(&name).ok_or_else(|| {
                    ModelError::Arch(format!(
                        "parameter '{name}' is not in the network's description"
                    ))
                })?;
                Ok(ParamSlot {
                    lr_mult: if info.head {
                        1.0
                    } else {
                        config.backbone_lr_mult
                    },
                    decay: info.role.decays(),
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let centers = if config.task == Task::Reid && config.center_loss_weight > 0.0 {
            // Standard-normal start as in Bag of Tricks, from a fixed stream (reproducible runs).
            let (classes, dim) = (net.spec().num_classes, net.spec().feature_dim);
            let mut rng = reid_run::rng::SplitMix64::new(0x5eed_c0de);
            let v: Vec<f32> = (0..classes * dim).map(|_| rng.normal() as f32).collect();
            let t = Tensor::from_vec(v, (classes, dim), &candle_core::Device::Cpu)?
                .to_device(net.device())?;
            Some(candle_core::Var::from_tensor(&t)?)
        } else {
            None
        };
        Ok(Self {
            // the update runs the implementation the net's ops run
            optimizer: Optimizer::new(config.optimizer, params).with_kernels(net.kernels()),
            config,
            centers,
        })
    }

    /// The loss of a batch, and the number of correct top-1 predictions.
    pub fn loss(&self, net: &ReidNet, images: &Tensor, pids: &[i64]) -> Result<(Tensor, usize)> {
        let out = net.forward_t(images, true)?;
        let logits = out
            .logits
            .ok_or_else(|| ModelError::Arch("training needs a classifier".into()))?;
        let classes = net.spec().num_classes as i64;
        if let Some(bad) = pids.iter().find(|&&p| p < 0 || p >= classes) {
            return Err(ModelError::Input(format!(
                "label {bad} outside 0..{classes}: the classifier has {classes} outputs"
            )));
        }
        let labels = Tensor::from_vec(
            pids.iter().map(|&p| p as u32).collect::<Vec<_>>(),
            pids.len(),
            images.device(),
        )?;
        let mut loss = loss::cross_entropy_smooth(&logits, &labels, self.config.label_smoothing)?;
        if self.config.task == Task::Reid && self.config.triplet_weight > 0.0 {
            let t = loss::triplet_batch_hard(&out.pooled, pids, self.config.triplet_margin)?;
            loss = (loss + (t * self.config.triplet_weight)?)?;
        }
        if let Some(c) = &self.centers {
            let cl = loss::center_loss(&out.pooled, c.as_tensor(), &labels)?;
            loss = (loss + (cl * self.config.center_loss_weight)?)?;
        }
        let pred: Vec<u32> = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1()?;
        let correct = pred
            .iter()
            .zip(pids)
            .filter(|(a, b)| **a as i64 == **b)
            .count();
        Ok((loss, correct))
    }

    /// Forward, backward and update. `extra` adds a regulariser to the loss (e.g. auto-balanced
    /// pruning). A NaN or infinite loss is an error and leaves the weights untouched.
    pub fn step(
        &mut self,
        net: &ReidNet,
        images: &Tensor,
        pids: &[i64],
        lr: f64,
        extra: Option<&Regularizer>,
    ) -> Result<StepStats> {
        let (mut loss, correct) = self.loss(net, images, pids)?;
        if let Some(f) = extra {
            loss = (loss + f(net)?)?;
        }
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(ModelError::Input(format!(
                "the loss is {value} (diverged): lower the learning rate; weights were not updated"
            )));
        }
        let grads = loss.backward()?;
        self.optimizer.step(&grads, lr)?;
        if let Some(c) = &self.centers {
            if let Some(g) = grads.get(c.as_tensor()) {
                // Plain SGD on the centres with the loss weight divided out (Bag of Tricks).
                let step = (g * (self.config.center_lr / self.config.center_loss_weight))?;
                c.set(&(c.as_tensor() - step)?)?;
            }
        }
        Ok(StepStats {
            loss: value,
            correct,
            images: pids.len(),
        })
    }

    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut t = self.optimizer.state_tensors()?;
        if let Some(c) = &self.centers {
            t.push((CENTERS_KEY.to_string(), c.as_tensor().copy()?));
        }
        Ok(t)
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: usize) -> Result<()> {
        if let Some(c) = &self.centers {
            let saved = tensors.get(CENTERS_KEY).ok_or_else(|| {
                ModelError::Input(format!(
                    "the checkpoint has no '{CENTERS_KEY}': it was trained without center loss"
                ))
            })?;
            if saved.dims() != c.as_tensor().dims() {
                return Err(ModelError::Input(format!(
                    "'{CENTERS_KEY}' is {:?}, expected {:?}",
                    saved.dims(),
                    c.as_tensor().dims()
                )));
            }
            c.set(&saved.to_device(c.as_tensor().device())?)?;
        }
        let rest: HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(k, _)| k.as_str() != CENTERS_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(self.optimizer.load_state(&rest, steps)?)
    }

    /// The centre of each class (center loss on), for inspection and tests.
    pub fn centers(&self) -> Option<&Tensor> {
        self.centers.as_ref().map(|c| c.as_tensor())
    }
}
