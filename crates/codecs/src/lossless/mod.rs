//! Lossless compression of float weights: the exponent/mantissa split of
//! ZipNN (Hershcovitch et al. 2024, "ZipNN: Lossless Compression for AI
//! Models") and DFloat11 (Zhang et al. 2025, "70% Size, 100% Accuracy").
//!
//! The exponents of trained weights are highly skewed (a few dozen values in
//! use, most mass on a handful: about 2.6 bits of entropy in 8), while the sign
//! and mantissa bits are close to uniform. [`float`] therefore splits each
//! element into an 8-bit symbol, coded with rANS under a per-chunk categorical
//! model, and the remaining bits, stored raw:
//!
//! | Format | Coded symbol | Raw bytes per element |
//! |---|---|---|
//! | f32 | exponent (bits 23..30) | 3: sign and 23 mantissa bits |
//! | bf16 | exponent (bits 7..14) | 1: sign and 7 mantissa bits |
//! | f16 | high byte: sign, 5-bit exponent, top 2 mantissa bits | 1: low 8 mantissa bits |
//!
//! For f16 the symbol takes the sign and two mantissa bits along with the
//! 5-bit exponent so that the raw part stays one whole byte: rANS codes the
//! three near-uniform bits at about their entropy (3 bits), which costs less
//! than packing 11-bit remainders would save.
//!
//! Streams are cut into chunks (256 Ki elements by default), each with its own
//! model, so encoding and decoding run in parallel (rayon). The round trip is
//! bit-exact for every input: NaN payloads, infinities, subnormals, -0.0.
//!
//! [`container`] stores a whole checkpoint: a table of tensors (name, dtype,
//! shape, codec, byte range, CRC32) and their payloads.
//!
//! ```
//! use half::bf16;
//! use tensorpress_codecs::lossless::{float, FloatCodecConfig};
//!
//! let w: Vec<bf16> = (0..100_000).map(|i| bf16::from_f32(((i as f32) * 0.37).sin() * 0.02)).collect();
//! let stream = float::encode_floats(&w, &FloatCodecConfig::default())?;
//! let back: Vec<bf16> = float::decode_floats(&stream, w.len())?;
//! assert!(w.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
//! assert!(stream.len() < 2 * w.len() * 3 / 4); // below 75% of 2 bytes per element
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

pub mod container;
pub mod float;
mod fused;

pub use container::{LosslessFile, LosslessWriter, TensorCodec, TensorEntry};
pub use float::{FloatCodecConfig, FloatFormat, LosslessFloat, StreamInfo};
