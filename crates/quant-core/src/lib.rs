//! Number formats, quantizers and block codecs of tensorpress.
//!
//! The [`ggml`] module holds GGML's block formats (the tensor types of GGUF
//! files): their ids and sizes, and encoders and decoders that are bit-exact
//! with the reference implementation in the `gguf` Python package.
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

mod error;
pub mod ggml;

pub use error::{Error, Result};
