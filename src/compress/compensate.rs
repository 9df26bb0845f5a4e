//! Low-rank compensation of compressed layers (issue 7): after a layer is
//! quantized or pruned to `W'`, a rank-`r` adapter `A·B` absorbs part of the
//! error `W − W'`, and the runner computes `W'x + A(Bx)`.
//!
//! - [`CompensationMethod::Lorc`]: ZeroQuant-V2's LoRC (Yao et al., 2023),
//!   the truncated SVD of `W − W'`;
//! - [`CompensationMethod::Eora`]: EoRA (Liu et al., 2024), the error
//!   projected into the eigenspace of the layer's calibration input
//!   covariance (the GPTQ Hessian `H = Σ x xᵀ`), weighted by the square roots
//!   of its eigenvalues, truncated, and mapped back — the rank-`r` adapter
//!   that minimizes the output error `‖(W − W' − AB) X‖` on the calibration
//!   inputs. Training-free; seconds per layer.
//!
//! Set [`CompressOptions::compensation`](super::CompressOptions::compensation);
//! the adapters land in [`CompressReport::adapters`](super::CompressReport::adapters)
//! and [`write_peft_adapter`](super::write_peft_adapter) writes them as a PEFT
//! LoRA folder. In [`compress_llama`](super::compress_llama) each layer is
//! compensated right after it is compressed, so later blocks calibrate on
//! the compensated model's outputs.

use std::sync::Arc;

use candle_core::Tensor;
use ndarray::{Array2, ArrayView2};
use tensorpress_lowrank::{eora, lorc, Adapter};
use tensorpress_models::linear::{DenseLinear, InputQuantLinear, LinearOp, LowRankLinear};
use tensorpress_models::llama::LlamaModel;

use super::{CompressReport, CompressedWeight};
use crate::{Error, Result};

/// How the adapter is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompensationMethod {
    /// EoRA: the error in the calibration activations' eigenspace (needs
    /// calibration data).
    Eora,
    /// LoRC: the plain truncated SVD of the error (no data).
    Lorc,
}

/// A low-rank compensation stage after compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Compensation {
    /// The fitting method.
    pub method: CompensationMethod,
    /// The adapter rank (at most `min(out, in)` of each layer).
    pub rank: usize,
}

impl Compensation {
    /// EoRA at `rank`.
    pub fn eora(rank: usize) -> Self {
        Compensation {
            method: CompensationMethod::Eora,
            rank,
        }
    }

    /// LoRC at `rank`.
    pub fn lorc(rank: usize) -> Self {
        Compensation {
            method: CompensationMethod::Lorc,
            rank,
        }
    }

    /// Whether fitting needs the layer's calibration Hessian.
    pub fn calibrates(&self) -> bool {
        self.method == CompensationMethod::Eora
    }

    /// The adapter of a layer with original weight `w` compressed to
    /// `compressed`; `h` is its calibration Hessian (EoRA only).
    ///
    /// # Errors
    /// [`Error::Compensation`] for a rank outside `1..=min(out, in)`, shapes
    /// that disagree, non-finite weights; [`Error::NoCalibration`] for EoRA
    /// without a Hessian.
    pub fn fit(
        &self,
        layer: &str,
        w: ArrayView2<'_, f32>,
        compressed: ArrayView2<'_, f32>,
        h: Option<ArrayView2<'_, f64>>,
    ) -> Result<Adapter> {
        let wrap = |source| Error::Compensation {
            layer: layer.to_string(),
            source,
        };
        match (self.method, h) {
            (CompensationMethod::Lorc, _) => lorc(w, compressed, self.rank).map_err(wrap),
            (CompensationMethod::Eora, Some(h)) => eora(w, compressed, h, self.rank).map_err(wrap),
            (CompensationMethod::Eora, None) => Err(Error::NoCalibration),
        }
    }

    /// A short label (`EoRA r32`).
    pub fn label(&self) -> String {
        let name = match self.method {
            CompensationMethod::Eora => "EoRA",
            CompensationMethod::Lorc => "LoRC",
        };
        format!("{name} r{}", self.rank)
    }
}

/// The op of a compressed layer with its adapter: `dense` (the compressed
/// weight) corrected by `adapter`, under `InputQuantLinear` when the layer
/// quantizes its inputs (the adapter then sees the quantized input too).
pub(crate) fn corrected_op(
    dense: Arc<dyn LinearOp>,
    adapter: &Adapter,
) -> Result<Arc<dyn LinearOp>> {
    let device = dense.dense_weight()?.device().clone();
    let tensor = |m: ArrayView2<'_, f32>| -> Result<Tensor> {
        Ok(Tensor::from_iter(m.iter().copied(), &device)?.reshape(m.dim())?)
    };
    let (a, b) = (tensor(adapter.a())?, tensor(adapter.b())?);
    Ok(Arc::new(LowRankLinear::new(dense, a, b)?))
}

/// Sets the adapters of `model`'s compensated layers (those in
/// `report.adapters`) to their first `rank` components (`0` removes them):
/// each layer's op is rebuilt from its compressed weight in `report`, so one
/// compensated run evaluates every smaller rank of the same fit.
///
/// # Errors
/// A layer the model lacks or whose compressed weight the report does not
/// hold; a rank above an adapter's.
pub fn set_adapter_rank(
    model: &mut LlamaModel,
    report: &CompressReport,
    rank: usize,
) -> Result<()> {
    for (name, adapter) in &report.adapters {
        let compressed = match report.quantized.get(name) {
            Some(CompressedWeight::Quantized(q)) => q.dequantize(),
            Some(CompressedWeight::Ggml(g)) => g.dequantize().map_err(|source| Error::Layer {
                layer: name.clone(),
                source,
            })?,
            None => report
                .replaced
                .get(&format!("{name}.weight"))
                .and_then(|w| w.clone().into_dimensionality::<ndarray::Ix2>().ok())
                .ok_or_else(|| Error::Export {
                    layer: name.clone(),
                    reason: "the report holds no compressed weight for this layer".into(),
                })?,
        };
        let linear = model.linear_mut(name).ok_or_else(|| Error::NotObserved {
            layer: name.clone(),
        })?;
        let device = linear.op().dense_weight()?.device().clone();
        let bias = linear.op().bias().cloned();
        let (rows, cols) = compressed.dim();
        let weight = Tensor::from_vec(
            compressed.into_raw_vec_and_offset().0,
            (rows, cols),
            &device,
        )?;
        let mut op: Arc<dyn LinearOp> = Arc::new(DenseLinear::new(weight, bias)?);
        if rank > 0 {
            let t = adapter
                .truncate(rank)
                .map_err(|source| Error::Compensation {
                    layer: name.clone(),
                    source,
                })?;
            op = corrected_op(op, &t)?;
        }
        match report.activations {
            Some(a) => linear.set_op(Arc::new(InputQuantLinear::new(op, a.bits)?))?,
            None => linear.set_op(op)?,
        }
    }
    Ok(())
}

/// Output-error helper: `W' + A·B` as an array.
pub(crate) fn corrected_weight(compressed: &Array2<f32>, adapter: &Adapter) -> Array2<f32> {
    compressed + &adapter.delta()
}
