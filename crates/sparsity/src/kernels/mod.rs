//! Sparse matrix-vector kernels, behind quant-core's
//! [`QuantMatrix`] interface so the runner and the benches treat them like
//! any other weight:
//!
//! - [`Sparse24Matrix`]: a 2:4 weight stored as its kept values (half the
//!   entries) plus a 2-bit position per value, so a product reads a little
//!   over half the bytes of the dense f32 weight;
//! - [`ActivationSparseMatrix`]: a dense weight stored column by column, whose
//!   product skips the columns of zero activations (CHESS, Lazy Neuron): after
//!   a ReLU-family or thresholded FFN activation most inputs of the down
//!   projection are zero, and their columns need not be read at all;
//! - [`BitmaskMatrix`]: an unstructured sparse weight in compressed-tensors'
//!   `sparse-bitmask` layout (one bit per entry plus the kept values), read
//!   from a checkpoint as it is; its product costs per column: the faster
//!   unstructured format at 50 % and 70 % sparsity in the bench (×1.8 and
//!   ×2.5 the dense product on one thread);
//! - [`CsrMatrix`]: an unstructured sparse weight in compressed sparse row
//!   form (16-bit column indices up to 65,536 columns), whose product costs
//!   per kept value: the faster format at 90 % (×6 the dense product, where
//!   the bitmask reaches ×3.9).
//!
//! Every kernel has a scalar reference and x86-64 variants (AVX2+FMA;
//! AVX-512 for the column updates and bitmask rows) chosen at run time by
//! [`Isa::detect`] and callable directly through the `*_with` methods.
//! Rows are split across rayon's pool. `from_parts` constructors validate
//! every part and return [`SparseDefect`]s instead of panicking.
//!
//! ```
//! use tensorpress_quant_core::kernels::{F32Matrix, QuantMatrix};
//! use tensorpress_sparsity::kernels::{
//!     ActivationSparseMatrix, BitmaskMatrix, CsrMatrix, Sparse24Matrix,
//! };
//! use tensorpress_sparsity::{magnitude_prune, nm_magnitude, PruneScope};
//!
//! let (rows, cols) = (32, 64);
//! let w = ndarray::Array2::from_shape_fn((rows, cols), |(i, j)| ((i * cols + j) as f32).sin());
//! let w24 = nm_magnitude(w.view(), 2, 4)?.applied(w.view())?;
//! let m = Sparse24Matrix::from_dense(w24.view())?;
//! // Activations with most entries zero, as after a thresholded FFN activation.
//! let x: Vec<f32> = (0..cols).map(|j| if j % 3 == 0 { (j as f32).cos() } else { 0.0 }).collect();
//! let (mut y, mut want) = (vec![0.0; rows], vec![0.0; rows]);
//! m.gemv(&x, &mut y)?;
//! F32Matrix::new(rows, cols, w24.iter().copied().collect())?.gemv(&x, &mut want)?;
//! assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
//!
//! let a = ActivationSparseMatrix::from_dense(w.view());
//! a.gemv(&x, &mut y)?;
//! F32Matrix::new(rows, cols, w.iter().copied().collect())?.gemv(&x, &mut want)?;
//! assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
//!
//! // Unstructured: 70 % of each row pruned by magnitude, in both layouts.
//! let pruned = magnitude_prune(w.view(), 0.7, PruneScope::PerRow)?.applied(w.view())?;
//! F32Matrix::new(rows, cols, pruned.iter().copied().collect())?.gemv(&x, &mut want)?;
//! let csr = CsrMatrix::from_dense(pruned.view())?;
//! let bits = BitmaskMatrix::from_dense(pruned.view())?;
//! assert_eq!(csr.nnz(), rows * (cols - 44)); // floor(0.7 · 64) = 44 pruned per row
//! assert_eq!(bits.to_dense(), pruned);
//! for m in [&csr as &dyn QuantMatrix, &bits] {
//!     m.gemv(&x, &mut y)?;
//!     assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-4));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bitmask;
mod csr;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use bitmask::BitmaskMatrix;
pub use csr::{ColumnIndices, CsrMatrix};

use ndarray::ArrayView2;
use rayon::prelude::*;
use tensorpress_quant_core::kernels::{Isa, Q8Vector, QuantMatrix};
use tensorpress_quant_core::Error as QuantError;

use crate::mask::check_pattern;
use crate::{Error, Result, SparseDefect};

/// Output rows per rayon task.
const ROWS_PER_TASK: usize = 64;
/// Below this many weight bytes a product runs on the calling thread.
const SERIAL_BYTES: usize = 1 << 18;

fn shape_error(what: &'static str, expected: usize, actual: usize) -> QuantError {
    QuantError::Shape {
        what,
        expected: vec![expected],
        actual: vec![actual],
    }
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), QuantError> {
    if expected == actual {
        Ok(())
    } else {
        Err(shape_error(what, expected, actual))
    }
}

