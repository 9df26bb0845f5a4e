//! The [`SparsityMask`] type.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};

use crate::{Error, Result};

/// Which weights of a `[out, in]` matrix are kept (`true`) and which are pruned.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::SparsityMask;
///
/// let mask = SparsityMask::new(array![[true, false, false, true], [false, true, true, false]]);
/// assert_eq!(mask.density(), 0.5);
/// assert!(mask.validate_n_m(2, 4).is_ok());
/// let w = mask.applied(array![[1.0f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]].view())?;
/// assert_eq!(w, array![[1.0, 0.0, 0.0, 4.0], [0.0, 6.0, 7.0, 0.0]]);
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsityMask {
    keep: Array2<bool>,
}

impl SparsityMask {
    /// Wraps a keep-matrix (`true` = keep).
    pub fn new(keep: Array2<bool>) -> Self {
        SparsityMask { keep }
    }

    /// A mask that keeps everything.
    pub fn dense(rows: usize, cols: usize) -> Self {
        SparsityMask {
            keep: Array2::from_elem((rows, cols), true),
        }
    }

    /// The mask of the nonzero entries of `w`.
    pub fn from_nonzeros(w: ArrayView2<'_, f32>) -> Self {
        SparsityMask {
            keep: w.mapv(|v| v != 0.0),
        }
    }

    /// `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        self.keep.dim()
    }

    /// The keep-matrix.
    pub fn as_array(&self) -> ArrayView2<'_, bool> {
        self.keep.view()
    }

    /// Consumes the mask, returning the keep-matrix.
    pub fn into_array(self) -> Array2<bool> {
        self.keep
    }

    /// Whether entry `(row, col)` is kept.
    ///
    /// # Panics
    /// When the index is out of bounds.
    #[track_caller]
    pub fn is_kept(&self, row: usize, col: usize) -> bool {
        self.keep[[row, col]]
    }

    /// Number of kept entries.
    pub fn nnz(&self) -> usize {
        self.keep.iter().filter(|&&k| k).count()
    }

    /// Fraction kept (1 for an empty mask).
    pub fn density(&self) -> f64 {
        if self.keep.is_empty() {
            1.0
        } else {
            self.nnz() as f64 / self.keep.len() as f64
        }
    }

    /// Fraction pruned: `1 − density`.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }

    /// Kept entries per row.
    pub fn row_nnz(&self) -> Vec<usize> {
        self.keep
            .axis_iter(Axis(0))
            .map(|r| r.iter().filter(|&&k| k).count())
            .collect()
    }

    /// Entries kept by both masks.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`].
    pub fn intersect(&self, other: &SparsityMask) -> Result<SparsityMask> {
        self.check_dim("SparsityMask::intersect", other.dim())?;
        Ok(SparsityMask {
            keep: Zip::from(&self.keep)
                .and(&other.keep)
                .map_collect(|&a, &b| a && b),
        })
    }

    fn check_dim(&self, op: &'static str, dim: (usize, usize)) -> Result<()> {
        if dim != self.dim() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![self.dim().0, self.dim().1],
                rhs: vec![dim.0, dim.1],
            });
        }
        Ok(())
    }

    /// Zeroes the pruned entries of `w` in place.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`].
    pub fn apply(&self, mut w: ArrayViewMut2<'_, f32>) -> Result<()> {
        self.check_dim("SparsityMask::apply", w.dim())?;
        Zip::from(&mut w).and(&self.keep).for_each(|v, &k| {
            if !k {
                *v = 0.0;
            }
        });
        Ok(())
    }

    /// A copy of `w` with the pruned entries zeroed.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`].
    pub fn applied(&self, w: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let mut out = w.to_owned();
        self.apply(out.view_mut())?;
        Ok(out)
    }

    /// Checks the N:M pattern along the input dimension: every group of `m`
    /// consecutive columns keeps at most `n` entries (2:4 is what sparse tensor
    /// cores accelerate).
    ///
    /// # Errors
    /// [`Error::InvalidPattern`], [`Error::IndivisibleGroups`], or the first
    /// [`Error::PatternViolation`].
    pub fn validate_n_m(&self, n: usize, m: usize) -> Result<()> {
        check_pattern(n, m, self.dim().1)?;
        for (row, r) in self.keep.axis_iter(Axis(0)).enumerate() {
            for (group, g) in r.exact_chunks(m).into_iter().enumerate() {
                let kept = g.iter().filter(|&&k| k).count();
                if kept > n {
                    return Err(Error::PatternViolation {
                        row,
                        group,
                        kept,
                        n,
                        m,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Checks that `n:m` is a pattern and that `cols` splits into groups of `m`.
pub(crate) fn check_pattern(n: usize, m: usize, cols: usize) -> Result<()> {
    if m == 0 || n > m {
        return Err(Error::InvalidPattern { n, m });
    }
    if !cols.is_multiple_of(m) {
        return Err(Error::IndivisibleGroups { cols, m });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn counts_and_applies() {
        let m = SparsityMask::new(array![[true, false, true], [false, false, true]]);
        assert_eq!(m.nnz(), 3);
        assert_eq!(m.row_nnz(), vec![2, 1]);
        assert_eq!(m.sparsity(), 0.5);
        let mut w = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        m.apply(w.view_mut()).unwrap();
        assert_eq!(w, array![[1.0, 0.0, 3.0], [0.0, 0.0, 6.0]]);
        assert_eq!(SparsityMask::from_nonzeros(w.view()), m);
        let bad = Array2::<f32>::zeros((3, 2));
        assert!(matches!(
            m.applied(bad.view()),
            Err(Error::ShapeMismatch { .. })
        ));
        let d = SparsityMask::dense(2, 3);
        assert_eq!(d.density(), 1.0);
        assert_eq!(d.intersect(&m).unwrap(), m);
    }

    #[test]
    fn n_m_validation() {
        let ok = SparsityMask::new(array![[true, true, false, false, false, true, false, true]]);
        assert!(ok.validate_n_m(2, 4).is_ok());
        assert!(matches!(
            ok.validate_n_m(1, 4),
            Err(Error::PatternViolation {
                row: 0,
                group: 0,
                kept: 2,
                ..
            })
        ));
        assert!(matches!(
            ok.validate_n_m(2, 3),
            Err(Error::IndivisibleGroups { cols: 8, m: 3 })
        ));
        assert!(matches!(
            ok.validate_n_m(5, 4),
            Err(Error::InvalidPattern { .. })
        ));
        assert!(matches!(
            ok.validate_n_m(0, 0),
            Err(Error::InvalidPattern { .. })
        ));
    }
}
