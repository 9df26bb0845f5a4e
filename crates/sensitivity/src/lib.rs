//! Sensitivity metrics for tensorpress, the inputs of mixed-precision bit
//! allocation: the Hessian-weighted error `tr(ΔW H ΔWᵀ)` of a weight
//! perturbation (the OBS/GPTQ output-error proxy), the output error on
//! calibration inputs, Hessian traces (HAWQ-v2's average trace, exact or by
//! Hutchinson's estimator), and rank/norm metrics of weights (effective rank,
//! nuclear norm, stable rank). [`power_iteration`] gives HAWQ's top Hessian
//! eigenvalue from Hessian-vector products. The model side (Hessians, Fisher
//! and loss Hessian-vector products of a real model, the database of
//! quantized layers, plans applied and written as recipes) is
//! `tensorpress::mixed` in the facade crate.
//!
//! CPTQuant's layer measures (Nanda et al., 2024): [`canonical_correlations`]
//! and [`cca_sensitivity`] (CCA between a layer's input and output
//! activations), [`pruning_sensitivity`] (relative output error after
//! magnitude pruning) and [`taylor_importance`] (`Σ |W ⊙ ∂L/∂W|`).
//!
//! Bit allocation from those sensitivities:
//!
//! - [`allocate`]: the exact mixed-precision allocation, a multiple-choice
//!   knapsack over per-layer [`Choice`]s under a [`Budget`] (bits, bits per
//!   weight or bit-operations), solved by dynamic programming (HAWQ-V3 states
//!   it as an integer program).
//! - [`evopress`]: EvoPress's evolutionary search over the same candidates,
//!   scored by a caller-supplied fitness of the whole compressed model
//!   (level-switch mutation, (1 + λ) elitist multi-step selection), for
//!   when layer costs do not simply add up.
//! - [`greedy_allocate`]: MPTQ-ViT's greedy rule (lower the layer that loses
//!   least per bit saved until the budget fits), a baseline for [`allocate`].
//! - [`sensitivity_table`] and [`sensitivity_svg`]: a Markdown table and a
//!   self-contained SVG chart (bits per weight and log-sensitivity per
//!   layer) of an allocation.
//!
//! # Quick start
//!
//! ```
//! use tensorpress_sensitivity::{average_hessian_trace, hessian_weighted_error, output_error};
//! use tensorpress_tensor::{Hessian, SeededRng};
//!
//! let mut rng = SeededRng::new(0);
//! let x = rng.array_normal((512, 32));          // calibration inputs [tokens, in]
//! let w = rng.array_normal((16, 32));           // weight [out, in]
//! // Round the weight to a grid of 1/8: a crude 4-bit-ish perturbation.
//! let w_hat = w.mapv(|v| (v * 8.0).round() / 8.0);
//!
//! let mut h = Hessian::new(32);
//! h.update(x.view())?;
//! let h = h.finalize(0.0)?.h;
//!
//! let proxy = hessian_weighted_error((&w - &w_hat).view(), h.view())?;
//! let out = output_error(w.view(), w_hat.view(), x.view())?;
//! // The proxy is twice the summed squared output error per token.
//! assert!((proxy - 2.0 * 16.0 * out.mse).abs() < 1e-3 * proxy);
//! // Rounding error of std 1/(8·√12) ≈ 0.036 on unit-variance weights.
//! assert!(out.relative > 0.025 && out.relative < 0.05);
//! // Unit-variance inputs: H ≈ 2I, average trace ≈ 2.
//! assert!((average_hessian_trace(h.view())? - 2.0).abs() < 0.2);
//! # Ok::<(), tensorpress_sensitivity::Error>(())
//! ```

mod allocate;
mod cptq;
mod error;
mod error_proxy;
mod evopress;
mod report;
mod spectral;
mod trace;

pub use allocate::{allocate, AllocateOptions, Allocation, Budget, Choice, LayerChoices};
pub use cptq::{
    canonical_correlations, cca_sensitivity, greedy_allocate, pruning_sensitivity,
    taylor_importance,
};
pub use error::{Error, Result};
pub use error_proxy::{hessian_weighted_error, output_error, OutputError};
pub use evopress::{
    evopress, EvoOptions, EvoResult, Stage, MAX_GIVE_BACK, MAX_LOWERINGS, MUTATION_RETRIES,
    OFFSPRING_DRAWS,
};
pub use report::{sensitivity_svg, sensitivity_table};
pub use spectral::{effective_rank, nuclear_norm, spectral_metrics, stable_rank, SpectralMetrics};
pub use trace::{
    average_hessian_trace, hessian_trace, hutchinson_trace, power_iteration, TraceEstimate,
};
