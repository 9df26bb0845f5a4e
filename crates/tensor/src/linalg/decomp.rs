//! Eigendecomposition, SVD, QR and matrix products.

use faer::diag::DiagMut;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::matmul::triangular::BlockStructure;
use faer::linalg::svd::{self as fsvd, ComputeSvdVectors};
use faer::{Accum, Mat};
use ndarray::{Array1, Array2, ArrayView2};

use super::{check_finite, check_square, faer_mut, faer_ref, mirror_lower, to_array, Real};
use crate::{Error, Result};

/// Eigendecomposition of a symmetric matrix: `A V = V diag(values)`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Eigh<T> {
    /// Eigenvalues in ascending order.
    pub values: Array1<T>,
    /// Orthonormal eigenvectors as **columns**, `[n, n]`, in the order of `values`.
    pub vectors: Array2<T>,
}

/// Thin singular value decomposition `A = U diag(s) Vᵀ` of an `[m, n]` matrix.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Svd<T> {
    /// Left singular vectors as columns, `[m, k]` with `k = min(m, n)`.
    pub u: Array2<T>,
    /// Singular values, descending, `[k]`.
    pub s: Array1<T>,
    /// Right singular vectors as rows, `[k, n]`.
    pub vt: Array2<T>,
}

/// Thin QR decomposition `A = Q R` of an `[m, n]` matrix.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Qr<T> {
    /// Orthonormal columns, `[m, k]` with `k = min(m, n)`.
    pub q: Array2<T>,
    /// Upper trapezoidal, `[k, n]`.
    pub r: Array2<T>,
}

fn evd_scratch<T: Real>(n: usize, vectors: bool) -> MemBuffer {
    let compute = if vectors {
        ComputeEigenvectors::Yes
    } else {
        ComputeEigenvectors::No
    };
    MemBuffer::new(evd::self_adjoint_evd_scratch::<T>(
        n,
        compute,
        faer::get_global_parallelism(),
        Default::default(),
    ))
}

/// Eigenvalues (ascending) and orthonormal eigenvectors of a symmetric matrix.
///
/// Reads the lower triangle of `a`.
///
/// # Errors
/// [`Error::NotSquare`], [`Error::NonFinite`], [`Error::NoConvergence`].
///
/// ```
/// use ndarray::array;
/// use tensorpress_tensor::linalg::eigh;
///
/// let e = eigh(array![[2.0f64, 1.0], [1.0, 2.0]].view())?;
/// assert!((e.values[0] - 1.0).abs() < 1e-12 && (e.values[1] - 3.0).abs() < 1e-12);
/// # Ok::<(), tensorpress_tensor::Error>(())
/// ```
pub fn eigh<T: Real>(a: ArrayView2<'_, T>) -> Result<Eigh<T>> {
    let n = check_square("eigh", &a)?;
    check_finite("eigh", &a, true)?;
    if n == 0 {
        // faer's workspace sizing does not handle empty matrices.
        return Ok(Eigh {
            values: Array1::zeros(0),
            vectors: Array2::zeros((0, 0)),
        });
    }
    let mut values = vec![T::zero(); n];
    // faer prefers column-major eigenvectors; copy to row-major afterwards (O(n²)).
    let mut u = Mat::<T>::zeros(n, n);
    let mut mem = evd_scratch::<T>(n, true);
    evd::self_adjoint_evd(
        faer_ref(a),
        diag_of(&mut values),
        Some(u.as_mut()),
        faer::get_global_parallelism(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op: "eigh" })?;
    Ok(Eigh {
        values: Array1::from_vec(values),
        vectors: to_array(u.as_ref()),
    })
}

/// Eigenvalues of a symmetric matrix, ascending, without the eigenvectors.
///
/// # Errors
/// As [`eigh`].
pub fn eigvalsh<T: Real>(a: ArrayView2<'_, T>) -> Result<Array1<T>> {
    let n = check_square("eigvalsh", &a)?;
    check_finite("eigvalsh", &a, true)?;
    if n == 0 {
        return Ok(Array1::zeros(0));
    }
    let mut values = vec![T::zero(); n];
    let mut mem = evd_scratch::<T>(n, false);
    evd::self_adjoint_evd(
        faer_ref(a),
        diag_of(&mut values),
        None,
        faer::get_global_parallelism(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op: "eigvalsh" })?;
    Ok(Array1::from_vec(values))
}

