//! Mixed precision: profile every linear layer of a Llama-family model under
//! each candidate quantization, allocate one candidate per layer under a size
//! budget, and apply the plan.
//!
//! [`profile_llama`] runs the base model once over the calibration windows to
//! capture every layer's input Hessian `H` (the same statistics GPTQ uses),
//! and, given a trainable copy of the model, the empirical Fisher diagonal `F`
//! of every weight from the loss gradients of a few windows. Then it
//! quantizes every layer with every candidate on those Hessians (a "database"
//! of quantized layers, as EvoPress calls it) and scores each result by its
//! estimated loss increase:
//!
//! - [`Measure::FisherOutput`] (default): `Σ_o φ_o · ΔW_o H ΔW_oᵀ`, the
//!   layer's output error per output channel weighted by the mean squared
//!   loss gradient of that channel, `φ_o ∝ Σ_j F_oj / tr(H)` (the second-order
//!   Taylor term of the loss with the Fisher as Hessian of the layer output;
//!   HAWQ-V2's trace weighting, per channel instead of per layer);
//! - [`Measure::FisherWeight`]: `Σ F ⊙ ΔW²`, the diagonal-Fisher weight error
//!   (SqueezeLLM's sensitivity);
//! - [`Measure::OutputError`]: `tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)`, the unweighted
//!   relative output error (every layer counts the same).
//!
//! [`Profile::choices`] turns the scores into the multiple-choice knapsack of
//! `tensorpress_sensitivity::allocate`; [`Profile::apply`] swaps the chosen
//! database weights into a model (what EvoPress's fitness evaluates), and
//! [`Profile::recipe`] writes the plan as a recipe whose per-layer overrides
//! [`compress_llama`](crate::compress::compress_llama) runs for a checkpoint.

mod plan;
mod search;

pub use search::{evopress_llama, layer_curvature, LayerCurvature};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use tensorpress_models::eval::curvature::fisher_diagonal;
use tensorpress_models::linear::{to_matrix, DenseLinear, LinearOp};
use tensorpress_models::llama::LlamaModel;
use tensorpress_quant_core::Calibration;

use crate::compress::{parse_scheme, HessianCollector, LayerFilter, Method, Scheme};
use crate::{Error, Result};

/// How a candidate's loss increase is estimated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Measure {
    /// Output error weighted per output channel by the Fisher.
    #[default]
    FisherOutput,
    /// Diagonal-Fisher weighted weight error.
    FisherWeight,
    /// Relative output error, unweighted.
    OutputError,
}

impl Measure {
    /// Parses `fisher-output`, `fisher-weight` or `output-error`.
    ///
    /// # Errors
    /// [`Error::Scheme`] naming the accepted values.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fisher-output" => Ok(Measure::FisherOutput),
            "fisher-weight" => Ok(Measure::FisherWeight),
            "output-error" => Ok(Measure::OutputError),
            _ => Err(Error::Scheme {
                scheme: s.to_string(),
                reason: "measures are fisher-output, fisher-weight and output-error".into(),
            }),
        }
    }
}

/// One layer under one candidate.
#[derive(Debug, Clone)]
pub struct CandidateResult {
    /// The candidate: an index into [`Profile::candidates`].
    pub candidate: usize,
    /// Storage bits of the whole layer (codes, f16 scales, zero points).
    pub bits: f64,
    /// `tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)`.
    pub output_error: f64,
    /// `Σ_o φ_o ΔW_o H ΔW_oᵀ` ([`Measure::FisherOutput`]); 0 without a Fisher.
    pub fisher_output: f64,
    /// `Σ F ⊙ ΔW²` ([`Measure::FisherWeight`]); 0 without a Fisher.
    pub fisher_weight: f64,
    /// The dequantized weight, ready to swap in (when kept).
    pub weight: Option<Arc<dyn LinearOp>>,
}

/// One layer under every candidate.
#[derive(Debug, Clone)]
pub struct LayerProfile {
    /// Layer name (Hugging Face module naming).
    pub name: String,
    /// `[out_features, in_features]`.
    pub shape: [usize; 2],
    /// One entry per candidate that applies to the layer, in
    /// [`Profile::candidates`] order; a plan's pick for the layer indexes
    /// this list (the same as the candidate index when every candidate applies).
    pub results: Vec<CandidateResult>,
    /// Candidates that do not apply to this layer's shape (a GGML K-quant on
    /// rows that are not a multiple of 256 weights), with the reason.
    pub skipped: Vec<(usize, String)>,
}

