//! [`F32Matrix`]: the uncompressed baseline the quantized kernels are measured against.

use super::{check_len, check_rows, dot_f32, par_rows, Isa, Q8Vector, QuantMatrix};
use crate::{Error, Result};

/// A plain f32 `[rows, cols]` weight behind the same interface and the same
/// row split as the quantized matrices: the baseline for their speed (a
/// 4-bit matrix reads an eighth of the bytes) and accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Matrix {
    rows: usize,
    cols: usize,
    w: Vec<f32>,
}

impl F32Matrix {
    /// Wraps a row-major `[rows, cols]` weight.
    pub fn new(rows: usize, cols: usize, w: Vec<f32>) -> Result<F32Matrix> {
        check_len(
            "weight",
            rows.checked_mul(cols).ok_or(Error::Overflow)?,
            w.len(),
        )?;
        Ok(F32Matrix { rows, cols, w })
    }
}

impl QuantMatrix for F32Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        4 * self.w.len()
    }

    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()> {
        isa.check()?;
        let n = check_rows(self.rows, self.cols, first, out)?;
        out.copy_from_slice(&self.w[first * self.cols..(first + n) * self.cols]);
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        isa.check()?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        let c = self.cols;
        par_rows(y, 4 * c, |r| dot_f32(isa, &self.w[r * c..(r + 1) * c], x));
        Ok(())
    }

    /// The f32 product with the dequantized activations (there is no integer
    /// path for f32 weights).
    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        check_len("x", self.cols, x.len())?;
        self.gemv_with(isa, &x.dequantize(), y)
    }
}
