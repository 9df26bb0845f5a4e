//! Activation-aware factorizations: ASVD and SVD-LLM.
//!
//! A plain truncated SVD minimizes the weight error `‖W − A B‖_F`. What a layer
//! needs is a small *output* error on its inputs: with the calibration inputs as
//! the columns of `X` (`[in, tokens]`) and `H = X Xᵀ` (`[in, in]`),
//!
//! ```text
//! ‖(W − A B) X‖_F² = tr((W − A B) H (W − A B)ᵀ)
//! ```
//!
//! ([`activation_error`] measures it). Both methods here transform `W` by a
//! factor of the activation statistics, truncate the SVD of the transformed
//! weight and undo the transform in the right factor:
//!
//! - **ASVD** (Yuan et al., *ASVD: Activation-aware Singular Value Decomposition
//!   for Compressing Large Language Models*, 2023, arXiv:2312.05821) scales the
//!   input channels by `S = diag(mean|x_j|^α)` (α = 0.5), so channels with large
//!   activations — the outliers of LLMs — weigh more in the truncation:
//!   `W S ≈ U_r Σ_r V_rᵀ`, `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ S⁻¹`. See [`Asvd`].
//! - **SVD-LLM** (Wang, Zheng, Wan, Zhang, *SVD-LLM: Truncation-aware Singular
//!   Value Decomposition for Large Language Model Compression*, ICLR 2025,
//!   arXiv:2403.07378) whitens with the Cholesky factor `H = L Lᵀ`:
//!   `W L ≈ U_r Σ_r V_rᵀ`, `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ L⁻¹`. Then
//!   `‖(W − A B) X‖_F² = ‖(W − A B) L‖_F² = Σ_{i>r} σ_i(W L)²`: every dropped
//!   singular value costs exactly its square in output error, and by
//!   Eckart–Young no rank-`r` matrix does better. See [`Whitening`].
//!   (SVD-LLM's second stage, sequential LoRA fine-tuning of the factors, needs a
//!   training loop and is not part of this crate.)
//!
//! The returned [`LowRank`] keeps the spectrum of the *transformed* weight
//! (`W S` or `W L`), so for SVD-LLM [`LowRank::predicted_relative_error`] is the
//! relative output error `‖(W − A B) X‖_F / ‖W X‖_F` on the calibration data.
//!
//! # Inputs
//!
//! - `H`: the `[in, in]` f64 matrix the pipeline accumulates for GPTQ,
//!   [`tensorpress_tensor::Hessian`] finalized (`FinalizedHessian::h`, what
//!   quant-core's `Calibration::hessian` holds). Any positive multiple of
//!   `Σ x xᵀ` gives the same factors, so the `2/n` of the Hessian does not matter.
//!   Symmetric; the Cholesky factorization reads its lower triangle.
//! - ASVD's activation magnitudes: the per-channel mean `|x_j|`
//!   ([`tensorpress_tensor::ChannelStats::abs_mean`]), as in the paper. When only
//!   `H` is at hand, [`channel_rms`] gives `√diag H`, the per-channel RMS up to a
//!   constant factor (which ASVD is invariant to).
//!
//! Both work in f64 where `H` enters (the product with the Cholesky factor, its
//! SVD and the triangular solve), because LLM activation Gram matrices are badly
//! conditioned; ASVD's diagonal scaling runs in f32 like [`factorize`].
//!
//! ```
//! use tensorpress_lowrank::{activation_error, factorize, svd_llm, RankSelection};
//! use tensorpress_tensor::SeededRng;
//!
//! let mut rng = SeededRng::new(0);
//! // 512 tokens whose 32 channels mix 6 latent factors (plus a little noise).
//! let x = rng.array_normal((512, 6)).dot(&rng.array_normal((6, 32)))
//!     + rng.array_normal((512, 32)) * 0.05;
//! let h = x.t().dot(&x).mapv(f64::from);
//! let w = rng.array_normal((24, 32));
//!
//! let plain = factorize(w.view(), RankSelection::Rank(6))?;
//! let white = svd_llm(w.view(), h.view(), RankSelection::Rank(6))?;
//! let e_plain = activation_error(w.view(), plain.reconstruct().view(), h.view())?;
//! let e_white = activation_error(w.view(), white.reconstruct().view(), h.view())?;
//! // Six latent factors: the whitened rank-6 factorization keeps almost all of W X.
//! assert!(e_white.relative < 0.05 && e_plain.relative > 0.2);
//! // The output error is what the dropped singular values of W L predict.
//! assert!((e_white.relative - white.predicted_relative_error()).abs() < 1e-4);
//! # Ok::<(), tensorpress_lowrank::Error>(())
//! ```
//!
//! [`factorize`]: crate::factorize

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use tensorpress_tensor::linalg::{self, DampSchedule};

