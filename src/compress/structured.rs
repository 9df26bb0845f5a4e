//! Structured pruning of a Llama-family model: whole FFN neurons leave every
//! block (rows of the gate and up projections, columns of the down
//! projection; [`prune_ffn_llama_with`]), or whole query heads (rows of the
//! query projection, columns of the output projection;
//! [`prune_heads_llama`]), so the written checkpoint is smaller and declares
//! the new `intermediate_size` or `num_attention_heads`. In both cases the
//! removed units are output channels of one layer and input channels of the
//! next, and the consuming layer is refit by least squares on what stays.
//!
//! [`FfnPruning`] chooses how neurons are ranked within a block
//! ([`NeuronCriterion`]: output energy, or gradient × activation relevance)
//! and how the removed fraction is spread over the blocks ([`BlockRatios`]:
//! the same everywhere, SAP's PQ-Index bound, or PreCropping's global
//! ranking).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use ndarray::{Array2, ArrayD, Axis};
use tensorpress_models::eval::curvature::target_logit_gradients;
use tensorpress_models::linear::{to_matrix, Observer};
use tensorpress_models::llama::LlamaModel;
use tensorpress_sparsity::{
    channel_scores, global_threshold_ratios, keep_highest, refit_kept_channels, SapRule,
};
use tensorpress_tensor::ChannelStats;

use super::{CompressReport, HessianCollector, LayerReport, Progress};
use crate::{Error, Result};

/// How the neurons of one block are ranked; the lowest go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NeuronCriterion {
    /// The down-projection output energy a neuron carries on the calibration
    /// tokens, `‖W_down[:, i]‖² · H_ii` (the structured form of Wanda's
    /// `|W|·‖X‖`), from the block's inputs after the blocks before it were
    /// pruned.
    #[default]
    Energy,
    /// "Pruning by explaining" (Yeom et al., 2021): a neuron's relevance to
    /// the model's prediction, summed over the calibration tokens. Full LRP
    /// is not available in the runner; this is the gradient × activation
    /// relevance of the true next token's logit, `Σ_t a_ti ∂z_t/∂a_ti`,
    /// computed on the unpruned model as `Σ_j W_ji ∂z/∂W_ji` of the down
    /// projection (one backward pass per window). Signed, as in the paper:
    /// neurons that work against the prediction go first. The model must be
    /// loaded trainable ([`LoadOptions::trainable`](tensorpress_models::weights::LoadOptions::trainable)).
    Relevance,
}

/// How the removed fraction of neurons is spread over the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum BlockRatios {
    /// Every block loses the same fraction.
    #[default]
    Uniform,
    /// SAP (Diao et al., 2023): each block's ratio follows the PQ-Index
    /// bound of its neurons' importance (`‖W_down[:, i]‖ · ‖a_i‖` on the
    /// unpruned model), scaled so the ratios average to the target
    /// ([`SapRule::ratios`]; the rule's `β` caps each block).
    Sap(SapRule),
    /// PreCropping (Liu et al.): the ratios of one global unstructured
    /// ranking of every FFN weight by its Wanda score `|W_ij| · ‖x_j‖` on the
    /// unpruned model ([`global_threshold_ratios`]), capped at
    /// [`FfnPruning::max_block_ratio`].
    PreCropping,
}

/// Options of structured FFN pruning ([`prune_ffn_llama_with`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FfnPruning {
    /// The fraction of all FFN neurons to remove, in `(0, 1)`.
    pub ratio: f64,
    /// How neurons are ranked within a block.
    pub criterion: NeuronCriterion,
    /// How the fraction is spread over blocks.
    pub allocation: BlockRatios,
    /// The most a block may lose under [`BlockRatios::PreCropping`]
    /// (default 0.9).
    pub max_block_ratio: f64,
    /// When blocks end with different widths, zero-pad the written gate/up
    /// rows and down columns to the widest block, so the checkpoint has one
    /// `intermediate_size` and loads in Hugging Face Llama code (exact, but
    /// the file keeps the widest block's size). Without it such a report
    /// cannot be exported (default false). The model in memory stays
    /// unpadded either way.
    pub pad_to_uniform: bool,
}

impl FfnPruning {
    /// Remove `ratio` of the neurons of every block by output energy.
    pub fn new(ratio: f64) -> Self {
        FfnPruning {
            ratio,
            criterion: NeuronCriterion::Energy,
            allocation: BlockRatios::Uniform,
            max_block_ratio: 0.9,
            pad_to_uniform: false,
        }
    }