fn diag_of<T: Real>(v: &mut [T]) -> DiagMut<'_, T> {
    DiagMut::from_slice_mut(v)
}

fn svd_scratch<T: Real>(m: usize, n: usize, vectors: bool) -> MemBuffer {
    let c = if vectors {
        ComputeSvdVectors::Thin
    } else {
        ComputeSvdVectors::No
    };
    MemBuffer::new(fsvd::svd_scratch::<T>(
        m,
        n,
        c,
        c,
        faer::get_global_parallelism(),
        Default::default(),
    ))
}

/// Thin SVD `a = U diag(s) Vᵀ`, singular values descending.
///
/// # Errors
/// [`Error::NonFinite`], [`Error::NoConvergence`].
///
/// ```
/// use ndarray::{array, Array2};
/// use tensorpress_tensor::linalg::svd;
///
/// let a = array![[3.0f64, 0.0], [0.0, -2.0], [0.0, 0.0]];
/// let d = svd(a.view())?;
/// assert_eq!(d.s.len(), 2);
/// assert!((d.s[0] - 3.0).abs() < 1e-12 && (d.s[1] - 2.0).abs() < 1e-12);
/// let back = d.u.dot(&Array2::from_diag(&d.s)).dot(&d.vt);
/// assert!(back.iter().zip(a.iter()).all(|(x, y)| (x - y).abs() < 1e-12));
/// # Ok::<(), tensorpress_tensor::Error>(())
/// ```
pub fn svd<T: Real>(a: ArrayView2<'_, T>) -> Result<Svd<T>> {
    check_finite("svd", &a, false)?;
    let (m, n) = a.dim();
    let k = m.min(n);
    if k == 0 {
        return Ok(Svd {
            u: Array2::zeros((m, 0)),
            s: Array1::zeros(0),
            vt: Array2::zeros((0, n)),
        });
    }
    let mut s = vec![T::zero(); k];
    let mut u = Mat::<T>::zeros(m, k);
    // `Vᵀ` row-major is `V` column-major: faer writes V straight into it.
    let mut vt = Array2::<T>::zeros((k, n));
    let mut mem = svd_scratch::<T>(m, n, true);
    fsvd::svd(
        faer_ref(a),
        diag_of(&mut s),
        Some(u.as_mut()),
        Some(faer_mut(&mut vt).transpose_mut()),
        faer::get_global_parallelism(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op: "svd" })?;
    Ok(Svd {
        u: to_array(u.as_ref()),
        s: Array1::from_vec(s),
        vt,
    })
}

/// Singular values of `a`, descending, without the singular vectors.
///
/// # Errors
/// As [`svd`].
pub fn singular_values<T: Real>(a: ArrayView2<'_, T>) -> Result<Array1<T>> {
    check_finite("singular_values", &a, false)?;
    let (m, n) = a.dim();
    if m.min(n) == 0 {
        return Ok(Array1::zeros(0));
    }
    let mut s = vec![T::zero(); m.min(n)];
    let mut mem = svd_scratch::<T>(m, n, false);
    fsvd::svd(
        faer_ref(a),
        diag_of(&mut s),
        None,
        None,
        faer::get_global_parallelism(),
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence {
        op: "singular_values",
    })?;
    Ok(Array1::from_vec(s))
}

/// Thin QR decomposition `a = Q R` (Householder, no pivoting).
///
/// # Errors
/// [`Error::NonFinite`].
pub fn qr<T: Real>(a: ArrayView2<'_, T>) -> Result<Qr<T>> {
    check_finite("qr", &a, false)?;
    let (m, n) = a.dim();
    if m.min(n) == 0 {
        return Ok(Qr {
            q: Array2::zeros((m, 0)),
            r: Array2::zeros((0, n)),
        });
    }
    let f = faer::linalg::solvers::Qr::new(faer_ref(a));
    Ok(Qr {
        q: to_array(f.compute_thin_Q().as_ref()),
        r: to_array(f.thin_R()),
    })
}

