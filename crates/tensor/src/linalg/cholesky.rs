//! Cholesky factorizations, damping escalation and SPD inverses.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::cholesky::llt::factor::{LltError, LltRegularization};
use faer::MatMut;
use ndarray::{Array2, ArrayView2};

use super::{check_finite, check_square, faer_mut, faer_ref, mirror_lower, Real};
use crate::{Error, Result};

/// How [`cholesky_damped`] escalates the diagonal damping until the factorization
/// succeeds.
///
/// Attempt `k` adds `d_k × mean(diag A)` to the diagonal, with
/// `d_0 = initial` and `d_{k+1} = min(d_k × factor, max)`; the last attempt uses
/// exactly `max`. GPTQ's usual setting (`percdamp = 0.01`) is the default's first
/// attempt.
///
/// ```
/// use tensorpress_tensor::linalg::DampSchedule;
///
/// let s = DampSchedule::new(0.01).factor(10.0).max(1.0);
/// assert_eq!(s.damps().collect::<Vec<_>>(), vec![0.01, 0.1, 1.0]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DampSchedule {
    initial: f64,
    factor: f64,
    max: f64,
}

impl Default for DampSchedule {
    /// `0.01`, doubling, up to `1.0` (eight attempts).
    fn default() -> Self {
        DampSchedule {
            initial: 0.01,
            factor: 2.0,
            max: 1.0,
        }
    }
}

impl DampSchedule {
    /// A schedule starting at the relative damp `initial`, doubling up to `1.0`
    /// (or up to `initial` if that is larger).
    pub fn new(initial: f64) -> Self {
        DampSchedule {
            initial,
            factor: 2.0,
            max: initial.max(1.0),
        }
    }

    /// Sets the multiplier between attempts (must be > 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets the largest relative damp tried (must be ≥ `initial`).
    pub fn max(mut self, max: f64) -> Self {
        self.max = max;
        self
    }

    /// The relative damp of the first attempt.
    pub fn initial_damp(&self) -> f64 {
        self.initial
    }

    /// Checks that the schedule terminates and only adds non-negative damping.
    pub fn validate(&self) -> Result<()> {
        let ok = self.initial.is_finite()
            && self.initial > 0.0
            && self.factor.is_finite()
            && self.factor > 1.0
            && self.max.is_finite()
            && self.max >= self.initial;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidDampSchedule {
                initial: self.initial,
                factor: self.factor,
                max: self.max,
            })
        }
    }

    /// The relative damps tried, in order. Empty for an invalid schedule.
    pub fn damps(&self) -> impl Iterator<Item = f64> {
        let valid = self.validate().is_ok();
        let (factor, max) = (self.factor, self.max);
        let mut next = valid.then_some(self.initial);
        std::iter::from_fn(move || {
            let d = next?;
            next = (d < max).then(|| (d * factor).min(max));
            Some(d)
        })
    }
}

/// A factor computed after damping the diagonal, with the damping that made it work.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DampedFactor<T> {
    /// The triangular factor (lower for [`cholesky_damped`], upper for
    /// [`cholesky_inverse_upper_damped`]).
    pub factor: Array2<T>,
    /// The relative damp that succeeded (a value of the [`DampSchedule`]).
    pub damp: f64,
    /// The absolute amount added to every diagonal entry: `damp × mean(diag A)`.
    pub shift: f64,
    /// Number of factorizations tried, including the successful one.
    pub attempts: usize,
}