    /// With this ranking criterion.
    pub fn criterion(mut self, criterion: NeuronCriterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// With this spread over blocks.
    pub fn allocation(mut self, allocation: BlockRatios) -> Self {
        self.allocation = allocation;
        self
    }

    /// Zero-pad non-uniform widths in the report (see the field).
    pub fn pad_to_uniform(mut self, pad: bool) -> Self {
        self.pad_to_uniform = pad;
        self
    }
}

/// Removes a fraction `ratio` (in `(0, 1)`, rounded up per block) of every
/// block's FFN neurons by output energy: [`prune_ffn_llama_with`] with
/// [`FfnPruning::new`].
///
/// # Errors
/// As [`prune_ffn_llama_with`].
pub fn prune_ffn_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    ratio: f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    prune_ffn_llama_with(model, calibration, &FfnPruning::new(ratio), progress)
}

/// Removes FFN neurons block by block on `calibration` (the inputs of block
/// `b` come from the already pruned blocks before it): each block loses its
/// share of `options.ratio` ([`BlockRatios`]), the lowest-ranked neurons by
/// [`NeuronCriterion`], and the kept columns of the down projection are
/// refit by least squares on the calibration inputs
/// ([`refit_kept_channels`], damp 1 %). The new gate/up/down weights land
/// in [`CompressReport::replaced`], so
/// [`write_hf_checkpoint`](super::write_hf_checkpoint) writes a smaller
/// model whose `config.json` has the new `intermediate_size`.
///
/// # Errors
/// A ratio outside `(0, 1)` or one that would remove every neuron of a
/// block ([`Error::Prune`]), no calibration windows, relevance on a model
/// that is not trainable, a forward error.
pub fn prune_ffn_llama_with(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    options: &FfnPruning,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let prune_error = |layer: &str, source| Error::Prune {
        layer: layer.to_string(),
        source,
    };
    // Check the ratio before any work.
    keep_highest(
        &vec![0.0; model.params().intermediate_size],
        options.ratio,
        "FFN neurons",
    )
    .map_err(|e| prune_error("mlp", e))?;
    let blocks = model.params().num_layers;
    let ratios = block_ratios(model, calibration, options)?;
    let relevance = match options.criterion {
        NeuronCriterion::Energy => None,
        NeuronCriterion::Relevance => {
            let layers: Vec<String> = (0..blocks)
                .map(|b| format!("model.layers.{b}.mlp.down_proj"))
                .collect();
            Some(input_relevance(model, calibration, &layers, progress)?)
        }
    };
    let mut report = CompressReport::new();
    let mut xs: Vec<Tensor> = calibration
        .iter()
        .map(|w| model.embed(w))
        .collect::<tensorpress_models::Result<_>>()?;
    for b in 0..blocks {
        progress(Progress::Calibrating { block: b, blocks });
        let prefix = format!("model.layers.{b}.mlp");
        let down_name = format!("{prefix}.down_proj");
        let ratio = ratios[b];
        let step = prune_block_inputs(
            model,
            &xs,
            b,
            &down_name,
            1,
            relevance.as_ref().map(|r| r[b].as_slice()),
            &mut |scores| {
                if ratio > 0.0 {
                    keep_highest(scores, ratio, "FFN neurons")
                        .map_err(|e| prune_error(&down_name, e))
                } else {
                    Ok((0..scores.len()).collect())
                }
            },
        )?;
        model.shrink_ffn(b, &step.keep, step.refit)?;
        record_block(
            &mut report,
            model,
            &prefix,
            &["gate_proj", "up_proj", "down_proj"],
            "down_proj",
            step.output_error,
            step.seconds,
            progress,
        )?;
        xs = xs
            .iter()
            // Detached: a trainable model would otherwise chain every
            // block's autograd graph into the next block's inputs.
            .map(|x| model.forward_block(b, x).map(|y| y.detach()))
            .collect::<tensorpress_models::Result<_>>()?;
    }
    if options.pad_to_uniform {
        pad_ffn_widths(&mut report, model.params().num_layers)?;
    }
    Ok(report)
}