/// Matrix product `a b` through faer's parallel GEMM.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the inner dimensions differ.
pub fn matmul<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    if a.ncols() != b.nrows() {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    let mut out = Array2::<T>::zeros((a.nrows(), b.ncols()));
    faer::linalg::matmul::matmul(
        faer_mut(&mut out),
        Accum::Replace,
        faer_ref(a),
        faer_ref(b),
        T::one(),
        faer::get_global_parallelism(),
    );
    Ok(out)
}

/// Gram matrix `aᵀ a` (`[n, n]` for an `[m, n]` input), computing one triangle
/// and mirroring it, so half the flops of [`matmul`].
pub fn gram<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    let n = a.ncols();
    let mut out = Array2::<T>::zeros((n, n));
    gram_accumulate(&mut out, a, T::one());
    mirror_lower(&mut out);
    out
}

/// Adds `alpha · aᵀ a` to the **lower triangle** of `out` (`[n, n]`).
pub(crate) fn gram_accumulate<T: Real>(out: &mut Array2<T>, a: ArrayView2<'_, T>, alpha: T) {
    let at = faer_ref(a).transpose();
    faer::linalg::matmul::triangular::matmul(
        faer_mut(out),
        BlockStructure::TriangularLower,
        Accum::Add,
        at,
        BlockStructure::Rectangular,
        faer_ref(a),
        BlockStructure::Rectangular,
        alpha,
        faer::get_global_parallelism(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::testutil::{max_abs_diff, orthonormality_error, random_mat};
    use crate::SeededRng;
    use ndarray::{array, s};
    use proptest::prelude::*;

    fn check_eigh<T: Real>(n: usize, seed: u64, tol: f64) {
        let mut rng = SeededRng::new(seed);
        let g = random_mat::<T>(&mut rng, n, n);
        let a = &g + &g.t();
        let e = eigh(a.view()).unwrap();
        assert!(e.values.windows(2).into_iter().all(|w| w[0] <= w[1]));
        let av = a.dot(&e.vectors);
        let vl = &e.vectors * &e.values.view().insert_axis(ndarray::Axis(0));
        let scale = e.values.iter().fold(1.0f64, |m, v| m.max(v.abs().as_f64()));
        assert!(max_abs_diff(av.view(), vl.view()) < tol * scale);
        assert!(orthonormality_error(e.vectors.view()) < tol);
        let vals = eigvalsh(a.view()).unwrap();
        assert!(
            max_abs_diff(
                vals.view().insert_axis(ndarray::Axis(0)),
                e.values.view().insert_axis(ndarray::Axis(0))
            ) < tol * scale
        );
    }

    #[test]
    fn eigh_satisfies_av_eq_vlambda() {
        for n in [1, 2, 9, 50, 140] {
            check_eigh::<f64>(n, n as u64, 1e-10);
            check_eigh::<f32>(n, n as u64, 1e-4);
        }
    }

    fn check_svd<T: Real>(m: usize, n: usize, seed: u64, tol: f64) {
        let mut rng = SeededRng::new(seed);
        let a = random_mat::<T>(&mut rng, m, n);
        let d = svd(a.view()).unwrap();
        let k = m.min(n);
        assert_eq!(d.u.dim(), (m, k));
        assert_eq!(d.vt.dim(), (k, n));
        assert!(d.s.windows(2).into_iter().all(|w| w[0] >= w[1]));
        assert!(d.s.iter().all(|&v| v >= T::zero()));
        let back = (&d.u * &d.s.view().insert_axis(ndarray::Axis(0))).dot(&d.vt);
        let scale = d.s.first().map_or(1.0, |v| v.as_f64().max(1.0));
        assert!(max_abs_diff(back.view(), a.view()) < tol * scale, "{m}×{n}");
        assert!(orthonormality_error(d.u.view()) < tol);
        assert!(orthonormality_error(d.vt.t()) < tol);
        let s = singular_values(a.view()).unwrap();
        assert!(
            max_abs_diff(
                s.view().insert_axis(ndarray::Axis(0)),
                d.s.view().insert_axis(ndarray::Axis(0))
            ) < tol * scale
        );
    }

    #[test]
    fn svd_reconstructs_tall_wide_and_square() {
        for (m, n) in [(1, 1), (5, 3), (3, 5), (40, 40), (130, 70), (20, 150)] {
            check_svd::<f64>(m, n, (m * n) as u64, 1e-10);
            check_svd::<f32>(m, n, (m * n) as u64, 1e-4);
        }
    }

    #[test]
    fn svd_of_a_strided_view() {
        let mut rng = SeededRng::new(3);
        let big = random_mat::<f64>(&mut rng, 30, 40);
        let v = big.slice(s![..;2, 5..;3]);
        let d = svd(v).unwrap();
        let back = (&d.u * &d.s.view().insert_axis(ndarray::Axis(0))).dot(&d.vt);
        assert!(max_abs_diff(back.view(), v) < 1e-10);
    }

    fn check_qr<T: Real>(m: usize, n: usize, seed: u64, tol: f64) {
        let mut rng = SeededRng::new(seed);
        let a = random_mat::<T>(&mut rng, m, n);
        let f = qr(a.view()).unwrap();
        let k = m.min(n);
        assert_eq!(f.q.dim(), (m, k));
        assert_eq!(f.r.dim(), (k, n));
        assert!(f
            .r
            .indexed_iter()
            .all(|((i, j), &v)| j >= i || v == T::zero()));
        assert!(max_abs_diff(f.q.dot(&f.r).view(), a.view()) < tol);
        assert!(orthonormality_error(f.q.view()) < tol);
    }

    #[test]
    fn qr_reconstructs_with_orthonormal_q() {
        for (m, n) in [(1, 1), (6, 4), (4, 6), (100, 37), (37, 100)] {
            check_qr::<f64>(m, n, 7, 1e-11);
            check_qr::<f32>(m, n, 7, 1e-4);
        }
    }

    #[test]
    fn matmul_and_gram_match_ndarray() {
        let mut rng = SeededRng::new(11);
        let a = random_mat::<f64>(&mut rng, 37, 23);
        let b = random_mat::<f64>(&mut rng, 23, 19);
        let c = matmul(a.view(), b.view()).unwrap();
        assert!(max_abs_diff(c.view(), a.dot(&b).view()) < 1e-12);
        let ct = matmul(b.t(), a.t()).unwrap();
        assert!(max_abs_diff(ct.view(), c.t()) < 1e-12);
        let g = gram(a.view());
        assert!(max_abs_diff(g.view(), a.t().dot(&a).view()) < 1e-12);
        assert!(matches!(
            matmul(a.view(), a.view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn known_spectrum() {
        let a = array![[2.0f64, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 5.0]];
        let e = eigh(a.view()).unwrap();
        assert!(
            max_abs_diff(
                e.values.view().insert_axis(ndarray::Axis(0)),
                array![[-1.0, 2.0, 5.0]].view()
            ) < 1e-14
        );
        let s = singular_values(a.view()).unwrap();
        assert!(
            max_abs_diff(
                s.view().insert_axis(ndarray::Axis(0)),
                array![[5.0, 2.0, 1.0]].view()
            ) < 1e-14
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn svd_identity_holds(m in 1usize..30, n in 1usize..30, seed in any::<u64>()) {
            let mut rng = SeededRng::new(seed);
            let a = random_mat::<f64>(&mut rng, m, n);
            let d = svd(a.view()).unwrap();
            let back = (&d.u * &d.s.view().insert_axis(ndarray::Axis(0))).dot(&d.vt);
            prop_assert!(max_abs_diff(back.view(), a.view()) < 1e-10);
            prop_assert!(orthonormality_error(d.u.view()) < 1e-10);
            let f = qr(a.view()).unwrap();
            prop_assert!(max_abs_diff(f.q.dot(&f.r).view(), a.view()) < 1e-10);
        }
    }
}
