//! Number formats, quantizers and block codecs of tensorpress.
//!
//! - [`QuantSpec`] says what a quantized weight looks like (format, scale
//!   sharing, symmetry); [`QuantizedTensor`] holds its codes, scales and zero points.
//! - Quantizers implement [`WeightQuantizer`]: [`Rtn`] (round to nearest, with
//!   an optional clipping search), [`Gptq`] (Hessian-aware rounding), [`Hqq`]
//!   (half-quadratic zero-point optimisation, no calibration data) and
//!   [`FpSearch`] (LLM-FP4's search over float formats and clipping ranges).
//! - Formats ([`Format`]): integers of 2–8 bits, and in [`formats`] the small
//!   floats FP8 E4M3/E5M2, FP6 E2M3/E3M2 and FP4 E2M1 (bit-exact with
//!   `ml_dtypes`), NF4, the OCP MX formats MXFP4/6/8 and NVFP4. RTN and GPTQ
//!   quantize to every one of them.
//!
//! The [`rotation`] module builds randomized Hadamard and random orthogonal
//! rotations (QuaRot, SpinQuant), which make weights easier to quantize when
//! folded into a model.
//!
//! The [`ggml`] module holds GGML's block formats (the tensor types of GGUF
//! files): their ids and sizes, and encoders and decoders that are bit-exact
//! with the reference implementation in the `gguf` Python package. The
//! [`pack`] module packs integer codes into the `int32` layouts of
//! compressed-tensors, GPTQ and AWQ checkpoints.
//!
//! # Quick start
//!
//! ```
//! use tensorpress_quant_core::ggml::{self, GgmlType};
//!
//! // One Q8_0 block: 32 values, stored as an f16 scale and 32 signed bytes.
//! let values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
//! let mut bytes = Vec::new();
//! ggml::quantize(GgmlType::Q8_0, &values, &mut bytes)?;
//! assert_eq!(bytes.len(), GgmlType::Q8_0.type_size());
//!
//! let mut decoded = vec![0.0f32; 32];
//! ggml::dequantize(GgmlType::Q8_0, &bytes, &mut decoded)?;
//! // The scale is 16/127 rounded to f16, so the integers come back within half a step.
//! let step = 16.0 / 127.0;
//! assert!(values.iter().zip(&decoded).all(|(a, b)| (a - b).abs() <= step / 2.0 + 1e-3));
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```
//!
//! Weights to NF4, MXFP4 and NVFP4 (the spec fixes each format's block size):
//!
//! ```
//! use ndarray::Array2;
//! use tensorpress_quant_core::{Format, QuantSpec, Rtn, WeightQuantizer};
//!
//! let w = Array2::from_shape_fn((4, 64), |(i, j)| ((i * 64 + j) as f32 * 0.37).sin());
//! let mx = Rtn::new(QuantSpec::mxfp4()).quantize(w.view(), None)?;
//! // MX scales are powers of two, stored as E8M0 exponents: each block's
//! // maximum (here about 1) lands in FP4's top binade [4, 8).
//! let e8m0 = mx.scale_codes().expect("MX has scale codes");
//! assert!(e8m0.iter().all(|&e| e == 127 - 3));
//! assert_eq!(mx.bits_per_weight(16), 4.25);
//!
//! let nv = Rtn::new(QuantSpec::nvfp4()).quantize(w.view(), None)?;
//! assert_eq!(nv.spec().format, Format::Nvfp4);
//! assert!(nv.global_scale().is_some());
//! let nf4 = Rtn::new(QuantSpec::nf4()).quantize(w.view(), None)?;
//! for q in [&mx, &nv, &nf4] {
//!     let err = (&q.dequantize() - &w).iter().fold(0.0f32, |m, e| m.max(e.abs()));
//!     // MXFP4 clips at 6 · 2^-3 = 0.75 (the OCP scale rule), so up to 0.25 there.
//!     assert!(err <= 0.25, "{}: {err}", q.spec());
//! }
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```

pub mod awq;
mod error;
pub mod formats;
pub mod ggml;
pub mod gptq;
pub mod hqq;
pub mod int;
pub mod kernels;
pub mod pack;
mod qtensor;
pub mod rotation;
pub mod rtn;
mod spec;

pub use awq::{Awq, AwqClip, ScaleSearch};
pub use error::{Error, Result};
pub use formats::{FloatFormat, FpSearch, MxFormat};
pub use gptq::Gptq;
pub use hqq::{Hqq, HqqParams};
pub use qtensor::QuantizedTensor;
pub use rtn::{ClipSearch, Rtn};
pub use spec::{Format, Granularity, QuantSpec};

use ndarray::ArrayView2;
use tensorpress_tensor::{ChannelStats, FinalizedHessian};

/// What a quantizer may know about a layer's inputs, gathered on calibration data.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// The layer Hessian `H = (2/n) Σ x xᵀ`, finalized without damping (the
    /// quantizer damps it), with its dead input channels.
    pub hessian: Option<FinalizedHessian>,
    /// Per-input-channel activation statistics.
    pub channel_stats: Option<ChannelStats>,
}

/// A method that turns an f32 weight `[out_features, in_features]` into a
/// [`QuantizedTensor`].
pub trait WeightQuantizer: Send + Sync {
    /// Quantizes `w`, using `cal` where the method needs calibration data.
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor>;

    /// Whether the quantizer also prunes (SparseGPT's joint pruning and
    /// quantization): the zeros of its output are then a sparsity pattern
    /// that exports keep (compressed-tensors' sparse layouts).
    fn prunes(&self) -> bool {
        false
    }
}

/// Fails with [`Error::NonFinite`] at the first NaN or infinity of a weight.
pub(crate) fn check_finite(w: ArrayView2<'_, f32>) -> Result<()> {
    for ((row, col), &value) in w.indexed_iter() {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "weight",
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}
