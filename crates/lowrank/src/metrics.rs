//! Spectral metrics of a weight or activation matrix: effective rank, the
//! nuclear norm, its SVD-free L1,2 approximation, and the nuclear-norm
//! subgradient used for rank regularization in training.
//!
//! All functions take `f32` or `f64` matrices ([`Real`]) and return `f64`
//! scalars (sums accumulated in f64).

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use tensorpress_tensor::linalg::{self, Real};

use crate::error::check_finite;
use crate::Result;

/// The effective rank of Roy & Vetterli, *The effective rank: a measure of
/// effective dimensionality*, EUSIPCO 2007: `exp(H(p))` with `p_k = σ_k / Σ σ`
/// the normalized singular values and `H(p) = −Σ p_k ln p_k` their Shannon
/// entropy (`0 ln 0 = 0`).
///
/// It lies in `[1, rank(W)]`: 1 for a rank-one matrix, `n` for `n` equal
/// singular values. A zero matrix (no direction at all) gets 0.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_lowrank::effective_rank;
///
/// let eye = Array2::<f64>::eye(6);
/// assert!((effective_rank(eye.view())? - 6.0).abs() < 1e-9);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::NonFinite`](crate::Error::NonFinite) for a NaN or infinity in `w`; a
/// tensor-layer error when the SVD does not converge.
pub fn effective_rank<T: Real>(w: ArrayView2<'_, T>) -> Result<f64> {
    check_finite("effective_rank", w)?;
    let s = linalg::singular_values(w)?;
    Ok(effective_rank_of_spectrum(s.view()))
}

