//! [`GgmlMatrix`]: a GGUF tensor of GGML blocks, multiplied in place.

use super::scalar::{self, Q4_0_BYTES, Q8_0_BYTES};
use super::{check_len, check_rows, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
use crate::ggml::GgmlType;
use crate::{Error, Result};

/// A `[rows, cols]` weight stored as GGML blocks, row after row, exactly as
/// a GGUF file holds it (a GGUF tensor of shape `[cols, rows]`).
///
/// The kernels run Q4_0 and Q8_0; other types fail at construction with
/// [`Error::Unsupported`] (dequantize them with [`crate::ggml::dequantize`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    bytes: Vec<u8>,
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
        Ok(GgmlMatrix {
            ty,
            rows,
            cols,
            row_bytes,
            bytes,
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

    /// The encoded blocks.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
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
        self.bytes.len()
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        let n = check_rows(self.rows, self.cols, first, out)?;
        let bytes = &self.bytes[first * self.row_bytes..(first + n) * self.row_bytes];
        match (isa, self.ty) {
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2 | Isa::Avx512, GgmlType::Q4_0) => {
                // SAFETY: `isa.check()` passed (AVX2+FMA); `bytes` holds the
                // blocks of the `out.len()` values.
                unsafe { super::x86::q4_0_dequant(bytes, out) }
            }
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2 | Isa::Avx512, _) => {
                // SAFETY: as above.
                unsafe { super::x86::q8_0_dequant(bytes, out) }
            }
            (_, GgmlType::Q4_0) => scalar::q4_0_dequant(bytes, out),
            _ => scalar::q8_0_dequant(bytes, out),
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let q4 = self.ty == GgmlType::Q4_0;
        par_rows(y, |r| match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                // SAFETY: `isa.check()` passed (AVX2+FMA); the row holds the
                // blocks of `cols` values and `x` has `cols`.
                unsafe {
                    if q4 {
                        super::x86::q4_0_dot_f32(self.row(r), x)
                    } else {
                        super::x86::q8_0_dot_f32(self.row(r), x)
                    }
                }
            }
            _ if q4 => scalar::q4_0_dot_f32(self.row(r), x),
            _ => scalar::q8_0_dot_f32(self.row(r), x),
        });
        Ok(())
    }

    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let (xq, xd, sums) = (x.codes(), x.scales(), x.block_sums());
        let q4 = self.ty == GgmlType::Q4_0;
        // The VNNI Q4_0 kernel keeps codes unsigned and starts each block's
        // integer sum at −Σ x_q (per lane: 8 lanes per block), taking off
        // the offset 8 without extra instructions.
        let lane_offsets: Vec<i32> = if q4 && isa == Isa::Avx512 {
            sums.iter().flat_map(|&s| [-s; 8]).collect()
        } else {
            Vec::new()
        };
        par_rows(y, |r| match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if q4 => {
                // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/VNNI, AVX2,
                // FMA); the row, the activation blocks and `lane_offsets`
                // (8 per block) match in count.
                unsafe { super::x86::q4_0_dot_q8_512(self.row(r), xq, xd, &lane_offsets) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                // SAFETY: as above, AVX2+FMA.
                unsafe {
                    if q4 {
                        super::x86::q4_0_dot_q8(self.row(r), xq, xd)
                    } else {
                        super::x86::q8_0_dot_q8(self.row(r), xq, xd)
                    }
                }
            }
            _ if q4 => scalar::q4_0_dot_q8(self.row(r), xq, xd),
            _ => scalar::q8_0_dot_q8(self.row(r), xq, xd),
        });
        Ok(())
    }
}

// Block sizes the kernels assume, checked against the codec's table.
const _: () = assert!(Q4_0_BYTES == 18 && Q8_0_BYTES == 34);