fn check_isa(isa: Isa) -> Result<(), QuantError> {
    if isa.is_available() {
        Ok(())
    } else {
        Err(QuantError::InvalidOption {
            option: "isa",
            value: format!("{isa:?}"),
            expected: "a level this CPU supports (Isa::available)",
        })
    }
}

/// Most columns of a [`CsrMatrix`] or [`BitmaskMatrix`]: column indices are
/// stored in at most 32 bits.
const MAX_COLS: usize = u32::MAX as usize;

/// [`Error::InvalidSparseParts`] for `format`.
fn defect(format: &'static str, defect: SparseDefect) -> Error {
    Error::InvalidSparseParts { format, defect }
}

/// Checks that a `[rows, cols]` shape fits the unstructured sparse layouts:
/// at most [`MAX_COLS`] columns and `isize::MAX` entries (so `rows + 1` and
/// `rows · cols` never overflow, and the dense matrix is a valid array).
fn check_dims(format: &'static str, rows: usize, cols: usize) -> Result<()> {
    let fits = cols <= MAX_COLS
        && rows <= isize::MAX as usize
        && rows
            .checked_mul(cols)
            .is_some_and(|n| n <= isize::MAX as usize);
    if fits {
        Ok(())
    } else {
        Err(defect(
            format,
            SparseDefect::TooLarge {
                rows,
                cols,
                max_cols: MAX_COLS,
            },
        ))
    }
}

/// Checks a dequantization request: `out` is a whole number of rows from `first`.
fn check_rows(rows: usize, cols: usize, first: usize, out: &[f32]) -> Result<usize, QuantError> {
    if cols == 0 || !out.len().is_multiple_of(cols) {
        return Err(QuantError::RowLength {
            len: out.len(),
            row_len: cols,
        });
    }
    let n = out.len() / cols;
    if first.checked_add(n).is_none_or(|end| end > rows) {
        return Err(shape_error("rows to dequantize", rows, first + n));
    }
    Ok(n)
}

/// A 2:4 sparse weight `[rows, cols]`: in every group of 4 consecutive input
/// columns two values are kept. Stored as the kept values (`rows × cols/2`
/// f32, in column order within each group) and their positions in the group,
/// 2 bits each, four to a byte (the two groups of 8 columns, low bits first).
/// A group with fewer than two nonzeros keeps explicit zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse24Matrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    index: Vec<u8>,
}

impl Sparse24Matrix {
    /// Packs a dense weight that is 2:4 sparse along its columns.
    ///
    /// # Errors
    /// [`Error::IndivisibleGroups`] when `cols` is not a multiple of 8 (two
    /// groups per index byte), [`Error::PatternViolation`] when a group has
    /// more than two nonzeros.
    pub fn from_dense(w: ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = w.dim();
        check_pattern(2, 4, cols)?;
        if !cols.is_multiple_of(8) {
            return Err(Error::IndivisibleGroups { cols, m: 8 });
        }
        let mut values = Vec::with_capacity(rows * cols / 2);
        let mut index = Vec::with_capacity(rows * cols / 8);
        for (r, row) in w.outer_iter().enumerate() {
            let row: Vec<f32> = row.to_vec();
            for (pair, chunk) in row.chunks_exact(8).enumerate() {
                let mut byte = 0u8;
                for half in 0..2 {
                    let group = &chunk[4 * half..4 * half + 4];
                    let nonzero: Vec<usize> = (0..4).filter(|&p| group[p] != 0.0).collect();
                    if nonzero.len() > 2 {
                        return Err(Error::PatternViolation {
                            row: r,
                            group: 2 * pair + half,
                            kept: nonzero.len(),
                            n: 2,
                            m: 4,
                        });
                    }
                    // Pad with zero-valued positions not already used.
                    let mut pos = nonzero.clone();
                    for p in 0..4 {
                        if pos.len() == 2 {
                            break;
                        }
                        if !pos.contains(&p) {
                            pos.push(p);
                        }
                    }
                    pos.sort_unstable();
                    for (k, &p) in pos.iter().enumerate() {
                        values.push(group[p]);
                        byte |= (p as u8) << (2 * (2 * half + k));
                    }
                }
                index.push(byte);
            }
        }
        Ok(Sparse24Matrix {
            rows,
            cols,
            values,
            index,
        })
    }

    fn row(&self, r: usize) -> (&[f32], &[u8]) {
        let (v, i) = (self.cols / 2, self.cols / 8);
        (
            &self.values[r * v..(r + 1) * v],
            &self.index[r * i..(r + 1) * i],
        )
    }

    fn row_dot(&self, isa: Isa, r: usize, x: &[f32]) -> f32 {
        let (values, index) = self.row(r);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => {
                // SAFETY: callers pass an `isa` that passed `check_isa` or came
                // from `Isa::detect`, so the CPU runs AVX2 and FMA; the slices
                // are one row (`cols/2` values, `cols/8` index bytes) and `x`
                // has `cols` entries (checked by `gemv_with`).
                unsafe { x86::dot_24(values, index, x) }
            }
            _ => scalar::dot_24(values, index, x),
        }
    }
}