/// [`effective_rank`] from singular values already computed (any order; they
/// must be non-negative and finite).
pub fn effective_rank_of_spectrum<T: Real>(s: ArrayView1<'_, T>) -> f64 {
    let total: f64 = s.iter().map(|v| v.as_f64()).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = s
        .iter()
        .map(|v| v.as_f64() / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// The nuclear (trace, Schatten-1) norm `‖W‖_* = Σ σ_i`, the convex envelope of
/// the rank on the spectral-norm unit ball.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::nuclear_norm;
///
/// let w = array![[3.0f32, 0.0], [0.0, -2.0], [0.0, 0.0]];
/// assert!((nuclear_norm(w.view())? - 5.0).abs() < 1e-6);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// As [`effective_rank`].
pub fn nuclear_norm<T: Real>(w: ArrayView2<'_, T>) -> Result<f64> {
    check_finite("nuclear_norm", w)?;
    Ok(linalg::singular_values(w)?.iter().map(|v| v.as_f64()).sum())
}

/// The sum of the `d` largest column L2 norms of `w` (all of them when `d`
/// exceeds the column count): the L1,2 part of [`matrix_nuclear_norm`].
///
/// For a matrix with orthogonal columns it is the nuclear norm exactly (the
/// column norms are then the singular values); in general
/// `‖W‖_* ≤ Σ_j ‖w_j‖₂`, the sum over all columns.
pub fn top_column_norm_sum<T: Real>(w: ArrayView2<'_, T>, d: usize) -> f64 {
    let mut norms: Vec<f64> = w
        .axis_iter(Axis(1))
        .map(|col| {
            col.iter()
                .map(|v| v.as_f64() * v.as_f64())
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    norms.sort_unstable_by(|a, b| b.total_cmp(a));
    norms.iter().take(d).sum()
}

/// The normalization of the Matrix Nuclear-Norm: each column centred (its mean
/// over the rows subtracted), then each row scaled to unit L2 norm. A row that
/// is zero after centring stays zero.
pub fn mnn_normalize<T: Real>(w: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = w.to_owned();
    if out.nrows() == 0 {
        return out;
    }
    let rows = T::of(out.nrows() as f64);
    let mean = w.sum_axis(Axis(0)).mapv(|v| v / rows);
    out -= &mean.view().insert_axis(Axis(0));
    for mut row in out.outer_iter_mut() {
        let norm = row
            .iter()
            .map(|v| v.as_f64() * v.as_f64())
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| T::of(v.as_f64() / norm));
        }
    }
    out
}

/// The Matrix Nuclear-Norm of Li, Xia, Chang & Wu, *Large Language Model
/// Evaluation via Matrix Nuclear-Norm* (arXiv:2410.10672, 2024): the nuclear
/// norm of the normalized matrix ([`mnn_normalize`]) approximated without an
/// SVD by its L1,2 norm restricted to the `D = min(rows, cols)` largest
/// columns, `Σ_{j ≤ D} top(‖a_j‖₂)` ([`top_column_norm_sum`]), `O(rows · cols)`
/// instead of `O(rows · cols · min)`.
///
/// `w` is `[samples, features]` (e.g. one response's hidden states, tokens by
/// hidden size). The paper reports this value divided by the number of tokens;
/// that division is left to the caller.
///
/// The approximation is close when the rows are nearly one-hot (the class
/// predictions the L1,2 argument was made for, after Cui et al.'s Batch
/// Nuclear-norm Maximization): the columns are then nearly orthogonal. For rows
/// along one dense direction it can overestimate the nuclear norm several
/// times over.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_lowrank::{matrix_nuclear_norm, mnn_normalize, nuclear_norm};
///
/// // 32 one-hot rows over 8 classes, 4 each: the approximation gives 16, the
/// // nuclear norm of the normalized matrix is √224 ≈ 14.97.
/// let diverse = Array2::from_shape_fn((32, 8), |(r, c)| f32::from(u8::from(r % 8 == c)));
/// let mnn = matrix_nuclear_norm(diverse.view())?;
/// assert!((mnn - 16.0).abs() < 1e-4);
/// let exact = nuclear_norm(mnn_normalize(diverse.view()).view())?;
/// assert!((exact - 224f64.sqrt()).abs() < 1e-4);
/// // Collapsed predictions (28 rows of class 0, 4 of class 1) score lower.
/// let collapsed = Array2::from_shape_fn((32, 8), |(r, c)| f32::from(u8::from(c == usize::from(r >= 28))));
/// assert!(matrix_nuclear_norm(collapsed.view())? < 0.6 * mnn);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::NonFinite`](crate::Error::NonFinite) for a NaN or infinity in `w`.
pub fn matrix_nuclear_norm<T: Real>(w: ArrayView2<'_, T>) -> Result<f64> {
    check_finite("matrix_nuclear_norm", w)?;
    let d = w.nrows().min(w.ncols());
    Ok(top_column_norm_sum(mnn_normalize(w).view(), d))
}

/// A subgradient of the nuclear norm, `U Vᵀ` from the thin SVD `W = U Σ Vᵀ`:
/// the update direction of the nuclear-norm regularizer in Trained Rank
/// Pruning (Xu et al., *Trained Rank Pruning for Efficient Deep Neural
/// Networks*, IJCAI 2020; arXiv:1812.02402), `W ← W − λ U Vᵀ`.
///
/// Where `W` has full rank and distinct singular values this is the gradient of
/// `‖W‖_*`; for singular values at 0 it is still a subgradient (the extra
/// directions have spectral norm 1).
///
/// # Errors
/// As [`effective_rank`].
pub fn nuclear_norm_subgradient<T: Real>(w: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_finite("nuclear_norm_subgradient", w)?;
    let svd = linalg::svd(w)?;
    Ok(linalg::matmul(svd.u.view(), svd.vt.view())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use ndarray::{array, Array1};
    use tensorpress_tensor::SeededRng;

    fn random_f64(seed: u64, m: usize, n: usize) -> Array2<f64> {
        SeededRng::new(seed).array_normal((m, n)).mapv(f64::from)
    }

    #[test]
    fn effective_rank_bounds_and_values() {
        let w = array![[3.0f32, 1.0], [6.0, 2.0]];
        assert!((effective_rank(w.view()).unwrap() - 1.0).abs() < 1e-5);
        // σ = (2, 1, 1): p = (1/2, 1/4, 1/4), H = 1.5 ln 2, exp(H) = 2^1.5.
        let s = array![2.0f64, 1.0, 1.0];
        assert!((effective_rank_of_spectrum(s.view()) - 2f64.powf(1.5)).abs() < 1e-12);
        assert!(
            (effective_rank(Array2::from_diag(&s).view()).unwrap() - 2f64.powf(1.5)).abs() < 1e-9
        );
        assert_eq!(
            effective_rank(Array2::<f64>::zeros((3, 2)).view()).unwrap(),
            0.0
        );
        assert_eq!(
            effective_rank_of_spectrum(Array1::<f32>::zeros(0).view()),
            0.0
        );
        // Zeros in the spectrum do not count.
        let padded = array![2.0f64, 1.0, 1.0, 0.0, 0.0];
        assert_eq!(
            effective_rank_of_spectrum(padded.view()),
            effective_rank_of_spectrum(s.view())
        );
        let g = random_f64(3, 30, 20);
        let e = effective_rank(g.view()).unwrap();
        assert!((1.0..=20.0).contains(&e), "{e}");
    }

    #[test]
    fn nuclear_norm_is_the_sum_of_singular_values() {
        let w = random_f64(4, 9, 6);
        let s = linalg::singular_values(w.view()).unwrap();
        assert!((nuclear_norm(w.view()).unwrap() - s.sum()).abs() < 1e-12);
        // Triangle inequality and ‖W‖_F ≤ ‖W‖_* ≤ √rank ‖W‖_F.
        let v = random_f64(5, 9, 6);
        let sum = &w + &v;
        let (nw, nv, ns) = (
            nuclear_norm(w.view()).unwrap(),
            nuclear_norm(v.view()).unwrap(),
            nuclear_norm(sum.view()).unwrap(),
        );
        assert!(ns <= nw + nv + 1e-12);
        let fro = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(fro <= nw && nw <= 6f64.sqrt() * fro);
    }

    #[test]
    fn l12_sum_is_exact_for_orthogonal_columns() {
        // Columns (3, 4, 0), (0, 0, 2), (0, 0, 0)·: orthogonal, norms 5, 2, 0.
        let w = array![[3.0f64, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
        assert_eq!(top_column_norm_sum(w.view(), 3), 7.0);
        assert_eq!(top_column_norm_sum(w.view(), 1), 5.0);
        assert_eq!(top_column_norm_sum(w.view(), 99), 7.0);
        assert!((nuclear_norm(w.view()).unwrap() - 7.0).abs() < 1e-12);
        // Otherwise the full L1,2 sum bounds the nuclear norm from above.
        let g = random_f64(6, 12, 8);
        assert!(nuclear_norm(g.view()).unwrap() <= top_column_norm_sum(g.view(), 8) + 1e-12);
    }

    #[test]
    fn mnn_normalization_centres_columns_and_scales_rows() {
        let w = random_f64(7, 10, 5) + 3.0;
        let n = mnn_normalize(w.view());
        // Rows unit norm; centred before scaling, so the mean row of `n` is a
        // combination of the centred rows, not 3.
        for row in n.outer_iter() {
            assert!((row.dot(&row) - 1.0).abs() < 1e-12);
        }
        // Constant rows centre to zero and stay zero, without NaN.
        let flat = Array2::from_elem((4, 3), 2.0f32);
        assert!(mnn_normalize(flat.view()).iter().all(|&v| v == 0.0));
        assert_eq!(matrix_nuclear_norm(flat.view()).unwrap(), 0.0);
        assert_eq!(
            matrix_nuclear_norm(Array2::<f32>::zeros((0, 4)).view()).unwrap(),
            0.0
        );
        // Tracks the nuclear norm of the normalized matrix within the
        // ‖·‖_* ≤ Σ‖a_j‖ ≤ √cols ‖·‖_F band.
        let x = random_f64(8, 40, 16);
        let nx = mnn_normalize(x.view());
        let approx = matrix_nuclear_norm(x.view()).unwrap();
        assert!(nuclear_norm(nx.view()).unwrap() <= approx + 1e-9);
        assert!(approx <= 4.0 * 40f64.sqrt());
    }

    #[test]
    fn subgradient_matches_central_differences() {
        // Full rank 7×5 with distinct singular values: ‖·‖_* is differentiable.
        let w = random_f64(12, 7, 5);
        let s = linalg::singular_values(w.view()).unwrap();
        assert!(s.windows(2).into_iter().all(|p| p[0] - p[1] > 1e-2), "{s}");
        assert!(s[4] > 1e-2);
        let g = nuclear_norm_subgradient(w.view()).unwrap();
        let h = 1e-5;
        let mut worst = 0.0f64;
        for i in 0..7 {
            for j in 0..5 {
                let (mut plus, mut minus) = (w.clone(), w.clone());
                plus[[i, j]] += h;
                minus[[i, j]] -= h;
                let fd = (nuclear_norm(plus.view()).unwrap() - nuclear_norm(minus.view()).unwrap())
                    / (2.0 * h);
                worst = worst.max((fd - g[[i, j]]).abs());
            }
        }
        assert!(worst < 1e-6, "largest |finite difference − U Vᵀ| = {worst}");
        // The f32 path agrees with the f64 one.
        let g32 = nuclear_norm_subgradient(w.mapv(|v| v as f32).view()).unwrap();
        assert!(g32
            .iter()
            .zip(g.iter())
            .all(|(&a, &b)| (f64::from(a) - b).abs() < 1e-4));
        // ⟨U Vᵀ, W⟩ = ‖W‖_* (the subgradient is in the dual-norm unit ball and
        // attains it).
        let inner: f64 = g.iter().zip(w.iter()).map(|(a, b)| a * b).sum();
        assert!((inner - s.sum()).abs() < 1e-9);
    }

    #[test]
    fn non_finite_inputs_are_typed_errors() {
        let mut w = random_f64(13, 4, 4);
        w[[1, 3]] = f64::NAN;
        assert!(matches!(
            nuclear_norm(w.view()),
            Err(Error::NonFinite { row: 1, col: 3, .. })
        ));
        assert!(matches!(
            effective_rank(w.view()),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            matrix_nuclear_norm(w.view()),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            nuclear_norm_subgradient(w.view()),
            Err(Error::NonFinite { .. })
        ));
    }
}
