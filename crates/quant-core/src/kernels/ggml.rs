//! [`GgmlMatrix`]: a GGUF tensor of GGML blocks, multiplied in place.
//!
//! Types and levels: Q4_0 and Q4_1 run scalar, AVX2 and AVX-512 (unit)
//! kernels; Q8_0, Q5_0, IQ4_NL, Q4_K, Q5_K and Q6_K run scalar and AVX2
//! kernels, and `Isa::Avx512` runs their AVX2 code, except the f32
//! products of Q4_K and Q6_K, which have AVX-512 variants.

use super::ggml_rows::{self, BlockKind, XF32, XQ8};
use super::scalar::{self, NIB_BYTES, Q4_0_BYTES, Q8_0_BYTES};
use super::scalar_legacy::{self as sl, Q4_1Row, Q4_1_BYTES};
use super::{check_len, check_rows, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::{unit_offsets_q8, unit_x_f32, unit_x_q8, x86_legacy as xl};
use crate::ggml::GgmlType;
use crate::{Error, Result};

/// A `[rows, cols]` weight of GGML blocks, row after row, as a GGUF file
/// holds it (a GGUF tensor of shape `[cols, rows]`).
///
/// Q4_0 and Q4_1 blocks are split on construction into their nibbles (16
/// bytes per block, contiguous) and their f16 scales (and minima), each in
/// one array: the same bytes, but the kernels then read whole cache lines
/// of codes, as llama.cpp's repacked layouts do. The other types keep their
/// blocks as they are. [`GgmlMatrix::to_bytes`] gives the GGUF blocks back,
/// bit for bit.
///
/// The kernels run the types in [`GgmlMatrix::TYPES`] (Q4_0, Q4_1, Q5_0,
/// Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K); other types fail at construction with
/// [`Error::Unsupported`] (dequantize them with [`crate::ggml::dequantize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    store: Store,
}

#[derive(Debug, Clone, PartialEq)]
enum Store {
    /// Q4_0: each block's 16 nibble bytes, then (separately) its f16 scale bits.
    Q4_0 { qs: Vec<u8>, d: Vec<u16> },
    /// Q4_1: nibbles, f16 scales and f16 minima, each contiguous.
    Q4_1 {
        qs: Vec<u8>,
        d: Vec<u16>,
        m: Vec<u16>,
    },
    /// Blocks as in the file, `row_bytes` per row.
    Blocks {
        kind: BlockKind,
        row_bytes: usize,
        bytes: Vec<u8>,
    },
}