use crate::svd::{factorize, LowRank, RankSelection, ReconstructionError};
use crate::{Error, Result};

/// ASVD's exponent α of the activation magnitude (the paper's default, 0.5).
pub const DEFAULT_ASVD_ALPHA: f64 = 0.5;

/// Relative floor on channel magnitudes: a magnitude below `floor × max` is
/// raised to it, so a dead channel (all-zero activations) does not make the
/// scaling singular.
pub const DEFAULT_SCALE_FLOOR: f64 = 1e-4;

/// ASVD's configuration: `S = diag(max(m_j, floor · max m)^α)` from per-channel
/// activation magnitudes `m`.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::{factorize, Asvd, RankSelection};
///
/// // Channel 1 carries 10⁴× larger activations than channel 0.
/// let w = array![[1.0f32, 0.1], [1.0, -0.1], [0.5, 0.2]];
/// let m = array![1e-4f32, 1.0];
/// let col1_err = |r: ndarray::Array2<f32>| -> f32 {
///     (0..3).map(|i| (r[[i, 1]] - w[[i, 1]]).abs()).sum()
/// };
/// let f = Asvd::default().factorize(w.view(), m.view(), RankSelection::Rank(1))?;
/// let plain = factorize(w.view(), RankSelection::Rank(1))?;
/// // Plain SVD keeps the large column 0; ASVD keeps the column whose inputs are large.
/// assert!(col1_err(f.reconstruct()) < 0.05);
/// assert!(col1_err(plain.reconstruct()) > 0.3);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Asvd {
    /// Exponent α of the magnitude (finite, ≥ 0; 0 is plain SVD).
    pub alpha: f64,
    /// Relative floor on magnitudes, in `(0, 1]`.
    pub floor: f64,
}

impl Default for Asvd {
    /// α = 0.5, floor [`DEFAULT_SCALE_FLOOR`].
    fn default() -> Self {
        Asvd {
            alpha: DEFAULT_ASVD_ALPHA,
            floor: DEFAULT_SCALE_FLOOR,
        }
    }
}

impl Asvd {
    /// ASVD with exponent `alpha` and the default floor.
    pub fn new(alpha: f64) -> Self {
        Asvd {
            alpha,
            ..Asvd::default()
        }
    }

    /// Sets the relative floor on magnitudes.
    pub fn floor(mut self, floor: f64) -> Self {
        self.floor = floor;
        self
    }

