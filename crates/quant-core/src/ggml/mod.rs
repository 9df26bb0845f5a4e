//! GGML block formats: the tensor types of GGUF files and their codecs.
//!
//! [`GgmlType`] lists every type id of current llama.cpp with its block geometry.
//! [`dequantize`] and [`quantize`] convert between f32 and the encoded bytes of
//! the types whose [`GgmlType::can_dequantize`] / [`GgmlType::can_quantize`] hold:
//!
//! | type | dequantize | quantize |
//! |---|---|---|
//! | F32, F16, BF16 | yes | yes |
//! | Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 | yes | yes |
//! | F64, I8, I16, I32, I64 | yes (cast to f32) | no |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | yes | yes, also importance-weighted |
//! | IQ4_NL, IQ4_XS | yes | yes, also importance-weighted |
//! | Q8_K | yes | yes |
//! | other i-quants, ternary, FP4 | not yet | not yet |
//!
//! The legacy types are bit-exact in both directions with the numpy reference
//! in the `gguf` Python package (`gguf/quants.py`), which is in turn bit-exact
//! with `ggml-quants.c`; the golden tests in `tests/ggml_golden.rs` check this
//! on vectors that `scripts/golden/gguf_codecs.py` produced with that package,
//! including real blocks of SmolLM2.
//!
//! The k-quants and IQ4 types decode bit-exactly as the `gguf` package does.
//! That package has no encoders for them, so their encoders follow llama.cpp's
//! C code (`quantize_row_q4_K_ref` and friends, and `quantize_iq4_nl`/
//! `quantize_iq4_xs`) and are checked bit for bit against files that
//! `llama-quantize` wrote (`tests/ggml_kquants.rs`, goldens from
//! `scripts/golden/gguf_kquants.py`). [`quantize_rows`] adds llama.cpp's
//! importance-weighted encoders (what `llama-quantize --imatrix` runs), which
//! take a per-column importance vector such as an imatrix's mean squared
//! activations.
//!
//! The kernels are scalar; [`dequantize_par`], [`quantize_par`] and
//! [`quantize_rows_par`] split large buffers over rayon's thread pool.

pub(crate) mod grid;
pub(crate) mod iquants;
pub(crate) mod kquants;
pub(crate) mod legacy;
mod plain;
mod tensor;
mod types;

use rayon::prelude::*;

pub use plain::f32_to_bf16_bits;
pub use tensor::{importance_from, GgmlQuantizer, GgmlRtn, GgmlTensor};
pub use types::{GgmlType, QK_K};

use crate::{Error, Result};

/// A block decoder over whole blocks.
type DecodeFn = fn(&[u8], &mut [f32]);
/// A block encoder over whole blocks.
pub(crate) type EncodeFn = fn(&[f32], &mut [u8]);
/// An importance-weighted block encoder over whole blocks: values, their
/// importance (same length), output.
pub(crate) type WeightedEncodeFn = fn(&[f32], &[f32], &mut [u8]);

fn decoder(ty: GgmlType) -> Result<DecodeFn> {
    Ok(match ty {
        GgmlType::F32 => plain::dequantize_f32,
        GgmlType::F16 => plain::dequantize_f16,
        GgmlType::BF16 => plain::dequantize_bf16,
        GgmlType::F64 => plain::dequantize_f64,
        GgmlType::I8 => plain::dequantize_i8,
        GgmlType::I16 => plain::dequantize_i16,
        GgmlType::I32 => plain::dequantize_i32,
        GgmlType::I64 => plain::dequantize_i64,
        GgmlType::Q4_0 => legacy::dequant::q4_0,
        GgmlType::Q4_1 => legacy::dequant::q4_1,
        GgmlType::Q5_0 => legacy::dequant::q5_0,
        GgmlType::Q5_1 => legacy::dequant::q5_1,
        GgmlType::Q8_0 => legacy::dequant::q8_0,
        GgmlType::Q2K => kquants::q2k::dequantize,
        GgmlType::Q3K => kquants::q3k::dequantize,
        GgmlType::Q4K => kquants::q4k::dequantize,
        GgmlType::Q5K => kquants::q5k::dequantize,
        GgmlType::Q6K => kquants::q6k::dequantize,
        GgmlType::Q8K => kquants::q8k::dequantize,
        GgmlType::IQ4NL => iquants::iq4::dequantize_nl,
        GgmlType::IQ4XS => iquants::iq4::dequantize_xs,
        _ => {
            return Err(Error::Unsupported {
                op: "dequantize",
                ty,
            })
        }
    })
}

