//! Unstructured pruning by score: magnitude (`|W|`) and Wanda (`|W| · ‖X_j‖₂`).

use std::cmp::Ordering;

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis, Zip};

use crate::mask::SparsityMask;
use crate::{Error, Result};

/// Over which entries the lowest scores are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PruneScope {
    /// The same fraction in every output row (Wanda's comparison group; keeps
    /// every output channel alive).
    #[default]
    PerRow,
    /// The lowest scores of the whole matrix (classic global magnitude pruning).
    PerTensor,
}

/// Scores ordered ascending with ties broken by position, so results are
/// deterministic.
fn ascending(a: &(f32, usize), b: &(f32, usize)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

pub(crate) fn check_finite(scores: &ArrayView2<'_, f32>) -> Result<()> {
    for (row, r) in scores.axis_iter(Axis(0)).enumerate() {
        if let Some(col) = r.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { row, col });
        }
    }
    Ok(())
}

fn check_sparsity(sparsity: f64) -> Result<()> {
    if (0.0..=1.0).contains(&sparsity) {
        Ok(())
    } else {
        Err(Error::InvalidSparsity { sparsity })
    }
}

/// Marks the `k` lowest-scored entries of `scores` as pruned in `keep`.
fn prune_lowest(scores: ArrayView1<'_, f32>, k: usize, mut keep: ArrayViewMut1<'_, bool>) {
    if k == 0 {
        return;
    }
    let mut order: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, ascending);
    }
    for &(_, j) in &order[..k.min(order.len())] {
        keep[j] = false;
    }
}

/// Prunes the lowest `scores` to reach `sparsity` (the fraction removed) over
/// `scope`. Per row, `floor(sparsity × cols)` entries go; per tensor,
/// `floor(sparsity × rows × cols)`. Ties are broken by position.
///
/// # Errors
/// [`Error::InvalidSparsity`], [`Error::NonFinite`].
pub fn prune_by_score(
    scores: ArrayView2<'_, f32>,
    sparsity: f64,
    scope: PruneScope,
) -> Result<SparsityMask> {
    check_sparsity(sparsity)?;
    check_finite(&scores)?;
    let (rows, cols) = scores.dim();
    let mut keep = Array2::from_elem((rows, cols), true);
    match scope {
        PruneScope::PerRow => {
            let k = (sparsity * cols as f64).floor() as usize;
            Zip::from(keep.axis_iter_mut(Axis(0)))
                .and(scores.axis_iter(Axis(0)))
                .par_for_each(|kr, sr| prune_lowest(sr, k, kr));
        }
        PruneScope::PerTensor => {
            let k = (sparsity * (rows * cols) as f64).floor() as usize;
            // Flattened in logical row-major order, so ties break by (row, col).
            let flat: Vec<f32> = scores.iter().copied().collect();
            let mut flat_keep = vec![true; flat.len()];
            prune_lowest(
                ArrayView1::from(&flat[..]),
                k,
                ArrayViewMut1::from(&mut flat_keep[..]),
            );
            // Both iterate in logical row-major order.
            for (k, f) in keep.iter_mut().zip(flat_keep) {
                *k = f;
            }
        }
    }
    Ok(SparsityMask::new(keep))
}

/// Magnitude pruning of a weight `[out, in]`: removes the smallest `|w|`.
///
/// # Errors
/// As [`prune_by_score`].
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::{magnitude_prune, PruneScope};
///
/// let w = array![[0.1f32, -3.0, 0.5, 2.0], [4.0, 0.2, -0.3, 1.0]];
/// let m = magnitude_prune(w.view(), 0.5, PruneScope::PerRow)?;
/// assert_eq!(m.row_nnz(), vec![2, 2]);
/// assert!(m.is_kept(0, 1) && m.is_kept(0, 3) && m.is_kept(1, 0) && m.is_kept(1, 3));
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
pub fn magnitude_prune(
    w: ArrayView2<'_, f32>,
    sparsity: f64,
    scope: PruneScope,
) -> Result<SparsityMask> {
    prune_by_score(w.mapv(f32::abs).view(), sparsity, scope)
}

