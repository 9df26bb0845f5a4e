//! GPTQ: accurate post-training quantization for generative pre-trained
//! transformers (Frantar, Ashkboos, Hoefler, Alistarh, ICLR 2023).
//!
//! GPTQ quantizes a weight one input column at a time and, after each column,
//! spreads the rounding error over the columns not yet quantized so that the
//! layer's output on the calibration inputs changes as little as possible. With
//! the layer Hessian `H = (2/n) Σ x xᵀ` and `U` the upper Cholesky factor of
//! `H⁻¹` (`H⁻¹ = UᵀU`), column `i` is rounded to `q_i` and the remaining
//! columns receive `−(w_i − q_i) / U_ii · U_i,j`. Updates are applied lazily in
//! blocks of 128 columns (one GEMM per block), as in the reference code.
//!
//! Options follow the reference implementation and AutoGPTQ:
//! - dampening: `H + λ·mean(diag H)·I` with λ = 0.01, doubled until the
//!   Cholesky factorization succeeds (a typed error if it never does);
//! - act-order (`desc_act`): columns in order of decreasing `H_ii`, with the
//!   group of each column recorded in `g_idx`;
//! - static groups: group scales fixed from the original weight before the
//!   sweep (so act-order keeps contiguous groups); otherwise each group's scale
//!   is chosen when the sweep reaches its first column, from the weights as
//!   updated so far;
//! - dead inputs (a zero Hessian diagonal) get zero weights.
//!
//! [`GgmlGptq`] runs the same sweep onto GGML block types (GGUF's Q4_0 …
//! Q6_K, IQ4_NL, IQ4_XS), choosing each block's scales with the type's own
//! search when the sweep reaches it.

mod ggml;
mod solve;

pub use ggml::{BlockScales, GgmlGptq};
pub use solve::GptqReport;

use ndarray::ArrayView2;
use tensorpress_tensor::linalg::DampSchedule;

use crate::qtensor::QuantizedTensor;
use crate::rtn::ClipSearch;
use crate::spec::QuantSpec;
use crate::{Calibration, Error, Result, WeightQuantizer};

/// GPTQ's configuration.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::{Calibration, Gptq, QuantSpec, Rtn, WeightQuantizer};
/// use tensorpress_tensor::{Hessian, SeededRng};
///
/// let mut rng = SeededRng::new(0);
/// // Correlated inputs: 512 tokens whose 64 features mix 8 latent factors.
/// let basis = rng.array_normal((8, 64));
/// let x = rng.array_normal((512, 8)).dot(&basis);
/// let w = rng.array_normal((32, 64));
/// let mut h = Hessian::new(64);
/// h.update(x.view())?;
/// let cal = Calibration { hessian: Some(h.finalize(0.0)?), ..Default::default() };
///
/// let spec = QuantSpec::int(3).group(32);
/// let gptq = Gptq::new(spec).quantize(w.view(), Some(&cal))?;
/// let rtn = Rtn::new(spec).quantize(w.view(), None)?;
/// let out_err = |q: &tensorpress_quant_core::QuantizedTensor| {
///     (x.dot(&(&q.dequantize() - &w).t())).mapv(|e| e * e).sum()
/// };
/// // GPTQ's outputs on the calibration inputs are much closer.
/// assert!(out_err(&gptq) < 0.5 * out_err(&rtn));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Gptq {
    /// The target quantization.
    pub spec: QuantSpec,
    /// Columns per lazy update block (reference: 128).
    pub block_size: usize,
    /// Dampening schedule (reference: 0.01 of the mean diagonal).
    pub damp: DampSchedule,
    /// Quantize columns in order of decreasing Hessian diagonal.
    pub act_order: bool,
    /// Fix group scales from the original weight before the sweep.
    pub static_groups: bool,
    /// Search each group's clipping range when choosing its scale.
    pub clip: Option<ClipSearch>,
}

impl Gptq {
    /// GPTQ to `spec` with the reference defaults: blocks of 128, damp 0.01,
    /// no act-order, groups chosen during the sweep, full-range scales.
    pub fn new(spec: QuantSpec) -> Self {
        Gptq {
            spec,
            block_size: 128,
            damp: DampSchedule::default(),
            act_order: false,
            static_groups: false,
            clip: None,
        }
    }

    /// Quantizes columns in order of decreasing Hessian diagonal.
    pub fn act_order(mut self, on: bool) -> Self {
        self.act_order = on;
        self
    }

    /// Fixes group scales before the sweep.
    pub fn static_groups(mut self, on: bool) -> Self {
        self.static_groups = on;
        self
    }

    /// Searches the clipping range of every group scale.
    pub fn with_clip_search(mut self, clip: ClipSearch) -> Self {
        self.clip = Some(clip);
        self
    }

    /// Uses `schedule` to damp the Hessian.
    pub fn damp(mut self, schedule: DampSchedule) -> Self {
        self.damp = schedule;
        self
    }

    /// Quantizes `w` and reports the damping used and GPTQ's own loss estimate.
    pub fn quantize_with_report(
        &self,
        w: ArrayView2<'_, f32>,
        cal: &Calibration,
    ) -> Result<(QuantizedTensor, GptqReport)> {
        let h = cal.hessian.as_ref().ok_or(Error::MissingCalibration {
            method: "GPTQ",
            what: "the layer Hessian",
        })?;
        solve::run(self, w, h)
    }
}

impl WeightQuantizer for Gptq {
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor> {
        let cal = cal.ok_or(Error::MissingCalibration {
            method: "GPTQ",
            what: "calibration data",
        })?;
        Ok(self.quantize_with_report(w, cal)?.0)
    }
}