/// Fills `y[r] = f(r)`, in parallel for large products.
fn par_rows(y: &mut [f32], bytes: usize, f: impl Fn(usize) -> f32 + Sync) {
    if bytes < SERIAL_BYTES {
        for (r, y) in y.iter_mut().enumerate() {
            *y = f(r);
        }
        return;
    }
    y.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, ys)| {
            for (i, y) in ys.iter_mut().enumerate() {
                *y = f(t * ROWS_PER_TASK + i);
            }
        });
}

impl QuantMatrix for Sparse24Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        4 * self.values.len() + self.index.len()
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
            scalar::expand_24(self.row(first + k).0, self.row(first + k).1, out);
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> tensorpress_quant_core::Result<()> {
        check_isa(isa)?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        par_rows(y, self.weight_bytes(), |r| self.row_dot(isa, r, x));
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

/// A dense f32 weight `[rows, cols]` stored column by column (`[cols, rows]`),
/// whose product `y = W x` reads only the columns of nonzero activations:
/// `y = Σ_{j: x_j ≠ 0} x_j · W[:, j]`. At 90 % zero activations it reads a
/// tenth of the weight. With dense activations it is an ordinary (slightly
/// slower) product.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationSparseMatrix {
    rows: usize,
    cols: usize,
    wt: Vec<f32>,
}

impl ActivationSparseMatrix {
    /// Stores `w` (`[rows, cols]`) column by column.
    pub fn from_dense(w: ArrayView2<'_, f32>) -> Self {
        let (rows, cols) = w.dim();
        ActivationSparseMatrix {
            rows,
            cols,
            wt: w.t().iter().copied().collect(),
        }
    }

    /// The product over the nonzero entries of `x` only: `(column, value)`
    /// pairs with distinct columns (as [`nonzeros`] returns), e.g. when the
    /// caller already knows which FFN neurons fired.
    ///
    /// # Errors
    /// A column out of range, `y` of the wrong length, an unavailable `isa`.
    pub fn gemv_nonzeros_with(
        &self,
        isa: Isa,
        active: &[(u32, f32)],
        y: &mut [f32],
    ) -> tensorpress_quant_core::Result<()> {
        check_isa(isa)?;
        check_len("y", self.rows, y.len())?;
        if let Some(&(j, _)) = active.iter().find(|(j, _)| *j as usize >= self.cols) {
            return Err(shape_error("active column", self.cols, j as usize + 1));
        }
        let rows = self.rows;
        let update = |r0: usize, ys: &mut [f32]| {
            ys.fill(0.0);
            for quad in active.chunks(4) {
                let mut cols = [&[][..]; 4];
                let mut xs = [0.0f32; 4];
                for (k, &(j, v)) in quad.iter().enumerate() {
                    let start = j as usize * rows + r0;
                    cols[k] = &self.wt[start..start + ys.len()];
                    xs[k] = v;
                }
                axpy4(isa, &cols[..quad.len()], &xs, ys);
            }
        };
        let bytes = 4 * rows * active.len();
        if bytes < SERIAL_BYTES {
            update(0, y);
        } else {
            // Chunks of 256 rows: each task streams a 1 KiB piece of every
            // active column.
            y.par_chunks_mut(256)
                .enumerate()
                .for_each(|(t, ys)| update(t * 256, ys));
        }
        Ok(())
    }
}

/// The nonzero entries of `x` as `(column, value)` pairs.
pub fn nonzeros(x: &[f32]) -> Vec<(u32, f32)> {
    x.iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(j, &v)| (j as u32, v))
        .collect()
}

/// `y += Σ_k xs[k] · cols[k]` for up to four columns of `y.len()` entries.
fn axpy4(isa: Isa, cols: &[&[f32]], xs: &[f32; 4], y: &mut [f32]) {
    match (isa, cols.len()) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, 4) => {
            // SAFETY: `isa` was checked or detected, so the CPU runs AVX-512F;
            // every column has `y.len()` entries (sliced by the caller).
            unsafe { x86::axpy4_avx512(cols[0], cols[1], cols[2], cols[3], xs, y) }
        }
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, 4) => {
            // SAFETY: as above, for AVX2 and FMA.
            unsafe { x86::axpy4_avx2(cols[0], cols[1], cols[2], cols[3], xs, y) }
        }
        _ => scalar::axpy(cols, xs, y),
    }
}

impl QuantMatrix for ActivationSparseMatrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn weight_bytes(&self) -> usize {
        4 * self.wt.len()
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
            for (j, o) in out.iter_mut().enumerate() {
                *o = self.wt[j * self.rows + first + k];
            }
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> tensorpress_quant_core::Result<()> {
        check_len("x", self.cols, x.len())?;
        self.gemv_nonzeros_with(isa, &nonzeros(x), y)
    }

    /// The f32 product with the dequantized activations (zeros stay zeros).
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

#[cfg(test)]
mod tests;
