//! BitStack on a whole model (issue 7): every block projection is decomposed
//! once into a stack of ~1-bit residual blocks ([`BitStack`]; Wang et al.,
//! *BitStack: Any-Size Compression of Large Language Models in Variable
//! Memory Environments*, ICLR 2025, arXiv:2410.23918), and any memory
//! budget then loads a prefix of every layer's stack.
//!
//! [`bitstack_llama`] decomposes (one calibration pass for the activation
//! scales, `√mean x²` per input channel as in the reference code, then one
//! SVD per block) and ranks every block by how much it lowers its layer's
//! output error relative to that layer's output energy, with the diagonal
//! of the input Gram matrix as the metric (`Σ_j mean x_j² Σ_i ΔW_ij²`; the
//! full Gram form costs `O(out·in²)` per block). [`StackedModel::allocate`]
//! turns a budget in bits per weight into blocks per layer (every layer
//! loads at least one; the rest go greedily by importance per bit,
//! [`allocate_blocks`]), and [`StackedModel::assemble`] puts the
//! reconstructed weights into a model: one decomposition, any size.

use std::time::Instant;

use ndarray::Array1;
use tensorpress_lowrank::{
    allocate_blocks, BitStack, BitStackConfig, BlockAllocation, ErrorMetric, StackProfile,
};
use tensorpress_models::linear::{to_matrix, DenseLinear};
use tensorpress_models::llama::LlamaModel;

use super::{HessianCollector, Progress};
use crate::{Error, Result};

/// One layer's stack and the importance of each of its blocks.
#[derive(Debug, Clone)]
pub struct StackedLayer {
    /// Layer name (Hugging Face module naming).
    pub name: String,
    /// The decomposition.
    pub stack: BitStack,
    /// Per block: the drop in the layer's relative (diagonal) output error.
    pub importance: Vec<f64>,
}

/// Every block projection of a model, decomposed into BitStack blocks.
#[derive(Debug, Clone)]
pub struct StackedModel {
    /// The layers, in model order.
    pub layers: Vec<StackedLayer>,
    /// Seconds spent decomposing.
    pub seconds: f64,
}

impl StackedModel {
    /// Weights in the stacked layers.
    pub fn weights(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| (l.stack.dim().0 * l.stack.dim().1) as u64)
            .sum()
    }

    /// Bits per weight of one block in every layer (the smallest budget) and
    /// of every block (the largest).
    pub fn bits_per_weight_range(&self) -> (f64, f64) {
        let w = self.weights().max(1) as f64;
        let one: u64 = self.layers.iter().map(|l| l.stack.block_bits()).sum();
        let all: u64 = self
            .layers
            .iter()
            .map(|l| l.stack.bits(l.stack.len()))
            .sum();
        (one as f64 / w, all as f64 / w)
    }

    /// Blocks per layer for a budget of `bits_per_weight` over the stacked
    /// layers: one block each, then the most important blocks per bit that
    /// fit.
    ///
    /// # Errors
    /// [`Error::Budget`] when the budget is not finite or is below one block
    /// per layer ([`bits_per_weight_range`](Self::bits_per_weight_range)).
    pub fn allocate(&self, bits_per_weight: f64) -> Result<BlockAllocation> {
        let (min, max) = self.bits_per_weight_range();
        if !(bits_per_weight.is_finite() && bits_per_weight >= min) {
            return Err(Error::Budget {
                reason: format!(
                    "{bits_per_weight} bits per weight is below one BitStack block per layer \
                     ({min:.3}); the stack holds up to {max:.3}"
                ),
            });
        }
        let budget = (bits_per_weight * self.weights() as f64).floor() as u64;
        let first: u64 = self.layers.iter().map(|l| l.stack.block_bits()).sum();
        let profiles: Vec<StackProfile<'_>> = self
            .layers
            .iter()
            .map(|l| StackProfile {
                block_bits: l.stack.block_bits(),
                importance: l.importance.get(1..).unwrap_or(&[]),
            })
            .collect();
        let rest = allocate_blocks(&profiles, budget.saturating_sub(first)).map_err(|e| {
            Error::Budget {
                reason: e.to_string(),
            }
        })?;
        let blocks: Vec<usize> = rest.blocks.iter().map(|b| b + 1).collect();
        let mut plan = rest;
        plan.bits += first;
        plan.importance += self
            .layers
            .iter()
            .map(|l| l.importance.first().copied().unwrap_or(0.0))
            .sum::<f64>();
        plan.blocks = blocks;
        Ok(plan)
    }

    /// Bits per weight of `plan` over the stacked layers.
    pub fn plan_bits_per_weight(&self, plan: &BlockAllocation) -> f64 {
        plan.bits as f64 / self.weights().max(1) as f64
    }

    /// Replaces every stacked layer of `model` by the sum of its first
    /// `plan.blocks[i]` blocks.
    ///
    /// # Errors
    /// A plan for another number of layers or with more blocks than a stack
    /// holds; a layer the model lacks.
    pub fn assemble(&self, model: &mut LlamaModel, plan: &BlockAllocation) -> Result<()> {
        if plan.blocks.len() != self.layers.len() {
            return Err(Error::Budget {
                reason: format!(
                    "a plan for {} layers, but {} are stacked",
                    plan.blocks.len(),
                    self.layers.len()
                ),
            });
        }
        for (layer, &n) in self.layers.iter().zip(&plan.blocks) {
            let w = layer
                .stack
                .reconstruct(n)
                .map_err(|source| Error::Factorize {
                    layer: layer.name.clone(),
                    source,
                })?;
            let linear = model
                .linear_mut(&layer.name)
                .ok_or_else(|| Error::NotObserved {
                    layer: layer.name.clone(),
                })?;
            let device = linear.op().dense_weight()?.device().clone();
            let bias = linear.op().bias().cloned();
            let (rows, cols) = w.dim();
            let t = candle_core::Tensor::from_vec(
                w.into_raw_vec_and_offset().0,
                (rows, cols),
                &device,
            )?;
            linear.set_op(std::sync::Arc::new(DenseLinear::new(t, bias)?))?;
        }
        Ok(())
    }
}