/// Where profiling time went, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProfileTimings {
    /// Forward passes capturing the Hessians.
    pub hessians: f64,
    /// Forward and backward passes for the Fisher.
    pub fisher: f64,
    /// Quantizing every layer with every candidate and scoring it.
    pub quantize: f64,
}

/// The sensitivity profile of a model: every layer under every candidate.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The candidate schemes (as given, e.g. `gptq-w4-g128-act`).
    pub candidates: Vec<String>,
    /// One entry per profiled layer, in model order.
    pub layers: Vec<LayerProfile>,
    /// Whether the Fisher scores are filled in.
    pub has_fisher: bool,
    /// Where the time went.
    pub timings: ProfileTimings,
}

/// Options of [`profile_llama`].
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Candidate schemes, parsed by [`parse_scheme`]: weight quantizers or
    /// GGML types (for GGUF files; don't mix the two kinds), without
    /// smoothing, rotation or activation quantization.
    pub candidates: Vec<String>,
    /// Which layers to profile (default: every linear layer but `lm_head`).
    pub targets: LayerFilter,
    /// How many of the calibration windows (evenly spaced) feed the Fisher
    /// (0: no Fisher).
    pub fisher_windows: usize,
    /// Keep every candidate's dequantized weight for [`Profile::apply`]
    /// (memory: one f32 copy of the targeted weights per candidate).
    pub keep_weights: bool,
}

impl ProfileOptions {
    /// `candidates` on every linear layer but `lm_head`, Fisher from 16
    /// windows, weights kept.
    pub fn new<S: Into<String>>(candidates: impl IntoIterator<Item = S>) -> Self {
        ProfileOptions {
            candidates: candidates.into_iter().map(Into::into).collect(),
            targets: LayerFilter::default(),
            fisher_windows: 16,
            keep_weights: true,
        }
    }
}

/// Progress of [`profile_llama`].
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileProgress {
    /// Hessian capture: `done` of `total` windows.
    Hessians {
        /// Windows done.
        done: usize,
        /// Windows in all.
        total: usize,
    },
    /// Fisher: `done` of `total` windows.
    Fisher {
        /// Windows done.
        done: usize,
        /// Windows in all.
        total: usize,
    },
    /// `candidate` of `total` layers are quantized with every candidate.
    Candidate {
        /// Layers done.
        candidate: usize,
        /// Layers in all.
        total: usize,
    },
}

