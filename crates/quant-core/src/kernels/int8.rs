//! [`Int8Matrix`]: 8-bit integer weights with a scale and zero point per group.

use super::groups::{quantized_params, Groups};
use super::{check_len, dot_f32, par_rows, Isa, Q8Vector, QuantMatrix, BLOCK};
use crate::{QuantizedTensor, Result};

/// A `[rows, cols]` weight of 8-bit codes `q` with `w = scale · (q − zero)`
/// per group of `group` input columns (per output channel when `group`
/// equals `cols`): compressed-tensors' int8 weights (W8A16, and the weights
/// of W8A8), GPTQ 8-bit checkpoints, symmetric or not.
///
/// Stored as signed bytes `c = q − 128` with `scale` and `min = scale ·
/// (128 − zero)` per group in f32, so `w = scale · c + min` and a row's
/// product is `Σ_g scale_g Σ c·x + min_g Σ x` (for symmetric weights the
/// zero point is 128 and `min` is 0). An act-order weight is stored with
/// its columns sorted by group, as [`super::Int4Matrix`] does.
///
/// Kernels: scalar and AVX2 (`vpmovsxbd` + FMA for f32 activations,
/// `vpmaddubsw` with GGML's sign trick for int8 ones); the AVX-512 level
/// runs the AVX2 code (8-bit codes need no nibble unpacking, so the wider
/// registers gain little over the memory bound).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    groups: Groups,
    codes: Vec<i8>,
}

/// One row of an [`Int8Matrix`]: `w = scale[g] · c + min[g]`.
pub(crate) struct Int8Row<'a> {
    pub codes: &'a [i8],
    pub scales: &'a [f32],
    pub mins: &'a [f32],
    pub group: usize,
}

impl Int8Matrix {
    /// Builds the matrix from unpacked codes (`[rows, cols]`, 0–255),
    /// scales and zero points (`[rows, ⌈cols / group⌉]`, zero points in code
    /// units) and an optional group index per column (act-order).
    ///
    /// `cols` and `group` must be multiples of 32; a last group narrower than
    /// `group` is allowed. With `g_idx`, group `g` must hold exactly the
    /// columns group `g` would hold in natural order.
    pub fn from_codes(
        rows: usize,
        cols: usize,
        group: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: &[f32],
        g_idx: Option<&[u32]>,
    ) -> Result<Int8Matrix> {
        let groups = Groups::new(
            rows,
            cols,
            group,
            codes.len(),
            scales,
            zeros,
            g_idx,
            |s, z| s * (128.0 - z),
        )?;
        let mut stored = Vec::with_capacity(rows * cols);
        for row in codes.chunks_exact(cols.max(1)) {
            stored.extend((0..cols).map(|j| (groups.stored(row, j) as i16 - 128) as i8));
        }
        Ok(Int8Matrix {
            groups,
            codes: stored,
        })
    }

    /// Builds the matrix from an 8-bit integer [`QuantizedTensor`] (RTN,
    /// GPTQ with or without act-order, SmoothQuant's W8A8 weights).
    pub fn from_quantized(q: &QuantizedTensor) -> Result<Int8Matrix> {
        let (group, scales, zeros) = quantized_params(q, 8, "8-bit integers")?;
        let [rows, cols] = q.shape();
        Int8Matrix::from_codes(rows, cols, group, q.codes(), &scales, &zeros, q.g_idx())
    }

    /// Columns per group.
    pub fn group_size(&self) -> usize {
        self.groups.group
    }

    fn row(&self, r: usize) -> Int8Row<'_> {
        let cols = self.groups.cols;
        Int8Row {
            codes: &self.codes[r * cols..(r + 1) * cols],
            scales: self.groups.scales(r),
            mins: self.groups.mins(r),
            group: self.groups.group,
        }
    }
}

impl QuantMatrix for Int8Matrix {
    fn rows(&self) -> usize {
        self.groups.rows
    }

    fn cols(&self) -> usize {
        self.groups.cols
    }

