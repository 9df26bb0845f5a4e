//! [`Int4Matrix`]: 4-bit integer weights with a scale and zero point per group.

use super::groups::{quantized_params, Groups};
use super::scalar::{self, Int4Row, NIB_BYTES};
use super::{check_len, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::{unit_x_f32, unit_x_q8, UNIT};
use crate::{Error, QuantizedTensor, Result};

/// A `[rows, cols]` weight of 4-bit codes `q` with `w = scale · (q − zero)`
/// per group of `group` input columns: the layout of compressed-tensors'
/// `pack-quantized` int4, GPTQ and AWQ checkpoints, symmetric or not, with
/// fractional zero points (HQQ) allowed.
///
/// Stored as GGML's nibble blocks (byte `j` of a block of 32 holds codes `j`
/// and `j + 16`) with `scale` and `min = −scale · zero` per group in f32, so a
/// row's product is `Σ_g scale_g Σ q·x + min_g Σ x`. An act-order weight
/// (GPTQ's `g_idx`) is stored with its columns sorted by group, and products
/// gather `x` in that order ([`QuantMatrix::input_order`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Matrix {
    groups: Groups,
    qs: Vec<u8>,
}

impl Int4Matrix {
    /// Builds the matrix from unpacked codes (`[rows, cols]`, each 0–15),
    /// scales and zero points (`[rows, ⌈cols / group⌉]`, zero points in code
    /// units) and an optional group index per column (act-order).
    ///
    /// `cols` and `group` must be multiples of 32; a last group narrower than
    /// `group` is allowed (SmolLM2's 576 columns in groups of 128). With
    /// `g_idx`, group `g` must hold exactly the columns group `g` would hold
    /// in natural order.
    pub fn from_codes(
        rows: usize,
        cols: usize,
        group: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: &[f32],
        g_idx: Option<&[u32]>,
    ) -> Result<Int4Matrix> {
        let groups = Groups::new(
            rows,
            cols,
            group,
            codes.len(),
            scales,
            zeros,
            g_idx,
            |s, z| -s * z,
        )?;
        if let Some(code) = codes.iter().copied().find(|&c| c > 15) {
            return Err(Error::CodeRange { code, bits: 4 });
        }
        let mut qs = vec![0u8; rows * cols / 2];
        for (r, out) in qs.chunks_exact_mut(cols / 2).enumerate() {
            let row = &codes[r * cols..(r + 1) * cols];
            for (b, blk) in out.chunks_exact_mut(NIB_BYTES).enumerate() {
                for (j, byte) in blk.iter_mut().enumerate() {
                    let c = b * BLOCK + j;
                    *byte = groups.stored(row, c) | (groups.stored(row, c + NIB_BYTES) << 4);
                }
            }
        }
        Ok(Int4Matrix { groups, qs })
    }

    /// Builds the matrix from a 4-bit integer [`QuantizedTensor`] (any
    /// quantizer: RTN, GPTQ with or without act-order, AWQ, HQQ).
    pub fn from_quantized(q: &QuantizedTensor) -> Result<Int4Matrix> {
        let (group, scales, zeros) = quantized_params(q, 4, "4-bit integers")?;
        let [rows, cols] = q.shape();
        Int4Matrix::from_codes(rows, cols, group, q.codes(), &scales, &zeros, q.g_idx())
    }

    /// Columns per group.
    pub fn group_size(&self) -> usize {
        self.groups.group
    }

    /// The packed codes, `cols / 2` bytes per row, row after row, in stored
    /// column order ([`QuantMatrix::input_order`]): blocks of 32 columns of
    /// 16 bytes each, byte `j` of a block holding the code of column `j` in
    /// its low nibble and that of column `j + 16` in its high nibble (GGML's
    /// Q4_0 order). For other backends (GPU) that upload the matrix as is.
    pub fn packed_codes(&self) -> &[u8] {
        &self.qs
    }

    /// The group parameters, `2 · ⌈cols / group⌉` values per row: the row's
    /// group scales, then its group mins, so that a stored column `c` of
    /// row `r` dequantizes to `scale[r][c / group] · q + min[r][c / group]`.
    /// For other backends (GPU) that upload the matrix as is.
    pub fn group_params(&self) -> &[f32] {
        &self.groups.params
    }