fn candidate_schemes(candidates: &[String]) -> Result<Vec<Scheme>> {
    if candidates.is_empty() {
        return Err(Error::Scheme {
            scheme: String::new(),
            reason: "give at least one candidate scheme (e.g. gptq-w3-g128-act,gptq-w4-g128-act)"
                .into(),
        });
    }
    let schemes: Vec<Scheme> = candidates
        .iter()
        .map(|c| {
            let s = parse_scheme(c)?;
            if s.smoothing.is_some() || s.activations.is_some() || s.rotation.is_some() {
                return Err(Error::Scheme {
                    scheme: c.clone(),
                    reason: "a mixed-precision candidate must be a plain weight quantizer \
                             (no smoothing, rotation or w8a8)"
                        .into(),
                });
            }
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let ggml = schemes
        .iter()
        .filter(|s| matches!(s.method, Method::Ggml(_)))
        .count();
    if ggml != 0 && ggml != schemes.len() {
        return Err(Error::Scheme {
            scheme: candidates.join(","),
            reason: "candidates are either all GGML types (a GGUF file) or all weight \
                     quantizers (compressed-tensors, GPTQ), not a mix"
                .into(),
        });
    }
    Ok(schemes)
}

/// Profiles every targeted layer of `model` under every candidate (see the
/// module docs). `trainable` is the same model loaded with
/// `LoadOptions::trainable()`, for the Fisher; without it only
/// [`Measure::OutputError`] is available. `calibration` holds token windows.
///
/// # Errors
/// Bad candidates, no calibration, a layer that saw no input, a quantizer
/// error (naming the layer), non-finite scores.
pub fn profile_llama(
    model: &mut LlamaModel,
    trainable: Option<&LlamaModel>,
    calibration: &[Vec<u32>],
    options: &ProfileOptions,
    progress: &mut dyn FnMut(ProfileProgress),
) -> Result<Profile> {
    let schemes = candidate_schemes(&options.candidates)?;
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let names = model.linear_names();
    options.targets.check_matches(&names)?;
    let targets: Vec<String> = names
        .into_iter()
        .filter(|n| options.targets.matches(n))
        .collect();
    if targets.iter().any(|n| !n.starts_with("model.layers.")) {
        return Err(Error::Scheme {
            scheme: "targets".into(),
            reason: "only the transformer blocks' linear layers can be profiled (exclude lm_head)"
                .into(),
        });
    }
    let mut timings = ProfileTimings::default();

    let t = Instant::now();
    let collector = Arc::new(HessianCollector::new(targets.clone()));
    model.set_observer(Some(collector.clone()));
    let captured = calibration.iter().enumerate().try_for_each(|(i, w)| {
        model.hidden_states(w)?;
        progress(ProfileProgress::Hessians {
            done: i + 1,
            total: calibration.len(),
        });
        Ok::<_, Error>(())
    });
    model.set_observer(None);
    captured?;
    timings.hessians = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let fisher = match trainable {
        Some(m) if options.fisher_windows > 0 => {
            // Spread over the calibration text, not its first windows.
            let n = options.fisher_windows.min(calibration.len());
            let step = calibration.len() / n;
            let windows: Vec<Vec<u32>> =
                calibration.iter().step_by(step).take(n).cloned().collect();
            fisher_diagonal(m, &windows, &targets, &mut |done, total| {
                progress(ProfileProgress::Fisher { done, total })
            })?
        }
        _ => BTreeMap::new(),
    };
    timings.fisher = t.elapsed().as_secs_f64();
    let has_fisher = !fisher.is_empty();

    let t = Instant::now();
    let mut layers: Vec<LayerProfile> = Vec::with_capacity(targets.len());
    // Block by block (a block's finalized Hessians alive at a time), the
    // layers of a block in parallel, every candidate on each.
    let mut blocks: Vec<Vec<&String>> = Vec::new();
    for name in &targets {
        match blocks.last_mut() {
            Some(b) if b[0].starts_with(&block_prefix(name)) => b.push(name),
            _ => blocks.push(vec![name]),
        }
    }
    let model_ref: &LlamaModel = model;
    for block in blocks {
        let done: Vec<LayerProfile> = block
            .par_iter()
            .map(|name| profile_layer(model_ref, name, &collector, &schemes, &fisher, options))
            .collect::<Result<_>>()?;
        layers.extend(done);
        progress(ProfileProgress::Candidate {
            candidate: layers.len(),
            total: targets.len(),
        });
    }
    timings.quantize = t.elapsed().as_secs_f64();
    Ok(Profile {
        candidates: options.candidates.clone(),
        layers,
        has_fisher,
        timings,
    })
}

fn profile_layer(
    model: &LlamaModel,
    name: &str,
    collector: &HessianCollector,
    schemes: &[Scheme],
    fisher: &BTreeMap<String, Array2<f32>>,
    options: &ProfileOptions,
) -> Result<LayerProfile> {
    let not_observed = || Error::NotObserved {
        layer: name.to_string(),
    };
    let collected = collector.get(name).ok_or_else(not_observed)?;
    let hessian = collected.hessian.finalize(0.0)?;
    let linear = model
        .linears()
        .into_iter()
        .find(|l| l.name() == name)
        .ok_or_else(not_observed)?;
    let weight = linear.op().dense_weight()?;
    let device = weight.device().clone();
    let w = to_matrix(&weight)?;
    let cal = Calibration {
        hessian: Some(hessian),
        channel_stats: Some(collected.stats),
    };
    let h = &cal.hessian.as_ref().expect("set above").h;
    let trace_h = h.diag().sum().max(f64::MIN_POSITIVE);
    let w64 = w.mapv(f64::from);
    let reference = (w64.dot(h) * &w64).sum().max(f64::MIN_POSITIVE);
    // φ_o ∝ Σ_j F_oj / tr(H).
    let f = fisher.get(name);
    let phi = f.map(|f| f.mapv(f64::from).sum_axis(Axis(1)) / trace_h);
    let params = (w.nrows() * w.ncols()) as f64;
    let mut results = Vec::with_capacity(schemes.len());
    let mut skipped = Vec::new();
    for (ci, scheme) in schemes.iter().enumerate() {
        let layer_error = |source| Error::Layer {
            layer: name.to_string(),
            source,
        };
        let quantized = match &scheme.method {
            Method::Weight {
                quantizer,
                calibrate,
            } => quantizer
                .quantize(w.view(), calibrate.then_some(&cal))
                .map(|q| (q.dequantize(), q.bits_per_weight(16))),
            Method::Ggml(quantizer) => {
                let cal = quantizer.needs_calibration().then_some(&cal);
                quantizer
                    .quantize(w.view(), cal)
                    .and_then(|q| Ok((q.dequantize()?, q.bits_per_weight())))
            }
            // A pruning candidate: stored as a sparse bitmask of 16-bit values.
            Method::Prune(pruner) => {
                let p = pruner
                    .prune(w.view(), pruner.calibrates().then_some(&cal))
                    .map_err(|source| Error::Prune {
                        layer: name.to_string(),
                        source,
                    })?;
                let bits = 16.0 * p.mask.density() + 1.0;
                Ok((p.weight, bits))
            }
        };
        let (deq, bits_per_weight) = match quantized {
            Ok(q) => q,
            // The candidate's blocks do not fit this layer's rows: leave it out here.
            Err(
                e @ (tensorpress_quant_core::Error::NotBlockMultiple { .. }
                | tensorpress_quant_core::Error::NotWholeBlocks { .. }),
            ) => {
                skipped.push((ci, e.to_string()));
                continue;
            }
            Err(e) => return Err(layer_error(e)),
        };
        let delta: Array2<f64> = (&deq - &w).mapv(f64::from);
        let per_row = (delta.dot(h) * &delta).sum_axis(Axis(1));
        let output_error = per_row.sum() / reference;
        let fisher_output = phi.as_ref().map_or(0.0, |p| (p * &per_row).sum());
        let fisher_weight = f.map_or(0.0, |f| {
            f.iter()
                .zip(delta.iter())
                .map(|(f, d)| f64::from(*f) * d * d)
                .sum()
        });
        for (what, v) in [
            ("output error", output_error),
            ("Fisher output error", fisher_output),
            ("Fisher weight error", fisher_weight),
        ] {
            if !v.is_finite() {
                return Err(Error::Scheme {
                    scheme: options.candidates[ci].clone(),
                    reason: format!(
                        "layer `{name}`: the {what} is {v} (non-finite weights or calibration?)"
                    ),
                });
            }
        }
        let weight: Option<Arc<dyn LinearOp>> = if options.keep_weights {
            let (r, c) = deq.dim();
            let t = Tensor::from_vec(deq.into_raw_vec_and_offset().0, (r, c), &device)?;
            Some(Arc::new(DenseLinear::new(t, linear.op().bias().cloned())?))
        } else {
            None
        };
        results.push(CandidateResult {
            candidate: ci,
            bits: bits_per_weight * params,
            output_error,
            fisher_output,
            fisher_weight,
            weight,
        });
    }
    if results.is_empty() {
        return Err(Error::Scheme {
            scheme: options.candidates.join(","),
            reason: format!(
                "no candidate applies to layer `{name}` ({}×{}): {}; add one that does \
                 (GGML K-quants need rows of a multiple of 256 weights, other GGML types of 32)",
                w.nrows(),
                w.ncols(),
                skipped
                    .iter()
                    .map(|(_, why)| why.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    Ok(LayerProfile {
        name: name.to_string(),
        shape: [w.nrows(), w.ncols()],
        results,
        skipped,
    })
}

fn block_prefix(name: &str) -> String {
    let mut parts = name.splitn(4, '.');
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let c = parts.next().unwrap_or_default();
    format!("{a}.{b}.{c}.")
}