    /// The diagonal of `S`: `max(m_j, floor · max m)^α` (all ones when every
    /// magnitude is zero).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for α or the floor out of range,
    /// [`Error::InvalidChannelScale`] for a negative or non-finite magnitude.
    pub fn scales(&self, magnitudes: ArrayView1<'_, f32>) -> Result<Array1<f32>> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::InvalidParameter {
                name: "ASVD alpha",
                value: self.alpha,
                expected: "finite and >= 0",
            });
        }
        floored_scales(magnitudes, self.floor, self.alpha)
    }

    /// Factorizes `w` (`[out, in]`) with activation magnitudes `magnitudes`
    /// (`[in]`, the per-channel mean `|x|`), keeping the rank `selection` asks
    /// for on the spectrum of `W S`.
    ///
    /// The result's singular values are those of `W S`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `magnitudes` does not have `in` entries;
    /// [`Error::NonFinite`] for a NaN or infinity in `w`; those of
    /// [`scales`](Asvd::scales) and [`factorize`].
    pub fn factorize(
        &self,
        w: ArrayView2<'_, f32>,
        magnitudes: ArrayView1<'_, f32>,
        selection: RankSelection,
    ) -> Result<LowRank> {
        if magnitudes.len() != w.ncols() {
            return Err(Error::ShapeMismatch {
                op: "ASVD magnitudes",
                lhs: w.shape().to_vec(),
                rhs: magnitudes.shape().to_vec(),
            });
        }
        check_finite("ASVD weight", w)?;
        let scale = self.scales(magnitudes)?;
        let scaled = &w * &scale.view().insert_axis(Axis(0));
        let f = factorize(scaled.view(), selection)?;
        let spectrum = f.singular_values().to_owned();
        let (a, mut b) = f.into_factors();
        b /= &scale.view().insert_axis(Axis(0));
        Ok(LowRank::from_parts(a, b, spectrum))
    }
}

/// [`Asvd::default`]`.factorize(w, magnitudes, selection)`: ASVD with α = 0.5.
///
/// # Errors
/// As [`Asvd::factorize`].
pub fn asvd(
    w: ArrayView2<'_, f32>,
    magnitudes: ArrayView1<'_, f32>,
    selection: RankSelection,
) -> Result<LowRank> {
    Asvd::default().factorize(w, magnitudes, selection)
}

/// SVD-LLM's truncation-aware whitening: the lower Cholesky factor `L` of the
/// calibration matrix `H = L Lᵀ`, computed once and reused for every weight that
/// reads the same input (a block's q/k/v projections, gate and up).
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::{RankSelection, Whitening};
///
/// let h = array![[4.0f64, 2.0], [2.0, 5.0]];
/// let white = Whitening::from_hessian(h.view())?;
/// assert_eq!(white.damp(), 0.0); // positive definite: no damping needed
/// assert_eq!(white.factor(), array![[2.0, 0.0], [1.0, 2.0]]);
/// let w = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
/// let f = white.factorize(w.view(), RankSelection::Rank(2))?;
/// assert!(f.reconstruct().iter().zip(&w).all(|(x, y)| (x - y).abs() < 1e-5));
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Whitening {
    factor: Array2<f64>,
    damp: f64,
}

