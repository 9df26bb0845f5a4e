//! Weight compression of a Llama-family model, block by block.
//!
//! [`compress_llama`] walks the transformer blocks in order (sequential
//! onloading, as GPTQ's reference code and llm-compressor do): it runs block
//! `i` on the calibration activations to capture the Hessian of every targeted
//! linear layer, quantizes those layers, and runs the *quantized* block to
//! produce block `i + 1`'s calibration inputs, so later layers calibrate on the
//! activations they will really see. Each layer's weight is replaced in the
//! model by its dequantized value, so the returned model computes exactly what
//! the quantized checkpoint will.

mod bitstack;
mod calib;
mod capture;
mod compensate;
mod export;
mod factorize;
mod filter;
mod gguf;
mod kernels;
mod kv;
mod peft;
mod recipe;
mod rotate;
mod scheme;
mod share;
mod smooth;
mod structured;

pub use bitstack::{bitstack_llama, StackedFile, StackedLayer, StackedLayerInfo, StackedModel};
pub use calib::calibration_windows;
pub use capture::{Collected, HessianCollector};
pub use compensate::{set_adapter_rank, Compensation, CompensationMethod};
pub use export::{write_hf_checkpoint, ExportFormat, ExportOptions, ExportReport};
pub use factorize::{factorize_llama, uniform_rank, FactorMethod, Factorization, RankAllocation};
pub use filter::LayerFilter;
pub use gguf::{llama_file_type, write_gguf, GgufExportOptions, GgufExportSummary};
pub use kernels::{
    attach_checkpoint_kernels, attach_gguf_kernels, attach_kernels, kernel_matrix,
    load_llama_kernels, KernelReport,
};
pub use kv::calibrate_kv_cache_scales;
pub use peft::write_peft_adapter;
pub use recipe::Recipe;
pub use rotate::{fold_llama_norms, merge_reports, rotate_llama, RotateOptions};
pub use scheme::{parse_scheme, Scheme};
pub use smooth::{ActivationQuant, SmoothReport, Smoothing};
pub use structured::{
    prune_ffn_llama, prune_ffn_llama_with, prune_heads_llama, BlockRatios, FfnPruning,
    NeuronCriterion,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use ndarray::{Array2, ArrayD};
use tensorpress_codecs::grad::{Communicator, ThreadComm};
use tensorpress_models::linear::{to_matrix, DenseLinear, InputQuantLinear, LinearOp};
use tensorpress_models::llama::LlamaModel;
use tensorpress_quant_core::ggml::{GgmlQuantizer, GgmlTensor};
use tensorpress_quant_core::{Calibration, QuantizedTensor, WeightQuantizer};
use tensorpress_sparsity::{SparsityMask, WeightPruner};

use crate::{Error, Result};

/// The quantization applied to a layer.
#[derive(Clone)]
pub enum Method {
    /// A [`WeightQuantizer`] (integer, float, NF4, MX formats), for
    /// compressed-tensors, GPTQ and dequantized exports.
    Weight {
        /// The quantizer.
        quantizer: Arc<dyn WeightQuantizer>,
        /// Whether it uses calibration data (Hessians, channel statistics).
        calibrate: bool,
    },
    /// A [`GgmlQuantizer`] (GGML block types), for GGUF exports.
    Ggml(Arc<dyn GgmlQuantizer>),
    /// A [`WeightPruner`] (magnitude, Wanda, SparseGPT): the layer stays a
    /// float weight with zeros, recorded in [`CompressReport::replaced`] (so
    /// exports write it as a dense tensor) and in [`CompressReport::masks`].
    Prune(Arc<dyn WeightPruner>),
}

impl Method {
    /// Whether the method needs calibration data.
    pub fn calibrates(&self) -> bool {
        match self {
            Method::Weight { calibrate, .. } => *calibrate,
            Method::Ggml(q) => q.needs_calibration(),
            Method::Prune(p) => p.calibrates(),
        }
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Weight { calibrate, .. } => f
                .debug_struct("Weight")
                .field("calibrate", calibrate)
                .finish_non_exhaustive(),
            Method::Ggml(q) => f.debug_tuple("Ggml").field(&q.ggml_type()).finish(),
            Method::Prune(p) => f.debug_tuple("Prune").field(&p.label()).finish(),
        }
    }
}