    fn weight_bytes(&self) -> usize {
        self.codes.len() + 4 * self.groups.params.len()
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        self.groups.dequantize_rows(first, out, |r, dst| match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                // SAFETY: `isa.check()` passed (AVX2+FMA); the row and `dst`
                // hold `cols` values, a whole number of blocks.
                unsafe { super::x86_int8::int8_dequant(&self.row(r), dst) }
            }
            _ => int8_dequant(&self.row(r), dst),
        })
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.groups.cols, x.len())?;
        check_len("y", self.groups.rows, y.len())?;
        let x = self.groups.gather(x);
        let xgsum: Vec<f32> = x
            .chunks(self.groups.group)
            .map(|g| g.iter().sum())
            .collect();
        par_rows(y, self.weight_bytes() / self.groups.rows.max(1), |r| {
            let row = self.row(r);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX2+FMA); the row, `x`
                    // and `xgsum` have the matrix's sizes.
                    unsafe { super::x86_int8::int8_dot_f32(&row, &x, &xgsum) }
                }
                _ => int8_dot_f32(&row, &x) + dot_f32(Isa::Scalar, row.mins, &xgsum),
            }
        });
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
        par_rows(y, self.weight_bytes() / self.groups.rows.max(1), |r| {
            let row = self.row(r);
            let codes = match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 | Isa::Avx512 => {
                    // SAFETY: `isa.check()` passed (AVX2+FMA); the row and
                    // the activation blocks match in count.
                    unsafe { super::x86_int8::int8_dot_q8(&row, xq, xd) }
                }
                _ => int8_dot_q8(&row, xq, xd),
            };
            codes + dot_f32(isa, row.mins, &xgsum)
        });
        Ok(())
    }
}

/// Scalar reference: the row's weights.
pub(crate) fn int8_dequant(row: &Int8Row<'_>, out: &mut [f32]) {
    for (g, (c, o)) in row
        .codes
        .chunks(row.group)
        .zip(out.chunks_mut(row.group))
        .enumerate()
    {
        let (s, m) = (row.scales[g], row.mins[g]);
        for (o, &c) in o.iter_mut().zip(c) {
            *o = s * c as f32 + m;
        }
    }
}

/// Scalar reference: `Σ_g scale_g Σ c·x` (the `min` terms are added by the caller).
pub(crate) fn int8_dot_f32(row: &Int8Row<'_>, x: &[f32]) -> f32 {
    row.codes
        .chunks(row.group)
        .zip(x.chunks(row.group))
        .zip(row.scales)
        .map(|((c, x), s)| s * c.iter().zip(x).map(|(&c, x)| c as f32 * x).sum::<f32>())
        .sum()
}

