//! Input-channel smoothing folded into the model: AWQ's searched scales and
//! SmoothQuant's migration of activation outliers into the weights.
//!
//! Both multiply the input columns of the layers that read one activation by
//! per-channel scales `s` and divide that activation by `s` in the operation
//! that produces it, leaving the full-precision model unchanged:
//!
//! | layers | reads | `1/s` folded into |
//! |---|---|---|
//! | q, k, v | attention input | `input_layernorm` weight |
//! | o | attention output | `v_proj` rows (only when it has as many rows as `o_proj` columns: no grouped-query attention) |
//! | gate, up | MLP input | `post_attention_layernorm` weight |
//! | down | `silu(gate) ⊙ up` | `up_proj` rows |
//!
//! A group is smoothed only when all its layers are being compressed. The
//! changed norm weights go to [`CompressReport::replaced`] so the exporters
//! write them.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use ndarray::{Array1, Array2, Axis};
use tensorpress_models::linear::{to_matrix, DenseLinear};
use tensorpress_models::llama::{BlockNorm, LlamaModel};
use tensorpress_quant_core::Awq;
use tensorpress_tensor::{ChannelStats, Hessian};

use super::{Collected, CompressReport, HessianCollector};
use crate::{Error, Result};

/// Per-input-channel scaling applied before quantizing a group of layers.
#[derive(Debug, Clone, PartialEq)]
pub enum Smoothing {
    /// AWQ (Lin et al., 2024): scales searched to minimise the output error
    /// of the quantized layers ([`Awq::search_scales`]).
    Awq(Awq),
    /// SmoothQuant (Xiao et al., 2023): `s_j = max|x_j|^α / max|W_:,j|^(1−α)`,
    /// which moves activation outliers into the weights so that both
    /// quantize well to 8 bits (the paper's α = 0.5 by default; larger α for
    /// models with stronger outliers).
    SmoothQuant {
        /// The migration strength α in `[0, 1]`.
        alpha: f32,
    },
}

/// Quantization of the layers' inputs at run time: dynamic, per token,
/// symmetric integers (W8A8's activations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationQuant {
    /// Bits per activation (2–8).
    pub bits: u8,
}

/// What smoothing did to one group of layers.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothReport {
    /// The layers that share the input.
    pub layers: Vec<String>,
    /// The operation that absorbed `1/s` (a norm or a linear layer).
    pub folded_into: String,
    /// AWQ's winning exponent (`None`: no scaling, or SmoothQuant).
    pub alpha: Option<f32>,
    /// AWQ's output error with and without the scales (`None` for SmoothQuant).
    pub loss: Option<(f64, f64)>,
    /// Smallest and largest scale.
    pub scale_range: (f32, f32),
}

/// The operation producing a group's input.
enum Prev {
    Norm(BlockNorm),
    Linear(String),
}