    fn row(&self, r: usize) -> Int4Row<'_> {
        let half = self.groups.cols / 2;
        Int4Row {
            qs: &self.qs[r * half..(r + 1) * half],
            scales: self.groups.scales(r),
            mins: self.groups.mins(r),
            group: self.groups.group,
        }
    }
}

impl QuantMatrix for Int4Matrix {
    fn rows(&self) -> usize {
        self.groups.rows
    }

    fn cols(&self) -> usize {
        self.groups.cols
    }

    fn weight_bytes(&self) -> usize {
        self.qs.len() + 4 * self.groups.params.len()
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        self.groups.dequantize_rows(first, out, |r, dst| match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                // SAFETY: `isa.check()` passed (AVX2+FMA); the row and `dst`
                // hold `cols` values, a whole number of blocks.
                unsafe { super::x86::int4_dequant(&self.row(r), dst) }
            }
            _ => scalar::int4_dequant(&self.row(r), dst),
        })
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.groups.cols, x.len())?;
        check_len("y", self.groups.rows, y.len())?;
        let x = self.groups.gather(x);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.groups.group.is_multiple_of(UNIT) {
            let xr = unit_x_f32(&x);
            par_rows(y, self.weight_bytes() / self.groups.rows.max(1), |r| {
                // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/DQ, AVX2,
                // FMA); `xr` is `unit_x_f32` of `x`, which has `cols` values;
                // the group is a multiple of a unit.
                unsafe { super::x86::int4_dot_f32_units(&self.row(r), &xr, &x) }
            });
            return Ok(());
        }
        let xgsum: Vec<f32> = x
            .chunks(self.groups.group)
            .map(|g| g.iter().sum())
            .collect();
        par_rows(
            y,
            self.weight_bytes() / self.groups.rows.max(1),
            |r| match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/VNNI, AVX2, FMA);
                    // the row, `x` and `xgsum` have the matrix's sizes.
                    unsafe { super::x86::int4_dot_f32_512(&self.row(r), &x, &xgsum) }
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => {
                    // SAFETY: as above, AVX2+FMA.
                    unsafe { super::x86::int4_dot_f32(&self.row(r), &x, &xgsum) }
                }
                _ => scalar::int4_dot_f32(&self.row(r), &x),
            },
        );
        Ok(())
    }

    fn input_order(&self) -> Option<&[u32]> {
        self.groups.perm.as_deref()
    }

    fn quantize_input(&self, x: &[f32]) -> Result<Q8Vector> {
        check_len("x", self.groups.cols, x.len())?;
        Q8Vector::quantize(&self.groups.gather(x))
    }

    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.groups.cols, x.len())?;
        check_len("y", self.groups.rows, y.len())?;
        let (xq, xd) = (x.codes(), x.scales());
        let xgsum = self.groups.q8_group_sums(x);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.groups.group.is_multiple_of(UNIT) {
            let (xu, xd4) = unit_x_q8(xq, xd);
            par_rows(y, self.weight_bytes() / self.groups.rows.max(1), |r| {
                // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/VNNI/DQ, AVX2,
                // FMA); `xu`/`xd4` are `unit_x_q8` of the activation blocks,
                // which match the row; the group is a multiple of a unit.
                unsafe { super::x86::int4_dot_q8_units(&self.row(r), &xu, &xd4, xq, xd, &xgsum) }
            });
            return Ok(());
        }
        par_rows(
            y,
            self.weight_bytes() / self.groups.rows.max(1),
            |r| match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/VNNI, AVX2, FMA);
                    // the row and the activation blocks have the matrix's sizes.
                    unsafe { super::x86::int4_dot_q8_512(&self.row(r), xq, xd, &xgsum) }
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => {
                    // SAFETY: as above, AVX2+FMA.
                    unsafe { super::x86::int4_dot_q8(&self.row(r), xq, xd, &xgsum) }
                }
                _ => scalar::int4_dot_q8(&self.row(r), xq, xd, x.block_sums()),
            },
        );
        Ok(())
    }
}