/// Removes a fraction `ratio` of the query heads of every key/value group
/// in every block (rounded up per group; SmolLM2's three groups of three
/// lose one head each at `ratio` ≤ 1/3), block by block on `calibration`:
/// the rows of the query projection and the columns of the output
/// projection of the removed heads go, and the kept columns of the output
/// projection are refit by least squares on the calibration inputs, as for
/// FFN neurons. Heads are ranked by [`NeuronCriterion`] summed over their
/// `head_dim` channels of the output projection's input. Key/value heads
/// stay (grouped-query attention keeps its groups), so every group keeps
/// the same number of query heads and the written `config.json` declares
/// the new `num_attention_heads` with an explicit `head_dim`.
///
/// # Errors
/// A ratio outside `(0, 1)` or one that would remove every head of a group
/// ([`Error::Prune`]), no calibration windows, relevance on a model that is
/// not trainable, a forward error.
pub fn prune_heads_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    ratio: f64,
    criterion: NeuronCriterion,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let p = model.params().clone();
    let groups = p.num_heads / p.num_kv_heads.max(1);
    let prune_error = |layer: &str, source| Error::Prune {
        layer: layer.to_string(),
        source,
    };
    keep_highest(
        &vec![0.0; groups],
        ratio,
        "query heads of a key/value group",
    )
    .map_err(|e| prune_error("self_attn", e))?;
    let blocks = p.num_layers;
    let relevance = match criterion {
        NeuronCriterion::Energy => None,
        NeuronCriterion::Relevance => {
            let layers: Vec<String> = (0..blocks)
                .map(|b| format!("model.layers.{b}.self_attn.o_proj"))
                .collect();
            Some(input_relevance(model, calibration, &layers, progress)?)
        }
    };
    let mut report = CompressReport::new();
    let mut xs: Vec<Tensor> = calibration
        .iter()
        .map(|w| model.embed(w))
        .collect::<tensorpress_models::Result<_>>()?;
    for b in 0..blocks {
        progress(Progress::Calibrating { block: b, blocks });
        let prefix = format!("model.layers.{b}.self_attn");
        let o_name = format!("{prefix}.o_proj");
        let step = prune_block_inputs(
            model,
            &xs,
            b,
            &o_name,
            p.head_dim,
            relevance.as_ref().map(|r| r[b].as_slice()),
            &mut |scores| {
                // The same count from every group, the best heads of each.
                let mut keep = Vec::new();
                for (g, group) in scores.chunks(groups).enumerate() {
                    let kept = keep_highest(group, ratio, "query heads of a key/value group")
                        .map_err(|e| prune_error(&o_name, e))?;
                    keep.extend(kept.into_iter().map(|h| g * groups + h));
                }
                Ok(keep)
            },
        )?;
        model.shrink_heads(b, &step.keep, step.refit)?;
        record_block(
            &mut report,
            model,
            &prefix,
            &["q_proj", "o_proj"],
            "o_proj",
            step.output_error,
            step.seconds,
            progress,
        )?;
        xs = xs
            .iter()
            // Detached: a trainable model would otherwise chain every
            // block's autograd graph into the next block's inputs.
            .map(|x| model.forward_block(b, x).map(|y| y.detach()))
            .collect::<tensorpress_models::Result<_>>()?;
    }
    Ok(report)
}

/// What removing a block's input units did.
struct BlockStep {
    /// Kept units, ascending.
    keep: Vec<usize>,
    /// The consuming layer's refit weight on the kept channels.
    refit: Tensor,
    /// Its relative output error on the calibration inputs.
    output_error: f64,
    /// Seconds spent scoring and refitting.
    seconds: f64,
}

