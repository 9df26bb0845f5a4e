//! [`Int4Matrix`]: 4-bit integer weights with a scale and zero point per group.

use std::borrow::Cow;

use super::scalar::{self, Int4Row, NIB_BYTES};
use super::{check_len, check_rows, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::{unit_x_f32, unit_x_q8, UNIT};
use crate::spec::Format;
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
    rows: usize,
    cols: usize,
    group: usize,
    qs: Vec<u8>,
    /// Per row: the row's group scales, then its group mins (one stream of
    /// parameters next to the codes instead of two).
    params: Vec<f32>,
    perm: Option<Vec<u32>>,
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
        if group == 0 || !group.is_multiple_of(BLOCK) || !cols.is_multiple_of(BLOCK) {
            return Err(Error::InvalidGroupSize { group, cols });
        }
        let groups = cols.div_ceil(group);
        check_len(
            "codes",
            rows.checked_mul(cols).ok_or(Error::Overflow)?,
            codes.len(),
        )?;
        check_len("scales", rows * groups, scales.len())?;
        check_len("zeros", rows * groups, zeros.len())?;
        if let Some(code) = codes.iter().copied().find(|&c| c > 15) {
            return Err(Error::CodeRange { code, bits: 4 });
        }
        for (what, v) in [("scales", scales), ("zeros", zeros)] {
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    row: i / groups,
                    col: i % groups,
                    value: v[i],
                });
            }
        }
        let perm = match g_idx {
            None => None,
            Some(g_idx) => act_order(g_idx, cols, group)?,
        };
        let mut qs = vec![0u8; rows * cols / 2];
        for (r, out) in qs.chunks_exact_mut(cols / 2).enumerate() {
            let row = &codes[r * cols..(r + 1) * cols];
            let code = |j: usize| match &perm {
                Some(p) => row[p[j] as usize],
                None => row[j],
            };
            for (b, blk) in out.chunks_exact_mut(NIB_BYTES).enumerate() {
                for (j, byte) in blk.iter_mut().enumerate() {
                    let c = b * BLOCK + j;
                    *byte = code(c) | (code(c + NIB_BYTES) << 4);
                }
            }
        }
        let mut params = Vec::with_capacity(2 * scales.len());
        for (s, z) in scales.chunks(groups).zip(zeros.chunks(groups)) {
            params.extend_from_slice(s);
            params.extend(s.iter().zip(z).map(|(s, z)| -s * z));
        }
        Ok(Int4Matrix {
            rows,
            cols,
            group,
            qs,
            params,
            perm,
        })
    }

    /// Builds the matrix from a 4-bit integer [`QuantizedTensor`] (any
    /// quantizer: RTN, GPTQ with or without act-order, AWQ, HQQ).
    pub fn from_quantized(q: &QuantizedTensor) -> Result<Int4Matrix> {
        if q.spec().format != (Format::Int { bits: 4 }) {
            return Err(Error::InvalidOption {
                option: "format",
                value: q.spec().format.to_string(),
                expected: "4-bit integers",
            });
        }
        let [rows, cols] = q.shape();
        let group = q.group_size();
        if group == 0 {
            return Err(Error::InvalidGroupSize { group, cols });
        }
        let groups = cols.div_ceil(group);
        let mut scales = Vec::with_capacity(rows * groups);
        let mut zeros = Vec::with_capacity(rows * groups);
        for r in 0..rows {
            for g in 0..groups {
                let p = q.params(r, g);
                scales.push(p.scale);
                zeros.push(p.zero);
            }
        }
        Int4Matrix::from_codes(rows, cols, group, q.codes(), &scales, &zeros, q.g_idx())
    }

    /// Columns per group.
    pub fn group_size(&self) -> usize {
        self.group
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
        &self.params
    }

    fn row(&self, r: usize) -> Int4Row<'_> {
        let groups = self.cols.div_ceil(self.group);
        Int4Row {
            qs: &self.qs[r * self.cols / 2..(r + 1) * self.cols / 2],
            scales: &self.params[2 * r * groups..(2 * r + 1) * groups],
            mins: &self.params[(2 * r + 1) * groups..(2 * r + 2) * groups],
            group: self.group,
        }
    }

    /// `x` in stored column order.
    fn gather<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        match &self.perm {
            Some(p) => Cow::Owned(p.iter().map(|&c| x[c as usize]).collect()),
            None => Cow::Borrowed(x),
        }
    }
}

