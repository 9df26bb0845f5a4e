//! The tensor layer of tensorpress: element types, a [`Tensor`] trait over
//! ndarray, views of the raw bytes that checkpoints store, dense linear algebra
//! through faer ([`linalg`]), calibration statistics ([`Hessian`],
//! [`ChannelStats`]) and a seeded, forkable RNG ([`SeededRng`]).
//!
//! # Quick start
//!
//! ```
//! use ndarray::Axis;
//! use tensorpress_tensor::{linalg, DType, Hessian, SeededRng, Tensor, TensorView};
//!
//! // Two bf16 values as a checkpoint stores them (little-endian).
//! let bytes = [0x80, 0x3f, 0x00, 0xc0]; // 1.0, -2.0
//! let shape = [2];
//! let view = TensorView::new(DType::BF16, &shape, &bytes)?;
//! assert_eq!(view.dtype(), DType::BF16);
//! assert_eq!(view.to_f32()?.as_slice().unwrap(), &[1.0, -2.0]);
//!
//! // Calibration: accumulate a layer Hessian H = (2/n) Σ x xᵀ over activations
//! // [tokens, in_features], damp it, and take the upper Cholesky factor of H⁻¹
//! // that GPTQ walks through.
//! let mut rng = SeededRng::new(0);
//! let x = rng.array_normal((256, 16));
//! let mut hessian = Hessian::new(16);
//! for batch in x.axis_chunks_iter(Axis(0), 64) {
//!     hessian.update(batch)?;
//! }
//! assert_eq!(hessian.n_samples(), 256);
//! let h = hessian.finalize(0.01)?;
//! let u = linalg::cholesky_inverse_upper(h.h.view())?;
//! // H · (UᵀU) = I.
//! let eye = h.h.dot(&u.t().dot(&u));
//! assert!((eye[[3, 3]] - 1.0).abs() < 1e-9 && eye[[3, 4]].abs() < 1e-9);
//!
//! // Same seed, same numbers: every randomized algorithm takes one.
//! assert_eq!(SeededRng::new(0).array_normal((256, 16)), x);
//! # Ok::<(), tensorpress_tensor::Error>(())
//! ```

mod calib;
mod dtype;
mod error;
pub mod linalg;
mod rng;
mod tensor;

pub use calib::{ChannelStats, FinalizedHessian, Hessian};
pub use dtype::DType;
pub use error::{Error, Result};
pub use rng::SeededRng;
pub use tensor::{byte_len, decode_f32, f8e4m3_to_f32, Element, Tensor, TensorView};
