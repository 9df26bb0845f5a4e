//! [`CsrMatrix`]: an unstructured sparse weight in compressed sparse row
//! form, with its column indices ([`ColumnIndices`]) and its products.

use ndarray::{Array2, ArrayView2};
use tensorpress_quant_core::kernels::{Isa, Q8Vector, QuantMatrix};

use super::scalar::{self, ColIndex};
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{check_dims, check_isa, check_len, check_rows, defect, par_rows};
use crate::{Error, Result, SparseDefect};

/// Name of the layout in errors.
const FORMAT: &str = "CSR";

/// Most columns stored with 16-bit indices.
const U16_COLS: usize = 1 << 16;

/// Column indices as stored: 16 bits when they fit.
#[derive(Debug, Clone, PartialEq)]
enum Indices {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// The column indices of a [`CsrMatrix`], as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnIndices<'a> {
    /// 16-bit indices (at most 65,536 columns).
    U16(&'a [u16]),
    /// 32-bit indices.
    U32(&'a [u32]),
}

impl ColumnIndices<'_> {
    /// Number of indices (the stored values).
    pub fn len(&self) -> usize {
        match self {
            ColumnIndices::U16(c) => c.len(),
            ColumnIndices::U32(c) => c.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per index (2 or 4).
    pub fn index_bytes(&self) -> usize {
        match self {
            ColumnIndices::U16(_) => 2,
            ColumnIndices::U32(_) => 4,
        }
    }

    /// The indices widened to `u32`, as [`CsrMatrix::from_parts`] takes them.
    pub fn to_u32(&self) -> Vec<u32> {
        match self {
            ColumnIndices::U16(c) => c.iter().map(|&c| u32::from(c)).collect(),
            ColumnIndices::U32(c) => c.to_vec(),
        }
    }
}

/// An unstructured sparse weight `[rows, cols]` in compressed sparse row
/// form, for weights pruned without a pattern (magnitude, Wanda, SparseGPT
/// at any sparsity).
///
/// Row `r` keeps `values[row_ptr[r]..row_ptr[r + 1]]` at the columns
/// `col_idx[row_ptr[r]..row_ptr[r + 1]]` (strictly increasing). Column
/// indices are stored in 16 bits when the matrix has at most 65,536 columns
/// (every LLM projection), in 32 bits otherwise, so a kept value costs 6
/// bytes (8 beyond 65,536 columns) and CSR reads fewer bytes than the dense
/// f32 weight only above a third of zeros. At most `u32::MAX` columns.
///
/// The product runs one dot product per row: the scalar reference, and at
/// the AVX2 and AVX-512 levels the same loop unrolled into 8 independent
/// FMA accumulators without bounds checks (×1.9–2.3 the reference in the
/// bench). SIMD gathers (`vgatherdps`, 8 or 16 lanes) were measured slower
/// than that loop at 50 % and 90 % sparsity and are not used
/// (`docs/sparsity.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    rows: usize,
    cols: usize,
    row_ptr: Vec<usize>,
    col_idx: Indices,
    values: Vec<f32>,
}

impl CsrMatrix {
    /// Stores the nonzero entries of `w` (`-0.0` counts as zero).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite entry;
    /// [`Error::InvalidSparseParts`] with [`SparseDefect::TooLarge`] for more
    /// than `u32::MAX` columns.
    pub fn from_dense(w: ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = w.dim();
        check_dims(FORMAT, rows, cols)?;
        let mut row_ptr = Vec::with_capacity(rows + 1);
        let mut col_idx = Vec::new();
        let mut values = Vec::new();
        row_ptr.push(0);
        for (r, row) in w.outer_iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                if !v.is_finite() {
                    return Err(Error::NonFinite { row: r, col: c });
                }
                if v != 0.0 {
                    col_idx.push(c as u32);
                    values.push(v);
                }
            }
            row_ptr.push(values.len());
        }
        Ok(CsrMatrix {
            rows,
            cols,
            row_ptr,
            col_idx: narrow(cols, col_idx),
            values,
        })
    }