/// The f16 at `b[at..at + 2]` as bits.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl GgmlMatrix {
    /// The types the kernels run.
    pub const TYPES: &'static [GgmlType] = &[
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::IQ4NL,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Wraps `bytes`: `rows` rows of `cols` values of type `ty`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<GgmlMatrix> {
        if !Self::TYPES.contains(&ty) {
            return Err(Error::Unsupported { op: "kernels", ty });
        }
        let block_size = ty.block_size();
        if !cols.is_multiple_of(block_size) {
            return Err(Error::NotBlockMultiple {
                ty,
                n: cols,
                block_size,
            });
        }
        let row_bytes = ty.row_bytes(cols)?;
        let len = rows.checked_mul(row_bytes).ok_or(Error::Overflow)?;
        check_len("GGML bytes", len, bytes.len())?;
        let store = match (ty, BlockKind::of(ty)) {
            (GgmlType::Q4_0, _) => {
                let blocks = bytes.len() / Q4_0_BYTES;
                let mut qs = Vec::with_capacity(blocks * NIB_BYTES);
                let mut d = Vec::with_capacity(blocks);
                for blk in bytes.chunks_exact(Q4_0_BYTES) {
                    d.push(u16_at(blk, 0));
                    qs.extend_from_slice(&blk[2..]);
                }
                Store::Q4_0 { qs, d }
            }
            (GgmlType::Q4_1, _) => {
                let blocks = bytes.len() / Q4_1_BYTES;
                let mut qs = Vec::with_capacity(blocks * NIB_BYTES);
                let (mut d, mut m) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
                for blk in bytes.chunks_exact(Q4_1_BYTES) {
                    d.push(u16_at(blk, 0));
                    m.push(u16_at(blk, 2));
                    qs.extend_from_slice(&blk[4..]);
                }
                Store::Q4_1 { qs, d, m }
            }
            (_, Some(kind)) => Store::Blocks {
                kind,
                row_bytes,
                bytes,
            },
            (_, None) => return Err(Error::Unsupported { op: "kernels", ty }),
        };
        Ok(GgmlMatrix {
            ty,
            rows,
            cols,
            store,
        })
    }

    /// Encodes an f32 `[rows, cols]` weight (GGML's reference quantizer).
    pub fn quantize(ty: GgmlType, rows: usize, cols: usize, w: &[f32]) -> Result<GgmlMatrix> {
        check_len(
            "weight",
            rows.checked_mul(cols).ok_or(Error::Overflow)?,
            w.len(),
        )?;
        let mut bytes = Vec::new();
        crate::ggml::quantize_par(ty, w, &mut bytes)?;
        GgmlMatrix::new(ty, rows, cols, bytes)
    }

    /// The block type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// The GGUF blocks, exactly the bytes the matrix was made from.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.store {
            Store::Q4_0 { qs, d } => {
                let mut out = Vec::with_capacity(d.len() * Q4_0_BYTES);
                for (q, d) in qs.chunks_exact(NIB_BYTES).zip(d) {
                    out.extend_from_slice(&d.to_le_bytes());
                    out.extend_from_slice(q);
                }
                out
            }
            Store::Q4_1 { qs, d, m } => {
                let mut out = Vec::with_capacity(d.len() * Q4_1_BYTES);
                for ((q, d), m) in qs.chunks_exact(NIB_BYTES).zip(d).zip(m) {
                    out.extend_from_slice(&d.to_le_bytes());
                    out.extend_from_slice(&m.to_le_bytes());
                    out.extend_from_slice(q);
                }
                out
            }
            Store::Blocks { bytes, .. } => bytes.clone(),
        }
    }

    /// Row `r` of a Q4_0 matrix: (nibbles, scales).
    fn q4_row<'a>(&self, qs: &'a [u8], d: &'a [u16], r: usize) -> (&'a [u8], &'a [u16]) {
        let blocks = self.cols / BLOCK;
        (
            &qs[r * blocks * NIB_BYTES..(r + 1) * blocks * NIB_BYTES],
            &d[r * blocks..(r + 1) * blocks],
        )
    }

    /// Row `r` of a Q4_1 matrix.
    fn q4_1_row<'a>(&self, qs: &'a [u8], d: &'a [u16], m: &'a [u16], r: usize) -> Q4_1Row<'a> {
        let blocks = self.cols / BLOCK;
        let (qs, d) = self.q4_row(qs, d, r);
        Q4_1Row {
            qs,
            d,
            m: &m[r * blocks..(r + 1) * blocks],
        }
    }
}

