//! Packing of integer codes into the `int32` layouts of real checkpoint
//! formats, and unpacking back.
//!
//! Codes are unsigned, `0 ..= 2^b − 1`, as a [`QuantizedTensor`](crate::QuantizedTensor)
//! holds them, and weights are `[out_features, in_features]` (`[N, K]`). Each
//! format packs along its own axis and orders its own words:
//!
//! | layout | tensor | shape | packed along | bit order |
//! |---|---|---|---|---|
//! | [`compressed_tensors`] | `weight_packed` | `[N, ⌈K·b/32⌉]` | `K` | dense stream, LSB first |
//! | | `weight_zero_point` | `[⌈N·b/32⌉, groups]` | `N` | same |
//! | [`gptq`] (v1) | `qweight` | `[K·b/32, N]` | `K` | dense stream, LSB first |
//! | | `qzeros` | `[groups, N·b/32]` | `N` | same, storing `zero − 1` |
//! | [`awq`] (GEMM) | `qweight` | `[K, N/8]` | `N` | nibble `i` holds column `[0,2,4,6,1,3,5,7][i]` |
//! | | `qzeros` | `[groups, N/8]` | `N` | same, storing `zero` |
//!
//! compressed-tensors stores signed values in offset binary (`q + 2^(b−1)`),
//! which is exactly the unsigned code; its zero points are signed
//! (`zero − 2^(b−1)`) before packing adds the same offset back, so the packed
//! zero point is the unsigned zero again. [`bitstream`] holds the two word
//! fillings (dense and word-aligned) the layouts are built from.
//!
//! ```
//! use tensorpress_quant_core::pack::{awq, compressed_tensors, gptq};
//!
//! // 32 output channels, 64 inputs, 4-bit codes.
//! let codes = ndarray::Array2::from_shape_fn((32, 64), |(n, k)| ((n + 3 * k) % 16) as u8);
//!
//! let ct = compressed_tensors::pack_weight(codes.view(), 4, Default::default())?;
//! assert_eq!(ct.dim(), (32, 8));
//! let q = gptq::pack_qweight(codes.view(), 4)?;
//! assert_eq!(q.dim(), (8, 32));
//! let a = awq::pack_qweight(codes.view(), 4)?;
//! assert_eq!(a.dim(), (64, 4));
//!
//! // Input 0 of channel n holds code n; AWQ puts channel [0,2,4,6,1,3,5,7][i]
//! // in nibble i.
//! assert_eq!(a[[0, 0]] as u32, 0x7531_6420);
//! assert_eq!(gptq::unpack_qweight(q.view(), 4, 64)?, codes);
//! assert_eq!(awq::unpack_qweight(a.view(), 4)?, codes);
//! # Ok::<(), tensorpress_quant_core::pack::PackError>(())
//! ```

pub mod awq;
pub mod bitstream;
pub mod compressed_tensors;
mod error;
pub mod gptq;

pub use error::PackError;

use ndarray::{Array2, ArrayView2};

/// How a run of codes fills words (see [`bitstream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// One bit stream; codes may straddle words.
    Dense,
    /// Whole codes per word; top bits unused.
    Aligned,
    /// Whole codes per word, code `ORDER[i]` of each run of 8 in slot `i` (AWQ, 4 bits).
    Interleaved,
}

impl Fill {
    /// Words for `n` codes.
    pub(crate) fn words(self, n: usize, bits: u8) -> Result<usize, PackError> {
        match self {
            Fill::Dense => bitstream::dense_words(n, bits),
            Fill::Aligned | Fill::Interleaved => bitstream::aligned_words(n, bits),
        }
    }

    fn pack(self, codes: &[u8], bits: u8, out: &mut [u32]) -> Result<(), PackError> {
        match self {
            Fill::Dense => bitstream::pack_dense(codes, bits, out),
            Fill::Aligned => bitstream::pack_aligned(codes, bits, out),
            Fill::Interleaved => {
                let limit = 1u16 << bits;
                if let Some(index) = codes.iter().position(|&c| u16::from(c) >= limit) {
                    return Err(PackError::Code {
                        index,
                        code: codes[index],
                        bits,
                    });
                }
                let mut ordered = Vec::with_capacity(codes.len());
                for chunk in codes.chunks(8) {
                    ordered.extend(
                        awq::ORDER
                            .iter()
                            .filter(|&&i| i < chunk.len())
                            .map(|&i| chunk[i]),
                    );
                }
                bitstream::pack_aligned(&ordered, bits, out)
            }
        }
    }

