//! [`GgmlMatrix`]: a GGUF tensor of GGML blocks, multiplied in place.

use super::scalar::{self, NIB_BYTES, Q4_0_BYTES, Q8_0_BYTES};
use super::{check_len, check_rows, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::{unit_offsets_q8, unit_x_f32, unit_x_q8};
use crate::ggml::GgmlType;
use crate::{Error, Result};

/// A `[rows, cols]` weight of GGML blocks, row after row, as a GGUF file
/// holds it (a GGUF tensor of shape `[cols, rows]`).
///
/// Q8_0 blocks are kept as they are. Q4_0 blocks are split on construction
/// into their nibbles (16 bytes per block, contiguous) and their f16 scales
/// (one array): the same bytes, but the kernels then read whole cache lines
/// of codes, as llama.cpp's repacked layouts do. [`GgmlMatrix::to_bytes`]
/// gives the GGUF blocks back, bit for bit.
///
/// The kernels run Q4_0 and Q8_0; other types fail at construction with
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
    /// Blocks as in the file, `row_bytes` per row.
    Blocks { row_bytes: usize, bytes: Vec<u8> },
}

impl GgmlMatrix {
    /// The types the kernels run.
    pub const TYPES: &'static [GgmlType] = &[GgmlType::Q4_0, GgmlType::Q8_0];

    /// Wraps `bytes`: `rows` rows of `cols` values of type `ty`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<GgmlMatrix> {
        if !Self::TYPES.contains(&ty) {
            return Err(Error::Unsupported { op: "kernels", ty });
        }
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::NotBlockMultiple {
                ty,
                n: cols,
                block_size: BLOCK,
            });
        }
        let row_bytes = ty.row_bytes(cols)?;
        let len = rows.checked_mul(row_bytes).ok_or(Error::Overflow)?;
        check_len("GGML bytes", len, bytes.len())?;
        let store = match ty {
            GgmlType::Q4_0 => {
                let blocks = bytes.len() / Q4_0_BYTES;
                let mut qs = Vec::with_capacity(blocks * NIB_BYTES);
                let mut d = Vec::with_capacity(blocks);
                for blk in bytes.chunks_exact(Q4_0_BYTES) {
                    d.push(u16::from_le_bytes([blk[0], blk[1]]));
                    qs.extend_from_slice(&blk[2..]);
                }
                Store::Q4_0 { qs, d }
            }
            _ => Store::Blocks { row_bytes, bytes },
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
            Store::Blocks { row_bytes, bytes } => {
                let bytes = &bytes[first * row_bytes..(first + n) * row_bytes];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => {
                        // SAFETY: as above; `bytes` holds the blocks of `out`.
                        unsafe { super::x86::q8_0_dequant(bytes, out) }
                    }
                    _ => scalar::q8_0_dequant(bytes, out),
                }
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
                            unsafe { super::x86::q4_0_dot_f32_units(qs, d, &xr, x) }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C).
                            unsafe { super::x86::q4_0_dot_f32(qs, d, x) }
                        }
                        _ => scalar::q4_0_dot_f32(qs, d, x),
                    }
                });
            }
            Store::Blocks { row_bytes, bytes } => {
                let row = |r: usize| &bytes[r * row_bytes..(r + 1) * row_bytes];
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => {
                        // SAFETY: `isa.check()` passed (AVX2+FMA+F16C); the row
                        // holds the blocks of `cols` values and `x` has `cols`.
                        unsafe { super::x86::q8_0_dot_f32(row(r), x) }
                    }
                    _ => scalar::q8_0_dot_f32(row(r), x),
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
                                super::x86::q4_0_dot_q8_units(qs, d, &xu, &xd4, &offsets, xq, xd)
                            }
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => {
                            // SAFETY: `isa.check()` passed (AVX2+FMA+F16C).
                            unsafe { super::x86::q4_0_dot_q8(qs, d, xq, xd) }
                        }
                        _ => scalar::q4_0_dot_q8(qs, d, xq, xd),
                    }
                });
            }
            Store::Blocks { row_bytes, bytes } => {
                let row = |r: usize| &bytes[r * row_bytes..(r + 1) * row_bytes];
                par_rows(y, self.weight_bytes() / self.rows.max(1), |r| match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::Avx512 => {
                        // SAFETY: `isa.check()` passed (AVX2+FMA+F16C); the
                        // row and the activation blocks match in count.
                        unsafe { super::x86::q8_0_dot_q8(row(r), xq, xd) }
                    }
                    _ => scalar::q8_0_dot_q8(row(r), xq, xd),
                });
            }
        }
        Ok(())
    }
}

// Block sizes the kernels assume, checked against the codec's table.
const _: () = assert!(Q4_0_BYTES == 18 && Q8_0_BYTES == 34);
