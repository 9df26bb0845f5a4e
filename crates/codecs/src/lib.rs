//! Codecs of tensorpress: bit packing of low-bit codes and variable-length
//! integers, vector quantization ([`vq`]: k-means, product quantization,
//! LR²VQ, codebook reduction), wavelet transforms ([`wavelet`]: Haar and
//! CDF 9/7, 1-D, 2-D and packets), the normalized compression distance
//! and ZIP-FIT data selection ([`ncd`]) and the coding rate of a
//! representation ([`coding_rate`]); later entropy coders, lossless float codecs
//! and gradient compression.
//!
//! # Quick start
//!
//! ```
//! use tensorpress_codecs::{bitpack, varint};
//!
//! // Signed 4-bit weights → offset binary → u32 words, LSB first
//! // (compressed-tensors' pack-quantized layout).
//! let weights: [i8; 9] = [-8, -1, 0, 1, 7, 3, -3, 2, 5];
//! let codes = bitpack::signed_to_offset(&weights, 4)?;
//! let words = bitpack::pack(&codes, 4)?;
//! assert_eq!(words, vec![0xa5bf_9870, 0xd]);
//! let back = bitpack::offset_to_signed(&bitpack::unpack(&words, 4, 9)?, 4)?;
//! assert_eq!(back, weights);
//!
//! // Sorted indices as zigzag varints of their deltas: one byte each here.
//! let idx: [i64; 4] = [3, 10, 12, 40];
//! let deltas: Vec<i64> = idx.iter().scan(0, |prev, &i| { let d = i - *prev; *prev = i; Some(d) }).collect();
//! let bytes = varint::encode_ivarints(&deltas);
//! assert_eq!(bytes.len(), 4);
//! assert_eq!(varint::decode_ivarints(&bytes)?, vec![3, 7, 2, 28]);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

pub mod bitpack;
pub mod coding_rate;
mod error;
pub mod ncd;
pub mod varint;
pub mod vq;
pub mod wavelet;

pub use error::{Error, Result};