    fn unpack(self, words: &[u32], bits: u8, out: &mut [u8]) -> Result<(), PackError> {
        match self {
            Fill::Dense => bitstream::unpack_dense(words, bits, out),
            Fill::Aligned => bitstream::unpack_aligned(words, bits, out),
            Fill::Interleaved => {
                let mut ordered = vec![0u8; out.len()];
                bitstream::unpack_aligned(words, bits, &mut ordered)?;
                for (dst, src) in out.chunks_mut(8).zip(ordered.chunks(8)) {
                    let len = dst.len();
                    let slots = awq::ORDER.iter().filter(|&&i| i < len);
                    for (&i, &c) in slots.zip(src) {
                        dst[i] = c;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Packs each row of `codes` (`[rows, cols]`) into `[rows, words(cols)]`.
pub(crate) fn pack_rows(
    layout: &'static str,
    codes: ArrayView2<'_, u8>,
    bits: u8,
    fill: Fill,
) -> Result<Array2<i32>, PackError> {
    let (rows, cols) = codes.dim();
    let words = fill.words(cols, bits)?;
    let n = rows
        .checked_mul(words)
        .ok_or(PackError::Overflow { layout })?;
    let mut out = vec![0u32; n];
    let mut row = vec![0u8; cols];
    for (r, src) in codes.outer_iter().enumerate() {
        for (d, &s) in row.iter_mut().zip(src.iter()) {
            *d = s;
        }
        fill.pack(&row, bits, &mut out[r * words..(r + 1) * words])
            .map_err(|e| match e {
                PackError::Code { index, code, bits } => PackError::Code {
                    index: r * cols + index,
                    code,
                    bits,
                },
                e => e,
            })?;
    }
    let out: Vec<i32> = out.into_iter().map(|w| w as i32).collect();
    Array2::from_shape_vec((rows, words), out).map_err(|_| PackError::Overflow { layout })
}

/// Unpacks `[rows, words(cols)]` into `[rows, cols]` codes.
pub(crate) fn unpack_rows(
    layout: &'static str,
    what: &'static str,
    words: ArrayView2<'_, i32>,
    bits: u8,
    cols: usize,
    fill: Fill,
) -> Result<Array2<u8>, PackError> {
    let rows = words.nrows();
    let per_row = fill.words(cols, bits)?;
    if words.ncols() != per_row {
        return Err(PackError::Shape {
            layout,
            what,
            expected: vec![rows, per_row],
            actual: words.shape().to_vec(),
        });
    }
    let n = rows
        .checked_mul(cols)
        .ok_or(PackError::Overflow { layout })?;
    let mut out = vec![0u8; n];
    let mut row = vec![0u32; per_row];
    for (r, src) in words.outer_iter().enumerate() {
        for (d, &s) in row.iter_mut().zip(src.iter()) {
            *d = s as u32;
        }
        fill.unpack(&row, bits, &mut out[r * cols..(r + 1) * cols])?;
    }
    Array2::from_shape_vec((rows, cols), out).map_err(|_| PackError::Overflow { layout })
}

/// Fails with [`PackError::Code`] at the first code (row-major) `≥ 2^bits`.
pub(crate) fn check_codes(codes: ArrayView2<'_, u8>, bits: u8) -> Result<(), PackError> {
    let limit = 1u16 << bits;
    let cols = codes.ncols();
    match codes.indexed_iter().find(|(_, &c)| u16::from(c) >= limit) {
        Some(((r, c), &code)) => Err(PackError::Code {
            index: r * cols + c,
            code,
            bits,
        }),
        None => Ok(()),
    }
}

/// Fails with [`PackError::Bits`] unless `bits` is one of `supported`.
pub(crate) fn check_bits(
    layout: &'static str,
    bits: u8,
    supported: &[u8],
    text: &'static str,
) -> Result<(), PackError> {
    if supported.contains(&bits) {
        Ok(())
    } else {
        Err(PackError::Bits {
            layout,
            bits,
            supported: text,
        })
    }
}

/// Fails with [`PackError::NotMultiple`] unless `multiple` divides `len`.
pub(crate) fn check_multiple(
    layout: &'static str,
    what: &'static str,
    len: usize,
    multiple: usize,
) -> Result<(), PackError> {
    if len.is_multiple_of(multiple) {
        Ok(())
    } else {
        Err(PackError::NotMultiple {
            layout,
            what,
            len,
            multiple,
        })
    }
}

/// Fails with [`PackError::Shape`] unless `actual == expected`.
pub(crate) fn check_shape(
    layout: &'static str,
    what: &'static str,
    expected: [usize; 2],
    actual: &[usize],
) -> Result<(), PackError> {
    if actual == expected {
        Ok(())
    } else {
        Err(PackError::Shape {
            layout,
            what,
            expected: expected.to_vec(),
            actual: actual.to_vec(),
        })
    }
}