    /// Builds a matrix from its parts: `row_ptr` (`rows + 1` entries, from 0
    /// up to `values.len()`), the column of each value (`u32`; stored in 16
    /// bits when `cols ≤ 65,536`) and the values. Explicit zeros are allowed
    /// and count as stored.
    ///
    /// Every part is checked, so hostile input gives an error, never a panic
    /// or an out-of-bounds read in the kernels.
    ///
    /// # Errors
    /// [`Error::InvalidSparseParts`] when the shape is too large, a length is
    /// wrong, the row pointers do not run from 0 to `values.len()` without
    /// decreasing, or a row's columns are out of range or not strictly
    /// increasing; [`Error::NonFinite`] for a NaN or infinite value.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        row_ptr: Vec<usize>,
        col_idx: Vec<u32>,
        values: Vec<f32>,
    ) -> Result<Self> {
        check_dims(FORMAT, rows, cols)?;
        let length = |what, expected, actual| {
            if expected == actual {
                Ok(())
            } else {
                Err(defect(
                    FORMAT,
                    SparseDefect::Length {
                        what,
                        expected,
                        actual,
                    },
                ))
            }
        };
        // `check_dims` caps `rows` at `isize::MAX`.
        length("row_ptr", rows + 1, row_ptr.len())?;
        length("col_idx", values.len(), col_idx.len())?;
        let nnz = values.len();
        if row_ptr[0] != 0 {
            return Err(defect(
                FORMAT,
                SparseDefect::RowPointerStart { first: row_ptr[0] },
            ));
        }
        for (r, pair) in row_ptr.windows(2).enumerate() {
            let (start, end) = (pair[0], pair[1]);
            if end < start {
                return Err(defect(
                    FORMAT,
                    SparseDefect::RowPointerDecreasing {
                        row: r + 1,
                        start: end,
                        previous: start,
                    },
                ));
            }
            if end > nnz {
                return Err(defect(FORMAT, SparseDefect::RowPointerEnd { end, nnz }));
            }
            let mut previous: Option<usize> = None;
            for (&c, &v) in col_idx[start..end].iter().zip(&values[start..end]) {
                let c = c as usize;
                if c >= cols {
                    return Err(defect(
                        FORMAT,
                        SparseDefect::ColumnOutOfRange {
                            row: r,
                            col: c,
                            cols,
                        },
                    ));
                }
                if let Some(p) = previous.filter(|&p| c <= p) {
                    return Err(defect(
                        FORMAT,
                        SparseDefect::ColumnsNotIncreasing {
                            row: r,
                            col: c,
                            previous: p,
                        },
                    ));
                }
                if !v.is_finite() {
                    return Err(Error::NonFinite { row: r, col: c });
                }
                previous = Some(c);
            }
        }
        let end = row_ptr[rows];
        if end != nnz {
            return Err(defect(FORMAT, SparseDefect::RowPointerEnd { end, nnz }));
        }
        Ok(CsrMatrix {
            rows,
            cols,
            row_ptr,
            col_idx: narrow(cols, col_idx),
            values,
        })
    }

    /// Where each row's values start, and (last) their number: `rows + 1` entries.
    pub fn row_ptr(&self) -> &[usize] {
        &self.row_ptr
    }

    /// The column of each stored value.
    pub fn col_indices(&self) -> ColumnIndices<'_> {
        match &self.col_idx {
            Indices::U16(c) => ColumnIndices::U16(c),
            Indices::U32(c) => ColumnIndices::U32(c),
        }
    }

    /// The stored values, row by row.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Stored values.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Fraction of the entries stored (1 for an empty shape).
    pub fn density(&self) -> f64 {
        match self.rows * self.cols {
            0 => 1.0,
            n => self.nnz() as f64 / n as f64,
        }
    }

    /// Bytes of the three arrays: row pointers (8 bytes each on 64-bit
    /// targets), column indices (2 or 4 bytes each) and values (4 bytes each).
    pub fn storage_bytes(&self) -> usize {
        self.row_ptr.len() * size_of::<usize>()
            + self.nnz() * (self.col_indices().index_bytes() + size_of::<f32>())
    }

    /// The dense `[rows, cols]` weight.
    pub fn to_dense(&self) -> Array2<f32> {
        let mut out = Array2::zeros((self.rows, self.cols));
        if let Some(flat) = out.as_slice_mut() {
            for (r, row) in flat.chunks_exact_mut(self.cols.max(1)).enumerate() {
                self.expand_row(r, row);
            }
        }
        out
    }

    /// Row `r` written densely into `out` (`cols` entries).
    fn expand_row(&self, r: usize, out: &mut [f32]) {
        out.fill(0.0);
        let range = self.row_ptr[r]..self.row_ptr[r + 1];
        let values = &self.values[range.clone()];
        match &self.col_idx {
            Indices::U16(c) => scatter(&c[range], values, out),
            Indices::U32(c) => scatter(&c[range], values, out),
        }
    }

    /// `y = W x` with the indices at their stored width.
    fn gemv_idx<I: ColIndex>(&self, isa: Isa, col_idx: &[I], x: &[f32], y: &mut [f32]) {
        par_rows(y, self.storage_bytes(), |r| {
            let range = self.row_ptr[r]..self.row_ptr[r + 1];
            row_dot(isa, &self.values[range.clone()], &col_idx[range], x)
        });
    }
}