impl Whitening {
    /// Factors `h` (`[in, in]`, symmetric, lower triangle read). When `h` is not
    /// positive definite (dead channels, fewer tokens than channels), retries
    /// with `d × mean(diag h)` added to the diagonal along `schedule`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a non-square `h`, [`Error::NonFinite`],
    /// [`Error::HessianNotPositiveDefinite`] when even the largest damp fails,
    /// and the tensor layer's error for an invalid schedule.
    pub fn new(h: ArrayView2<'_, f64>, schedule: &DampSchedule) -> Result<Self> {
        check_square("SVD-LLM calibration matrix", h)?;
        check_finite("SVD-LLM calibration matrix", h)?;
        match linalg::cholesky(h) {
            Ok(factor) => Ok(Whitening { factor, damp: 0.0 }),
            Err(tensorpress_tensor::Error::NotPositiveDefinite { .. }) => {
                let d = linalg::cholesky_damped(h, schedule).map_err(not_pd)?;
                Ok(Whitening {
                    factor: d.factor,
                    damp: d.damp,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`new`](Whitening::new) with the default schedule (0.01, doubling up to 1).
    ///
    /// # Errors
    /// As [`new`](Whitening::new).
    pub fn from_hessian(h: ArrayView2<'_, f64>) -> Result<Self> {
        Whitening::new(h, &DampSchedule::default())
    }

    /// Number of input channels.
    pub fn dim(&self) -> usize {
        self.factor.nrows()
    }

    /// The lower Cholesky factor `L` (of the damped matrix if damping was needed).
    pub fn factor(&self) -> ArrayView2<'_, f64> {
        self.factor.view()
    }

    /// The relative damp that made `H` factor (0 when none was needed).
    pub fn damp(&self) -> f64 {
        self.damp
    }

    /// SVD-LLM factorization of `w` (`[out, in]`): truncated SVD of `W L`,
    /// `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ L⁻¹`. The rank is chosen on the spectrum of
    /// `W L`, which the result keeps; `Energy(e)` therefore keeps a fraction `e`
    /// of the output energy `‖W X‖_F²`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `w` has [`dim`](Whitening::dim) columns,
    /// [`Error::NonFinite`], [`Error::InvalidRank`], [`Error::InvalidEnergy`].
    pub fn factorize(&self, w: ArrayView2<'_, f32>, selection: RankSelection) -> Result<LowRank> {
        if w.ncols() != self.dim() {
            return Err(Error::ShapeMismatch {
                op: "SVD-LLM weight vs calibration matrix",
                lhs: w.shape().to_vec(),
                rhs: self.factor.shape().to_vec(),
            });
        }
        check_finite("SVD-LLM weight", w)?;
        let t = whitened_truncation(w, Root::Lower(&self.factor), selection)?;
        Ok(LowRank::from_parts(t.a, t.b, t.spectrum))
    }
}

/// SVD-LLM in one call: [`Whitening::from_hessian`]`(h)?.factorize(w, selection)`.
///
/// # Errors
/// As [`Whitening::new`] and [`Whitening::factorize`].
pub fn svd_llm(
    w: ArrayView2<'_, f32>,
    h: ArrayView2<'_, f64>,
    selection: RankSelection,
) -> Result<LowRank> {
    if h.dim() != (w.ncols(), w.ncols()) {
        return Err(Error::ShapeMismatch {
            op: "SVD-LLM weight vs calibration matrix",
            lhs: w.shape().to_vec(),
            rhs: h.shape().to_vec(),
        });
    }
    Whitening::from_hessian(h)?.factorize(w, selection)
}

/// `√diag H` per input channel: the activation RMS up to a constant factor,
/// for ASVD or BitStack when only the Gram matrix was accumulated. Negative
/// diagonal entries (impossible for a Gram matrix) count as zero.
///
/// # Errors
/// [`Error::ShapeMismatch`] for a non-square `h`; [`Error::NonFinite`] for a
/// non-finite diagonal entry.
pub fn channel_rms(h: ArrayView2<'_, f64>) -> Result<Array1<f32>> {
    check_square("channel_rms", h)?;
    for (i, &d) in h.diag().iter().enumerate() {
        if !d.is_finite() {
            return Err(Error::NonFinite {
                op: "calibration matrix diagonal",
                row: i,
                col: i,
                value: d,
            });
        }
    }
    Ok(h.diag().mapv(|d| d.max(0.0).sqrt() as f32))
}

/// The activation-weighted error of `approx` against `w` on calibration data
/// with Gram matrix `h = X Xᵀ`: `frobenius = ‖(W − Ŵ) X‖_F =
/// √tr((W − Ŵ) H (W − Ŵ)ᵀ)` and `relative = frobenius / ‖W X‖_F`, in f64.
///
/// Costs one `[out, in] × [in, in]` product per term.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes disagree.
pub fn activation_error(
    w: ArrayView2<'_, f32>,
    approx: ArrayView2<'_, f32>,
    h: ArrayView2<'_, f64>,
) -> Result<ReconstructionError> {
    if w.dim() != approx.dim() {
        return Err(Error::ShapeMismatch {
            op: "activation_error",
            lhs: w.shape().to_vec(),
            rhs: approx.shape().to_vec(),
        });
    }
    if h.dim() != (w.ncols(), w.ncols()) {
        return Err(Error::ShapeMismatch {
            op: "activation_error calibration matrix",
            lhs: w.shape().to_vec(),
            rhs: h.shape().to_vec(),
        });
    }
    let w64 = w.mapv(f64::from);
    let diff = &w64 - &approx.mapv(f64::from);
    let err = quadratic_form(diff.view(), h)?;
    let norm = quadratic_form(w64.view(), h)?;
    let relative = match (err == 0.0, norm == 0.0) {
        (true, _) => 0.0,
        (false, true) => f64::INFINITY,
        (false, false) => (err / norm).sqrt(),
    };
    Ok(ReconstructionError {
        frobenius: err.sqrt(),
        relative,
    })
}

/// `tr(M H Mᵀ)`, clamped at 0 against rounding.
pub(crate) fn quadratic_form(m: ArrayView2<'_, f64>, h: ArrayView2<'_, f64>) -> Result<f64> {
    let mh = linalg::matmul(m, h)?;
    Ok((&m * &mh).sum().max(0.0))
}

/// A square root `F` of the calibration matrix (`H = F Fᵀ`).
pub(crate) enum Root<'a> {
    /// The lower Cholesky factor `L` (SVD-LLM).
    Lower(&'a Array2<f64>),
    /// `Q √Λ` from `H = Q Λ Qᵀ` (EoRA).
    Eigen {
        /// Orthonormal eigenvectors `Q`, `[in, in]`.
        vectors: &'a Array2<f64>,
        /// `√λ_i`, all positive.
        sqrt_values: &'a Array1<f64>,
    },
}

/// The factors of a truncation in the metric of a root `F`.
pub(crate) struct Truncated {
    pub a: Array2<f32>,
    pub b: Array2<f32>,
    /// All singular values of `M F`, descending.
    pub spectrum: Array1<f32>,
}

/// The best rank-`r` approximation of `m` in the norm `‖(·) F‖_F`: the truncated
/// SVD `M F ≈ U_r Σ_r V_rᵀ`, returned as `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ F⁻¹`.
pub(crate) fn whitened_truncation(
    m: ArrayView2<'_, f32>,
    root: Root<'_>,
    selection: RankSelection,
) -> Result<Truncated> {
    let m64 = m.mapv(f64::from);
    let projected = match root {
        Root::Lower(l) => linalg::matmul(m64.view(), l.view())?,
        Root::Eigen {
            vectors,
            sqrt_values,
        } => {
            let mut p = linalg::matmul(m64.view(), vectors.view())?;
            p *= &sqrt_values.view().insert_axis(Axis(0));
            p
        }
    };
    let svd = linalg::svd(projected.view())?;
    let spectrum = svd.s.mapv(|v| v as f32);
    let rank = selection.select(m.nrows(), m.ncols(), spectrum.view())?;
    let root_s = svd.s.slice(s![..rank]).mapv(f64::sqrt);
    let a = &svd.u.slice(s![.., ..rank]) * &root_s.view().insert_axis(Axis(0));
    let bf = &svd.vt.slice(s![..rank, ..]) * &root_s.view().insert_axis(Axis(1));
    let b = match root {
        Root::Lower(l) => solve_right_lower(bf, l),
        Root::Eigen {
            vectors,
            sqrt_values,
        } => {
            let scaled = bf / sqrt_values.view().insert_axis(Axis(0));
            linalg::matmul(scaled.view(), vectors.t())?
        }
    };
    Ok(Truncated {
        a: a.mapv(|v| v as f32),
        b: b.mapv(|v| v as f32),
        spectrum,
    })
}

/// `M L⁻¹` for a lower-triangular `L` with a positive diagonal: back
/// substitution on `X L = M`, rows of `M` in parallel.
fn solve_right_lower(m: Array2<f64>, l: &Array2<f64>) -> Array2<f64> {
    let n = l.nrows();
    // Row j of Lᵀ is column j of L, contiguous.
    let lt = l.t().as_standard_layout().into_owned();
    let mut x = m;
    Zip::from(x.rows_mut()).par_for_each(|mut row| {
        for j in (0..n).rev() {
            let tail = row.slice(s![j + 1..]).dot(&lt.slice(s![j, j + 1..]));
            row[j] = (row[j] - tail) / lt[[j, j]];
        }
    });
    x
}

/// Maps the tensor layer's failed factorization onto this crate's error.
pub(crate) fn not_pd(e: tensorpress_tensor::Error) -> Error {
    match e {
        tensorpress_tensor::Error::NotPositiveDefinite { pivot, damp_tried } => {
            Error::HessianNotPositiveDefinite { pivot, damp_tried }
        }
        other => other.into(),
    }
}

/// Fails unless `a` is square.
pub(crate) fn check_square<T>(op: &'static str, a: ArrayView2<'_, T>) -> Result<()> {
    if a.nrows() != a.ncols() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![a.nrows(), a.nrows()],
            rhs: a.shape().to_vec(),
        });
    }
    Ok(())
}

