//! Hessian traces: exact, and Hutchinson's estimator for implicit Hessians.

use ndarray::{Array1, ArrayView1, ArrayView2};
use tensorpress_tensor::SeededRng;

use crate::{Error, Result};

/// `tr(H)` of a square matrix.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square matrix.
pub fn hessian_trace(h: ArrayView2<'_, f64>) -> Result<f64> {
    if h.nrows() != h.ncols() {
        return Err(Error::ShapeMismatch {
            op: "hessian_trace",
            lhs: h.shape().to_vec(),
            rhs: vec![h.nrows(), h.nrows()],
        });
    }
    Ok(h.diag().sum())
}

/// HAWQ-v2's layer sensitivity: the average Hessian eigenvalue `tr(H) / n`.
///
/// # Errors
/// As [`hessian_trace`].
///
/// ```
/// use ndarray::array;
/// use tensorpress_sensitivity::average_hessian_trace;
///
/// assert_eq!(average_hessian_trace(array![[4.0, 1.0], [1.0, 2.0]].view())?, 3.0);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn average_hessian_trace(h: ArrayView2<'_, f64>) -> Result<f64> {
    let t = hessian_trace(h)?;
    Ok(if h.nrows() == 0 {
        0.0
    } else {
        t / h.nrows() as f64
    })
}

/// A stochastic trace estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TraceEstimate {
    /// Mean of `zᵀ H z` over the probes.
    pub mean: f64,
    /// Standard error of the mean (0 with a single probe).
    pub std_error: f64,
    /// Number of probes.
    pub samples: usize,
}

/// Hutchinson's estimator `tr(H) ≈ mean(zᵀ H z)` with Rademacher probes `z`,
/// for Hessians available only as products `v ↦ H v` (HAWQ-v2 runs it on
/// Hessian-vector products). Unbiased; exact for a diagonal `H`.
///
/// # Errors
/// [`Error::NoSamples`] for `samples == 0`; [`Error::ShapeMismatch`] when
/// `matvec` returns a vector of the wrong length.
pub fn hutchinson_trace(
    n: usize,
    samples: usize,
    rng: &mut SeededRng,
    mut matvec: impl FnMut(ArrayView1<'_, f64>) -> Array1<f64>,
) -> Result<TraceEstimate> {
    if samples == 0 {
        return Err(Error::NoSamples {
            op: "hutchinson_trace",
        });
    }
    let mut values = Vec::with_capacity(samples);
    for _ in 0..samples {
        let z = Array1::from_shape_fn(n, |_| if rng.next_u32() & 1 == 0 { -1.0 } else { 1.0 });
        let hz = matvec(z.view());
        if hz.len() != n {
            return Err(Error::ShapeMismatch {
                op: "hutchinson_trace",
                lhs: vec![n],
                rhs: vec![hz.len()],
            });
        }
        values.push(z.dot(&hz));
    }
    let mean = values.iter().sum::<f64>() / samples as f64;
    let std_error = if samples > 1 {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (samples - 1) as f64;
        (var / samples as f64).sqrt()
    } else {
        0.0
    };
    Ok(TraceEstimate {
        mean,
        std_error,
        samples,
    })
}

/// The eigenvalue of largest magnitude of a symmetric `H` available only as
/// products `v ↦ H v`, by power iteration from a seeded Gaussian start: the
/// Rayleigh quotient `vᵀ H v` after `iterations` normalized products (HAWQ,
/// Dong et al. 2019, ranks layers by this top Hessian eigenvalue).
///
/// # Errors
/// [`Error::NoSamples`] for `iterations == 0`; [`Error::ShapeMismatch`] when
/// `matvec` returns a vector of the wrong length.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sensitivity::power_iteration;
/// use tensorpress_tensor::SeededRng;
///
/// let h = array![[4.0, 1.0], [1.0, 2.0]];
/// let top = power_iteration(2, 50, &mut SeededRng::new(0), |v| h.dot(&v))?;
/// assert!((top - (3.0 + 2f64.sqrt())).abs() < 1e-9);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn power_iteration(
    n: usize,
    iterations: usize,
    rng: &mut SeededRng,
    mut matvec: impl FnMut(ArrayView1<'_, f64>) -> Array1<f64>,
) -> Result<f64> {
    if iterations == 0 {
        return Err(Error::NoSamples {
            op: "power_iteration",
        });
    }
    let mut v = Array1::from_shape_fn(n, |_| rng.normal_f64());
    let norm = v.dot(&v).sqrt();
    if norm == 0.0 {
        return Ok(0.0);
    }
    v /= norm;
    let mut lambda = 0.0;
    for _ in 0..iterations {
        let hv = matvec(v.view());
        if hv.len() != n {
            return Err(Error::ShapeMismatch {
                op: "power_iteration",
                lhs: vec![n],
                rhs: vec![hv.len()],
            });
        }
        lambda = v.dot(&hv);
        let norm = hv.dot(&hv).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        v = hv / norm;
    }
    Ok(lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn exact_traces() {
        let h = array![[4.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]];
        assert_eq!(hessian_trace(h.view()).unwrap(), 9.0);
        assert_eq!(average_hessian_trace(h.view()).unwrap(), 3.0);
        assert!(matches!(
            hessian_trace(Array2::<f64>::zeros((2, 3)).view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn hutchinson_is_exact_on_diagonals_and_unbiased_otherwise() {
        let mut rng = SeededRng::new(4);
        let d = Array2::from_diag(&array![1.0, 5.0, -2.0, 7.0]);
        let e = hutchinson_trace(4, 3, &mut rng, |z| d.dot(&z)).unwrap();
        assert_eq!((e.mean, e.std_error), (11.0, 0.0));

        let g = rng.array_normal((30, 30)).mapv(f64::from);
        let h = g.t().dot(&g);
        let exact = h.diag().sum();
        let e = hutchinson_trace(30, 4000, &mut rng, |z| h.dot(&z)).unwrap();
        assert!(e.std_error > 0.0);
        assert!(
            (e.mean - exact).abs() < 4.0 * e.std_error,
            "{} vs {exact} ± {}",
            e.mean,
            e.std_error
        );

        // Power iteration finds the top eigenvalue of the same matrix.
        let top = power_iteration(30, 500, &mut rng, |z| h.dot(&z)).unwrap();
        let eig = tensorpress_tensor::linalg::eigvalsh(h.view()).unwrap();
        let max = eig.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        assert!((top - max).abs() < 1e-6 * max, "{top} vs {max}");
        assert!(matches!(
            power_iteration(3, 0, &mut rng, |z| z.to_owned()),
            Err(Error::NoSamples { .. })
        ));
        assert!(matches!(
            power_iteration(3, 2, &mut rng, |_| Array1::zeros(2)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            hutchinson_trace(3, 0, &mut rng, |z| z.to_owned()),
            Err(Error::NoSamples { .. })
        ));
        assert!(matches!(
            hutchinson_trace(3, 1, &mut rng, |_| Array1::zeros(2)),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