/// A compressed layer weight.
#[derive(Debug, Clone, PartialEq)]
pub enum CompressedWeight {
    /// Codes, scales and zero points.
    Quantized(QuantizedTensor),
    /// GGML blocks.
    Ggml(GgmlTensor),
}

impl CompressedWeight {
    /// Storage bits per weight (scales stored as f16).
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            CompressedWeight::Quantized(q) => q.bits_per_weight(16),
            CompressedWeight::Ggml(g) => g.bits_per_weight(),
        }
    }

    /// The quantized tensor, when this is one.
    pub fn as_quantized(&self) -> Option<&QuantizedTensor> {
        match self {
            CompressedWeight::Quantized(q) => Some(q),
            CompressedWeight::Ggml(_) => None,
        }
    }
}

/// How to compress.
#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// The method applied to every targeted layer without an override.
    pub method: Method,
    /// Which linear layers to quantize (default: every linear layer but `lm_head`).
    pub targets: LayerFilter,
    /// Per-layer methods: the first filter that matches a targeted layer
    /// decides its method.
    pub overrides: Vec<(LayerFilter, Method)>,
    /// Input-channel scaling folded into the model before quantizing
    /// (AWQ, SmoothQuant); needs calibration data.
    pub smoothing: Option<Smoothing>,
    /// Quantize the inputs of the compressed layers at run time (W8A8).
    pub activations: Option<ActivationQuant>,
    /// Rotate the model first (QuaRot-style, fused into the weights; see
    /// [`rotate_llama`]); the rotated float tensors land in
    /// [`CompressReport::replaced`] unless a layer is then quantized.
    pub rotation: Option<RotateOptions>,
    /// A low-rank adapter fitted to each compressed layer's error (EoRA,
    /// LoRC), run as `W'x + A(Bx)`; see [`Compensation`].
    pub compensation: Option<Compensation>,
}

impl CompressOptions {
    /// `quantizer` on every linear layer but `lm_head`; `calibrate` says
    /// whether it needs calibration data.
    pub fn new(quantizer: Arc<dyn WeightQuantizer>, calibrate: bool) -> Self {
        CompressOptions::with_method(Method::Weight {
            quantizer,
            calibrate,
        })
    }

    /// A GGML block quantizer on every linear layer but `lm_head`.
    pub fn ggml(quantizer: Arc<dyn GgmlQuantizer>) -> Self {
        CompressOptions::with_method(Method::Ggml(quantizer))
    }

    /// `method` on every linear layer but `lm_head`.
    pub fn with_method(method: Method) -> Self {
        CompressOptions {
            method,
            targets: LayerFilter::default(),
            overrides: Vec::new(),
            smoothing: None,
            activations: None,
            rotation: None,
            compensation: None,
        }
    }

    /// Uses `method` for the layers `filter` selects (earlier overrides win).
    pub fn override_layers(mut self, filter: LayerFilter, method: Method) -> Self {
        self.overrides.push((filter, method));
        self
    }

    /// The method of layer `name`.
    pub fn method_for(&self, name: &str) -> &Method {
        self.overrides
            .iter()
            .find(|(f, _)| f.matches(name))
            .map_or(&self.method, |(_, m)| m)
    }

    fn calibrates(&self, targets: &[String]) -> bool {
        self.smoothing.is_some()
            || self.compensation.is_some_and(|c| c.calibrates())
            || targets.iter().any(|n| self.method_for(n).calibrates())
    }
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Layer name (Hugging Face module naming).
    pub name: String,
    /// `[out_features, in_features]`.
    pub shape: [usize; 2],
    /// Relative output error on the calibration inputs,
    /// `tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)` (when calibrated).
    pub output_error: Option<f64>,
    /// Relative weight error `‖ΔW‖² / ‖W‖²`.
    pub weight_error: f64,
    /// Storage bits per weight (codes, f16 scales and zero points; a pruned
    /// float layer counts as compressed-tensors' sparse bitmask of 16-bit
    /// values: 16 per kept weight plus 1 per weight for the mask).
    pub bits_per_weight: f64,
    /// The fraction of its weights that are exactly zero.
    pub sparsity: f64,
    /// Seconds spent quantizing it.
    pub seconds: f64,
}

/// Where the time went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// Forward passes over the calibration data (Hessian capture excluded).
    pub forward: f64,
    /// Accumulating Hessians and channel statistics.
    pub hessian: f64,
    /// Quantizing the layers (GPTQ's solve, RTN's rounding).
    pub solve: f64,
}

