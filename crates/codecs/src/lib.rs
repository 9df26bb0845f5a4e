//! Codecs of tensorpress: bit packing of low-bit codes, variable-length
//! integers, entropy coding ([`entropy`]: rANS, canonical Huffman, an
//! adaptive range coder, and the categorical, quantized Gaussian/Laplace and
//! CDF-table models), gradient compression for data-parallel training
//! ([`grad`]), vector quantization ([`vq`]: k-means, product quantization,
//! LR²VQ, codebook reduction), wavelet transforms ([`wavelet`]: Haar and
//! CDF 9/7, 1-D, 2-D and packets), the normalized compression distance and
//! ZIP-FIT data selection ([`ncd`]) and the coding rate of a representation
//! ([`coding_rate`]), and lossless float-weight compression with a checkpoint
//! container ([`lossless`]).
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
//!
//! // Entropy coding: 4-bit codes, mostly near the middle, take ~2.2 bits each.
//! use tensorpress_codecs::entropy::{empirical_entropy, huffman, rans};
//! let codes: Vec<u8> = (0..4096u32).map(|i| [7, 8, 8, 9, 8, 7, 6, 10][(i * 5 % 8) as usize]).collect();
//! let h = empirical_entropy(&codes);
//! assert!((h - 2.156).abs() < 1e-3);
//! let packed = rans::compress(&codes, rans::DEFAULT_PRECISION)?;
//! assert_eq!(rans::decompress::<u8>(&packed, codes.len())?, codes);
//! assert!(packed.len() < 1150); // n·H = 1104 bytes, plus the model and four states
//! let huff = huffman::compress(&codes, huffman::DEFAULT_MAX_LENGTH)?;
//! assert_eq!(huffman::decompress::<u8>(&huff, codes.len())?, codes);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

pub mod bitpack;
pub mod coding_rate;
pub mod entropy;
mod error;
pub mod grad;
pub mod lossless;
pub mod ncd;
pub mod varint;
pub mod vq;
pub mod wavelet;

pub use error::{CodeLengthFault, Error, Result};