/// Runs faer's in-place LLᵀ on the lower triangle of `a`; `Err(pivot)` on failure.
fn llt_in_place<T: Real>(a: MatMut<'_, T>) -> std::result::Result<(), usize> {
    let par = faer::get_global_parallelism();
    let n = a.nrows();
    let mut mem = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<T>(
        n,
        par,
        Default::default(),
    ));
    llt::factor::cholesky_in_place(
        a,
        LltRegularization::default(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map(|_| ())
    .map_err(|e| match e {
        LltError::NonPositivePivot { index } => index,
    })
}

/// Lower Cholesky factor of `a + shift·I`, with the strict upper triangle zeroed.
fn lower_factor<T: Real>(a: ArrayView2<'_, T>, shift: T) -> std::result::Result<Array2<T>, usize> {
    // faer factors column-major storage fastest (~1.5× over row-major), so work
    // on the transposed view of a row-major buffer and transpose once at the end.
    let n = a.nrows();
    let mut l = Array2::<T>::zeros((n, n));
    faer_mut(&mut l)
        .transpose_mut()
        .copy_from_triangular_lower(faer_ref(a));
    for i in 0..n {
        l[[i, i]] += shift;
    }
    llt_in_place(faer_mut(&mut l).transpose_mut())?;
    // `l`'s upper triangle holds Lᵀ; faer may have used the rest as workspace.
    transpose_triangle(&mut l, Triangle::Upper);
    Ok(l)
}

/// Upper `U` with `(a + shift·I)⁻¹ = Uᵀ U`, by one Cholesky and one triangular
/// inverse.
///
/// With `P` the reversal permutation, factor `P A P = L' L'ᵀ`; then
/// `A⁻¹ = (P L'⁻ᵀ P)(P L'⁻¹ P)` and `U = P L'⁻¹ P` is upper triangular with a
/// positive diagonal, i.e. the upper Cholesky factor of `A⁻¹`. This costs
/// `2n³/3` flops instead of the `4n³/3` of factor → invert → factor again, and
/// never forms `A⁻¹` explicitly.
fn inverse_upper_factor<T: Real>(
    a: ArrayView2<'_, T>,
    shift: T,
) -> std::result::Result<Array2<T>, usize> {
    let n = a.nrows();
    let par = faer::get_global_parallelism();
    // As in `lower_factor`, faer works on column-major views of row-major buffers.
    let mut w = Array2::<T>::zeros((n, n));
    // Lower triangle of P A P, read from the lower triangle of A.
    faer_mut(&mut w)
        .transpose_mut()
        .reverse_rows_and_cols_mut()
        .copy_from_triangular_lower(faer_ref(a).reverse_rows_and_cols().transpose());
    for i in 0..n {
        w[[i, i]] += shift;
    }
    llt_in_place(faer_mut(&mut w).transpose_mut().reverse_rows_and_cols_mut())?;
    let mut u = Array2::<T>::zeros((n, n));
    faer::linalg::triangular_inverse::invert_lower_triangular(
        faer_mut(&mut u).transpose_mut().reverse_rows_and_cols_mut(),
        faer_ref(w.view()).transpose().reverse_rows_and_cols(),
        par,
    );
    // `u`'s lower triangle holds Uᵀ.
    transpose_triangle(&mut u, Triangle::Lower);
    Ok(u)
}

#[derive(Clone, Copy, PartialEq)]
enum Triangle {
    Lower,
    Upper,
}

/// Replaces a square array by the transpose of its `from` triangle (diagonal
/// included), zeroing the other strict triangle; in cache-sized tiles.
fn transpose_triangle<T: Real>(a: &mut Array2<T>, from: Triangle) {
    const TILE: usize = 64;
    let n = a.nrows();
    for ib in (0..n).step_by(TILE) {
        for jb in (0..=ib).step_by(TILE) {
            for i in ib..(ib + TILE).min(n) {
                for j in jb..(jb + TILE).min(i) {
                    // (i, j) is strictly lower, (j, i) strictly upper.
                    let (src, dst) = match from {
                        Triangle::Upper => ([j, i], [i, j]),
                        Triangle::Lower => ([i, j], [j, i]),
                    };
                    a[dst] = a[src];
                    a[src] = T::zero();
                }
            }
        }
    }
}

/// Mean of the diagonal, in f64.
fn mean_diag<T: Real>(a: &ArrayView2<'_, T>) -> f64 {
    let n = a.nrows();
    if n == 0 {
        return 0.0;
    }
    a.diag().iter().map(|v| v.as_f64()).sum::<f64>() / n as f64
}

fn damped<T: Real>(
    op: &'static str,
    a: ArrayView2<'_, T>,
    schedule: &DampSchedule,
    factor: impl Fn(ArrayView2<'_, T>, T) -> std::result::Result<Array2<T>, usize>,
) -> Result<DampedFactor<T>> {
    check_square(op, &a)?;
    check_finite(op, &a, true)?;
    schedule.validate()?;
    let mean = mean_diag(&a);
    let mut last = (0, 0.0);
    for (k, damp) in schedule.damps().enumerate() {
        let shift = damp * mean;
        match factor(a.view(), T::of(shift)) {
            Ok(f) => {
                return Ok(DampedFactor {
                    factor: f,
                    damp,
                    shift,
                    attempts: k + 1,
                })
            }
            Err(pivot) => last = (pivot, damp),
        }
    }
    Err(Error::NotPositiveDefinite {
        pivot: last.0,
        damp_tried: last.1,
    })
}

/// Lower Cholesky factor `L` of a symmetric positive definite `a`: `a = L Lᵀ`.
///
/// Reads the lower triangle of `a`. The strict upper triangle of `L` is zero.
///
/// # Errors
/// [`Error::NotSquare`], [`Error::NonFinite`], and
/// [`Error::NotPositiveDefinite`] (with `damp_tried = 0.0`) when a pivot is not
/// positive.
///
/// ```
/// use ndarray::array;
/// use tensorpress_tensor::linalg::cholesky;
///
/// let a = array![[4.0f64, 2.0], [2.0, 5.0]];
/// let l = cholesky(a.view())?;
/// assert_eq!(l, array![[2.0, 0.0], [1.0, 2.0]]);
/// # Ok::<(), tensorpress_tensor::Error>(())
/// ```
pub fn cholesky<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_square("cholesky", &a)?;
    check_finite("cholesky", &a, true)?;
    lower_factor(a, T::zero()).map_err(|pivot| Error::NotPositiveDefinite {
        pivot,
        damp_tried: 0.0,
    })
}

/// Lower Cholesky factor of `a + d × mean(diag a) × I`, trying the relative damps
/// `d` of `schedule` in order until one succeeds.
///
/// # Errors
/// [`Error::NotPositiveDefinite`] with the last damp tried when every attempt
/// fails; [`Error::InvalidDampSchedule`], [`Error::NotSquare`], [`Error::NonFinite`].
pub fn cholesky_damped<T: Real>(
    a: ArrayView2<'_, T>,
    schedule: &DampSchedule,
) -> Result<DampedFactor<T>> {
    damped("cholesky_damped", a, schedule, lower_factor)
}

/// Upper Cholesky factor `U` of `a⁻¹` (`a⁻¹ = Uᵀ U`) for a symmetric positive
/// definite `a`; this is the matrix GPTQ walks column by column
/// (`torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)`).
///
/// Computed without forming `a⁻¹`: one Cholesky of the reversed matrix and one
/// triangular inverse. The strict lower triangle of `U` is zero.
///
/// # Errors
/// As [`cholesky`].
pub fn cholesky_inverse_upper<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    check_square("cholesky_inverse_upper", &a)?;
    check_finite("cholesky_inverse_upper", &a, true)?;
    inverse_upper_factor(a, T::zero()).map_err(|pivot| Error::NotPositiveDefinite {
        // Report the pivot in the caller's (unreversed) indexing.
        pivot: a.nrows() - 1 - pivot,
        damp_tried: 0.0,
    })
}