/// The result of [`compress_llama`].
#[derive(Debug, Clone)]
pub struct CompressReport {
    /// One entry per quantized layer, in model order.
    pub layers: Vec<LayerReport>,
    /// The compressed weights, by layer name.
    pub quantized: BTreeMap<String, CompressedWeight>,
    /// Float tensors that compression changed but did not quantize
    /// (norm weights that absorbed smoothing scales, rotated embeddings and
    /// unquantized layers, an untied output head), by Hugging Face tensor name
    /// (`model.layers.0.input_layernorm.weight`, `lm_head.weight`), in the
    /// model's own layout (a GGUF-loaded model keeps GGUF's query/key row
    /// order, as the quantized weights do). Exporters write these instead of
    /// the source's tensors.
    pub replaced: BTreeMap<String, ArrayD<f32>>,
    /// The masks of pruned layers (pruning alone, or SparseGPT's joint
    /// pruning and quantization), by layer name.
    pub masks: BTreeMap<String, SparsityMask>,
    /// What smoothing (AWQ, SmoothQuant) did, one entry per group of layers.
    pub smoothing: Vec<SmoothReport>,
    /// The run-time quantization of the compressed layers' inputs, if any.
    pub activations: Option<ActivationQuant>,
    /// Low-rank compensation adapters, by layer name
    /// ([`CompressOptions::compensation`]).
    pub adapters: BTreeMap<String, tensorpress_lowrank::Adapter>,
    /// Low-rank factors `W ≈ A·B` of factorized layers, by layer name
    /// ([`factorize_llama`]), in the model's own row order.
    pub factors: BTreeMap<String, tensorpress_lowrank::LowRank>,
    /// Static FP8 (E4M3) KV-cache scales `(k_scale, v_scale)` by attention
    /// module (`model.layers.N.self_attn`), `amax / 448` of the keys (after
    /// RoPE) and values the compressed model produced on calibration text
    /// ([`calibrate_kv_cache_scales`]); compressed-tensors exports declare
    /// them as `kv_cache_scheme`. Empty: no KV-cache quantization.
    pub kv_cache_scales: BTreeMap<String, (f32, f32)>,
    /// Where the time went.
    pub timings: Timings,
}

impl CompressReport {
    /// An empty report.
    pub fn new() -> Self {
        CompressReport {
            layers: Vec::new(),
            quantized: BTreeMap::new(),
            replaced: BTreeMap::new(),
            masks: BTreeMap::new(),
            adapters: BTreeMap::new(),
            factors: BTreeMap::new(),
            smoothing: Vec::new(),
            activations: None,
            kv_cache_scales: BTreeMap::new(),
            timings: Timings::default(),
        }
    }

    /// Records `value` as the new content of tensor `name` (Hugging Face
    /// naming, `.weight` included).
    pub fn replace(&mut self, name: impl Into<String>, value: &Tensor) -> Result<()> {
        let shape = value.dims().to_vec();
        let data = value.flatten_all()?.to_vec1::<f32>()?;
        let array = ArrayD::from_shape_vec(shape, data).map_err(|e| Error::Export {
            layer: "replaced tensor".into(),
            reason: e.to_string(),
        })?;
        self.replaced.insert(name.into(), array);
        Ok(())
    }
}

impl Default for CompressReport {
    fn default() -> Self {
        CompressReport::new()
    }
}

/// Progress of a compression run.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Block `block` of `blocks` is being calibrated.
    Calibrating {
        /// The block.
        block: usize,
        /// Blocks in the model.
        blocks: usize,
    },
    /// A layer was quantized.
    Layer(LayerReport),
    /// `done` of `total` calibration windows went through a backward pass
    /// (gradient-based criteria).
    Gradients {
        /// Windows done.
        done: usize,
        /// Windows in all.
        total: usize,
    },
}

/// Quantizes the targeted linear layers of `model` in place (their ops become
/// the dequantized weights) and returns the codes and a per-layer report.
/// `calibration` holds token windows (ignored when the quantizer does not
/// calibrate).
pub fn compress_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    options: &CompressOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    let solo = ThreadComm::group(1)?.remove(0);
    compress_llama_on(model, calibration, options, &solo, progress)
}

