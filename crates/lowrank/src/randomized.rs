//! Randomized truncated SVD (Halko, Martinsson & Tropp, 2011).
//!
//! N. Halko, P.-G. Martinsson, J. A. Tropp, *Finding structure with randomness:
//! probabilistic algorithms for constructing approximate matrix decompositions*,
//! SIAM Review 53(2), 2011: randomized subspace iteration (their Algorithm 4.4)
//! to find an orthonormal basis `Q` of the dominant range, then the SVD of the
//! small matrix `QᵀW` (their Algorithm 5.1).

use ndarray::{s, ArrayView2};
use tensorpress_tensor::{linalg, SeededRng};

use crate::error::check_finite;
use crate::{Error, LowRank, Result};

/// Settings of [`randomized_svd`].
///
/// ```
/// use tensorpress_lowrank::RandomizedSvd;
///
/// let cfg = RandomizedSvd::default().power_iterations(4).seed(7);
/// assert_eq!((cfg.oversampling, cfg.power_iterations, cfg.seed), (10, 4, 7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RandomizedSvd {
    /// Extra sketch columns beyond the rank, `p` in HMT (default 10): the sketch
    /// has `ℓ = min(rank + p, min(out, in))` columns.
    pub oversampling: usize,
    /// Power (subspace) iterations `q` (default 2): each multiplies the sketch by
    /// `W Wᵀ`, sharpening the spectral decay to `σ^(2q+1)`, with a QR
    /// re-orthonormalization after every product so small singular directions
    /// are not lost to rounding.
    pub power_iterations: usize,
    /// Seed of the Gaussian test matrix ([`SeededRng`]): the same seed gives
    /// bit-identical factors.
    pub seed: u64,
}

impl Default for RandomizedSvd {
    fn default() -> Self {
        RandomizedSvd {
            oversampling: 10,
            power_iterations: 2,
            seed: 0,
        }
    }
}

impl RandomizedSvd {
    /// Sets [`oversampling`](Self::oversampling).
    pub fn oversampling(mut self, oversampling: usize) -> Self {
        self.oversampling = oversampling;
        self
    }

