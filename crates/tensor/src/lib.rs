//! The tensor layer of tensorpress: element types, a [`Tensor`] trait over
//! ndarray, and views of the raw bytes that checkpoints store.
//!
//! # Quick start
//!
//! ```
//! use tensorpress_tensor::{DType, Tensor, TensorView};
//!
//! // Two bf16 values as a checkpoint stores them (little-endian).
//! let bytes = [0x80, 0x3f, 0x00, 0xc0]; // 1.0, -2.0
//! let shape = [2];
//! let view = TensorView::new(DType::BF16, &shape, &bytes)?;
//! assert_eq!(view.dtype(), DType::BF16);
//! assert_eq!(view.to_f32()?.as_slice().unwrap(), &[1.0, -2.0]);
//! # Ok::<(), tensorpress_tensor::Error>(())
//! ```

mod dtype;
mod error;
mod tensor;

pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::{byte_len, decode_f32, f8e4m3_to_f32, Element, Tensor, TensorView};
