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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use ndarray::{Array1, Array2, Axis};
use rayon::prelude::*;
use tensorpress_models::eval::curvature::{fisher_diagonal, kl_divergence, log_probs};
use tensorpress_models::linear::{to_matrix, DenseLinear, LinearOp};
use tensorpress_models::llama::LlamaModel;
use tensorpress_quant_core::Calibration;
use tensorpress_sensitivity::{
    evopress, hutchinson_trace, power_iteration, Budget, Choice, EvoOptions, EvoResult,
    LayerChoices, TraceEstimate,
};
use tensorpress_tensor::SeededRng;

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

impl Profile {
    /// The knapsack input: each layer's candidates with their bits and their
    /// cost under `measure`. Bit-operations are `params × bits × 16` (f16
    /// activations), for a BOPs budget.
    ///
    /// # Errors
    /// [`Error::Scheme`] when `measure` needs a Fisher the profile lacks.
    pub fn choices(&self, measure: Measure) -> Result<Vec<LayerChoices>> {
        if measure != Measure::OutputError && !self.has_fisher {
            return Err(Error::Scheme {
                scheme: "measure".into(),
                reason: "this profile has no Fisher: profile with a trainable model and \
                         fisher_windows > 0, or use the output-error measure"
                    .into(),
            });
        }
        Ok(self
            .layers
            .iter()
            .map(|l| {
                let params = (l.shape[0] * l.shape[1]) as u64;
                LayerChoices {
                    name: l.name.clone(),
                    params,
                    choices: l
                        .results
                        .iter()
                        .map(|r| Choice {
                            label: self.candidates[r.candidate].clone(),
                            bits: r.bits,
                            cost: match measure {
                                Measure::FisherOutput => r.fisher_output,
                                Measure::FisherWeight => r.fisher_weight,
                                Measure::OutputError => r.output_error,
                            },
                            bops: r.bits * 16.0,
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// The picks that give every layer candidate `candidate` (a uniform model).
    ///
    /// # Errors
    /// A layer the candidate does not apply to (or an index out of range).
    pub fn uniform(&self, candidate: usize) -> Result<Vec<usize>> {
        self.layers
            .iter()
            .map(|l| {
                l.results
                    .iter()
                    .position(|r| r.candidate == candidate)
                    .ok_or_else(|| Error::Scheme {
                        scheme: self.candidates.get(candidate).cloned().unwrap_or_default(),
                        reason: format!(
                            "candidate {candidate} does not apply to layer `{}`",
                            l.name
                        ),
                    })
            })
            .collect()
    }

    /// The candidate scheme of `pick` in layer `layer` (an index into
    /// [`layers`](Self::layers)).
    ///
    /// # Panics
    /// When either index is out of range.
    pub fn label(&self, layer: usize, pick: usize) -> &str {
        &self.candidates[self.layers[layer].results[pick].candidate]
    }

    /// Average bits per weight of `picks`.
    pub fn bits_per_weight(&self, picks: &[usize]) -> f64 {
        let (bits, params) = self
            .layers
            .iter()
            .zip(picks)
            .fold((0.0, 0.0), |(b, p), (l, &k)| {
                (b + l.results[k].bits, p + (l.shape[0] * l.shape[1]) as f64)
            });
        bits / params.max(1.0)
    }

    fn check_picks(&self, picks: &[usize]) -> Result<()> {
        let out_of_range = self
            .layers
            .iter()
            .zip(picks)
            .any(|(l, &k)| k >= l.results.len());
        if picks.len() != self.layers.len() || out_of_range {
            return Err(Error::Scheme {
                scheme: "plan".into(),
                reason: format!(
                    "a plan needs one pick per profiled layer ({} layers, got {} picks), \
                     each below the number of candidates that apply to its layer",
                    self.layers.len(),
                    picks.len()
                ),
            });
        }
        Ok(())
    }

    /// Swaps each layer's chosen dequantized weight into `model`.
    ///
    /// # Errors
    /// Wrong number of picks, weights not kept, a layer the model lacks.
    pub fn apply(&self, model: &mut LlamaModel, picks: &[usize]) -> Result<()> {
        self.check_picks(picks)?;
        for (layer, &k) in self.layers.iter().zip(picks) {
            let op = layer.results[k]
                .weight
                .clone()
                .ok_or_else(|| Error::Scheme {
                    scheme: "plan".into(),
                    reason: "the profile kept no weights: profile with keep_weights = true".into(),
                })?;
            let linear = model
                .linear_mut(&layer.name)
                .ok_or_else(|| Error::NotObserved {
                    layer: layer.name.clone(),
                })?;
            linear.set_op(op)?;
        }
        Ok(())
    }

    /// The plan as a recipe (TOML): the most used candidate as the scheme,
    /// one `[[override]]` per other candidate listing its layers. It parses
    /// with [`Recipe::from_toml_str`](crate::compress::Recipe::from_toml_str) into the
    /// options of [`compress_llama`](crate::compress::compress_llama).
    ///
    /// # Errors
    /// Wrong number of picks.
    pub fn recipe(&self, picks: &[usize], comment: &str) -> Result<String> {
        self.check_picks(picks)?;
        let chosen: Vec<usize> = self
            .layers
            .iter()
            .zip(picks)
            .map(|(l, &k)| l.results[k].candidate)
            .collect();
        let mut count = vec![0usize; self.candidates.len()];
        for &c in &chosen {
            count[c] += 1;
        }
        let main = (0..count.len()).max_by_key(|&k| count[k]).unwrap_or(0);
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "scheme = \"{}\"", self.candidates[main]);
        for (k, c) in self.candidates.iter().enumerate() {
            if k == main || count[k] == 0 {
                continue;
            }
            let _ = writeln!(out, "\n[[override]]\nscheme = \"{c}\"\nlayers = [");
            for (layer, _) in self.layers.iter().zip(&chosen).filter(|(_, &c)| c == k) {
                let _ = writeln!(out, "  \"{}\",", layer.name);
            }
            let _ = writeln!(out, "]");
        }
        Ok(out)
    }
}

impl Profile {
    /// The one-layer KL sensitivity: for each profiled layer, the mean KL
    /// divergence of `model`'s next-token distribution on `windows` when
    /// only that layer takes candidate `candidate` (from the database) and
    /// every other layer stays as in `model`. One forward pass per layer and
    /// window; `progress(done, total)` after each layer. NaN for a layer the
    /// candidate does not apply to.
    ///
    /// # Errors
    /// A candidate out of range, weights not kept, no windows, a forward error.
    pub fn one_layer_kl(
        &self,
        model: &LlamaModel,
        candidate: usize,
        windows: &[Vec<u32>],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f64>> {
        if candidate >= self.candidates.len() {
            return Err(Error::Scheme {
                scheme: "candidate".into(),
                reason: format!(
                    "candidate {candidate} is out of range: the profile has {}",
                    self.candidates.len()
                ),
            });
        }
        if windows.is_empty() {
            return Err(Error::NoCalibration);
        }
        let reference: Vec<Tensor> = windows
            .iter()
            .map(|w| log_probs(model, w))
            .collect::<tensorpress_models::Result<_>>()?;
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let Some(result) = layer.results.iter().find(|r| r.candidate == candidate) else {
                // The candidate does not apply to this layer.
                out.push(f64::NAN);
                progress(i + 1, self.layers.len());
                continue;
            };
            let op = result.weight.clone().ok_or_else(|| Error::Scheme {
                scheme: "profile".into(),
                reason: "the profile kept no weights: profile with keep_weights = true".into(),
            })?;
            let mut m = model.clone();
            m.linear_mut(&layer.name)
                .ok_or_else(|| Error::NotObserved {
                    layer: layer.name.clone(),
                })?
                .set_op(op)?;
            let mut kl = 0.0;
            for (w, r) in windows.iter().zip(&reference) {
                kl += kl_divergence(&m, w, r)?;
            }
            out.push(kl / windows.len() as f64);
            progress(i + 1, self.layers.len());
        }
        Ok(out)
    }
}

/// HAWQ's layer curvature from the language-model loss: the top eigenvalue
/// of the Hessian of the loss with respect to `layer`'s weight (power
/// iteration, HAWQ, Dong et al. 2019) and its trace (Hutchinson's estimator,
/// HAWQ-V2, Dong et al. 2020), both on Hessian-vector products by central
/// differences of gradients
/// ([`hessian_vector_product`](tensorpress_models::eval::curvature::hessian_vector_product)).
/// `model` must be trainable. Each product costs two backward passes over
/// `windows`: use short windows on large models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerCurvature {
    /// The top eigenvalue (largest in magnitude) after the iterations.
    pub top_eigenvalue: f64,
    /// The Hutchinson estimate of `tr(H)`.
    pub trace: TraceEstimate,
}

/// Computes [`LayerCurvature`] for `layer`: `iterations` power iterations and
/// `probes` Rademacher probes, seeded by `seed`.
///
/// # Errors
/// Zero iterations or probes, a model that is not trainable, a forward error.
pub fn layer_curvature(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layer: &str,
    iterations: usize,
    probes: usize,
    seed: u64,
) -> Result<LayerCurvature> {
    use tensorpress_models::eval::curvature::{hessian_vector_product, weight_var};
    let w = weight_var(model, layer)?.as_tensor().clone();
    let (r, c) = w.dims2()?;
    let rms = (w.sqr()?.mean_all()?.to_scalar::<f32>()?).sqrt().max(1e-6);
    let eps = 1e-3 * rms * ((r * c) as f32).sqrt();
    let mut rng = SeededRng::new(seed);
    let hvp = |v: &Array2<f32>| hessian_vector_product(model, windows, layer, v.view(), eps);
    let mut failure = None;
    let top_eigenvalue = power_iteration(r * c, iterations, &mut rng.fork(1), |v| {
        let v = Array2::from_shape_vec((r, c), v.iter().map(|x| *x as f32).collect())
            .expect("r·c entries");
        match hvp(&v) {
            Ok(h) => h.iter().map(|x| f64::from(*x)).collect(),
            Err(e) => {
                failure.get_or_insert(e);
                Array1::zeros(r * c)
            }
        }
    })?;
    if let Some(e) = failure.take() {
        return Err(e.into());
    }
    let trace = hutchinson_trace(r * c, probes, &mut rng, |z| {
        let v = Array2::from_shape_vec((r, c), z.iter().map(|x| *x as f32).collect())
            .expect("r·c entries");
        match hvp(&v) {
            Ok(h) => h.iter().map(|x| f64::from(*x)).collect(),
            Err(e) => {
                failure.get_or_insert(e);
                Array1::zeros(r * c)
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(LayerCurvature {
        top_eigenvalue,
        trace,
    })
}

/// EvoPress (Sieberling et al., 2024) over the profile's database: starting
/// from `start` (e.g. the knapsack plan), search per-layer picks within
/// `budget` whose model has the lowest KL divergence from `model`'s
/// next-token distribution on `fitness_windows` (each stage of `options`
/// scores on its `tokens`, rounded up to whole windows). `model` is the base
/// model; it is not changed.
///
/// # Errors
/// As [`tensorpress_sensitivity::evopress`]; no fitness windows; a forward error.
#[allow(clippy::too_many_arguments)] // the search, its model and its data are separate inputs
pub fn evopress_llama(
    profile: &Profile,
    model: &LlamaModel,
    layers: &[LayerChoices],
    budget: Budget,
    start: &[usize],
    options: &EvoOptions,
    fitness_windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, f64),
) -> Result<EvoResult> {
    let window = fitness_windows.first().map_or(0, Vec::len);
    if window == 0 {
        return Err(Error::NoCalibration);
    }
    let reference: Vec<Tensor> = fitness_windows
        .iter()
        .map(|w| log_probs(model, w))
        .collect::<tensorpress_models::Result<_>>()?;
    let mut work = model.clone();
    let fitness_error = |e: &dyn std::fmt::Display| tensorpress_sensitivity::Error::Fitness {
        reason: e.to_string(),
    };
    let mut fitness = |picks: &[usize], tokens: usize| -> tensorpress_sensitivity::Result<f64> {
        profile
            .apply(&mut work, picks)
            .map_err(|e| fitness_error(&e))?;
        let n = tokens.div_ceil(window).clamp(1, fitness_windows.len());
        let mut kl = 0.0;
        for (w, r) in fitness_windows.iter().zip(&reference).take(n) {
            kl += kl_divergence(&work, w, r).map_err(|e| fitness_error(&e))?;
        }
        Ok(kl / n as f64)
    };
    Ok(evopress(
        layers,
        budget,
        start,
        options,
        &mut fitness,
        progress,
    )?)
}