pub(crate) fn encoder(ty: GgmlType) -> Result<EncodeFn> {
    Ok(match ty {
        GgmlType::F32 => plain::quantize_f32,
        GgmlType::F16 => plain::quantize_f16,
        GgmlType::BF16 => plain::quantize_bf16,
        GgmlType::Q4_0 => legacy::quant::q4_0,
        GgmlType::Q4_1 => legacy::quant::q4_1,
        GgmlType::Q5_0 => legacy::quant::q5_0,
        GgmlType::Q5_1 => legacy::quant::q5_1,
        GgmlType::Q8_0 => legacy::quant::q8_0,
        GgmlType::Q2K => kquants::q2k::quantize,
        GgmlType::Q3K => kquants::q3k::quantize,
        GgmlType::Q4K => kquants::q4k::quantize,
        GgmlType::Q5K => kquants::q5k::quantize,
        GgmlType::Q6K => kquants::q6k::quantize,
        GgmlType::Q8K => kquants::q8k::quantize,
        GgmlType::IQ4NL => iquants::iq4::quantize_nl,
        GgmlType::IQ4XS => iquants::iq4::quantize_xs,
        _ => return Err(Error::Unsupported { op: "quantize", ty }),
    })
}

pub(crate) fn weighted_encoder(ty: GgmlType) -> Result<WeightedEncodeFn> {
    Ok(match ty {
        GgmlType::Q2K => kquants::q2k::quantize_weighted,
        GgmlType::Q3K => kquants::q3k::quantize_weighted,
        GgmlType::Q4K => kquants::q4k::quantize_weighted,
        GgmlType::Q5K => kquants::q5k::quantize_weighted,
        GgmlType::Q6K => kquants::q6k::quantize_weighted,
        GgmlType::IQ4NL => iquants::iq4::quantize_nl_weighted,
        GgmlType::IQ4XS => iquants::iq4::quantize_xs_weighted,
        _ => {
            return Err(Error::Unsupported {
                op: "importance-weighted quantize",
                ty,
            })
        }
    })
}

/// Checks that `bytes` is whole blocks decoding to exactly `out.len()` values.
fn check_decode(ty: GgmlType, bytes: &[u8], out: &[f32]) -> Result<()> {
    let expected = ty.elements_in(bytes.len())?;
    if expected != out.len() {
        return Err(Error::OutputLength {
            expected,
            actual: out.len(),
        });
    }
    Ok(())
}

/// Decodes `bytes`, a whole number of `ty` blocks, into `out`.
///
/// `out` must hold exactly the decoded element count
/// (`bytes.len() / type_size · block_size`).
///
/// # Errors
/// [`Error::Unsupported`] when `ty` has no decoder yet, [`Error::NotWholeBlocks`]
/// when `bytes` is not whole blocks, [`Error::OutputLength`] when `out` has the
/// wrong length.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let decode = decoder(ty)?;
    check_decode(ty, bytes, out)?;
    decode(bytes, out);
    Ok(())
}

/// Blocks per parallel task: large enough that scheduling costs nothing
/// (small in unit tests, so that they cover several tasks cheaply).
const BLOCKS_PER_TASK: usize = if cfg!(test) { 8 } else { 2048 };

/// [`dequantize`] split over rayon's thread pool; same results, same errors.
pub fn dequantize_par(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let decode = decoder(ty)?;
    check_decode(ty, bytes, out)?;
    let per_task = BLOCKS_PER_TASK * ty.block_size().max(64);
    let bytes_per_task = per_task / ty.block_size() * ty.type_size();
    out.par_chunks_mut(per_task)
        .zip(bytes.par_chunks(bytes_per_task))
        .for_each(|(o, b)| decode(b, o));
    Ok(())
}

/// Encodes `values` as `ty` blocks and appends the bytes to `out`.
///
/// `values.len()` must be a whole number of blocks. Appending lets callers
/// encode row by row into one buffer; `out` is left unchanged on error.
///
/// # Errors
/// [`Error::Unsupported`] when `ty` has no encoder yet, [`Error::NotBlockMultiple`]
/// when `values` is not whole blocks.
pub fn quantize(ty: GgmlType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let encode = encoder(ty)?;
    let n_bytes = ty.row_bytes(values.len())?;
    let start = out.len();
    out.resize(start + n_bytes, 0);
    encode(values, &mut out[start..]);
    Ok(())
}

