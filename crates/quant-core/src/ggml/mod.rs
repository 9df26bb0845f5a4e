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
//! | k-quants, i-quants, others | not yet | not yet |
//!
//! Both directions are bit-exact with the numpy reference in the `gguf` Python
//! package (`gguf/quants.py`), which is in turn bit-exact with `ggml-quants.c`.
//! The golden tests in `tests/ggml_golden.rs` check this on vectors that
//! `scripts/golden/gguf_codecs.py` produced with that package, including real
//! blocks of SmolLM2.
//!
//! The kernels are scalar; [`dequantize_par`] and [`quantize_par`] split large
//! buffers over rayon's thread pool.

mod legacy;
mod plain;
mod types;

use rayon::prelude::*;

pub use plain::f32_to_bf16_bits;
pub use types::{GgmlType, QK_K};

use crate::{Error, Result};

/// A block decoder over whole blocks.
type DecodeFn = fn(&[u8], &mut [f32]);
/// A block encoder over whole blocks.
type EncodeFn = fn(&[f32], &mut [u8]);

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
        _ => {
            return Err(Error::Unsupported {
                op: "dequantize",
                ty,
            })
        }
    })
}

fn encoder(ty: GgmlType) -> Result<EncodeFn> {
    Ok(match ty {
        GgmlType::F32 => plain::quantize_f32,
        GgmlType::F16 => plain::quantize_f16,
        GgmlType::BF16 => plain::quantize_bf16,
        GgmlType::Q4_0 => legacy::quant::q4_0,
        GgmlType::Q4_1 => legacy::quant::q4_1,
        GgmlType::Q5_0 => legacy::quant::q5_0,
        GgmlType::Q5_1 => legacy::quant::q5_1,
        GgmlType::Q8_0 => legacy::quant::q8_0,
        _ => return Err(Error::Unsupported { op: "quantize", ty }),
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

/// Blocks per parallel task: large enough that scheduling costs nothing.
const BLOCKS_PER_TASK: usize = 2048;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_typed() {
        let mut out = [0.0f32; 32];
        assert_eq!(
            dequantize(GgmlType::Q6K, &[0; 210], &mut out[..]),
            Err(Error::Unsupported {
                op: "dequantize",
                ty: GgmlType::Q6K
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
        assert_eq!(bytes, [7], "out is untouched on error");
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
        }
    }

    #[test]
    fn parallel_matches_serial() {
        // Several tasks' worth plus a partial one, for every codec.
        let n = 32 * (BLOCKS_PER_TASK * 2 + 3) * 2;
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
}