/// Stores indices below `cols` in 16 bits when `cols ≤ 65,536`.
fn narrow(cols: usize, col_idx: Vec<u32>) -> Indices {
    if cols <= U16_COLS {
        Indices::U16(col_idx.into_iter().map(|c| c as u16).collect())
    } else {
        Indices::U32(col_idx)
    }
}

fn scatter<I: ColIndex>(cols: &[I], values: &[f32], out: &mut [f32]) {
    for (c, &v) in cols.iter().zip(values) {
        out[c.col()] = v;
    }
}

/// One row times `x` at `isa`; every column is below `x.len()`.
fn row_dot<I: ColIndex>(isa: Isa, values: &[f32], cols: &[I], x: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            // SAFETY: `isa` passed `check_isa`, so the CPU runs AVX2 and FMA;
            // `values` and `cols` are one row's equal-length slices, and
            // `from_dense` / `from_parts` keep every column below `cols`,
            // which is `x.len()` (checked by `gemv_with`).
            unsafe { x86::csr_dot_fma(values, cols, x) }
        }
        _ => scalar::csr_dot(values, cols, x),
    }
}

impl QuantMatrix for CsrMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        self.storage_bytes()
    }

    fn dequantize_rows_with(
        &self,
        isa: Isa,
        first: usize,
        out: &mut [f32],
    ) -> tensorpress_quant_core::Result<()> {
        check_isa(isa)?;
        let n = check_rows(self.rows, self.cols, first, out)?;
        for (k, out) in out.chunks_exact_mut(self.cols).enumerate().take(n) {
            self.expand_row(first + k, out);
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> tensorpress_quant_core::Result<()> {
        check_isa(isa)?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        match &self.col_idx {
            Indices::U16(c) => self.gemv_idx(isa, c, x, y),
            Indices::U32(c) => self.gemv_idx(isa, c, x, y),
        }
        Ok(())
    }

    /// The f32 product with the dequantized activations.
    fn gemv_q8_with(
        &self,
        isa: Isa,
        x: &Q8Vector,
        y: &mut [f32],
    ) -> tensorpress_quant_core::Result<()> {
        check_len("x", self.cols, x.len())?;
        self.gemv_with(isa, &x.dequantize(), y)
    }
}