/// [`quantize`] split over rayon's thread pool; same results, same errors.
pub fn quantize_par(ty: GgmlType, values: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let encode = encoder(ty)?;
    let n_bytes = ty.row_bytes(values.len())?;
    let start = out.len();
    out.resize(start + n_bytes, 0);
    let per_task = BLOCKS_PER_TASK * ty.block_size().max(64);
    let bytes_per_task = per_task / ty.block_size() * ty.type_size();
    out[start..]
        .par_chunks_mut(bytes_per_task)
        .zip(values.par_chunks(per_task))
        .for_each(|(o, v)| encode(v, o));
    Ok(())
}

/// How [`quantize_rows`] encodes: plainly, or weighted by an importance vector.
#[derive(Clone, Copy)]
enum RowEncoder<'a> {
    Plain(EncodeFn),
    Weighted(WeightedEncodeFn, &'a [f32]),
}

impl RowEncoder<'_> {
    /// Encodes whole blocks of one row starting at column `col`.
    #[inline]
    fn encode(self, values: &[f32], col: usize, out: &mut [u8]) {
        match self {
            RowEncoder::Plain(f) => f(values, out),
            RowEncoder::Weighted(f, imp) => f(values, &imp[col..col + values.len()], out),
        }
    }
}

/// Validates a [`quantize_rows`] call; returns the encoder and the bytes per row.
fn check_rows<'a>(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    importance: Option<&'a [f32]>,
) -> Result<(RowEncoder<'a>, usize)> {
    if row_len == 0 || !values.len().is_multiple_of(row_len) {
        return Err(Error::RowLength {
            len: values.len(),
            row_len,
        });
    }
    let row_bytes = ty.row_bytes(row_len)?;
    let encoder = match importance {
        None => RowEncoder::Plain(encoder(ty)?),
        Some(imp) => {
            let f = weighted_encoder(ty)?;
            if imp.len() != row_len {
                return Err(Error::Shape {
                    what: "importance",
                    expected: vec![row_len],
                    actual: vec![imp.len()],
                });
            }
            if let Some((col, &value)) = imp
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(Error::InvalidImportance { col, value });
            }
            RowEncoder::Weighted(f, imp)
        }
    };
    Ok((encoder, row_bytes))
}

/// Encodes a row-major matrix with rows of `row_len` values as `ty` blocks,
/// optionally weighting each column by `importance`, and appends the bytes.
///
/// With `importance = None` this is [`quantize`] (llama.cpp's reference
/// encoders, what `llama-quantize` writes without an importance matrix). With
/// `Some(importance)`, one non-negative weight per column (an imatrix entry:
/// the mean squared activation of each input channel), the k-quants and IQ4
/// types use llama.cpp's importance-weighted encoders (`quantize_q4_K` and
/// friends with `quant_weights`), bit-exact with `llama-quantize --imatrix`:
/// their scale searches minimise `Σ importance · sqrt(σ² + x²) · (x − x̂)²`
/// (Q6_K: `Σ importance · (x − x̂)²`) instead of an unweighted error.
///
/// # Errors
/// [`Error::RowLength`] when `values` is not whole rows (or `row_len` is 0),
/// [`Error::NotBlockMultiple`] when a row is not whole blocks (k-quants need
/// multiples of 256), [`Error::Unsupported`] when `ty` has no encoder or, with
/// an importance vector, no weighted encoder
/// ([`GgmlType::can_quantize_weighted`]), [`Error::Shape`] when `importance`
/// does not have `row_len` entries and [`Error::InvalidImportance`] when one is
/// negative, NaN or infinite. `out` is left unchanged on error.
///
/// # Example
/// ```
/// use tensorpress_quant_core::ggml::{self, GgmlType};
///
/// // Two rows of 512 columns; the first 32 columns matter 100 times more.
/// let values: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.37).sin()).collect();
/// let importance: Vec<f32> = (0..512).map(|c| if c < 32 { 100.0 } else { 1.0 }).collect();
/// let mut bytes = Vec::new();
/// ggml::quantize_rows(GgmlType::Q4K, &values, 512, Some(&importance), &mut bytes)?;
/// assert_eq!(bytes.len(), 2 * GgmlType::Q4K.row_bytes(512)?); // 144 bytes per 256 values
///
/// let mut decoded = vec![0.0f32; values.len()];
/// ggml::dequantize(GgmlType::Q4K, &bytes, &mut decoded)?;
/// assert!(values.iter().zip(&decoded).all(|(x, y)| (x - y).abs() < 0.1));
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
pub fn quantize_rows(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    importance: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (encoder, row_bytes) = check_rows(ty, values, row_len, importance)?;
    let start = out.len();
    out.resize(start + values.len() / row_len * row_bytes, 0);
    for (v, o) in values
        .chunks_exact(row_len)
        .zip(out[start..].chunks_exact_mut(row_bytes))
    {
        encoder.encode(v, 0, o);
    }
    Ok(())
}