/// [`compress_llama`], data-parallel over the ranks of `comm`: MPI processes
/// (`tensorpress::codecs::grad::Mpi`, feature `mpi`) or threads
/// ([`ThreadComm`]).
///
/// Every rank calls this with the same model, options and calibration
/// windows. Rank `r` of `n` embeds and runs only its shard, the contiguous
/// windows `r·w/n .. (r+1)·w/n`; after each block's forward pass the Hessians
/// and channel statistics are summed over ranks
/// ([`HessianCollector::all_reduce`]). The block's layer solves are then
/// split between the ranks (largest estimated cost first, to the least
/// loaded rank) and their results — codes and scales, GGML blocks, pruned
/// weights and masks, adapters, each layer's figures — all-gathered, so
/// every rank applies every layer and returns the same report (rank 0 writes
/// the checkpoint).
///
/// The result equals one process's: a window's activations do not depend on
/// which rank computes them, and a Hessian is a sum of per-window `f32`
/// partial sums accumulated in `f64`, whose regrouping across ranks changes
/// nothing whenever those `f64` additions are exact (entries of one Hessian
/// element within 2²⁹ of each other); otherwise by a relative `~1e-16`, far
/// below GPTQ's damping.
///
/// # Errors
/// As [`compress_llama`] on the rank whose solve failed, and
/// [`Error::DataParallel`] naming it on the others; [`Error::DataParallel`]
/// when there are fewer calibration windows than ranks or the ranks observe
/// different layers; the communicator's errors.
pub fn compress_llama_on<C: Communicator + ?Sized>(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    options: &CompressOptions,
    comm: &C,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let blocks = model.params().num_layers;
    let names = model.linear_names();
    let targets: Vec<String> = names
        .iter()
        .filter(|n| options.targets.matches(n))
        .cloned()
        .collect();
    options.targets.check_matches(&names)?;
    for (filter, _) in &options.overrides {
        filter.check_matches(&targets)?;
    }
    let calibrate = options.calibrates(&targets);
    if calibrate && calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let mut report = CompressReport::new();
    report.activations = options.activations;
    if let Some(rotation) = &options.rotation {
        let t = Instant::now();
        rotate_llama(model, rotation, &mut report)?;
        report.timings.solve += t.elapsed().as_secs_f64();
    }
    let in_block = |b: usize, name: &str| name.starts_with(&format!("model.layers.{b}."));

    if !calibrate {
        for name in &targets {
            quantize_layer(model, name, None, options, &mut report, progress)?;
        }
        return Ok(report);
    }

    if calibration.len() < ranks {
        return Err(Error::DataParallel {
            reason: format!(
                "{} calibration windows cannot be shared by {ranks} ranks: use at least one window per rank",
                calibration.len()
            ),
        });
    }
    let shard =
        &calibration[rank * calibration.len() / ranks..(rank + 1) * calibration.len() / ranks];
    let t = Instant::now();
    let mut xs: Vec<Tensor> = shard
        .iter()
        .map(|w| model.embed(w))
        .collect::<tensorpress_models::Result<_>>()?;
    report.timings.forward += t.elapsed().as_secs_f64();
    for b in 0..blocks {
        progress(Progress::Calibrating { block: b, blocks });
        let block_targets: Vec<String> =
            targets.iter().filter(|n| in_block(b, n)).cloned().collect();
        if !block_targets.is_empty() {
            let collector = Arc::new(HessianCollector::new(block_targets.clone()));
            model.set_observer(Some(collector.clone()));
            let t = Instant::now();
            for x in &xs {
                model.forward_block(b, x)?;
            }
            model.set_observer(None);
            if ranks > 1 {
                collector.all_reduce(comm)?;
            }
            let pass = t.elapsed().as_secs_f64();
            let capture = collector.seconds();
            report.timings.hessian += capture;
            report.timings.forward += pass - capture;
            let mut rescaled = BTreeMap::new();
            if let Some(smoothing) = &options.smoothing {
                let t = Instant::now();
                rescaled =
                    smooth::smooth_block(model, b, smoothing, &targets, &collector, &mut report)?;
                report.timings.solve += t.elapsed().as_secs_f64();
            }
            let mut collected_for = |name: &String| match rescaled.remove(name) {
                Some(c) => Ok(c),
                None => collector.get(name).ok_or_else(|| Error::NotObserved {
                    layer: name.clone(),
                }),
            };
            if ranks == 1 {
                for name in &block_targets {
                    let collected = collected_for(name)?;
                    quantize_layer(model, name, Some(collected), options, &mut report, progress)?;
                }
            } else {
                // Each rank solves its share of the block's layers; one
                // all-gather hands every rank every result.
                let t = Instant::now();
                let shapes = block_targets
                    .iter()
                    .map(|name| {
                        let op = model.linear_mut(name).ok_or_else(|| Error::NotObserved {
                            layer: name.clone(),
                        })?;
                        Ok([op.op().out_features(), op.op().in_features()])
                    })
                    .collect::<Result<Vec<_>>>()?;
                let plan = share::assign(&shapes, ranks);
                let mine: Result<Vec<share::Solved>> = block_targets
                    .iter()
                    .zip(&plan)
                    .filter(|(_, &owner)| owner == rank)
                    .map(|(name, _)| solve_layer(model, name, Some(collected_for(name)?), options))
                    .collect();
                let messages = comm.all_gather_bytes(&share::encode_message(&mine))?;
                mine?;
                let mut solved: BTreeMap<String, share::Solved> = BTreeMap::new();
                for (r, bytes) in messages.iter().enumerate() {
                    for s in share::decode_message(r, bytes)? {
                        solved.insert(s.layer.name.clone(), s);
                    }
                }
                report.timings.solve += t.elapsed().as_secs_f64();
                for (name, &owner) in block_targets.iter().zip(&plan) {
                    let s = solved.remove(name).ok_or_else(|| Error::DataParallel {
                        reason: format!("rank {owner} did not send layer `{name}`"),
                    })?;
                    apply_solved(model, s, options, &mut report, progress)?;
                }
            }
        }
        let t = Instant::now();
        xs = xs
            .iter()
            .map(|x| model.forward_block(b, x))
            .collect::<tensorpress_models::Result<_>>()?;
        report.timings.forward += t.elapsed().as_secs_f64();
    }
    // Layers outside the blocks (lm_head) see the final hidden states.
    for name in targets.iter().filter(|n| !n.starts_with("model.layers.")) {
        quantize_layer(model, name, None, options, &mut report, progress)?;
    }
    // A smoothed layer that was then quantized is written from its codes.
    let quantized = &report.quantized;
    report.replaced.retain(|name, _| {
        !name
            .strip_suffix(".weight")
            .is_some_and(|m| quantized.contains_key(m))
    });
    Ok(report)
}

