//! Rank and norm metrics from the singular values of a weight.

use ndarray::{ArrayView1, ArrayView2};
use tensorpress_tensor::linalg;

use crate::{Error, Result};

/// Norms and rank measures of a matrix, all from one set of singular values.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SpectralMetrics {
    /// `‖W‖_* = Σ σ` (nuclear norm).
    pub nuclear_norm: f64,
    /// `‖W‖_F = sqrt(Σ σ²)`.
    pub frobenius_norm: f64,
    /// `‖W‖_2 = σ_max`.
    pub spectral_norm: f64,
    /// `‖W‖_F² / ‖W‖_2²` (stable rank; between 1 and the rank).
    pub stable_rank: f64,
    /// Roy & Vetterli's effective rank `exp(H(p))`, `p = σ / Σ σ`.
    pub effective_rank: f64,
}

impl SpectralMetrics {
    /// Metrics from singular values (any order).
    ///
    /// # Errors
    /// [`Error::InvalidSingularValue`]; [`Error::ZeroMatrix`] when all are zero.
    pub fn from_singular_values(s: ArrayView1<'_, f64>) -> Result<Self> {
        if let Some((index, &value)) = s
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(Error::InvalidSingularValue { index, value });
        }
        let nuclear: f64 = s.sum();
        if nuclear == 0.0 {
            return Err(Error::ZeroMatrix {
                metric: "spectral metrics",
            });
        }
        let fro2: f64 = s.iter().map(|v| v * v).sum();
        let max = s.iter().fold(0.0f64, |m, &v| m.max(v));
        let entropy: f64 = s
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| {
                let p = v / nuclear;
                -p * p.ln()
            })
            .sum();
        Ok(SpectralMetrics {
            nuclear_norm: nuclear,
            frobenius_norm: fro2.sqrt(),
            spectral_norm: max,
            stable_rank: fro2 / (max * max),
            effective_rank: entropy.exp(),
        })
    }
}

/// Metrics of a weight, through its singular values (one SVD without vectors).
///
/// # Errors
/// [`Error::ZeroMatrix`]; tensor errors for non-finite weights.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_sensitivity::spectral_metrics;
///
/// let m = spectral_metrics(Array2::<f32>::eye(5).view())?;
/// assert!((m.effective_rank - 5.0).abs() < 1e-9);
/// assert!((m.stable_rank - 5.0).abs() < 1e-9);
/// assert!((m.nuclear_norm - 5.0).abs() < 1e-6);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn spectral_metrics(w: ArrayView2<'_, f32>) -> Result<SpectralMetrics> {
    let s = linalg::singular_values(w)?.mapv(f64::from);
    SpectralMetrics::from_singular_values(s.view())
}

/// Roy & Vetterli's (2007) effective rank of `w`: the exponential of the
/// entropy of its normalized singular values.
///
/// # Errors
/// As [`spectral_metrics`].
pub fn effective_rank(w: ArrayView2<'_, f32>) -> Result<f64> {
    Ok(spectral_metrics(w)?.effective_rank)
}

/// Nuclear norm `Σ σ` of `w` (0 for a zero matrix).
///
/// # Errors
/// Tensor errors for non-finite weights.
pub fn nuclear_norm(w: ArrayView2<'_, f32>) -> Result<f64> {
    Ok(linalg::singular_values(w)?
        .iter()
        .map(|&v| f64::from(v))
        .sum())
}

/// Stable rank `‖w‖_F² / ‖w‖_2²` of `w`.
///
/// # Errors
/// As [`spectral_metrics`].
pub fn stable_rank(w: ArrayView2<'_, f32>) -> Result<f64> {
    Ok(spectral_metrics(w)?.stable_rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use tensorpress_tensor::SeededRng;

    #[test]
    fn known_spectra() {
        let m = SpectralMetrics::from_singular_values(array![1.0, 1.0, 0.0].view()).unwrap();
        assert!((m.effective_rank - 2.0).abs() < 1e-12);
        assert_eq!(m.stable_rank, 2.0);
        let m = SpectralMetrics::from_singular_values(array![3.0, 1.0].view()).unwrap();
        // p = (3/4, 1/4).
        let h: f64 = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((m.effective_rank - h.exp()).abs() < 1e-12);
        assert_eq!((m.nuclear_norm, m.spectral_norm), (4.0, 3.0));
        assert!((m.frobenius_norm - 10f64.sqrt()).abs() < 1e-12);
        assert!(matches!(
            SpectralMetrics::from_singular_values(array![0.0, 0.0].view()),
            Err(Error::ZeroMatrix { .. })
        ));
        assert!(matches!(
            SpectralMetrics::from_singular_values(array![1.0, -1.0].view()),
            Err(Error::InvalidSingularValue { index: 1, .. })
        ));
    }

    #[test]
    fn rank_one_and_random_matrices() {
        let u = array![[1.0f32], [2.0], [-1.0]];
        let v = array![[0.5f32, 1.0, 0.0, 2.0]];
        let w = u.dot(&v);
        assert!((effective_rank(w.view()).unwrap() - 1.0).abs() < 1e-5);
        assert!((stable_rank(w.view()).unwrap() - 1.0).abs() < 1e-5);
        let fro = w
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!((nuclear_norm(w.view()).unwrap() - fro).abs() < 1e-4);

        let g = SeededRng::new(6).array_normal((40, 40));
        let m = spectral_metrics(g.view()).unwrap();
        assert!(m.stable_rank >= 1.0 && m.stable_rank <= m.effective_rank);
        assert!(m.effective_rank <= 40.0 && m.effective_rank > 20.0);
        assert!(m.nuclear_norm >= m.frobenius_norm && m.frobenius_norm >= m.spectral_norm);
        assert!(matches!(
            effective_rank(Array2::<f32>::zeros((3, 3)).view()),
            Err(Error::ZeroMatrix { .. })
        ));
        assert_eq!(
            nuclear_norm(Array2::<f32>::zeros((3, 3)).view()).unwrap(),
            0.0
        );
    }
}