/// Fails at the first NaN or infinity of `a`.
pub(crate) fn check_finite<T: Copy + Into<f64>>(
    what: &'static str,
    a: ArrayView2<'_, T>,
) -> Result<()> {
    for ((row, col), &v) in a.indexed_iter() {
        let value: f64 = v.into();
        if !value.is_finite() {
            return Err(Error::NonFinite {
                op: what,
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}

/// `max(m_j, floor · max m)^exponent` per channel (all ones for a zero vector).
pub(crate) fn floored_scales(
    magnitudes: ArrayView1<'_, f32>,
    floor: f64,
    exponent: f64,
) -> Result<Array1<f32>> {
    if !(floor.is_finite() && floor > 0.0 && floor <= 1.0) {
        return Err(Error::InvalidParameter {
            name: "channel scale floor",
            value: floor,
            expected: "in (0, 1]",
        });
    }
    if let Some((index, &v)) = magnitudes
        .iter()
        .enumerate()
        .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
    {
        return Err(Error::InvalidChannelScale {
            index,
            value: f64::from(v),
        });
    }
    let max = magnitudes.iter().fold(0.0f64, |m, &v| m.max(f64::from(v)));
    if max == 0.0 {
        return Ok(Array1::ones(magnitudes.len()));
    }
    let lo = floor * max;
    Ok(magnitudes.mapv(|v| f64::from(v).max(lo).powf(exponent) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use tensorpress_tensor::SeededRng;

    fn max_abs_diff(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn right_lower_solve_inverts_the_product() {
        let mut rng = SeededRng::new(3);
        let g = rng.array_normal((9, 12)).mapv(f64::from);
        let h = g.dot(&g.t()) + Array2::<f64>::eye(9);
        let l = linalg::cholesky(h.view()).unwrap();
        let m = rng.array_normal((4, 9)).mapv(f64::from);
        let x = solve_right_lower(m.clone(), &l);
        assert!(max_abs_diff(x.dot(&l).view(), m.view()) < 1e-12);
    }

    #[test]
    fn asvd_scales_and_floor() {
        let m = array![0.0f32, 4.0, 1.0];
        let s = Asvd::default().scales(m.view()).unwrap();
        assert!((s[1] - 2.0).abs() < 1e-6 && (s[2] - 1.0).abs() < 1e-6);
        assert!((s[0] - (4e-4f32).sqrt()).abs() < 1e-6);
        assert_eq!(
            Asvd::default().scales(array![0.0f32, 0.0].view()).unwrap(),
            array![1.0f32, 1.0]
        );
        assert!(matches!(
            Asvd::new(f64::NAN).scales(m.view()),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Asvd::default().floor(0.0).scales(m.view()),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Asvd::default().scales(array![1.0f32, -1.0].view()),
            Err(Error::InvalidChannelScale { index: 1, .. })
        ));
    }

    #[test]
    fn asvd_with_zero_alpha_is_plain_svd() {
        let mut rng = SeededRng::new(4);
        let w = rng.array_normal((10, 7));
        let m = rng.array_uniform(7);
        let a = Asvd::new(0.0)
            .factorize(w.view(), m.view(), RankSelection::Rank(3))
            .unwrap();
        let p = factorize(w.view(), RankSelection::Rank(3)).unwrap();
        let d = max_abs_diff(
            a.reconstruct().mapv(f64::from).view(),
            p.reconstruct().mapv(f64::from).view(),
        );
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn whitening_damps_a_singular_matrix() {
        // Rank-1 Gram matrix: undamped Cholesky fails, the first damp works.
        let h = array![[1.0f64, 1.0], [1.0, 1.0]];
        let white = Whitening::from_hessian(h.view()).unwrap();
        assert_eq!(white.damp(), 0.01);
        let neg = array![[-1.0f64, 0.0], [0.0, -1.0]];
        assert!(matches!(
            Whitening::from_hessian(neg.view()),
            Err(Error::HessianNotPositiveDefinite { .. })
        ));
        let nan = array![[1.0f64, 0.0], [f64::NAN, 1.0]];
        assert!(matches!(
            Whitening::from_hessian(nan.view()),
            Err(Error::NonFinite { row: 1, col: 0, .. })
        ));
        assert!(matches!(
            Whitening::from_hessian(Array2::<f64>::zeros((2, 3)).view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn shape_and_rank_errors() {
        let w = Array2::<f32>::ones((3, 4));
        let h = Array2::<f64>::eye(4);
        assert!(matches!(
            svd_llm(
                w.view(),
                Array2::<f64>::eye(3).view(),
                RankSelection::Rank(1)
            ),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            svd_llm(w.view(), h.view(), RankSelection::Rank(4)),
            Err(Error::InvalidRank { rank: 4, max: 3 })
        ));
        assert!(matches!(
            asvd(w.view(), Array1::ones(3).view(), RankSelection::Rank(1)),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut bad = w.clone();
        bad[[2, 1]] = f32::INFINITY;
        assert!(matches!(
            svd_llm(bad.view(), h.view(), RankSelection::Rank(1)),
            Err(Error::NonFinite { row: 2, col: 1, .. })
        ));
        assert!(matches!(
            asvd(bad.view(), Array1::ones(4).view(), RankSelection::Rank(1)),
            Err(Error::NonFinite { row: 2, col: 1, .. })
        ));
        assert!(matches!(
            activation_error(w.view(), w.t(), h.view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn identity_whitening_is_plain_svd() {
        let w = SeededRng::new(5).array_normal((6, 9));
        let h = Array2::<f64>::eye(9);
        let a = svd_llm(w.view(), h.view(), RankSelection::Rank(2)).unwrap();
        let p = factorize(w.view(), RankSelection::Rank(2)).unwrap();
        let d = max_abs_diff(
            a.reconstruct().mapv(f64::from).view(),
            p.reconstruct().mapv(f64::from).view(),
        );
        assert!(d < 1e-5, "{d}");
        let e = activation_error(w.view(), a.reconstruct().view(), h.view()).unwrap();
        assert!((e.relative - p.predicted_relative_error()).abs() < 1e-5);
    }

    #[test]
    fn channel_rms_is_the_root_diagonal() {
        let h = array![[4.0f64, 1.0], [1.0, 9.0]];
        assert_eq!(channel_rms(h.view()).unwrap(), array![2.0f32, 3.0]);
    }
}
