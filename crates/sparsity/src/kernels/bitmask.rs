//! [`BitmaskMatrix`]: an unstructured sparse weight in compressed-tensors'
//! `sparse-bitmask` layout, used directly as a compute format.

use ndarray::{Array2, ArrayView2};
use tensorpress_quant_core::kernels::{Isa, Q8Vector, QuantMatrix};

use super::scalar;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{check_dims, check_isa, check_len, check_rows, defect, par_rows};
use crate::{Error, Result, SparseDefect};

/// Name of the layout in errors.
const FORMAT: &str = "bitmask";

/// An unstructured sparse weight `[rows, cols]` in compressed-tensors'
/// `sparse-bitmask` layout, used directly as a compute format.
///
/// Each row has a packed bitmask of `cols` bits, `ceil(cols / 8)` bytes,
/// little-endian within a byte: column `j` is kept when bit `j % 8` of byte
/// `j / 8` is set (the order `tensorpress-io`'s sparse-bitmask export writes
/// and compressed-tensors reads). The kept values follow row by row in
/// column order, and `row_offsets[r]` says where row `r`'s values start. The
/// `.bitmask`, `.compressed` and `.row_offsets` tensors of a compressed-tensors
/// checkpoint go to [`BitmaskMatrix::from_parts`] as they are.
///
/// An entry costs one bit, a kept value 4 bytes more: at 50 % sparsity the
/// weight is 53 % of the dense f32 bytes, at 90 % 13 %. The product reads
/// the activations contiguously and never gathers:
///
/// - AVX-512: per 16 columns, `vexpandps` (`_mm512_maskz_expandloadu_ps`)
///   loads the next `popcount(mask)` kept values straight into the lanes of
///   their columns (zeros elsewhere), and one FMA multiplies them with 16
///   activations; four accumulators per 64 columns (one `u64` of mask);
/// - AVX2: per 8 columns, the mask byte picks a lane permutation from a
///   2 KiB table that brings the activations of the kept columns to the
///   front, and a masked load (`vmaskmovps`) reads the `popcount` kept values;
/// - the scalar reference walks the set bits.
///
/// Its cost is per column, not per kept value, so it gains less than the
/// bytes suggest at high sparsity, where [`CsrMatrix`](super::CsrMatrix) does
/// better (`docs/sparsity.md` has the figures).
#[derive(Debug, Clone, PartialEq)]
pub struct BitmaskMatrix {
    rows: usize,
    cols: usize,
    /// `rows × ceil(cols / 8)` bytes.
    bitmask: Vec<u8>,
    values: Vec<f32>,
    /// `rows + 1` entries: where each row's values start, then `values.len()`.
    offsets: Vec<usize>,
}

impl BitmaskMatrix {
    /// Keeps the nonzero entries of `w` (`-0.0` counts as zero).
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite entry;
    /// [`Error::InvalidSparseParts`] with [`SparseDefect::TooLarge`] for more
    /// than `u32::MAX` columns.
    pub fn from_dense(w: ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = w.dim();
        check_dims(FORMAT, rows, cols)?;
        let row_bytes = cols.div_ceil(8);
        let mut bitmask = vec![0u8; rows * row_bytes];
        let mut values = Vec::new();
        let mut offsets = Vec::with_capacity(rows + 1);
        for (r, row) in w.outer_iter().enumerate() {
            offsets.push(values.len());
            for (c, &v) in row.iter().enumerate() {
                if !v.is_finite() {
                    return Err(Error::NonFinite { row: r, col: c });
                }
                if v != 0.0 {
                    bitmask[r * row_bytes + c / 8] |= 1 << (c % 8);
                    values.push(v);
                }
            }
        }
        offsets.push(values.len());
        Ok(BitmaskMatrix {
            rows,
            cols,
            bitmask,
            values,
            offsets,
        })
    }

