//! Truncated-SVD factorization `W ≈ A · B`.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use tensorpress_tensor::linalg;

use crate::rank::{compression_ratio, low_rank_params, rank_for_energy};
use crate::{Error, Result};

/// How many singular values a factorization keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankSelection {
    /// Exactly this rank (at most `min(out, in)`).
    Rank(usize),
    /// The smallest rank whose singular values hold at least this fraction of
    /// `‖W‖_F² = Σ σ²` (in `[0, 1]`).
    Energy(f64),
}

/// A rank-`r` factorization `W ≈ A · B` of a weight `[out, in]`, with
/// `A = U_r √S_r` (`[out, r]`) and `B = √S_r V_rᵀ` (`[r, in]`): the best rank-`r`
/// approximation in Frobenius and spectral norm (Eckart–Young), with the scale
/// split evenly between the two factors.
#[derive(Debug, Clone)]
pub struct LowRank {
    a: Array2<f32>,
    b: Array2<f32>,
    singular_values: Array1<f32>,
}

impl LowRank {
    /// Assembles a factorization from its parts (for the activation-aware
    /// variants, whose spectrum is that of a transformed weight).
    pub(crate) fn from_parts(a: Array2<f32>, b: Array2<f32>, singular_values: Array1<f32>) -> Self {
        debug_assert_eq!(a.ncols(), b.nrows());
        LowRank {
            a,
            b,
            singular_values,
        }
    }
}

/// Factorizes `w` by a thin SVD (computed in f32 by faer), keeping the rank that
/// `selection` asks for.
///
/// # Errors
/// [`Error::InvalidRank`], [`Error::InvalidEnergy`], and tensor-layer errors
/// for non-finite weights or a non-converging SVD.
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
    let (out, inp) = w.dim();
    let max = out.min(inp);
    let svd = linalg::svd(w)?;
    let rank = match selection {
        RankSelection::Rank(rank) if rank <= max => rank,
        RankSelection::Rank(rank) => return Err(Error::InvalidRank { rank, max }),
        RankSelection::Energy(energy) => rank_for_energy(svd.s.view(), energy)?,
    };
    let root = svd.s.slice(s![..rank]).mapv(f32::sqrt);
    let a = &svd.u.slice(s![.., ..rank]) * &root.view().insert_axis(Axis(0));
    let b = &svd.vt.slice(s![..rank, ..]) * &root.view().insert_axis(Axis(1));
    Ok(LowRank {
        a,
        b,
        singular_values: svd.s,
    })
}

impl LowRank {
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

    /// All `min(out, in)` singular values of the original weight, descending.
    pub fn singular_values(&self) -> ArrayView1<'_, f32> {
        self.singular_values.view()
    }

    /// Fraction of `‖W‖_F²` the kept singular values hold (1 for a zero matrix).
    pub fn retained_energy(&self) -> f64 {
        let sq = |v: &f32| f64::from(*v) * f64::from(*v);
        let total: f64 = self.singular_values.iter().map(sq).sum();
        if total == 0.0 {
            return 1.0;
        }
        self.singular_values
            .iter()
            .take(self.rank())
            .map(sq)
            .sum::<f64>()
            / total
    }

    /// The Eckart–Young error `‖W − A B‖_F / ‖W‖_F`, from the dropped singular
    /// values (no reconstruction needed).
    pub fn predicted_relative_error(&self) -> f64 {
        (1.0 - self.retained_energy()).max(0.0).sqrt()
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
        for r in [0, 1, 8, 31, 32] {
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
    fn zero_matrix_and_errors() {
        let z = Array2::<f32>::zeros((3, 4));
        let f = factorize(z.view(), RankSelection::Energy(0.99)).unwrap();
        assert_eq!(f.rank(), 0);
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
            for r in 0..=m.min(n) {
                let f = factorize(w.view(), RankSelection::Rank(r)).unwrap();
                let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap().relative;
                prop_assert!(e <= last + 1e-5);
                last = e;
            }
            prop_assert!(last < 1e-4, "full rank reconstructs: {}", last);
        }
    }
}