/// Wanda's importance score `|W_ij| · ‖X_j‖₂` (Sun et al., 2023) from a weight
/// `[out, in]` and the input-channel norms `‖X_j‖₂ = sqrt(Σ_tokens x_j²)`
/// (`tensorpress_tensor::ChannelStats::l2_norm`).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `col_norms` does not have `in` entries.
pub fn wanda_scores(w: ArrayView2<'_, f32>, col_norms: ArrayView1<'_, f32>) -> Result<Array2<f32>> {
    if col_norms.len() != w.ncols() {
        return Err(Error::ShapeMismatch {
            op: "wanda_scores",
            lhs: w.shape().to_vec(),
            rhs: vec![col_norms.len()],
        });
    }
    Ok(&w.mapv(f32::abs) * &col_norms.insert_axis(Axis(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;
    use tensorpress_tensor::{ChannelStats, SeededRng};

    #[test]
    fn per_row_and_per_tensor_counts() {
        let mut rng = SeededRng::new(1);
        let w = rng.array_normal((8, 33));
        let m = magnitude_prune(w.view(), 0.5, PruneScope::PerRow).unwrap();
        assert!(m.row_nnz().iter().all(|&n| n == 33 - 16));
        let m = magnitude_prune(w.view(), 0.5, PruneScope::PerTensor).unwrap();
        assert_eq!(m.nnz(), 8 * 33 - 132);
        // Every kept |w| is at least every pruned |w|.
        let kept_min = w
            .indexed_iter()
            .filter(|(ij, _)| m.is_kept(ij.0, ij.1))
            .map(|(_, v)| v.abs())
            .fold(f32::INFINITY, f32::min);
        let pruned_max = w
            .indexed_iter()
            .filter(|(ij, _)| !m.is_kept(ij.0, ij.1))
            .map(|(_, v)| v.abs())
            .fold(0.0, f32::max);
        assert!(kept_min >= pruned_max);
    }

    #[test]
    fn edge_sparsities_and_errors() {
        let w = array![[1.0f32, -2.0], [3.0, 0.5]];
        assert_eq!(
            magnitude_prune(w.view(), 0.0, PruneScope::PerRow)
                .unwrap()
                .nnz(),
            4
        );
        assert_eq!(
            magnitude_prune(w.view(), 1.0, PruneScope::PerTensor)
                .unwrap()
                .nnz(),
            0
        );
        assert!(matches!(
            magnitude_prune(w.view(), 1.5, PruneScope::PerRow),
            Err(Error::InvalidSparsity { .. })
        ));
        let nan = array![[1.0f32, f32::NAN]];
        assert!(matches!(
            magnitude_prune(nan.view(), 0.5, PruneScope::PerRow),
            Err(Error::NonFinite { row: 0, col: 1 })
        ));
        // Ties break toward the lower index.
        let tie = array![[1.0f32, 1.0, 1.0, 1.0]];
        let m = magnitude_prune(tie.view(), 0.5, PruneScope::PerRow).unwrap();
        assert_eq!(m.as_array().row(0).to_vec(), vec![false, false, true, true]);
    }

    #[test]
    fn wanda_prefers_weights_on_loud_channels() {
        let w = array![[1.0f32, 1.0, 1.0, 1.0]];
        let mut stats = ChannelStats::new(4);
        stats
            .update(array![[0.1f32, 10.0, 0.2, 5.0], [0.1, 10.0, 0.2, 5.0]].view())
            .unwrap();
        let s = wanda_scores(w.view(), stats.l2_norm().view()).unwrap();
        let m = prune_by_score(s.view(), 0.5, PruneScope::PerRow).unwrap();
        assert_eq!(m.as_array().row(0).to_vec(), vec![false, true, false, true]);
        assert!(matches!(
            wanda_scores(w.view(), array![1.0f32].view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn per_row_prunes_exactly_floor(rows in 1usize..6, cols in 1usize..40, s in 0.0f64..=1.0, seed in any::<u64>()) {
            let w = SeededRng::new(seed).array_normal((rows, cols));
            let m = magnitude_prune(w.view(), s, PruneScope::PerRow).unwrap();
            let k = (s * cols as f64).floor() as usize;
            prop_assert!(m.row_nnz().iter().all(|&n| n == cols - k));
        }
    }
}
