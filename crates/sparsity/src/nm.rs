//! N:M semi-structured sparsity along the input dimension.

use ndarray::{Array2, ArrayView2, Axis, Zip};

use crate::magnitude::check_finite;
use crate::mask::{check_pattern, SparsityMask};
use crate::Result;

/// Keeps the `n` highest-scored entries of every group of `m` consecutive input
/// columns (ties go to the lower index), e.g. `n = 2, m = 4` for 2:4.
///
/// `scores` is `[out, in]`: `|W|` for magnitude, [`wanda_scores`](crate::wanda_scores)
/// for Wanda, or any importance score.
///
/// # Errors
/// [`Error::InvalidPattern`](crate::Error::InvalidPattern),
/// [`Error::IndivisibleGroups`](crate::Error::IndivisibleGroups),
/// [`Error::NonFinite`](crate::Error::NonFinite).
pub fn nm_mask(scores: ArrayView2<'_, f32>, n: usize, m: usize) -> Result<SparsityMask> {
    check_pattern(n, m, scores.ncols())?;
    check_finite(&scores)?;
    let mut keep = Array2::from_elem(scores.dim(), false);
    Zip::from(keep.axis_iter_mut(Axis(0)))
        .and(scores.axis_iter(Axis(0)))
        .par_for_each(|mut kr, sr| {
            let mut order: Vec<usize> = Vec::with_capacity(m);
            for g in 0..sr.len() / m {
                order.clear();
                order.extend(g * m..(g + 1) * m);
                // Descending score, ascending index on ties.
                order.sort_by(|&a, &b| sr[b].total_cmp(&sr[a]).then(a.cmp(&b)));
                for &j in &order[..n] {
                    kr[j] = true;
                }
            }
        });
    Ok(SparsityMask::new(keep))
}

/// N:M mask by weight magnitude.
///
/// # Errors
/// As [`nm_mask`].
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::nm_magnitude;
///
/// let w = array![[0.1f32, -0.9, 0.5, 0.2, 3.0, 0.0, -1.0, 0.3]];
/// let m = nm_magnitude(w.view(), 2, 4)?;
/// assert_eq!(m.as_array().row(0).to_vec(), vec![false, true, true, false, true, false, true, false]);
/// m.validate_n_m(2, 4)?;
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
pub fn nm_magnitude(w: ArrayView2<'_, f32>, n: usize, m: usize) -> Result<SparsityMask> {
    nm_mask(w.mapv(f32::abs).view(), n, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn pattern_errors() {
        let w = Array2::<f32>::ones((2, 6));
        assert!(matches!(
            nm_magnitude(w.view(), 2, 4),
            Err(Error::IndivisibleGroups { cols: 6, m: 4 })
        ));
        assert!(matches!(
            nm_magnitude(w.view(), 3, 2),
            Err(Error::InvalidPattern { n: 3, m: 2 })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn keeps_exactly_n_per_group_and_the_largest(
            rows in 1usize..5, groups in 1usize..10, (n, m) in (1usize..9).prop_flat_map(|m| (0..=m, Just(m))),
            seed in any::<u64>()
        ) {
            let w = SeededRng::new(seed).array_normal((rows, groups * m));
            let mask = nm_magnitude(w.view(), n, m).unwrap();
            prop_assert!(mask.validate_n_m(n, m).is_ok());
            prop_assert_eq!(mask.nnz(), rows * groups * n);
            for r in 0..rows {
                for g in 0..groups {
                    let cols = g * m..(g + 1) * m;
                    let kept_min = cols.clone().filter(|&j| mask.is_kept(r, j)).map(|j| w[[r, j]].abs()).fold(f32::INFINITY, f32::min);
                    let pruned_max = cols.filter(|&j| !mask.is_kept(r, j)).map(|j| w[[r, j]].abs()).fold(0.0, f32::max);
                    prop_assert!(n == 0 || n == m || kept_min >= pruned_max);
                }
            }
        }
    }
}