impl QuantMatrix for GgmlMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        match &self.store {
            Store::Q4_0 { qs, d } => qs.len() + 2 * d.len(),
            Store::Q4_1 { qs, d, m } => qs.len() + 2 * d.len() + 2 * m.len(),
            Store::Blocks { bytes, .. } => bytes.len(),
        }
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        let n = check_rows(self.rows, self.cols, first, out)?;
        match &self.store {
            Store::Q4_0 { qs, d } => {
                for (r, o) in (first..first + n).zip(out.chunks_exact_mut(self.cols)) {
                    let (qs, d) = self.q4_row(qs, d, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 | Isa::Avx512 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C);
                            // the row holds the blocks of `o`'s `cols` values.
                            unsafe { super::x86::q4_0_dequant(qs, d, o) }
                        }
                        _ => scalar::q4_0_dequant(qs, d, o),
                    }
                }
            }
            Store::Q4_1 { qs, d, m } => {
                for (r, o) in (first..first + n).zip(out.chunks_exact_mut(self.cols)) {
                    let row = self.q4_1_row(qs, d, m, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 | Isa::Avx512 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C);
                            // the row holds the blocks of `o`'s `cols` values.
                            unsafe { xl::q4_1_dequant(&row, o) }
                        }
                        _ => sl::q4_1_dequant(&row, o),
                    }
                }
            }
            Store::Blocks {
                kind,
                row_bytes,
                bytes,
            } => {
                let bytes = &bytes[first * row_bytes..(first + n) * row_bytes];
                ggml_rows::dequant(*kind, isa, bytes, out);
            }
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        match &self.store {
            Store::Q4_0 { qs, d } => {
                #[cfg(target_arch = "x86_64")]
                let xr = if isa == Isa::Avx512 {
                    unit_x_f32(x)
                } else {
                    Vec::new()
                };
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    let (qs, d) = self.q4_row(qs, d, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/DQ,
                            // AVX2, FMA, F16C); `xr` is `unit_x_f32(x)` and
                            // `x` has the row's `cols` values.
                            unsafe { super::x86::q4_0_dot_f32_units::<8>(qs, d, &xr, x) }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C).
                            unsafe { super::x86::q4_0_dot_f32::<8>(qs, d, x) }
                        }
                        _ => scalar::q4_0_dot_f32(qs, d, x),
                    }
                });
            }
            Store::Q4_1 { qs, d, m } => {
                #[cfg(target_arch = "x86_64")]
                let (xsum, xr) = (
                    ggml_rows::block_sums_f32(x),
                    if isa == Isa::Avx512 {
                        unit_x_f32(x)
                    } else {
                        Vec::new()
                    },
                );
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    let row = self.q4_1_row(qs, d, m, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/DQ,
                            // AVX2, FMA, F16C); `xr` is `unit_x_f32(x)`, `xsum`
                            // the block sums of `x`, which has `cols` values.
                            unsafe { xl::q4_1_dot_f32_units(&row, &xr, x, &xsum) }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C);
                            // `xsum` is the block sums of `x`.
                            unsafe { xl::q4_1_dot_f32(&row, x, &xsum) }
                        }
                        _ => sl::q4_1_dot_f32(&row, x),
                    }
                });
            }
            Store::Blocks {
                kind,
                row_bytes,
                bytes,
            } => {
                let xs = XF32::new(*kind, x);
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    ggml_rows::dot_f32(*kind, isa, &bytes[r * row_bytes..(r + 1) * row_bytes], &xs)
                });
            }
        }
        Ok(())
    }

    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let (xq, xd) = (x.codes(), x.scales());
        match &self.store {
            Store::Q4_0 { qs, d } => {
                #[cfg(target_arch = "x86_64")]
                let ((xu, xd4), offsets) = if isa == Isa::Avx512 {
                    (unit_x_q8(xq, xd), unit_offsets_q8(x.block_sums(), 8))
                } else {
                    ((Vec::new(), Vec::new()), Vec::new())
                };
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    let (qs, d) = self.q4_row(qs, d, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            // SAFETY: `isa.check()` passed (AVX-512
                            // F/BW/VL/VNNI/DQ, AVX2, FMA, F16C); `xu`, `xd4`
                            // and `offsets` are the unit forms of the
                            // activation blocks, which match the row.
                            unsafe {
                                super::x86::q4_0_dot_q8_units::<8>(
                                    qs, d, &xu, &xd4, &offsets, xq, xd,
                                )
                            }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C).
                            unsafe { super::x86::q4_0_dot_q8::<8>(qs, d, xq, xd) }
                        }
                        _ => scalar::q4_0_dot_q8(qs, d, xq, xd),
                    }
                });
            }
            Store::Q4_1 { qs, d, m } => {
                #[cfg(target_arch = "x86_64")]
                let (xms, (xu, xd4), zeros) = (
                    ggml_rows::block_sums_q8(x),
                    if isa == Isa::Avx512 {
                        unit_x_q8(xq, xd)
                    } else {
                        (Vec::new(), Vec::new())
                    },
                    vec![0i32; xd.len() / 4 * 16],
                );
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    let row = self.q4_1_row(qs, d, m, r);
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => {
                            let u = xl::UnitQ8 {
                                xu: &xu,
                                xd4: &xd4,
                                zeros: &zeros,
                            };
                            // SAFETY: `isa.check()` passed (AVX-512
                            // F/BW/VL/VNNI/DQ, AVX2, FMA, F16C); `u` holds the
                            // unit forms of the activation blocks, which match
                            // the row, and `xms` their `d · Σ q`.
                            unsafe { xl::q4_1_dot_q8_units(&row, &u, xq, xd, &xms) }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C);
                            // `xms` is the activation blocks' `d · Σ q`.
                            unsafe { xl::q4_1_dot_q8(&row, xq, xd, &xms) }
                        }
                        _ => sl::q4_1_dot_q8(&row, xq, xd, x.block_sums()),
                    }
                });
            }
            Store::Blocks {
                kind,
                row_bytes,
                bytes,
            } => {
                let xs = XQ8::new(*kind, x);
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                    ggml_rows::dot_q8(*kind, isa, &bytes[r * row_bytes..(r + 1) * row_bytes], &xs)
                });
            }
        }
        Ok(())
    }
}

// Block sizes the kernels assume, checked against the codec's table.
const _: () = assert!(Q4_0_BYTES == 18 && Q4_1_BYTES == 20 && Q8_0_BYTES == 34);