fn quantize_layer(
    model: &mut LlamaModel,
    name: &str,
    collected: Option<Collected>,
    options: &CompressOptions,
    report: &mut CompressReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let solved = solve_layer(model, name, collected, options)?;
    report.timings.solve += solved.layer.seconds;
    apply_solved(model, solved, options, report, progress)
}

/// Compresses one layer's weight (read from `model`, left unchanged) and
/// measures the error; [`apply_solved`] puts the result in the model.
fn solve_layer(
    model: &mut LlamaModel,
    name: &str,
    collected: Option<Collected>,
    options: &CompressOptions,
) -> Result<share::Solved> {
    let linear = model.linear_mut(name).ok_or_else(|| Error::NotObserved {
        layer: name.to_string(),
    })?;
    let w = to_matrix(&linear.op().dense_weight()?)?;
    let cal = match collected {
        Some(c) => Some(Calibration {
            hessian: Some(c.hessian.finalize(0.0)?),
            channel_stats: Some(c.stats),
        }),
        None => None,
    };
    let method = options.method_for(name);
    // Every calibrated layer reports its output error; only calibrating methods see the data.
    let qcal = if method.calibrates() {
        cal.as_ref()
    } else {
        None
    };
    let t = Instant::now();
    let layer_error = |source| Error::Layer {
        layer: name.to_string(),
        source,
    };
    let (compressed, deq, mask) = match method {
        Method::Weight { quantizer, .. } => {
            let q = quantizer.quantize(w.view(), qcal).map_err(layer_error)?;
            let deq = q.dequantize();
            // Joint pruning: the zeros are the mask exports keep.
            let mask = quantizer
                .prunes()
                .then(|| SparsityMask::from_nonzeros(deq.view()));
            (Some(CompressedWeight::Quantized(q)), deq, mask)
        }
        Method::Ggml(quantizer) => {
            let q = quantizer.quantize(w.view(), qcal).map_err(layer_error)?;
            let deq = q.dequantize().map_err(layer_error)?;
            (Some(CompressedWeight::Ggml(q)), deq, None)
        }
        Method::Prune(pruner) => {
            let p = pruner
                .prune(w.view(), qcal)
                .map_err(|source| Error::Prune {
                    layer: name.to_string(),
                    source,
                })?;
            (None, p.weight, Some(p.mask))
        }
    };
    let adapter = match options.compensation {
        Some(c) => Some(
            c.fit(
                name,
                w.view(),
                deq.view(),
                cal.as_ref()
                    .and_then(|c| c.hessian.as_ref())
                    .map(|h| h.h.view()),
            )?,
        ),
        None => None,
    };
    let seconds = t.elapsed().as_secs_f64();
    let delta: Array2<f32> = match &adapter {
        Some(a) => &compensate::corrected_weight(&deq, a) - &w,
        None => &deq - &w,
    };
    let weight_error = delta.mapv(|v| f64::from(v * v)).sum()
        / w.mapv(|v| f64::from(v * v)).sum().max(f64::MIN_POSITIVE);
    let output_error = match &cal {
        Some(Calibration {
            hessian: Some(h), ..
        }) => {
            let num = tensorpress_sensitivity::hessian_weighted_error(delta.view(), h.h.view())?;
            let den = tensorpress_sensitivity::hessian_weighted_error(w.view(), h.h.view())?;
            Some(num / den.max(f64::MIN_POSITIVE))
        }
        _ => None,
    };
    let (rows, cols) = deq.dim();
    let zeros = deq.iter().filter(|v| **v == 0.0).count();
    let sparsity = zeros as f64 / (rows * cols).max(1) as f64;
    let bits_per_weight = match &compressed {
        Some(c) => c.bits_per_weight(),
        None => 16.0 * (1.0 - sparsity) + 1.0,
    } + adapter
        .as_ref()
        .map_or(0.0, |a| a.added_bits_per_weight(16.0));
    Ok(share::Solved {
        compressed,
        deq,
        mask,
        adapter,
        layer: LayerReport {
            name: name.to_string(),
            shape: [rows, cols],
            output_error,
            weight_error,
            bits_per_weight,
            sparsity,
            seconds,
        },
    })
}