impl QuantMatrix for Int4Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        self.qs.len() + 4 * self.params.len()
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        let n = check_rows(self.rows, self.cols, first, out)?;
        let mut row_buf = vec![0.0f32; if self.perm.is_some() { self.cols } else { 0 }];
        for (r, o) in (first..first + n).zip(out.chunks_exact_mut(self.cols)) {
            let dst: &mut [f32] = if self.perm.is_some() { &mut row_buf } else { o };
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX2+FMA); the row and
                    // `dst` hold `cols` values, a whole number of blocks.
                    unsafe { super::x86::int4_dequant(&self.row(r), dst) }
                }
                _ => scalar::int4_dequant(&self.row(r), dst),
            }
            if let Some(p) = &self.perm {
                for (&c, &v) in p.iter().zip(&row_buf) {
                    o[c as usize] = v;
                }
            }
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let x = self.gather(x);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.group.is_multiple_of(UNIT) {
            let xr = unit_x_f32(&x);
            par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/DQ, AVX2,
                // FMA); `xr` is `unit_x_f32` of `x`, which has `cols` values;
                // the group is a multiple of a unit.
                unsafe { super::x86::int4_dot_f32_units(&self.row(r), &xr, &x) }
            });
            return Ok(());
        }
        let xgsum: Vec<f32> = x.chunks(self.group).map(|g| g.iter().sum()).collect();
        par_rows(y, self.weight_bytes() / self.rows.max(1), |r| match isa {
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
        });
        Ok(())
    }

    fn input_order(&self) -> Option<&[u32]> {
        self.perm.as_deref()
    }

    fn quantize_input(&self, x: &[f32]) -> Result<Q8Vector> {
        check_len("x", self.cols, x.len())?;
        Q8Vector::quantize(&self.gather(x))
    }

    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let (xq, xd, sums) = (x.codes(), x.scales(), x.block_sums());
        let per_group = self.group / BLOCK;
        let xgsum: Vec<f32> = xd
            .chunks(per_group)
            .zip(sums.chunks(per_group))
            .map(|(d, s)| d.iter().zip(s).map(|(&d, &s)| d * s as f32).sum())
            .collect();
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 && self.group.is_multiple_of(UNIT) {
            let (xu, xd4) = unit_x_q8(xq, xd);
            par_rows(y, self.weight_bytes() / self.rows.max(1), |r| {
                // SAFETY: `isa.check()` passed (AVX-512 F/BW/VL/VNNI/DQ, AVX2,
                // FMA); `xu`/`xd4` are `unit_x_q8` of the activation blocks,
                // which match the row; the group is a multiple of a unit.
                unsafe { super::x86::int4_dot_q8_units(&self.row(r), &xu, &xd4, xq, xd, &xgsum) }
            });
            return Ok(());
        }
        par_rows(y, self.weight_bytes() / self.rows.max(1), |r| match isa {
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
            _ => scalar::int4_dot_q8(&self.row(r), xq, xd, sums),
        });
        Ok(())
    }
}

/// The stored column order of an act-order weight: columns sorted by their
/// group index (stable), each group `group` wide; `None` when that is the
/// natural order.
///
/// # Errors
/// [`Error::Shape`] when `g_idx` is not `cols` long, [`Error::GroupIndex`]
/// when group `g` does not hold exactly `group` columns (the last one: the
/// rest).
pub(crate) fn act_order(g_idx: &[u32], cols: usize, group: usize) -> Result<Option<Vec<u32>>> {
    check_len("g_idx", cols, g_idx.len())?;
    let groups = cols.div_ceil(group);
    let mut order: Vec<u32> = (0..cols as u32).collect();
    order.sort_by_key(|&c| g_idx[c as usize]);
    for (j, &c) in order.iter().enumerate() {
        let index = g_idx[c as usize];
        if index as usize != j / group {
            return Err(Error::GroupIndex { index, groups });
        }
    }
    let identity = order.iter().enumerate().all(|(j, &c)| j == c as usize);
    Ok((!identity).then_some(order))
}
