//! Cross-checks of the faer decompositions against system LAPACK (OpenBLAS)
//! through ndarray-linalg. Built with `--features lapack` (needs libopenblas-dev).

use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use ndarray_linalg::{Cholesky, Eigh as _, JobSvd, SVDDC, UPLO};

use super::testutil::{max_abs_diff, random_mat, random_spd};
use super::{cholesky, eigh, singular_values, svd};
use crate::SeededRng;

fn row(v: ArrayView1<'_, f64>) -> ArrayView2<'_, f64> {
    v.insert_axis(Axis(0))
}

/// Largest deviation from ±1 of the column-wise inner products of two
/// matrices whose columns should agree up to sign.
fn column_sign_mismatch(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    a.axis_iter(Axis(1))
        .zip(b.axis_iter(Axis(1)))
        .map(|(x, y)| (x.dot(&y).abs() - 1.0).abs())
        .fold(0.0, f64::max)
}

#[test]
fn cholesky_matches_lapack() {
    let mut rng = SeededRng::new(21);
    for n in [3, 50, 300] {
        let a: Array2<f64> = random_spd(&mut rng, n);
        let ours = cholesky(a.view()).unwrap();
        let lapack = a.cholesky(UPLO::Lower).unwrap();
        assert!(max_abs_diff(ours.view(), lapack.view()) < 1e-11, "n={n}");
    }
}

#[test]
fn eigh_matches_lapack() {
    let mut rng = SeededRng::new(22);
    for n in [4, 60, 250] {
        let g: Array2<f64> = random_mat(&mut rng, n, n);
        let a = &g + &g.t();
        let ours = eigh(a.view()).unwrap();
        let (vals, vecs) = a.eigh(UPLO::Lower).unwrap();
        assert!(
            max_abs_diff(row(ours.values.view()), row(vals.view())) < 1e-10,
            "n={n}"
        );
        // Random symmetric matrices have simple spectra: vectors agree up to sign.
        assert!(
            column_sign_mismatch(ours.vectors.view(), vecs.view()) < 1e-8,
            "n={n}"
        );
    }
}

#[test]
fn svd_matches_lapack() {
    let mut rng = SeededRng::new(23);
    for (m, n) in [(5, 3), (40, 90), (200, 120)] {
        let a: Array2<f64> = random_mat(&mut rng, m, n);
        let ours = svd(a.view()).unwrap();
        let (u, s, vt) = a.svddc(JobSvd::Some).unwrap();
        let (u, vt) = (u.unwrap(), vt.unwrap());
        assert!(
            max_abs_diff(row(ours.s.view()), row(s.view())) < 1e-10,
            "{m}×{n}"
        );
        assert!(
            column_sign_mismatch(ours.u.view(), u.view()) < 1e-8,
            "{m}×{n}"
        );
        assert!(column_sign_mismatch(ours.vt.t(), vt.t()) < 1e-8, "{m}×{n}");
        let vals = singular_values(a.view()).unwrap();
        assert!(max_abs_diff(row(vals.view()), row(s.view())) < 1e-10);
    }
}