/// Replaces a layer's weight in `model` by what its solve decided and records
/// the result in `report`.
fn apply_solved(
    model: &mut LlamaModel,
    solved: share::Solved,
    options: &CompressOptions,
    report: &mut CompressReport,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let share::Solved {
        compressed,
        deq,
        mask,
        adapter,
        layer,
    } = solved;
    let name = layer.name.clone();
    let device = model.device().clone();
    let linear = model.linear_mut(&name).ok_or_else(|| Error::NotObserved {
        layer: name.clone(),
    })?;
    let (rows, cols) = deq.dim();
    if [rows, cols] != [linear.op().out_features(), linear.op().in_features()] {
        return Err(Error::DataParallel {
            reason: format!(
                "layer `{name}`: a {rows}×{cols} result for a {}×{} layer",
                linear.op().out_features(),
                linear.op().in_features()
            ),
        });
    }
    let data = deq.into_raw_vec_and_offset().0;
    let new_weight = Tensor::from_vec(data, (rows, cols), &device)?;
    let pruned_weight = new_weight.clone();
    let bias = linear.op().bias().cloned();
    let mut dense: Arc<dyn LinearOp> = Arc::new(DenseLinear::new(new_weight, bias)?);
    if let Some(a) = &adapter {
        dense = compensate::corrected_op(dense, a)?;
    }
    match options.activations {
        Some(a) => linear.set_op(Arc::new(InputQuantLinear::new(dense, a.bits)?))?,
        None => linear.set_op(dense)?,
    }
    progress(Progress::Layer(layer.clone()));
    report.layers.push(layer);
    match compressed {
        Some(c) => {
            report.quantized.insert(name.clone(), c);
        }
        None => report.replace(format!("{name}.weight"), &pruned_weight)?,
    }
    if let Some(mask) = mask {
        report.masks.insert(name.clone(), mask);
    }
    if let Some(a) = adapter {
        report.adapters.insert(name, a);
    }
    Ok(())
}