    /// Builds a matrix from compressed-tensors' parts: the bitmask
    /// (`rows × ceil(cols / 8)` bytes, row-major), the kept values row by row
    /// and `row_offsets` (`rows` entries: where each row's values start).
    /// A kept value may be an explicit zero.
    ///
    /// Every part is checked, so hostile input gives an error, never a panic
    /// or an out-of-bounds read in the kernels.
    ///
    /// # Errors
    /// [`Error::InvalidSparseParts`] when the shape is too large, a length is
    /// wrong, a row sets bits past the last column, a row offset is not the
    /// number of bits set in the rows before it, or the bitmask keeps a
    /// different number of values than are given; [`Error::NonFinite`] for a
    /// NaN or infinite value.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        bitmask: Vec<u8>,
        values: Vec<f32>,
        row_offsets: Vec<usize>,
    ) -> Result<Self> {
        check_dims(FORMAT, rows, cols)?;
        let row_bytes = cols.div_ceil(8);
        // `check_dims` caps `rows · cols` at `isize::MAX`.
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
        length("bitmask", rows * row_bytes, bitmask.len())?;
        length("row_offsets", rows, row_offsets.len())?;
        // Bits of the last byte past the last column.
        let padding = match cols % 8 {
            0 => 0u8,
            used => !((1u8 << used) - 1),
        };
        let mut kept = 0usize;
        for r in 0..rows {
            let mask = &bitmask[r * row_bytes..(r + 1) * row_bytes];
            if mask.last().is_some_and(|&b| b & padding != 0) {
                return Err(defect(FORMAT, SparseDefect::PaddingBits { row: r, cols }));
            }
            if row_offsets[r] != kept {
                return Err(defect(
                    FORMAT,
                    SparseDefect::RowOffset {
                        row: r,
                        expected: kept,
                        actual: row_offsets[r],
                    },
                ));
            }
            // At most `rows · cols ≤ isize::MAX` bits in all: no overflow.
            kept += mask.iter().map(|b| b.count_ones() as usize).sum::<usize>();
        }
        if kept != values.len() {
            return Err(defect(
                FORMAT,
                SparseDefect::KeptCount {
                    kept,
                    stored: values.len(),
                },
            ));
        }
        let mut offsets = row_offsets;
        offsets.push(kept);
        let m = BitmaskMatrix {
            rows,
            cols,
            bitmask,
            values,
            offsets,
        };
        if let Some(k) = m.values.iter().position(|v| !v.is_finite()) {
            // The row holding value `k`: `offsets[0] = 0 ≤ k < offsets[rows]`.
            let row = m.offsets.partition_point(|&o| o <= k) - 1;
            let mask = m.row(row).0;
            let col = (0..cols)
                .filter(|&j| mask[j / 8] >> (j % 8) & 1 == 1)
                .nth(k - m.offsets[row])
                .unwrap_or(0);
            return Err(Error::NonFinite { row, col });
        }
        Ok(m)
    }

    /// The packed bitmask, `rows × ceil(cols / 8)` bytes.
    pub fn bitmask(&self) -> &[u8] {
        &self.bitmask
    }

    /// The kept values, row by row in column order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Where each row's values start (`rows` entries, compressed-tensors'
    /// `row_offsets`).
    pub fn row_offsets(&self) -> &[usize] {
        &self.offsets[..self.rows]
    }

    /// Kept values.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Fraction of the entries kept (1 for an empty shape).
    pub fn density(&self) -> f64 {
        match self.rows * self.cols {
            0 => 1.0,
            n => self.nnz() as f64 / n as f64,
        }
    }

    /// Bytes of the three arrays: bitmask, values (4 bytes each) and row
    /// offsets (8 bytes each on 64-bit targets).
    pub fn storage_bytes(&self) -> usize {
        self.bitmask.len() + self.nnz() * size_of::<f32>() + self.rows * size_of::<usize>()
    }

    /// The dense `[rows, cols]` weight.
    pub fn to_dense(&self) -> Array2<f32> {
        let mut out = Array2::zeros((self.rows, self.cols));
        if let Some(flat) = out.as_slice_mut() {
            for (r, row) in flat.chunks_exact_mut(self.cols.max(1)).enumerate() {
                let (mask, values) = self.row(r);
                scalar::bitmask_expand(mask, values, row);
            }
        }
        out
    }

    /// Row `r`'s mask bytes and kept values.
    fn row(&self, r: usize) -> (&[u8], &[f32]) {
        let row_bytes = self.cols.div_ceil(8);
        (
            &self.bitmask[r * row_bytes..(r + 1) * row_bytes],
            &self.values[self.offsets[r]..self.offsets[r + 1]],
        )
    }

    fn row_dot(&self, isa: Isa, r: usize, x: &[f32]) -> f32 {
        let (mask, values) = self.row(r);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: `isa` passed `check_isa`, so the CPU runs AVX-512
                // F/BW/VL; `x` has `cols` entries (checked by `gemv_with`),
                // the row's mask `ceil(cols / 8)` bytes with no bit set past
                // `cols`, and `values` one value per set bit (`from_dense`
                // builds it so, `from_parts` checks it).
                unsafe { x86::bitmask_dot_avx512(mask, values, x) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: as above, for AVX2 and FMA.
                unsafe { x86::bitmask_dot_avx2(mask, values, x) }
            }
            _ => scalar::bitmask_dot(mask, values, x),
        }
    }
}

impl QuantMatrix for BitmaskMatrix {
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
            let (mask, values) = self.row(first + k);
            scalar::bitmask_expand(mask, values, out);
        }
        Ok(())
    }

    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> tensorpress_quant_core::Result<()> {
        check_isa(isa)?;
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        par_rows(y, self.storage_bytes(), |r| self.row_dot(isa, r, x));
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
