//! Dense linear algebra on ndarray matrices, computed by [faer].
//!
//! Every function takes [`ArrayView2`]s of any layout (row-major, column-major,
//! transposed or strided views are read in place, without copying into a
//! temporary) and returns standard-layout (row-major) [`Array2`]s, so results
//! can be handed to `as_slice()` and to the rest of the workspace directly.
//! The element type is `f32` or `f64` ([`Real`]).
//!
//! | function | computes |
//! |---|---|
//! | [`cholesky`] | lower `L` with `A = L Lᵀ` |
//! | [`cholesky_damped`] | the same after adding `damp × mean(diag A)` to the diagonal, escalating the damp along a [`DampSchedule`] |
//! | [`spd_inverse`] | `A⁻¹` of a symmetric positive definite `A` (through Cholesky) |
//! | [`cholesky_inverse_upper`], [`cholesky_inverse_upper_damped`] | upper `U` with `A⁻¹ = Uᵀ U` (what GPTQ iterates over) |
//! | [`eigh`], [`eigvalsh`] | ascending eigenvalues `Λ` and eigenvectors `V` with `A V = V Λ` |
//! | [`svd`], [`singular_values`] | thin `A = U diag(S) Vᵀ`, `S` descending |
//! | [`qr`] | thin `A = Q R` |
//! | [`matmul`], [`gram`] | `A B` and `Aᵀ A` through faer's parallel GEMM |
//!
//! Parallelism follows faer's global setting ([`faer::set_global_parallelism`]),
//! which defaults to rayon's global pool.
//!
//! Symmetric inputs (`cholesky*`, `spd_inverse`, `eigh`) are read from their
//! **lower triangle** only; the upper triangle is ignored.

mod cholesky;
mod decomp;
#[cfg(all(test, feature = "lapack"))]
mod lapack_check;

pub use cholesky::{
    cholesky, cholesky_damped, cholesky_inverse_upper, cholesky_inverse_upper_damped, spd_inverse,
    DampSchedule, DampedFactor,
};
pub use decomp::{eigh, eigvalsh, gram, matmul, qr, singular_values, svd, Eigh, Qr, Svd};

pub(crate) use decomp::gram_accumulate;

use faer::{MatMut, MatRef};
use ndarray::{Array2, ArrayView2};

use crate::{Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real floating-point type the linear algebra runs in: `f32` or `f64`.
///
/// The trait is sealed; it only exists to write the functions once for both.
pub trait Real:
    faer::traits::RealField
    + num_traits::Float
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + std::iter::Sum
    + sealed::Sealed
    + 'static
{
    /// Converts from `f64` (rounding to nearest for `f32`).
    fn of(v: f64) -> Self;
    /// Converts to `f64` (exactly).
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}

/// A faer view of an ndarray view, any strides, no copy.
pub(crate) fn faer_ref<T: Real>(a: ArrayView2<'_, T>) -> MatRef<'_, T> {
    let (rows, cols) = a.dim();
    let strides = a.strides();
    // SAFETY: `a.as_ptr()` points at element (0, 0) of a live view that borrows its
    // data for the returned lifetime; every element `(i, j)` with `i < rows`,
    // `j < cols` lies at `ptr + i·strides[0] + j·strides[1]` inside that view, which is
    // exactly the addressing faer uses. The view is shared and read-only, as is `MatRef`.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), rows, cols, strides[0], strides[1]) }
}

/// A faer mutable view of an owned standard-layout array.
pub(crate) fn faer_mut<T: Real>(a: &mut Array2<T>) -> MatMut<'_, T> {
    let (rows, cols) = a.dim();
    let strides = a.strides();
    let (rs, cs) = (strides[0], strides[1]);
    // SAFETY: `a` is uniquely borrowed for the returned lifetime, so no other access
    // can alias; `as_mut_ptr` is element (0, 0) and every `(i, j)` in bounds is at
    // `ptr + i·rs + j·cs` within the array's allocation. Owned arrays never have
    // overlapping elements, so the mutable view is sound.
    unsafe { MatMut::from_raw_parts_mut(a.as_mut_ptr(), rows, cols, rs, cs) }
}

/// Copies a faer matrix into a new row-major ndarray.
pub(crate) fn to_array<T: Real>(m: MatRef<'_, T>) -> Array2<T> {
    let mut out = Array2::<T>::zeros((m.nrows(), m.ncols()));
    faer_mut(&mut out).copy_from(m);
    out
}

/// Fails unless `a` is square.
pub(crate) fn check_square<T>(op: &'static str, a: &ArrayView2<'_, T>) -> Result<usize> {
    let (rows, cols) = a.dim();
    if rows != cols {
        return Err(Error::NotSquare { op, rows, cols });
    }
    Ok(rows)
}

/// Fails on the first NaN or infinity in `a` (all of it, or its lower triangle).
pub(crate) fn check_finite<T: Real>(
    op: &'static str,
    a: &ArrayView2<'_, T>,
    lower_only: bool,
) -> Result<()> {
    for (i, row) in a.outer_iter().enumerate() {
        let row = if lower_only {
            row.slice_move(ndarray::s![..(i + 1).min(a.ncols())])
        } else {
            row
        };
        if let Some((j, &v)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                op,
                row: i,
                col: j,
                value: v.as_f64(),
            });
        }
    }
    Ok(())
}