/// [`cholesky_inverse_upper`] of `a + d × mean(diag a) × I`, escalating `d` along
/// `schedule` until the factorization succeeds.
///
/// # Errors
/// As [`cholesky_damped`].
pub fn cholesky_inverse_upper_damped<T: Real>(
    a: ArrayView2<'_, T>,
    schedule: &DampSchedule,
) -> Result<DampedFactor<T>> {
    let n = a.nrows();
    damped("cholesky_inverse_upper_damped", a, schedule, |a, s| {
        inverse_upper_factor(a, s).map_err(|p| n - 1 - p)
    })
}

/// Inverse of a symmetric positive definite `a`, through its Cholesky factor.
///
/// Reads the lower triangle of `a`; the result is exactly symmetric.
///
/// # Errors
/// As [`cholesky`].
pub fn spd_inverse<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let l = cholesky(a)?;
    let n = l.nrows();
    let par = faer::get_global_parallelism();
    let mut inv = Array2::<T>::zeros((n, n));
    let mut mem = MemBuffer::new(llt::inverse::inverse_scratch::<T>(n, par));
    llt::inverse::inverse(
        faer_mut(&mut inv),
        faer_ref(l.view()),
        par,
        MemStack::new(&mut mem),
    );
    mirror_lower(&mut inv);
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::testutil::{max_abs_diff, random_spd};
    use crate::SeededRng;
    use ndarray::{array, Array2};
    use proptest::prelude::*;

    fn is_lower<T: Real>(l: &Array2<T>) -> bool {
        l.indexed_iter()
            .all(|((i, j), &v)| j <= i || v == T::zero())
    }

    fn check_cholesky<T: Real>(n: usize, seed: u64, tol: f64) {
        let mut rng = SeededRng::new(seed);
        let a = random_spd::<T>(&mut rng, n);
        let l = cholesky(a.view()).unwrap();
        assert!(is_lower(&l));
        assert!(l.diag().iter().all(|&d| d > T::zero()));
        let err = max_abs_diff(l.dot(&l.t()).view(), a.view());
        assert!(err < tol, "n={n}: ‖LLᵀ − A‖ = {err}");
    }

    #[test]
    fn cholesky_reconstructs_f64_and_f32() {
        for n in [1, 2, 7, 33, 130] {
            check_cholesky::<f64>(n, n as u64, 1e-12);
            check_cholesky::<f32>(n, n as u64, 1e-4);
        }
    }

    #[test]
    fn cholesky_reads_only_the_lower_triangle() {
        let a = array![[4.0f64, 999.0], [2.0, 3.0]];
        let l = cholesky(a.view()).unwrap();
        assert!((l[[1, 0]] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn cholesky_rejects_indefinite_and_bad_shapes() {
        let a = array![[1.0f64, 2.0], [2.0, 1.0]];
        assert!(matches!(
            cholesky(a.view()),
            Err(Error::NotPositiveDefinite {
                pivot: 1,
                damp_tried: 0.0
            })
        ));
        let r = Array2::<f32>::zeros((2, 3));
        assert!(matches!(
            cholesky(r.view()),
            Err(Error::NotSquare {
                rows: 2,
                cols: 3,
                ..
            })
        ));
        let nan = array![[1.0f32, 0.0], [f32::NAN, 1.0]];
        assert!(matches!(
            cholesky(nan.view()),
            Err(Error::NonFinite { row: 1, col: 0, .. })
        ));
    }

    #[test]
    fn damping_escalates_until_it_works() {
        // Eigenvalues 3 and −1, mean diagonal 1: needs a shift above 1.
        let a = array![[1.0f64, 2.0], [2.0, 1.0]];
        let s = DampSchedule::new(0.3).factor(2.0).max(4.0);
        let d = cholesky_damped(a.view(), &s).unwrap();
        assert_eq!(d.damp, 0.3 * 2.0 * 2.0);
        assert_eq!(d.shift, d.damp);
        assert_eq!(d.attempts, 3);
        let shifted = &a + &(Array2::<f64>::eye(2) * d.shift);
        assert!(max_abs_diff(d.factor.dot(&d.factor.t()).view(), shifted.view()) < 1e-12);

        let s = DampSchedule::new(0.1).factor(3.0).max(0.5);
        assert_eq!(
            s.damps().collect::<Vec<_>>(),
            vec![0.1, 0.30000000000000004, 0.5]
        );
        assert!(matches!(
            cholesky_damped(a.view(), &s),
            Err(Error::NotPositiveDefinite { damp_tried, .. }) if damp_tried == 0.5
        ));
        let bad = DampSchedule::new(0.1).factor(1.0);
        assert!(matches!(
            cholesky_damped(a.view(), &bad),
            Err(Error::InvalidDampSchedule { .. })
        ));
        assert_eq!(bad.damps().count(), 0);
    }

    fn check_inverse<T: Real>(n: usize, seed: u64, tol: f64) {
        let mut rng = SeededRng::new(seed);
        let a = random_spd::<T>(&mut rng, n);
        let inv = spd_inverse(a.view()).unwrap();
        let eye = Array2::<T>::eye(n);
        let err = max_abs_diff(a.dot(&inv).view(), eye.view());
        assert!(err < tol, "n={n}: ‖A A⁻¹ − I‖ = {err}");
        assert_eq!(inv, inv.t());

        let u = cholesky_inverse_upper(a.view()).unwrap();
        assert!(is_lower(&u.t().to_owned()), "U must be upper triangular");
        assert!(u.diag().iter().all(|&d| d > T::zero()));
        let err = max_abs_diff(u.t().dot(&u).view(), inv.view());
        let scale = inv.iter().fold(0.0f64, |m, v| m.max(v.abs().as_f64()));
        assert!(err < tol * scale, "n={n}: ‖UᵀU − A⁻¹‖ = {err}");
        // And U agrees with the textbook route: the upper Cholesky factor of A⁻¹.
        let l_of_inv = cholesky(inv.view()).unwrap();
        let err = max_abs_diff(u.view(), l_of_inv.t());
        assert!(err < tol * scale.sqrt(), "n={n}: U vs chol(A⁻¹)ᵀ = {err}");
    }

    #[test]
    fn inverses_satisfy_identities() {
        for n in [1, 2, 5, 64, 129] {
            check_inverse::<f64>(n, 100 + n as u64, 1e-9);
            check_inverse::<f32>(n, 100 + n as u64, 2e-3);
        }
    }

    #[test]
    fn damped_inverse_upper_matches_manual_shift() {
        let mut rng = SeededRng::new(5);
        let mut a = random_spd::<f64>(&mut rng, 12);
        // Make it singular: a zero row/column.
        a.row_mut(3).fill(0.0);
        a.column_mut(3).fill(0.0);
        assert!(cholesky_inverse_upper(a.view()).is_err());
        let d = cholesky_inverse_upper_damped(a.view(), &DampSchedule::default()).unwrap();
        assert_eq!(d.attempts, 1);
        let mut shifted = a.clone();
        let mean = a.diag().sum() / 12.0;
        for i in 0..12 {
            shifted[[i, i]] += 0.01 * mean;
        }
        let expect = cholesky_inverse_upper(shifted.view()).unwrap();
        assert!(max_abs_diff(d.factor.view(), expect.view()) < 1e-10);
    }

    #[test]
    fn inverse_upper_reports_pivot_in_caller_indexing() {
        let a = array![[1.0f64, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        let err = cholesky_inverse_upper(a.view()).unwrap_err();
        assert!(matches!(err, Error::NotPositiveDefinite { pivot: 1, .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn cholesky_identity_holds(n in 1usize..40, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let a = random_spd::<f64>(&mut rng, n);
            let l = cholesky(a.view()).unwrap();
            prop_assert!(max_abs_diff(l.dot(&l.t()).view(), a.view()) < 1e-10);
            let u = cholesky_inverse_upper(a.view()).unwrap();
            let eye = Array2::<f64>::eye(n);
            // A Uᵀ U = I.
            prop_assert!(max_abs_diff(a.dot(&u.t().dot(&u)).view(), eye.view()) < 1e-8);
        }
    }
}
