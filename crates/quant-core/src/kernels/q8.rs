//! Activations quantized to int8 in blocks of 32, as GGML's Q8_0 does.

use super::{scalar, Isa, BLOCK};
use crate::{Error, Result};

/// An f32 vector quantized to int8 in blocks of [`BLOCK`] values, one f32
/// scale per block: `x ≈ d[b] · q[i]` for `i` in block `b`, with
/// `d = max|x| / 127` and `q = round(x / d)` (ties away from zero), exactly
/// GGML's Q8_0 rule. The block sums of `q` are kept for zero-point terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Vector {
    qs: Vec<i8>,
    d: Vec<f32>,
    sums: Vec<i32>,
}

impl Q8Vector {
    /// Quantizes `x` (a multiple of 32 values, all finite) at the default level.
    pub fn quantize(x: &[f32]) -> Result<Q8Vector> {
        Q8Vector::quantize_with(Isa::detect(), x)
    }

    /// Quantizes `x` at `isa`. Every level gives the same bytes (GGML's
    /// rule); AVX2 and up quantize eight values per instruction, which
    /// matters for prompts, where every token is quantized once per layer.
    pub fn quantize_with(isa: Isa, x: &[f32]) -> Result<Q8Vector> {
        isa.check()?;
        if !x.len().is_multiple_of(BLOCK) {
            return Err(Error::InvalidGroupSize {
                group: BLOCK,
                cols: x.len(),
            });
        }
        if let Some((col, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "activation",
                row: 0,
                col,
                value,
            });
        }
        let blocks = x.len() / BLOCK;
        let mut out = Q8Vector {
            qs: vec![0; x.len()],
            d: vec![0.0; blocks],
            sums: vec![0; blocks],
        };
        for (b, (xs, qs)) in x
            .chunks_exact(BLOCK)
            .zip(out.qs.chunks_exact_mut(BLOCK))
            .enumerate()
        {
            let (d, sum) = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX2+FMA); both chunks
                    // are one block long.
                    unsafe {
                        super::x86_int8::quantize_block_q8(
                            xs.try_into().expect("one block"),
                            qs.try_into().expect("one block"),
                        )
                    }
                }
                _ => {
                    let d = scalar::quantize_block_q8(xs, qs);
                    (d, qs.iter().map(|&q| q as i32).sum())
                }
            };
            out.d[b] = d;
            out.sums[b] = sum;
        }
        Ok(out)
    }

    /// Values.
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }

    /// The int8 codes.
    pub fn codes(&self) -> &[i8] {
        &self.qs
    }

    /// One scale per block of 32.
    pub fn scales(&self) -> &[f32] {
        &self.d
    }

    /// The sum of each block's codes.
    pub fn block_sums(&self) -> &[i32] {
        &self.sums
    }

    /// The values the codes stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        self.qs
            .chunks_exact(BLOCK)
            .zip(&self.d)
            .flat_map(|(q, &d)| q.iter().map(move |&q| d * q as f32))
            .collect()
    }
}
