//! Sparsity statistics of weight matrices.

use ndarray::{ArrayView2, Axis};

use crate::mask::check_pattern;
use crate::Result;

/// Zero counts of a weight `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SparsityStats {
    /// Number of entries.
    pub numel: usize,
    /// Number of exact zeros.
    pub zeros: usize,
    /// Fraction of zeros (0 for an empty matrix).
    pub sparsity: f64,
    /// Lowest per-row fraction of zeros.
    pub min_row_sparsity: f64,
    /// Highest per-row fraction of zeros.
    pub max_row_sparsity: f64,
    /// Rows that are entirely zero (dead output channels).
    pub zero_rows: usize,
    /// Columns that are entirely zero (unused input channels).
    pub zero_cols: usize,
}

impl SparsityStats {
    /// Computes the statistics of `w`.
    ///
    /// ```
    /// use ndarray::array;
    /// use tensorpress_sparsity::SparsityStats;
    ///
    /// let s = SparsityStats::of(array![[0.0f32, 1.0], [0.0, 0.0]].view());
    /// assert_eq!((s.zeros, s.zero_rows, s.zero_cols), (3, 1, 1));
    /// assert_eq!(s.sparsity, 0.75);
    /// ```
    pub fn of(w: ArrayView2<'_, f32>) -> Self {
        let (rows, cols) = w.dim();
        let row_zeros: Vec<usize> = w
            .axis_iter(Axis(0))
            .map(|r| r.iter().filter(|&&v| v == 0.0).count())
            .collect();
        let zeros: usize = row_zeros.iter().sum();
        let frac = |z: usize| {
            if cols == 0 {
                0.0
            } else {
                z as f64 / cols as f64
            }
        };
        let zero_cols = w
            .axis_iter(Axis(1))
            .filter(|c| c.iter().all(|&v| v == 0.0))
            .count();
        SparsityStats {
            numel: rows * cols,
            zeros,
            sparsity: if rows * cols == 0 {
                0.0
            } else {
                zeros as f64 / (rows * cols) as f64
            },
            min_row_sparsity: row_zeros
                .iter()
                .map(|&z| frac(z))
                .fold(if rows == 0 { 0.0 } else { 1.0 }, f64::min),
            max_row_sparsity: row_zeros.iter().map(|&z| frac(z)).fold(0.0, f64::max),
            zero_rows: if cols == 0 {
                0
            } else {
                row_zeros.iter().filter(|&&z| z == cols).count()
            },
            zero_cols: if rows == 0 { 0 } else { zero_cols },
        }
    }
}

/// Whether the nonzeros of `w` follow the N:M pattern along the input dimension.
///
/// # Errors
/// [`Error::InvalidPattern`](crate::Error::InvalidPattern),
/// [`Error::IndivisibleGroups`](crate::Error::IndivisibleGroups).
pub fn is_n_m_sparse(w: ArrayView2<'_, f32>, n: usize, m: usize) -> Result<bool> {
    check_pattern(n, m, w.ncols())?;
    Ok(w.axis_iter(Axis(0)).all(|r| {
        r.exact_chunks(m)
            .into_iter()
            .all(|g| g.iter().filter(|&&v| v != 0.0).count() <= n)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{magnitude_prune, nm_magnitude, PruneScope};
    use ndarray::{array, Array2};
    use tensorpress_tensor::SeededRng;

    #[test]
    fn stats_of_pruned_weights() {
        let w = SeededRng::new(3).array_normal((16, 64));
        let m = magnitude_prune(w.view(), 0.75, PruneScope::PerRow).unwrap();
        let p = m.applied(w.view()).unwrap();
        let s = SparsityStats::of(p.view());
        assert_eq!(s.numel, 1024);
        assert_eq!(s.zeros, 768);
        assert_eq!(s.sparsity, 0.75);
        assert_eq!((s.min_row_sparsity, s.max_row_sparsity), (0.75, 0.75));
        assert_eq!(s.zero_rows, 0);
        let nm = nm_magnitude(w.view(), 2, 4)
            .unwrap()
            .applied(w.view())
            .unwrap();
        assert!(is_n_m_sparse(nm.view(), 2, 4).unwrap());
        assert!(!is_n_m_sparse(w.view(), 2, 4).unwrap());
    }

    #[test]
    fn degenerate_shapes() {
        let e = Array2::<f32>::zeros((0, 4));
        let s = SparsityStats::of(e.view());
        assert_eq!(
            (s.numel, s.sparsity, s.zero_rows, s.zero_cols),
            (0, 0.0, 0, 0)
        );
        let z = array![[0.0f32, 0.0]];
        let s = SparsityStats::of(z.view());
        assert_eq!((s.zero_rows, s.zero_cols, s.min_row_sparsity), (1, 2, 1.0));
    }
}
