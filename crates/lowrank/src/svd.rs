//! Truncated-SVD factorization `W ≈ A · B`.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use tensorpress_tensor::linalg;

use crate::error::check_finite;
use crate::rank::{
    compression_ratio, low_rank_params, rank_for_budget, rank_for_energy, rank_for_error,
};
use crate::{Error, Result};

/// How many singular values a factorization keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum RankSelection {
    /// Exactly this rank, in `1..=min(out, in)` (0 is [`Error::ZeroRank`]: ask
    /// for a selection by energy or error to allow an empty factorization).
    Rank(usize),
    /// The smallest rank whose singular values hold at least this fraction of
    /// `‖W‖_F² = Σ σ²` (in `[0, 1]`), see [`rank_for_energy`].
    Energy(f64),
    /// The smallest rank whose relative Frobenius error `‖W − A B‖_F / ‖W‖_F`
    /// is at most this target (finite, `≥ 0`), see [`rank_for_error`].
    RelativeError(f64),
    /// The largest rank whose factors hold at most this many parameters,
    /// `r · (out + in) ≤ budget`, see [`rank_for_budget`].
    ParamBudget(usize),
}

impl RankSelection {
    /// The rank this selection picks for an `[out, in]` matrix with singular
    /// values `s` (descending).
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::InvalidEnergy`],
    /// [`Error::InvalidErrorTarget`], [`Error::BudgetTooSmall`].
    pub fn select(self, out: usize, inp: usize, s: ArrayView1<'_, f32>) -> Result<usize> {
        let max = out.min(inp);
        match self {
            RankSelection::Rank(0) => Err(Error::ZeroRank {
                op: "RankSelection::Rank",
            }),
            RankSelection::Rank(rank) if rank <= max => Ok(rank),
            RankSelection::Rank(rank) => Err(Error::InvalidRank { rank, max }),
            RankSelection::Energy(energy) => rank_for_energy(s, energy),
            RankSelection::RelativeError(target) => rank_for_error(s, target),
            RankSelection::ParamBudget(budget) => rank_for_budget(out, inp, budget),
        }
    }
}

/// A rank-`r` factorization `W ≈ A · B` of a weight `[out, in]`, with
/// `A = U_r √S_r` (`[out, r]`) and `B = √S_r V_rᵀ` (`[r, in]`): the best rank-`r`
/// approximation in Frobenius and spectral norm (Eckart–Young), with the scale
/// split evenly between the two factors.
///
/// Built by [`factorize`] (exact thin SVD) or by
/// [`randomized_svd`](crate::randomized_svd) (Halko–Martinsson–Tropp); both give
/// the same type, so they are interchangeable downstream.
#[derive(Debug, Clone)]
pub struct LowRank {
    a: Array2<f32>,
    b: Array2<f32>,
    singular_values: Array1<f32>,
    /// `‖W‖_F²` of the factorized weight, in f64.
    total_energy: f64,
    /// `‖W − A B‖_F²`, in f64.
    residual_energy: f64,
}

impl LowRank {
    /// Assembles a factorization from its parts (for the activation-aware
    /// variants, whose spectrum is that of a transformed weight).
    pub(crate) fn from_parts(a: Array2<f32>, b: Array2<f32>, singular_values: Array1<f32>) -> Self {
        debug_assert_eq!(a.ncols(), b.nrows());
        let sq = |v: &f32| f64::from(*v) * f64::from(*v);
        let total_energy = singular_values.iter().map(sq).sum();
        let residual_energy = singular_values.iter().skip(a.ncols()).map(sq).sum();
        LowRank {
            a,
            b,
            singular_values,
            total_energy,
            residual_energy,
        }
    }
}

/// Factorizes `w` by a thin SVD (computed in f32 by faer), keeping the rank that
/// `selection` asks for.
///
/// # Errors
/// [`Error::NonFinite`] for a NaN or infinity in `w`; the errors of
/// [`RankSelection::select`]; a tensor-layer error when the SVD does not converge.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::{factorize, RankSelection};
///
/// // A rank-1 matrix is recovered exactly at rank 1.
/// let w = array![[1.0f32, 2.0, 3.0], [2.0, 4.0, 6.0]];
/// let f = factorize(w.view(), RankSelection::Rank(1))?;
/// assert_eq!((f.a().dim(), f.b().dim()), ((2, 1), (1, 3)));
/// assert!(f.reconstruct().iter().zip(w.iter()).all(|(x, y)| (x - y).abs() < 1e-5));
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
pub fn factorize(w: ArrayView2<'_, f32>, selection: RankSelection) -> Result<LowRank> {
    check_finite("factorize", w)?;
    let (out, inp) = w.dim();
    let svd = linalg::svd(w)?;
    let rank = selection.select(out, inp, svd.s.view())?;
    let sq = |v: &f32| f64::from(*v) * f64::from(*v);
    let total_energy = svd.s.iter().map(sq).sum();
    // The dropped tail summed directly: no cancellation against the total.
    let residual_energy = svd.s.iter().skip(rank).map(sq).sum();
    Ok(LowRank::from_svd(
        svd.u.view(),
        svd.s,
        svd.vt.view(),
        rank,
        (total_energy, residual_energy),
    ))
}

impl LowRank {
    /// Splits the leading `rank` triplets of `U diag(s) Vᵀ` into `A = U_r √S_r`,
    /// `B = √S_r V_rᵀ`; `energies` are `‖W‖_F²` of the original weight and
    /// `‖W − A B‖_F²`.
    pub(crate) fn from_svd(
        u: ArrayView2<'_, f32>,
        singular_values: Array1<f32>,
        vt: ArrayView2<'_, f32>,
        rank: usize,
        (total_energy, residual_energy): (f64, f64),
    ) -> LowRank {
        let root = singular_values.slice(s![..rank]).mapv(f32::sqrt);
        let a = &u.slice(s![.., ..rank]) * &root.view().insert_axis(Axis(0));
        let b = &vt.slice(s![..rank, ..]) * &root.view().insert_axis(Axis(1));
        LowRank {
            a,
            b,
            singular_values,
            total_energy,
            residual_energy,
        }
    }

    /// The factorization's first `rank` components: the leading columns of
    /// `A` and rows of `B`. Both factors carry `√σ` of their component, so the
    /// prefix is the rank-`rank` truncation of the same SVD (of `W`, or of the
    /// transformed weight for ASVD and SVD-LLM); the spectrum stays, so the
    /// energy and error figures describe the shorter factorization.
    ///
    /// ```
    /// use ndarray::array;
    /// use tensorpress_lowrank::{factorize, RankSelection};
    ///
    /// let w = array![[3.0f32, 0.0], [0.0, 1.0]];
    /// let full = factorize(w.view(), RankSelection::Rank(2))?;
    /// let one = full.truncate(1)?;
    /// assert_eq!(one.rank(), 1);
    /// assert!((one.retained_energy() - 0.9).abs() < 1e-6);
    /// assert!(full.truncate(0).is_err() && full.truncate(3).is_err());
    /// # Ok::<(), tensorpress_lowrank::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ZeroRank`] for `rank == 0`; [`Error::InvalidRank`] above
    /// [`rank`](Self::rank).
    pub fn truncate(&self, rank: usize) -> Result<LowRank> {
        if rank == 0 {
            return Err(Error::ZeroRank {
                op: "LowRank::truncate",
            });
        }
        if rank > self.rank() {
            return Err(Error::InvalidRank {
                rank,
                max: self.rank(),
            });
        }
        Ok(LowRank::from_parts(
            self.a.slice(s![.., ..rank]).to_owned(),
            self.b.slice(s![..rank, ..]).to_owned(),
            self.singular_values.clone(),
        ))
    }