/// Scalar reference: `Σ_b scale_g(b) · xd_b · Σ c·x_q` (the `min` terms are
/// added by the caller).
pub(crate) fn int8_dot_q8(row: &Int8Row<'_>, xq: &[i8], xd: &[f32]) -> f32 {
    let per_group = row.group / BLOCK;
    row.codes
        .chunks_exact(BLOCK)
        .zip(xq.chunks_exact(BLOCK))
        .zip(xd)
        .enumerate()
        .map(|(b, ((c, q), d))| {
            let isum: i32 = c.iter().zip(q).map(|(&c, &q)| c as i32 * q as i32).sum();
            row.scales[b / per_group] * d * isum as f32
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::{Error, QuantSpec, Rtn, WeightQuantizer};

    fn weight(rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * cols + j) as f32 * 0.37).sin() * (1.0 + (j % 7) as f32)
        })
    }

    #[test]
    fn products_match_the_dequantized_weights_at_every_level() {
        for &(rows, cols, group, sym) in &[
            (1, 32, 32, true),
            (3, 96, 32, false),
            (7, 576, 128, true),
            (5, 576, 576, false),
            (9, 256, 64, false),
        ] {
            let spec = QuantSpec::int(8).group(group);
            let spec = if sym { spec } else { spec.asymmetric() };
            let q = Rtn::new(spec)
                .quantize(weight(rows, cols).view(), None)
                .unwrap();
            let m = Int8Matrix::from_quantized(&q).unwrap();
            let dq = q.dequantize();
            let x: Vec<f32> = (0..cols).map(|j| (j as f32 * 0.23).cos()).collect();
            let xq = m.quantize_input(&x).unwrap();
            let x_hat = xq.dequantize();
            let mut y8_ref = vec![0.0f32; rows];
            m.gemv_q8_with(Isa::Scalar, &xq, &mut y8_ref).unwrap();
            for isa in Isa::available() {
                let mut out = vec![0.0f32; rows * cols];
                m.dequantize_rows_with(isa, 0, &mut out).unwrap();
                for (a, b) in out.iter().zip(dq.iter()) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{isa:?} {a} {b}");
                }
                let (mut y, mut y8) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                m.gemv_with(isa, &x, &mut y).unwrap();
                m.gemv_q8_with(isa, &xq, &mut y8).unwrap();
                for r in 0..rows {
                    let want: f32 = dq.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
                    let norm: f32 = dq.row(r).iter().map(|a| a.abs()).sum();
                    assert!((y[r] - want).abs() <= 1e-4 * norm, "{isa:?} {r}");
                    let want8: f32 = dq.row(r).iter().zip(&x_hat).map(|(a, b)| a * b).sum();
                    assert!((y8[r] - want8).abs() <= 1e-4 * norm, "{isa:?} q8 {r}");
                    assert!(
                        (y8[r] - y8_ref[r]).abs() <= 1e-5 * norm,
                        "{isa:?} q8 ref {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn act_order_and_errors() {
        let (rows, cols, group) = (4usize, 64usize, 32usize);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 37 % 256) as u8).collect();
        let scales: Vec<f32> = (0..rows * 2).map(|i| 0.01 * (i + 1) as f32).collect();
        let zeros = vec![128.0f32; rows * 2];
        // Columns alternate between the two groups.
        let g_idx: Vec<u32> = (0..cols as u32).map(|c| c % 2).collect();
        let m = Int8Matrix::from_codes(rows, cols, group, &codes, &scales, &zeros, Some(&g_idx))
            .unwrap();
        assert!(m.input_order().is_some());
        let dense = m.dequantize().unwrap();
        for r in 0..rows {
            for c in 0..cols {
                let g = c % 2;
                let want = scales[r * 2 + g] * (codes[r * cols + c] as f32 - 128.0);
                assert_eq!(dense[r * cols + c], want);
            }
        }
        let x: Vec<f32> = (0..cols).map(|j| j as f32 * 0.01).collect();
        for isa in Isa::available() {
            let mut y = vec![0.0f32; rows];
            m.gemv_with(isa, &x, &mut y).unwrap();
            for r in 0..rows {
                let want: f32 = (0..cols).map(|c| dense[r * cols + c] * x[c]).sum();
                assert!((y[r] - want).abs() < 1e-4 * (1.0 + want.abs()), "{isa:?}");
            }
        }
        assert!(matches!(
            Int8Matrix::from_codes(1, 48, 48, &[0; 48], &[1.0], &[0.0], None),
            Err(Error::InvalidGroupSize { .. })
        ));
        assert!(matches!(
            Int8Matrix::from_codes(1, 32, 32, &[0; 32], &[f32::NAN], &[0.0], None),
            Err(Error::NonFinite { .. })
        ));
        assert!(Int8Matrix::from_codes(1, 32, 32, &[0; 31], &[1.0], &[0.0], None).is_err());
        let mut y = vec![0.0f32; rows];
        assert!(m.gemv(&x[1..], &mut y).is_err());
        let q4 = Rtn::new(QuantSpec::int(4).group(32))
            .quantize(weight(2, 32).view(), None)
            .unwrap();
        assert!(Int8Matrix::from_quantized(&q4).is_err());
    }
}