/// Scores the input units (`width` consecutive channels each) of layer
/// `consumer` in block `b` on the block inputs `xs`, by output energy from
/// the layer's input Hessian or by the given channel `relevance`, lets
/// `select` pick the units to keep from the unit scores, and refits the
/// consumer on the kept channels.
fn prune_block_inputs(
    model: &mut LlamaModel,
    xs: &[Tensor],
    b: usize,
    consumer: &str,
    width: usize,
    relevance: Option<&[f64]>,
    select: &mut dyn FnMut(&[f64]) -> Result<Vec<usize>>,
) -> Result<BlockStep> {
    let prune_error = |source| Error::Prune {
        layer: consumer.to_string(),
        source,
    };
    let collector = Arc::new(HessianCollector::new([consumer.to_string()]));
    model.set_observer(Some(collector.clone()));
    let pass = xs
        .iter()
        .try_for_each(|x| model.forward_block(b, x).map(|_| ()));
    model.set_observer(None);
    pass?;
    let h = collector
        .get(consumer)
        .ok_or_else(|| Error::NotObserved {
            layer: consumer.to_string(),
        })?
        .hessian
        .finalize(0.0)?
        .h;
    let weight = dense_weight(model, consumer)?;
    let device = model.device().clone();
    let t = std::time::Instant::now();
    let channel = match relevance {
        Some(r) => r.to_vec(),
        None => channel_scores(weight.view(), h.view()).map_err(prune_error)?,
    };
    let units: Vec<f64> = channel.chunks(width).map(|c| c.iter().sum()).collect();
    let keep = select(&units)?;
    let channels: Vec<usize> = keep
        .iter()
        .flat_map(|&u| u * width..(u + 1) * width)
        .collect();
    let refit =
        refit_kept_channels(weight.view(), h.view(), &channels, 0.01).map_err(prune_error)?;
    // The relative output error of the consumer on its inputs.
    let mut full = Array2::<f32>::zeros(weight.dim());
    for (k, &i) in channels.iter().enumerate() {
        full.column_mut(i).assign(&refit.column(k));
    }
    let delta = &full - &weight;
    let output_error = tensorpress_sensitivity::hessian_weighted_error(delta.view(), h.view())?
        / tensorpress_sensitivity::hessian_weighted_error(weight.view(), h.view())?
            .max(f64::MIN_POSITIVE);
    let (rows, cols) = refit.dim();
    let refit = Tensor::from_vec(refit.into_raw_vec_and_offset().0, (rows, cols), &device)?;
    Ok(BlockStep {
        keep,
        refit,
        output_error,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Reports and records the new weights of `modules` under `prefix`; the
/// output error and time go to `consumer`.
#[allow(clippy::too_many_arguments)]
fn record_block(
    report: &mut CompressReport,
    model: &mut LlamaModel,
    prefix: &str,
    modules: &[&str],
    consumer: &str,
    output_error: f64,
    seconds: f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    report.timings.solve += seconds;
    for &module in modules {
        let name = format!("{prefix}.{module}");
        let weight = model
            .linear_mut(&name)
            .ok_or_else(|| Error::NotObserved {
                layer: name.clone(),
            })?
            .op()
            .dense_weight()?;
        let (r, c) = weight.dims2()?;
        let layer = LayerReport {
            name: name.clone(),
            shape: [r, c],
            output_error: (module == consumer).then_some(output_error),
            weight_error: 0.0,
            bits_per_weight: 16.0,
            sparsity: 0.0,
            seconds: if module == consumer { seconds } else { 0.0 },
        };
        progress(Progress::Layer(layer.clone()));
        report.layers.push(layer);
        report.replace(format!("{name}.weight"), &weight)?;
    }
    Ok(())
}

/// Per-channel statistics of the inputs of the observed layers.
#[derive(Debug)]
struct NormCollector {
    wanted: Vec<String>,
    stats: Mutex<BTreeMap<String, ChannelStats>>,
}

impl Observer for NormCollector {
    fn wants(&self, layer: &str) -> bool {
        self.wanted.iter().any(|w| w == layer)
    }

    fn observe(&self, layer: &str, input: &Tensor) -> tensorpress_models::Result<()> {
        let x = to_matrix(input)?;
        let fail = |m: String| tensorpress_models::Error::Observer {
            layer: layer.to_string(),
            source: m.into(),
        };
        let mut stats = self
            .stats
            .lock()
            .map_err(|_| fail("the collector's lock is poisoned".into()))?;
        stats
            .entry(layer.to_string())
            .or_insert_with(|| ChannelStats::new(x.ncols()))
            .update(x.view())
            .map_err(|e| fail(e.to_string()))
    }
}

/// The fraction of neurons each block loses.
fn block_ratios(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    options: &FfnPruning,
) -> Result<Vec<f64>> {
    let blocks = model.params().num_layers;
    if options.allocation == BlockRatios::Uniform {
        return Ok(vec![options.ratio; blocks]);
    }
    // Input norms of every block's FFN on the unpruned model.
    let name = |b: usize, m: &str| format!("model.layers.{b}.mlp.{m}");
    let collector = Arc::new(NormCollector {
        wanted: (0..blocks)
            .flat_map(|b| [name(b, "gate_proj"), name(b, "down_proj")])
            .collect(),
        stats: Mutex::new(BTreeMap::new()),
    });
    model.set_observer(Some(collector.clone()));
    let pass = calibration
        .iter()
        .try_for_each(|window| model.logits(window, 0).map(|_| ()));
    model.set_observer(None);
    pass?;
    let stats = collector
        .stats
        .lock()
        .map_err(|_| Error::NotObserved {
            layer: "mlp".into(),
        })?
        .clone();
    let norms = |layer: String| -> Result<Vec<f64>> {
        let s = stats.get(&layer).ok_or(Error::NotObserved { layer })?;
        Ok(s.l2_norm().iter().map(|v| f64::from(*v)).collect())
    };
    let weight = |layer: String| dense_weight(model, &layer);
    let prune_error = |source| Error::Prune {
        layer: "mlp".into(),
        source,
    };
    match options.allocation {
        BlockRatios::Uniform => unreachable!("handled above"),
        BlockRatios::Sap(rule) => {
            let importance: Vec<Vec<f64>> = (0..blocks)
                .map(|b| {
                    let a = norms(name(b, "down_proj"))?;
                    let w = weight(name(b, "down_proj"))?;
                    Ok(w.axis_iter(Axis(1))
                        .zip(&a)
                        .map(|(col, n)| {
                            col.iter()
                                .map(|v| f64::from(*v).powi(2))
                                .sum::<f64>()
                                .sqrt()
                                * n
                        })
                        .collect())
                })
                .collect::<Result<_>>()?;
            let views: Vec<&[f64]> = importance.iter().map(Vec::as_slice).collect();
            rule.ratios(&views, options.ratio).map_err(prune_error)
        }
        BlockRatios::PreCropping => {
            let scores: Vec<Vec<f64>> = (0..blocks)
                .map(|b| {
                    let x = norms(name(b, "gate_proj"))?;
                    let a = norms(name(b, "down_proj"))?;
                    let mut out = Vec::new();
                    for (module, n) in [("gate_proj", &x), ("up_proj", &x), ("down_proj", &a)] {
                        let w = weight(name(b, module))?;
                        for row in w.rows() {
                            out.extend(row.iter().zip(n).map(|(v, n)| f64::from(v.abs()) * n));
                        }
                    }
                    Ok(out)
                })
                .collect::<Result<_>>()?;
            let views: Vec<&[f64]> = scores.iter().map(Vec::as_slice).collect();
            global_threshold_ratios(&views, options.ratio, options.max_block_ratio)
                .map_err(prune_error)
        }
    }
}

/// Gradient × activation relevance of every input channel of each layer in
/// `layers`: `Σ_j W_ji ∂z/∂W_ji`, `z` the mean true-token logit
/// ([`NeuronCriterion::Relevance`]).
fn input_relevance(
    model: &LlamaModel,
    calibration: &[Vec<u32>],
    layers: &[String],
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f64>>> {
    let (_, grads) = target_logit_gradients(model, calibration, layers, &mut |done, total| {
        progress(Progress::Gradients { done, total })
    })?;
    layers
        .iter()
        .map(|layer| {
            let g = grads.get(layer).ok_or_else(|| Error::NotObserved {
                layer: layer.clone(),
            })?;
            let w = dense_weight(model, layer)?;
            Ok((0..w.ncols())
                .map(|i| {
                    w.column(i)
                        .iter()
                        .zip(g.column(i))
                        .map(|(w, g)| f64::from(*w) * f64::from(*g))
                        .sum()
                })
                .collect())
        })
        .collect()
}

fn dense_weight(model: &LlamaModel, layer: &str) -> Result<Array2<f32>> {
    let linear = model
        .linears()
        .into_iter()
        .find(|l| l.name() == layer)
        .ok_or_else(|| Error::NotObserved {
            layer: layer.to_string(),
        })?;
    Ok(to_matrix(&linear.op().dense_weight()?)?)
}

/// Zero-pads the FFN weights in `report` to the widest block (blocks that
/// `report` does not hold keep the source width, which is then the widest).
fn pad_ffn_widths(report: &mut CompressReport, blocks: usize) -> Result<()> {
    let gate = |b: usize| format!("model.layers.{b}.mlp.gate_proj.weight");
    let widths: Vec<Option<usize>> = (0..blocks)
        .map(|b| report.replaced.get(&gate(b)).map(|w| w.shape()[0]))
        .collect();
    let Some(max) = widths.iter().flatten().copied().max() else {
        return Ok(());
    };
    if widths.iter().all(|w| *w == Some(max)) {
        return Ok(());
    }
    if widths.iter().any(Option::is_none) {
        return Err(Error::Export {
            layer: "mlp".into(),
            reason: "some blocks kept every neuron: padding would restore the full width; \
                     prune every block or export without padding"
                .into(),
        });
    }
    for b in 0..blocks {
        for (module, axis) in [("gate_proj", 0), ("up_proj", 0), ("down_proj", 1)] {
            let key = format!("model.layers.{b}.mlp.{module}.weight");
            if let Some(w) = report.replaced.get(&key) {
                let mut shape = w.shape().to_vec();
                if shape[axis] == max {
                    continue;
                }
                let width = shape[axis];
                shape[axis] = max;
                let mut padded = ArrayD::<f32>::zeros(shape);
                padded
                    .slice_axis_mut(Axis(axis), (0..width).into())
                    .assign(w);
                report.replaced.insert(key, padded);
            }
        }
    }
    Ok(())
}