    /// The left factor `A = U_r √S_r`, `[out, r]`.
    pub fn a(&self) -> ArrayView2<'_, f32> {
        self.a.view()
    }

    /// The right factor `B = √S_r V_rᵀ`, `[r, in]`.
    pub fn b(&self) -> ArrayView2<'_, f32> {
        self.b.view()
    }

    /// Both factors, consuming `self`.
    pub fn into_factors(self) -> (Array2<f32>, Array2<f32>) {
        (self.a, self.b)
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.ncols()
    }

    /// `(out, in)` of the factorized weight.
    pub fn dim(&self) -> (usize, usize) {
        (self.a.nrows(), self.b.ncols())
    }

    /// The singular values the factorization computed, descending: all
    /// `min(out, in)` of the original weight for [`factorize`]; the
    /// `rank + oversampling` estimates (singular values of `QᵀW`, each at most
    /// the true one) for [`randomized_svd`](crate::randomized_svd).
    pub fn singular_values(&self) -> ArrayView1<'_, f32> {
        self.singular_values.view()
    }

    /// `‖W‖_F²` of the factorized weight.
    pub fn total_energy(&self) -> f64 {
        self.total_energy
    }

    /// Fraction of `‖W‖_F²` the factorization keeps, `1 − ‖W − A B‖_F² / ‖W‖_F²`
    /// (1 for a zero matrix).
    pub fn retained_energy(&self) -> f64 {
        if self.total_energy == 0.0 {
            return 1.0;
        }
        (1.0 - self.residual_energy / self.total_energy).clamp(0.0, 1.0)
    }

    /// The error `‖W − A B‖_F / ‖W‖_F` without reconstructing (0 for a zero
    /// matrix).
    ///
    /// For [`factorize`] it is the Eckart–Young error of the dropped singular
    /// values, summed directly. For [`randomized_svd`](crate::randomized_svd) it
    /// is exact in exact arithmetic as well: `A B = Q (QᵀW)_r` and the residual
    /// splits into orthogonal parts, `‖W − QQᵀW‖² + ‖QᵀW − (QᵀW)_r‖² =
    /// ‖W‖² − Σ_{i<r} σ̃_i²`; that difference cancels in f32, so below a relative
    /// error of about 1e-3 measure with [`reconstruction_error`] instead.
    pub fn predicted_relative_error(&self) -> f64 {
        if self.total_energy == 0.0 {
            return 0.0;
        }
        (self.residual_energy / self.total_energy).max(0.0).sqrt()
    }

    /// `A · B`, `[out, in]`.
    pub fn reconstruct(&self) -> Array2<f32> {
        // Shapes agree by construction; faer's GEMM runs in parallel.
        linalg::matmul(self.a.view(), self.b.view()).unwrap_or_else(|_| self.a.dot(&self.b))
    }

    /// Parameters stored: `r · (out + in)`.
    pub fn params(&self) -> usize {
        let (out, inp) = self.dim();
        low_rank_params(out, inp, self.rank())
    }

    /// Dense parameters over stored parameters (∞ at rank 0).
    pub fn compression_ratio(&self) -> f64 {
        let (out, inp) = self.dim();
        compression_ratio(out, inp, self.rank())
    }
}