/// Copies the lower triangle of a square array onto the upper one, in place
/// (in cache-sized tiles).
pub(crate) fn mirror_lower<T: Copy>(a: &mut Array2<T>) {
    const TILE: usize = 64;
    let n = a.nrows();
    for ib in (0..n).step_by(TILE) {
        for jb in (0..=ib).step_by(TILE) {
            for i in ib..(ib + TILE).min(n) {
                for j in jb..(jb + TILE).min(i) {
                    a[[j, i]] = a[[i, j]];
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use ndarray::{Array2, ArrayView2};

    use super::Real;
    use crate::SeededRng;

    /// Largest absolute entry of `a − b`.
    pub fn max_abs_diff<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> f64 {
        assert_eq!(a.dim(), b.dim());
        a.iter()
            .zip(b.iter())
            .map(|(&x, &y)| (x - y).abs().as_f64())
            .fold(0.0, f64::max)
    }

    /// A random `n × n` symmetric positive definite matrix `G Gᵀ / k + εI`.
    pub fn random_spd<T: Real>(rng: &mut SeededRng, n: usize) -> Array2<T> {
        let k = n + 3;
        let g = rng.array_normal((n, k)).mapv(|v| T::of(v as f64));
        let mut a = g.dot(&g.t()) / T::of(k as f64);
        for i in 0..n {
            a[[i, i]] += T::of(0.1);
        }
        a
    }

    /// A random dense `m × n` matrix of standard normals.
    pub fn random_mat<T: Real>(rng: &mut SeededRng, m: usize, n: usize) -> Array2<T> {
        rng.array_normal((m, n)).mapv(|v| T::of(v as f64))
    }

    /// `‖QᵀQ − I‖_max` for a matrix with orthonormal columns.
    pub fn orthonormality_error<T: Real>(q: ArrayView2<'_, T>) -> f64 {
        let qtq = q.t().dot(&q);
        let eye = Array2::<T>::eye(q.ncols());
        max_abs_diff(qtq.view(), eye.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, s};

    #[test]
    fn faer_views_follow_ndarray_strides() {
        let a = array![[1.0f64, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let t = a.t();
        let m = faer_ref(t);
        assert_eq!((m.nrows(), m.ncols()), (3, 2));
        assert_eq!(m[(2, 1)], 6.0);
        let rev = a.slice(s![..;-1, ..;-2]);
        let m = faer_ref(rev);
        assert_eq!(m[(0, 0)], 6.0);
        assert_eq!(m[(1, 1)], 1.0);
        assert_eq!(to_array(m), rev);
    }

    #[test]
    fn empty_matrices_are_fine() {
        let e = Array2::<f64>::zeros((0, 0));
        assert_eq!(cholesky(e.view()).unwrap().dim(), (0, 0));
        assert_eq!(cholesky_inverse_upper(e.view()).unwrap().dim(), (0, 0));
        assert_eq!(spd_inverse(e.view()).unwrap().dim(), (0, 0));
        assert_eq!(eigh(e.view()).unwrap().values.len(), 0);
        let d = cholesky_damped(e.view(), &DampSchedule::default()).unwrap();
        assert_eq!(d.attempts, 1);
        let r = Array2::<f32>::zeros((3, 0));
        let s = svd(r.view()).unwrap();
        assert_eq!((s.u.dim(), s.s.len(), s.vt.dim()), ((3, 0), 0, (0, 0)));
        let q = qr(r.view()).unwrap();
        assert_eq!((q.q.dim(), q.r.dim()), ((3, 0), (0, 0)));
        assert_eq!(
            matmul(r.view(), Array2::<f32>::zeros((0, 2)).view()).unwrap(),
            Array2::<f32>::zeros((3, 2))
        );
    }

    #[test]
    fn finite_check_names_the_position() {
        let a = array![[1.0f32, f32::NAN], [f32::INFINITY, 1.0]];
        let err = check_finite("t", &a.view(), false).unwrap_err();
        assert!(matches!(err, Error::NonFinite { row: 0, col: 1, .. }));
        let err = check_finite("t", &a.view(), true).unwrap_err();
        assert!(matches!(err, Error::NonFinite { row: 1, col: 0, .. }));
    }
}