    /// Sets [`power_iterations`](Self::power_iterations).
    pub fn power_iterations(mut self, power_iterations: usize) -> Self {
        self.power_iterations = power_iterations;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A rank-`rank` factorization `W ≈ A · B` by randomized SVD (Halko, Martinsson
/// & Tropp, SIAM Review 2011), with the same [`LowRank`] result as
/// [`factorize`](crate::factorize).
///
/// 1. Draw a Gaussian test matrix `Ω` (`[in, ℓ]`, `ℓ = rank + oversampling`,
///    capped at `min(out, in)`) from [`SeededRng`] with `cfg.seed`.
/// 2. `Q = qr(W Ω).Q`; then `cfg.power_iterations` times,
///    `Q = qr(W · qr(Wᵀ Q).Q).Q` (subspace iteration, re-orthonormalized after
///    every product).
/// 3. SVD of the small `QᵀW = Ũ Σ Vᵀ` (`[ℓ, in]`); `U = Q Ũ`; keep `rank`
///    triplets.
///
/// The work is `O(out · in · ℓ · (2q + 2))` in GEMMs plus small QRs and one
/// `ℓ × in` SVD, against the `O(out · in · min(out, in))` of a full SVD. The
/// error is within a small factor of the optimal (Eckart–Young) one, and close
/// to it when the spectrum decays past the rank. Where it decays slowly, widen
/// the sketch: on a 4096×4096 matrix with `σ_i ∝ (1 + i)^-0.8` at ranks 256
/// and 409, the defaults are 1.9 % and 2.3 % above the exact error (×22 and
/// ×13 faster than [`factorize`](crate::factorize)), oversampling 100 is
/// 0.3 % and 0.6 % above (×16 and ×10 faster); see `docs/lowrank.md`.
///
/// # Errors
/// [`Error::ZeroRank`] for `rank == 0`; [`Error::InvalidRank`] above
/// `min(out, in)`; [`Error::NonFinite`] for a NaN or infinity in `w`; a
/// tensor-layer error when the small SVD does not converge.
///
/// ```
/// use tensorpress_lowrank::{
///     factorize, randomized_svd, reconstruction_error, RandomizedSvd, RankSelection,
/// };
/// use tensorpress_tensor::SeededRng;
///
/// // A 200×120 matrix of rank 8 plus noise.
/// let mut rng = SeededRng::new(0);
/// let w = rng.array_normal((200, 8)).dot(&rng.array_normal((8, 120)))
///     + rng.array_normal((200, 120)) * 0.1;
///
/// let cfg = RandomizedSvd::default().seed(42);
/// let fast = randomized_svd(w.view(), 8, &cfg)?;
/// let exact = factorize(w.view(), RankSelection::Rank(8))?;
/// assert_eq!((fast.a().dim(), fast.b().dim()), ((200, 8), (8, 120)));
/// let err = |f: &tensorpress_lowrank::LowRank| {
///     reconstruction_error(w.view(), f.reconstruct().view()).map(|e| e.relative)
/// };
/// let ratio = err(&fast)? / err(&exact)?;
/// // Within 1 % of the optimum (round-off can put it a hair below).
/// assert!((0.999..1.01).contains(&ratio), "{ratio}");
///
/// // Seeded: the same seed gives the same factors, bit for bit.
/// let again = randomized_svd(w.view(), 8, &cfg)?;
/// assert_eq!(fast.a(), again.a());
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
pub fn randomized_svd(w: ArrayView2<'_, f32>, rank: usize, cfg: &RandomizedSvd) -> Result<LowRank> {
    let (out, inp) = w.dim();
    let max = out.min(inp);
    if rank == 0 {
        return Err(Error::ZeroRank {
            op: "randomized_svd",
        });
    }
    if rank > max {
        return Err(Error::InvalidRank { rank, max });
    }
    check_finite("randomized_svd", w)?;
    let total_energy: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let width = rank.saturating_add(cfg.oversampling).min(max);

    let omega = SeededRng::new(cfg.seed).array_normal((inp, width));
    let mut q = linalg::qr(linalg::matmul(w, omega.view())?.view())?.q;
    for _ in 0..cfg.power_iterations {
        let z = linalg::qr(linalg::matmul(w.t(), q.view())?.view())?.q;
        q = linalg::qr(linalg::matmul(w, z.view())?.view())?.q;
    }
    // B = QᵀW, [ℓ, in]: its SVD gives W ≈ (Q Ũ) Σ Vᵀ.
    let b = linalg::matmul(q.t(), w)?;
    let small = linalg::svd(b.view())?;
    let u = linalg::matmul(q.view(), small.u.slice(s![.., ..rank]))?;
    let kept: f64 = small
        .s
        .iter()
        .take(rank)
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    let residual_energy = (total_energy - kept).max(0.0);
    Ok(LowRank::from_svd(
        u.view(),
        small.s,
        small.vt.view(),
        rank,
        (total_energy, residual_energy),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{factorize, reconstruction_error, RankSelection};
    use ndarray::{Array1, Array2, Axis};

    /// `U diag(σ) Vᵀ + noise` with near-orthonormal Gaussian `U`, `V` (columns
    /// of norm ≈ 1), `σ_i = (1 + i)^-0.8` over `k` directions.
    fn decaying(m: usize, n: usize, k: usize, noise: f32, seed: u64) -> Array2<f32> {
        let mut rng = SeededRng::new(seed);
        let sigma = Array1::from_shape_fn(k, |i| (1.0 + i as f32).powf(-0.8));
        let u = rng.array_normal((m, k)) / (m as f32).sqrt();
        let v = rng.array_normal((k, n)) / (n as f32).sqrt();
        let us = u * sigma.view().insert_axis(Axis(0));
        us.dot(&v) + rng.array_normal((m, n)) * noise
    }

    #[test]
    fn within_one_percent_of_exact_at_ten_percent_rank() {
        let w = decaying(512, 384, 384, 1e-4, 3);
        let cfg = RandomizedSvd::default().seed(11);
        let exact_all = factorize(w.view(), RankSelection::Rank(38)).unwrap();
        for rank in [8, 20, 38] {
            let exact = factorize(w.view(), RankSelection::Rank(rank)).unwrap();
            let fast = randomized_svd(w.view(), rank, &cfg).unwrap();
            let e_exact = reconstruction_error(w.view(), exact.reconstruct().view())
                .unwrap()
                .relative;
            let e_fast = reconstruction_error(w.view(), fast.reconstruct().view())
                .unwrap()
                .relative;
            assert!(e_fast >= e_exact * (1.0 - 1e-4), "Eckart–Young is optimal");
            assert!(
                e_fast <= 1.01 * e_exact,
                "rank {rank}: randomized {e_fast} vs exact {e_exact}"
            );
            // The error predicted from the estimated spectrum is the measured one.
            assert!((fast.predicted_relative_error() - e_fast).abs() < 1e-4);
            // The leading estimated singular values match the exact ones.
            let (s_fast, s_exact) = (fast.singular_values(), exact_all.singular_values());
            assert!((s_fast[0] - s_exact[0]).abs() < 1e-4 * s_exact[0]);
        }
    }

    #[test]
    fn same_seed_same_factors_other_seed_other_sketch() {
        let w = decaying(96, 64, 64, 1e-3, 5);
        let cfg = RandomizedSvd::default().seed(9);
        let f1 = randomized_svd(w.view(), 6, &cfg).unwrap();
        let f2 = randomized_svd(w.view(), 6, &cfg).unwrap();
        let bits = |a: ArrayView2<'_, f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(f1.a()), bits(f2.a()));
        assert_eq!(bits(f1.b()), bits(f2.b()));
        let f3 = randomized_svd(w.view(), 6, &cfg.seed(10)).unwrap();
        assert_ne!(bits(f1.a()), bits(f3.a()));
    }

    #[test]
    fn exact_on_low_rank_and_full_width_sketches() {
        // Rank 5 exactly: any sketch of width ≥ 5 spans the range.
        let mut rng = SeededRng::new(1);
        let w = rng.array_normal((40, 5)).dot(&rng.array_normal((5, 30)));
        let cfg = RandomizedSvd::default().power_iterations(0);
        let f = randomized_svd(w.view(), 5, &cfg).unwrap();
        let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap();
        assert!(e.relative < 1e-5, "{}", e.relative);
        // rank + oversampling beyond min(out, in) is capped; rank = min(out, in)
        // reconstructs any matrix.
        let w = rng.array_normal((12, 7));
        let f = randomized_svd(w.view(), 7, &RandomizedSvd::default()).unwrap();
        assert_eq!(f.singular_values().len(), 7);
        let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap();
        assert!(e.relative < 1e-5, "{}", e.relative);
        // A zero matrix factors to zero.
        let z = Array2::<f32>::zeros((6, 4));
        let f = randomized_svd(z.view(), 2, &RandomizedSvd::default()).unwrap();
        assert_eq!(f.reconstruct(), z);
        assert_eq!(f.retained_energy(), 1.0);
    }

    #[test]
    fn typed_errors() {
        let w = SeededRng::new(2).array_normal((8, 5));
        let cfg = RandomizedSvd::default();
        assert!(matches!(
            randomized_svd(w.view(), 0, &cfg),
            Err(Error::ZeroRank { .. })
        ));
        assert!(matches!(
            randomized_svd(w.view(), 6, &cfg),
            Err(Error::InvalidRank { rank: 6, max: 5 })
        ));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut w = w.clone();
            w[[3, 2]] = bad;
            assert!(matches!(
                randomized_svd(w.view(), 2, &cfg),
                Err(Error::NonFinite { row: 3, col: 2, .. })
            ));
        }
    }
}