/// Frobenius error of an approximation.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReconstructionError {
    /// `‖W − Ŵ‖_F`.
    pub frobenius: f64,
    /// `‖W − Ŵ‖_F / ‖W‖_F` (0 when both are zero, ∞ when only `W` is).
    pub relative: f64,
}

/// The error of `approx` against `w`, accumulated in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`].
pub fn reconstruction_error(
    w: ArrayView2<'_, f32>,
    approx: ArrayView2<'_, f32>,
) -> Result<ReconstructionError> {
    if w.dim() != approx.dim() {
        return Err(Error::ShapeMismatch {
            op: "reconstruction_error",
            lhs: w.shape().to_vec(),
            rhs: approx.shape().to_vec(),
        });
    }
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    ndarray::Zip::from(&w).and(&approx).for_each(|&x, &y| {
        let (x, y) = (f64::from(x), f64::from(y));
        err += (x - y) * (x - y);
        norm += x * x;
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn eckart_young_error_matches_dropped_spectrum() {
        let w = SeededRng::new(1).array_normal((48, 32));
        for r in [1, 8, 31, 32] {
            let f = factorize(w.view(), RankSelection::Rank(r)).unwrap();
            assert_eq!(f.rank(), r);
            let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap();
            assert!(
                (e.relative - f.predicted_relative_error()).abs() < 1e-4,
                "r={r}: {} vs {}",
                e.relative,
                f.predicted_relative_error()
            );
        }
        assert!(matches!(
            factorize(w.view(), RankSelection::Rank(33)),
            Err(Error::InvalidRank { rank: 33, max: 32 })
        ));
    }

    #[test]
    fn factors_split_the_scale_evenly() {
        let w = SeededRng::new(2).array_normal((20, 30));
        let f = factorize(w.view(), RankSelection::Rank(5)).unwrap();
        // AᵀA = BBᵀ = S_r.
        let ata = f.a().t().dot(&f.a());
        let bbt = f.b().dot(&f.b().t());
        for i in 0..5 {
            for j in 0..5 {
                let expect = if i == j { f.singular_values()[i] } else { 0.0 };
                assert!((ata[[i, j]] - expect).abs() < 1e-3);
                assert!((bbt[[i, j]] - expect).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn energy_selection_is_the_smallest_sufficient_rank() {
        // Singular values 4, 3, 2, 1 (energies 16, 9, 4, 1 of 30).
        let w = Array2::from_diag(&ndarray::array![4.0f32, 3.0, 2.0, 1.0]);
        let rank = |e| {
            factorize(w.view(), RankSelection::Energy(e))
                .unwrap()
                .rank()
        };
        assert_eq!(rank(0.0), 0);
        assert_eq!(rank(0.5), 1);
        assert_eq!(rank(25.0 / 30.0), 2);
        assert_eq!(rank(0.9), 3);
        assert_eq!(rank(1.0), 4);
        assert!(matches!(
            factorize(w.view(), RankSelection::Energy(1.1)),
            Err(Error::InvalidEnergy { .. })
        ));
    }

    #[test]
    fn error_and_budget_selection() {
        // Singular values 4, 3, 2, 1: relative errors √(30/30), √(14/30),
        // √(5/30), √(1/30), 0 at ranks 0..=4.
        let w = Array2::from_diag(&ndarray::array![4.0f32, 3.0, 2.0, 1.0]);
        let pick = |sel| factorize(w.view(), sel).unwrap();
        for (target, rank) in [(1.0, 0), (0.7, 1), (0.45, 2), (0.2, 3), (0.1, 4)] {
            let f = pick(RankSelection::RelativeError(target));
            assert_eq!(f.rank(), rank, "target {target}");
            assert!(f.predicted_relative_error() <= target + 1e-9);
            let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap();
            assert!(e.relative <= target + 1e-6);
        }
        // 4×4: 8 parameters per rank.
        assert_eq!(pick(RankSelection::ParamBudget(8)).rank(), 1);
        assert_eq!(pick(RankSelection::ParamBudget(23)).rank(), 2);
        assert_eq!(pick(RankSelection::ParamBudget(1000)).rank(), 4);
        assert!(pick(RankSelection::ParamBudget(24)).params() <= 24);
        assert!(matches!(
            factorize(w.view(), RankSelection::ParamBudget(7)),
            Err(Error::BudgetTooSmall {
                budget: 7,
                per_rank: 8
            })
        ));
        assert!(matches!(
            factorize(w.view(), RankSelection::RelativeError(-1.0)),
            Err(Error::InvalidErrorTarget { .. })
        ));
        assert_eq!(
            RankSelection::RelativeError(0.45)
                .select(4, 4, ndarray::array![4.0f32, 3.0, 2.0, 1.0].view())
                .unwrap(),
            2
        );
    }

    #[test]
    fn non_finite_weights_are_typed_errors() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut w = SeededRng::new(3).array_normal((5, 4));
            w[[4, 1]] = bad;
            match factorize(w.view(), RankSelection::Rank(2)) {
                Err(Error::NonFinite {
                    op: "factorize",
                    row: 4,
                    col: 1,
                    value,
                }) => assert!(value.is_nan() || value == f64::from(bad)),
                other => panic!("expected NonFinite, got {other:?}"),
            }
        }
    }

    #[test]
    fn zero_matrix_and_errors() {
        let z = Array2::<f32>::zeros((3, 4));
        let f = factorize(z.view(), RankSelection::Energy(0.99)).unwrap();
        assert_eq!(f.rank(), 0);
        // An explicit rank 0 asks for nothing: a typed error.
        assert!(matches!(
            factorize(z.view(), RankSelection::Rank(0)),
            Err(Error::ZeroRank { .. })
        ));
        assert_eq!(f.reconstruct(), z);
        assert_eq!(f.retained_energy(), 1.0);
        assert_eq!(f.compression_ratio(), f64::INFINITY);
        let e = reconstruction_error(z.view(), z.view()).unwrap();
        assert_eq!((e.frobenius, e.relative), (0.0, 0.0));
        assert!(matches!(
            reconstruction_error(z.view(), z.t()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn error_falls_with_rank(m in 1usize..20, n in 1usize..20, seed in any::<u64>()) {
            let w = SeededRng::new(seed).array_normal((m, n));
            let mut last = f64::INFINITY;
            for r in 1..=m.min(n) {
                let f = factorize(w.view(), RankSelection::Rank(r)).unwrap();
                let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap().relative;
                prop_assert!(e <= last + 1e-5);
                last = e;
            }
            prop_assert!(last < 1e-4, "full rank reconstructs: {}", last);
        }
    }
}
