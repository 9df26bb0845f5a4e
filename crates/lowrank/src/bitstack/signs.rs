//! Packed sign planes: one bit per weight.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::{Error, Result};

/// Signs of an `[rows, cols]` matrix, one bit each: bit `i = row · cols + col`
/// of the plane is bit `i % 64` (LSB first) of word `i / 64`, set for a negative
/// entry. Zero counts as positive, as in the paper. Bits past `rows · cols` in
/// the last word are zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignPlane {
    rows: usize,
    cols: usize,
    words: Vec<u64>,
}

impl SignPlane {
    /// The signs of `m`.
    pub fn from_signs(m: ArrayView2<'_, f32>) -> Self {
        let (rows, cols) = m.dim();
        let mut words = vec![0u64; (rows * cols).div_ceil(64)];
        for (i, &v) in m.iter().enumerate() {
            if v < 0.0 {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        SignPlane { rows, cols, words }
    }

    /// A plane from stored words (bits past `rows · cols` are cleared).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless there are `⌈rows · cols / 64⌉` words.
    pub fn from_words(rows: usize, cols: usize, mut words: Vec<u64>) -> Result<Self> {
        let n = rows * cols;
        if words.len() != n.div_ceil(64) {
            return Err(Error::ShapeMismatch {
                op: "SignPlane words",
                lhs: vec![n.div_ceil(64)],
                rhs: vec![words.len()],
            });
        }
        if !n.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (n % 64)) - 1;
            }
        }
        Ok(SignPlane { rows, cols, words })
    }

    /// `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The packed words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether entry `(row, col)` is negative.
    ///
    /// # Panics
    /// When `(row, col)` is out of bounds.
    #[track_caller]
    pub fn is_negative(&self, row: usize, col: usize) -> bool {
        assert!(
            row < self.rows && col < self.cols,
            "sign index out of bounds"
        );
        let i = row * self.cols + col;
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Bits the plane holds: `rows · cols`.
    pub fn bits(&self) -> u64 {
        (self.rows * self.cols) as u64
    }

    /// `acc += factor · sign ⊙ m`.
    pub(super) fn add_signed(
        &self,
        m: ArrayView2<'_, f32>,
        mut acc: ArrayViewMut2<'_, f32>,
        factor: f32,
    ) {
        let cols = self.cols;
        for (r, (row_m, mut row_acc)) in m.outer_iter().zip(acc.outer_iter_mut()).enumerate() {
            let base = r * cols;
            for (c, (&v, a)) in row_m.iter().zip(row_acc.iter_mut()).enumerate() {
                let i = base + c;
                if self.words[i / 64] >> (i % 64) & 1 == 1 {
                    *a -= factor * v;
                } else {
                    *a += factor * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn sign_plane_round_trips() {
        let m = array![[1.0f32, -2.0, 0.0], [-0.0, -1e-30, 3.0]];
        let p = SignPlane::from_signs(m.view());
        assert_eq!(p.words(), &[0b01_0010]);
        assert!(p.is_negative(0, 1) && p.is_negative(1, 1));
        assert!(!p.is_negative(0, 2) && !p.is_negative(1, 0));
        let q = SignPlane::from_words(2, 3, vec![0b01_0010 | (1 << 40)]).unwrap();
        assert_eq!(q, p);
        assert!(matches!(
            SignPlane::from_words(10, 10, vec![0]),
            Err(Error::ShapeMismatch { .. })
        ));
        // 130 entries: three words, tail bits.
        let big =
            Array2::from_shape_fn((13, 10), |(i, j)| if (i + j) % 3 == 0 { -1.0 } else { 1.0 });
        let p = SignPlane::from_signs(big.view());
        assert_eq!(p.words().len(), 3);
        for ((i, j), &v) in big.indexed_iter() {
            assert_eq!(p.is_negative(i, j), v < 0.0);
        }
    }
}