/// Smooths block `b`'s groups whose layers are all in `targets`, using the
/// statistics in `collector`; returns the rescaled statistics of the smoothed
/// layers (their inputs are now `x / s`).
pub(super) fn smooth_block(
    model: &mut LlamaModel,
    b: usize,
    smoothing: &Smoothing,
    targets: &[String],
    collector: &HessianCollector,
    report: &mut CompressReport,
) -> Result<BTreeMap<String, Collected>> {
    let p = format!("model.layers.{b}");
    let name = |m: &str| format!("{p}.{m}");
    let mut groups = vec![
        (
            Prev::Norm(BlockNorm::Attention),
            vec![
                name("self_attn.q_proj"),
                name("self_attn.k_proj"),
                name("self_attn.v_proj"),
            ],
        ),
        (
            Prev::Norm(BlockNorm::Ffn),
            vec![name("mlp.gate_proj"), name("mlp.up_proj")],
        ),
        (
            Prev::Linear(name("mlp.up_proj")),
            vec![name("mlp.down_proj")],
        ),
    ];
    let params = model.params();
    if params.num_heads == params.num_kv_heads {
        groups.insert(
            1,
            (
                Prev::Linear(name("self_attn.v_proj")),
                vec![name("self_attn.o_proj")],
            ),
        );
    }
    let mut rescaled = BTreeMap::new();
    for (prev, layers) in groups {
        if !layers.iter().all(|l| targets.contains(l)) {
            continue;
        }
        let collected = collector
            .get(&layers[0])
            .ok_or_else(|| Error::NotObserved {
                layer: layers[0].clone(),
            })?;
        let weights: Vec<Array2<f32>> = layers
            .iter()
            .map(|l| weight_of(model, l))
            .collect::<Result<_>>()?;
        let (scales, alpha, loss) = match smoothing {
            Smoothing::Awq(awq) => {
                let h = collected.hessian.finalize(0.0)?;
                let x_mean = collected.stats.abs_mean()?;
                let views: Vec<_> = weights.iter().map(|w| w.view()).collect();
                let found = awq
                    .search_scales(&views, h.h.view(), x_mean.view())
                    .map_err(|source| Error::Layer {
                        layer: layers.join(", "),
                        source,
                    })?;
                (
                    found.scales,
                    found.alpha,
                    Some((found.loss, found.identity_loss)),
                )
            }
            Smoothing::SmoothQuant { alpha } => (
                smoothquant_scales(*alpha, &collected.stats, &weights),
                None,
                None,
            ),
        };
        let row = scales.view().insert_axis(Axis(0));
        for (l, w) in layers.iter().zip(&weights) {
            set_weight(model, l, &(w * &row))?;
        }
        let folded_into = match &prev {
            Prev::Norm(norm) => {
                let gamma = model.blocks()[b].norm(*norm);
                let gamma = gamma.to_vec1::<f32>()?;
                let new: Vec<f32> = gamma.iter().zip(&scales).map(|(g, s)| g / s).collect();
                let t = Tensor::from_vec(new, gamma.len(), model.device())?;
                model.set_block_norm(b, *norm, t.clone())?;
                let module = norm.module_name(b);
                report.replace(format!("{module}.weight"), &t)?;
                module
            }
            Prev::Linear(prev) => {
                let w = weight_of(model, prev)?;
                let col = scales.view().insert_axis(Axis(1));
                let new = &w / &col;
                set_weight(model, prev, &new)?;
                let t = Tensor::from_vec(
                    new.iter().copied().collect::<Vec<f32>>(),
                    new.dim(),
                    model.device(),
                )?;
                report.replace(format!("{prev}.weight"), &t)?;
                prev.clone()
            }
        };
        let scaled = rescale(&collected, &scales)?;
        for l in &layers {
            rescaled.insert(l.clone(), scaled.clone());
        }
        let (lo, hi) = scales.iter().fold((f32::INFINITY, 0.0f32), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
        report.smoothing.push(SmoothReport {
            layers,
            folded_into,
            alpha,
            loss,
            scale_range: (lo, hi),
        });
    }
    Ok(rescaled)
}

/// SmoothQuant's scales over every weight of the group; channels that never
/// activate keep `s = 1`.
fn smoothquant_scales(alpha: f32, stats: &ChannelStats, weights: &[Array2<f32>]) -> Array1<f32> {
    let x_max = stats.abs_max();
    let n = x_max.len();
    let mut w_max = Array1::<f32>::zeros(n);
    for w in weights {
        for row in w.rows() {
            for (m, v) in w_max.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
    }
    x_max
        .iter()
        .zip(&w_max)
        .map(|(&x, &w)| {
            if x <= 0.0 || w <= 0.0 {
                1.0
            } else {
                (x.powf(alpha) / w.powf(1.0 - alpha)).max(1e-5)
            }
        })
        .collect()
}

/// Statistics of `x / s` from those of `x`.
fn rescale(c: &Collected, s: &Array1<f32>) -> Result<Collected> {
    let (mut sum, n) = c.hessian.clone().into_parts();
    let inv: Vec<f64> = s.iter().map(|&v| 1.0 / f64::from(v)).collect();
    for ((i, j), v) in sum.indexed_iter_mut() {
        *v *= inv[i] * inv[j];
    }
    let inv = Array1::from(inv);
    let stats = ChannelStats::from_parts(
        c.stats.count(),
        &c.stats.sum_abs() * &inv,
        &c.stats.sum_sq() * &(&inv * &inv),
        c.stats.abs_max().to_owned() / s,
    )?;
    Ok(Collected {
        hessian: Hessian::from_parts(sum, n)?,
        stats,
    })
}

fn weight_of(model: &LlamaModel, layer: &str) -> Result<Array2<f32>> {
    let linear = model
        .linears()
        .into_iter()
        .find(|l| l.name() == layer)
        .ok_or_else(|| Error::NotObserved {
            layer: layer.to_string(),
        })?;
    Ok(to_matrix(&linear.op().dense_weight()?)?)
}

fn set_weight(model: &mut LlamaModel, layer: &str, w: &Array2<f32>) -> Result<()> {
    let device = model.device().clone();
    let linear = model.linear_mut(layer).ok_or_else(|| Error::NotObserved {
        layer: layer.to_string(),
    })?;
    let bias = linear.op().bias().cloned();
    let t = Tensor::from_vec(w.iter().copied().collect::<Vec<f32>>(), w.dim(), &device)?;
    linear.set_op(Arc::new(DenseLinear::new(t, bias)?))?;
    Ok(())
}