/// [`quantize_rows`] split over rayon's thread pool (by rows, and long rows
/// by blocks); same results, same errors.
pub fn quantize_rows_par(
    ty: GgmlType,
    values: &[f32],
    row_len: usize,
    importance: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (encoder, row_bytes) = check_rows(ty, values, row_len, importance)?;
    let start = out.len();
    out.resize(start + values.len() / row_len * row_bytes, 0);
    let per_task = BLOCKS_PER_TASK * ty.block_size().max(64);
    let bytes_per_task = per_task / ty.block_size() * ty.type_size();
    out[start..]
        .par_chunks_mut(row_bytes)
        .zip(values.par_chunks(row_len))
        .for_each(|(o, v)| {
            o.par_chunks_mut(bytes_per_task)
                .zip(v.par_chunks(per_task))
                .enumerate()
                .for_each(|(t, (o, v))| encoder.encode(v, t * per_task, o));
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_typed() {
        let mut out = [0.0f32; 32];
        assert_eq!(
            dequantize(GgmlType::IQ2XXS, &[0; 66], &mut out[..]),
            Err(Error::Unsupported {
                op: "dequantize",
                ty: GgmlType::IQ2XXS
            })
        );
        assert_eq!(
            dequantize(GgmlType::Q8_0, &[0; 33], &mut out),
            Err(Error::NotWholeBlocks {
                ty: GgmlType::Q8_0,
                len: 33,
                type_size: 34
            })
        );
        assert_eq!(
            dequantize(GgmlType::Q8_0, &[0; 68], &mut out),
            Err(Error::OutputLength {
                expected: 64,
                actual: 32
            })
        );
        let mut bytes = vec![7u8];
        assert_eq!(
            quantize(GgmlType::Q4_0, &[0.0; 31], &mut bytes),
            Err(Error::NotBlockMultiple {
                ty: GgmlType::Q4_0,
                n: 31,
                block_size: 32
            })
        );
        assert_eq!(
            quantize(GgmlType::I8, &[0.0; 4], &mut bytes),
            Err(Error::Unsupported {
                op: "quantize",
                ty: GgmlType::I8
            })
        );
        assert_eq!(
            quantize(GgmlType::Q4K, &[0.0; 1536 - 32], &mut bytes),
            Err(Error::NotBlockMultiple {
                ty: GgmlType::Q4K,
                n: 1504,
                block_size: 256
            })
        );
        assert_eq!(bytes, [7], "out is untouched on error");
    }

    #[test]
    fn row_errors_are_typed() {
        let mut bytes = vec![7u8];
        let x = [0.5f32; 512];
        let imp = [1.0f32; 256];
        let rows = |ty, n: usize, row_len, imp: Option<&[f32]>, out: &mut Vec<u8>| {
            quantize_rows(ty, &x[..n], row_len, imp, out)
        };
        assert_eq!(
            rows(GgmlType::Q4K, 512, 0, None, &mut bytes),
            Err(Error::RowLength {
                len: 512,
                row_len: 0
            })
        );
        assert_eq!(
            rows(GgmlType::Q4K, 500, 256, None, &mut bytes),
            Err(Error::RowLength {
                len: 500,
                row_len: 256
            })
        );
        assert_eq!(
            rows(GgmlType::Q6K, 384, 128, None, &mut bytes),
            Err(Error::NotBlockMultiple {
                ty: GgmlType::Q6K,
                n: 128,
                block_size: 256
            })
        );
        assert_eq!(
            rows(GgmlType::Q4K, 512, 256, Some(&imp[..255]), &mut bytes),
            Err(Error::Shape {
                what: "importance",
                expected: vec![256],
                actual: vec![255]
            })
        );
        let mut bad = imp;
        bad[9] = -1.0;
        assert_eq!(
            rows(GgmlType::IQ4XS, 512, 256, Some(&bad), &mut bytes),
            Err(Error::InvalidImportance {
                col: 9,
                value: -1.0
            })
        );
        bad[9] = f32::INFINITY;
        assert!(matches!(
            rows(GgmlType::Q2K, 512, 256, Some(&bad), &mut bytes),
            Err(Error::InvalidImportance { col: 9, .. })
        ));
        assert_eq!(
            rows(GgmlType::Q8_0, 512, 256, Some(&imp), &mut bytes),
            Err(Error::Unsupported {
                op: "importance-weighted quantize",
                ty: GgmlType::Q8_0
            })
        );
        assert_eq!(bytes, [7], "out is untouched on error");
        // Zero rows are fine.
        rows(GgmlType::Q4K, 0, 256, Some(&imp), &mut bytes).unwrap();
        assert_eq!(bytes, [7]);
    }

    #[test]
    fn rows_without_importance_equal_quantize() {
        let values: Vec<f32> = (0..1536).map(|i| (i as f32 * 0.37).cos()).collect();
        for ty in [GgmlType::Q3K, GgmlType::IQ4NL, GgmlType::Q8_0] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            quantize(ty, &values, &mut a).unwrap();
            quantize_rows(ty, &values, 768, None, &mut b).unwrap();
            assert_eq!(a, b, "{ty}");
        }
    }

    #[test]
    fn quantize_appends() {
        let mut bytes = vec![1u8, 2];
        quantize(GgmlType::F16, &[1.0, -2.0], &mut bytes).unwrap();
        assert_eq!(bytes, [1, 2, 0x00, 0x3c, 0x00, 0xc0]);
    }

    #[test]
    fn capability_flags_match_dispatch() {
        for &ty in GgmlType::ALL {
            assert_eq!(decoder(ty).is_ok(), ty.can_dequantize(), "{ty}");
            assert_eq!(encoder(ty).is_ok(), ty.can_quantize(), "{ty}");
            assert_eq!(
                weighted_encoder(ty).is_ok(),
                ty.can_quantize_weighted(),
                "{ty}"
            );
        }
    }

    #[test]
    fn parallel_matches_serial() {
        // Several tasks' worth plus a partial one, for every codec.
        let n = 256 * (BLOCKS_PER_TASK * 2 + 3);
        let values: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.618).sin() * (1.0 + (i % 97) as f32))
            .collect();
        for &ty in GgmlType::ALL.iter().filter(|t| t.can_quantize()) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            quantize(ty, &values, &mut a).unwrap();
            quantize_par(ty, &values, &mut b).unwrap();
            assert_eq!(a, b, "{ty}");
            let mut x = vec![0.0f32; n];
            let mut y = vec![1.0f32; n];
            dequantize(ty, &a, &mut x).unwrap();
            dequantize_par(ty, &a, &mut y).unwrap();
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{ty}"
            );
        }
    }

    #[test]
    fn parallel_rows_match_serial() {
        // Rows of several tasks plus a partial one, and many short rows.
        let long = 256 * (BLOCKS_PER_TASK * 2 + 1);
        for (rows, row_len) in [(3, long), (37, 512)] {
            let n = rows * row_len;
            let values: Vec<f32> = (0..n)
                .map(|i| (i as f32 * 0.618).sin() * (1.0 + (i % 89) as f32))
                .collect();
            let imp: Vec<f32> = (0..row_len).map(|i| 0.1 + (i % 13) as f32).collect();
            for &ty in GgmlType::ALL.iter().filter(|t| t.can_quantize_weighted()) {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                quantize_rows(ty, &values, row_len, Some(&imp), &mut a).unwrap();
                quantize_rows_par(ty, &values, row_len, Some(&imp), &mut b).unwrap();
                assert_eq!(a, b, "{ty}");
                let mut c = Vec::new();
                quantize_rows(ty, &values, row_len, None, &mut c).unwrap();
                assert_ne!(a, c, "{ty}: the importance changes the encoding");
            }
        }
    }
}