/// Decomposes every block projection of `model` into `config.blocks` BitStack
/// blocks, scaling input channels by their calibration RMS (one forward pass
/// over `calibration`; the model is not changed).
///
/// # Errors
/// [`Error::NoCalibration`] without windows; [`Error::Factorize`] for a
/// layer that does not decompose (non-finite weights, `magnitude_rank` 0,
/// a factor that overflows fp16); forward errors.
pub fn bitstack_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    config: &BitStackConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<StackedModel> {
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let names: Vec<String> = model
        .linear_names()
        .into_iter()
        .filter(|n| n.starts_with("model.layers."))
        .collect();
    let collector = std::sync::Arc::new(HessianCollector::new(names.iter().cloned()));
    model.set_observer(Some(collector.clone()));
    let pass = calibration.iter().enumerate().try_for_each(|(i, w)| {
        progress(Progress::Calibrating {
            block: i,
            blocks: calibration.len(),
        });
        model.hidden_states(w).map(|_| ())
    });
    model.set_observer(None);
    pass?;
    let start = Instant::now();
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let wrap = |source| Error::Factorize {
            layer: name.clone(),
            source,
        };
        let c = collector.get(&name).ok_or_else(|| Error::NotObserved {
            layer: name.clone(),
        })?;
        let mean_sq = c.stats.mean_square()?;
        let rms = mean_sq.mapv(|v| v.max(0.0).sqrt());
        let linear = model
            .linears()
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| Error::NotObserved {
                layer: name.clone(),
            })?;
        let w = to_matrix(&linear.op().dense_weight()?)?;
        let t0 = Instant::now();
        let stack = BitStack::decompose(w.view(), Some(rms.view()), config).map_err(wrap)?;
        let c: Array1<f64> = mean_sq.mapv(f64::from);
        let energy: f64 = w
            .outer_iter()
            .map(|row| {
                row.iter()
                    .zip(&c)
                    .map(|(x, c)| c * f64::from(*x).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        let importance = stack
            .error_reductions(w.view(), ErrorMetric::Diagonal(c.view()))
            .map_err(wrap)?
            .into_iter()
            .map(|g| g / energy)
            .collect();
        let (out, inp) = stack.dim();
        progress(Progress::Layer(super::LayerReport {
            name: name.clone(),
            shape: [out, inp],
            output_error: None,
            weight_error: 0.0,
            bits_per_weight: stack.bits_per_weight(stack.len()),
            sparsity: 0.0,
            seconds: t0.elapsed().as_secs_f64(),
        }));
        layers.push(StackedLayer {
            name,
            stack,
            importance,
        });
    }
    Ok(StackedModel {
        layers,
        seconds: start.elapsed().as_secs_f64(),
    })
}
