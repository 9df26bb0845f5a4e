//! Number formats beyond integers: small floats (FP8, FP6, FP4), NF4, the
//! OCP microscaling formats (MXFP4/6/8), NVFP4, and LLM-FP4's search over
//! float formats.
//!
//! - [`FloatFormat`]: element codecs bit-exact with the `ml_dtypes` package
//!   ([`FloatFormat::encode`], [`FloatFormat::decode`]), plus the saturating
//!   encoder quantizers use.
//! - [`nf4`]: bitsandbytes' NF4 table and encoder.
//! - [`mx`]: E8M0 shared scales and MX blocks, with llama.cpp's MXFP4
//!   rounding as an option.
//! - [`nvfp4`]: NVFP4's two-level scales.
//! - [`Grid`]: every format behind one interface ([`CodeGrid`]), which
//!   [`Rtn`](crate::Rtn) and [`Gptq`](crate::Gptq) quantize with.
//! - [`FpSearch`]: LLM-FP4's search over the exponent/mantissa split and the
//!   clipping range.
//!
//! # Example: one weight, four formats
//!
//! ```
//! use tensorpress_quant_core::formats::FloatFormat;
//! use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
//! use tensorpress_tensor::SeededRng;
//!
//! let w = SeededRng::new(0).array_normal((16, 256)) * 0.02;
//! let rms = |spec: QuantSpec| -> Result<f32, tensorpress_quant_core::Error> {
//!     let q = Rtn::new(spec).quantize(w.view(), None)?;
//!     let e = &q.dequantize() - &w;
//!     Ok((e.mapv(|x| x * x).mean().unwrap_or(0.0)).sqrt())
//! };
//! let fp8 = rms(QuantSpec::float(FloatFormat::E4M3))?;
//! let nf4 = rms(QuantSpec::nf4())?;
//! let mxfp4 = rms(QuantSpec::mxfp4())?;
//! let nvfp4 = rms(QuantSpec::nvfp4())?;
//! // FP8 is far finer than the 4-bit formats; on Gaussian weights NVFP4's
//! // small blocks beat MXFP4's power-of-two scales.
//! assert!(fp8 < nf4 / 3.0 && fp8 < nvfp4 / 3.0);
//! assert!(nvfp4 < mxfp4);
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```

mod float;
mod grid;
pub mod mx;
pub mod nf4;
pub mod nvfp4;
mod search;

pub use float::{FloatFormat, Specials};
pub use grid::{CodeGrid, Grid};
pub use mx::{MxFormat, MxRounding, MX_BLOCK};
pub use nvfp4::NVFP4_BLOCK;
pub use search::{FpSearch, FpSearchReport, SearchObjective};
