//! Rank selection and parameter-count arithmetic.

use ndarray::ArrayView1;

use crate::{Error, Result};

/// The smallest rank `r` with `Σ_{i<r} σ_i² ≥ energy · Σ σ_i²` for singular
/// values `s` in descending order (0 for a zero spectrum).
///
/// # Errors
/// [`Error::InvalidEnergy`] outside `[0, 1]`.
pub fn rank_for_energy(s: ArrayView1<'_, f32>, energy: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&energy) {
        return Err(Error::InvalidEnergy { energy });
    }
    let sq: Vec<f64> = s.iter().map(|&v| f64::from(v) * f64::from(v)).collect();
    let total: f64 = sq.iter().sum();
    if total == 0.0 {
        return Ok(0);
    }
    let target = energy * total;
    let mut acc = 0.0;
    for (r, v) in sq.iter().enumerate() {
        if acc >= target * (1.0 - 1e-12) {
            return Ok(r);
        }
        acc += v;
    }
    Ok(sq.len())
}

/// The smallest rank `r` whose truncation error `‖W − W_r‖_F / ‖W‖_F =
/// √(Σ_{i≥r} σ_i² / Σ σ_i²)` is at most `target`, for singular values `s` in
/// descending order (Eckart–Young: no rank-`r` matrix does better). A target of
/// 1 or more gives 0; so does a zero spectrum.
///
/// The tail sums are accumulated from the smallest singular value up in f64, so
/// small targets do not cancel against `1 − target²`.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::rank_for_error;
///
/// // Energies 16, 9, 4, 1 of 30: dropping the last costs √(1/30) ≈ 0.183.
/// let s = array![4.0f32, 3.0, 2.0, 1.0];
/// assert_eq!(rank_for_error(s.view(), 0.2)?, 3);
/// assert_eq!(rank_for_error(s.view(), 0.18)?, 4);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidErrorTarget`] for a negative or NaN target.
pub fn rank_for_error(s: ArrayView1<'_, f32>, target: f64) -> Result<usize> {
    if target.is_nan() || target < 0.0 {
        return Err(Error::InvalidErrorTarget { target });
    }
    let sq: Vec<f64> = s.iter().map(|&v| f64::from(v) * f64::from(v)).collect();
    let total: f64 = sq.iter().sum();
    if total == 0.0 {
        return Ok(0);
    }
    let allowed = target * target * total;
    // tail = Σ_{i≥r} σ_i², for r from len down to 0; the answer is the smallest r
    // whose tail still fits (tails grow as r falls).
    let mut tail = 0.0;
    let mut rank = sq.len();
    for (r, v) in sq.iter().enumerate().rev() {
        tail += v;
        if tail > allowed * (1.0 + 1e-12) {
            break;
        }
        rank = r;
    }
    Ok(rank)
}

/// The largest rank whose factors `A` (`[out, r]`) and `B` (`[r, in]`) hold at
/// most `budget` parameters, `r · (out + in) ≤ budget`, capped at `min(out, in)`.
///
/// ```
/// use tensorpress_lowrank::{low_rank_params, rank_for_budget};
///
/// let r = rank_for_budget(4096, 11008, 1_000_000)?;
/// assert_eq!(r, 66);
/// assert!(low_rank_params(4096, 11008, r) <= 1_000_000);
/// assert!(low_rank_params(4096, 11008, r + 1) > 1_000_000);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::BudgetTooSmall`] when even rank 1 (`out + in` parameters) does not
/// fit, including for an empty matrix.
pub fn rank_for_budget(out: usize, inp: usize, budget: usize) -> Result<usize> {
    let per_rank = out + inp;
    if per_rank == 0 || budget < per_rank || out.min(inp) == 0 {
        return Err(Error::BudgetTooSmall { budget, per_rank });
    }
    Ok((budget / per_rank).min(out.min(inp)))
}

/// Parameters of a rank-`rank` factorization of an `[out, in]` matrix:
/// `rank · (out + in)`.
pub fn low_rank_params(out: usize, inp: usize, rank: usize) -> usize {
    rank * (out + inp)
}

/// Dense parameters over factorized parameters: `out·in / (rank·(out + in))`
/// (∞ at rank 0).
pub fn compression_ratio(out: usize, inp: usize, rank: usize) -> f64 {
    (out * inp) as f64 / low_rank_params(out, inp, rank) as f64
}

/// The largest rank whose factorization still compresses by at least `ratio`
/// (0 when even rank 1 does not).
///
/// ```
/// use tensorpress_lowrank::{compression_ratio, max_rank_for_ratio};
///
/// // 4096×4096 at 4× smaller: r · 8192 ≤ 4096² / 4.
/// let r = max_rank_for_ratio(4096, 4096, 4.0)?;
/// assert_eq!(r, 512);
/// assert!(compression_ratio(4096, 4096, r) >= 4.0);
/// assert!(compression_ratio(4096, 4096, r + 1) < 4.0);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidRatio`] unless `ratio` is positive and finite.
pub fn max_rank_for_ratio(out: usize, inp: usize, ratio: f64) -> Result<usize> {
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(Error::InvalidRatio { ratio });
    }
    if out + inp == 0 {
        return Ok(0);
    }
    let r = ((out * inp) as f64 / (ratio * (out + inp) as f64)).floor() as usize;
    Ok(r.min(out.min(inp)))
}

/// The rank at which a factorization stops saving parameters:
/// the largest `r` with `r · (out + in) ≤ out · in`.
pub fn break_even_rank(out: usize, inp: usize) -> usize {
    (out * inp).checked_div(out + inp).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn arithmetic() {
        assert_eq!(low_rank_params(10, 20, 3), 90);
        assert_eq!(compression_ratio(10, 20, 2), 200.0 / 60.0);
        assert_eq!(break_even_rank(10, 20), 6);
        assert_eq!(break_even_rank(0, 0), 0);
        assert_eq!(max_rank_for_ratio(10, 20, 1.0).unwrap(), 6);
        assert_eq!(max_rank_for_ratio(10, 20, 1000.0).unwrap(), 0);
        assert_eq!(max_rank_for_ratio(10, 20, 0.01).unwrap(), 10);
        assert!(matches!(
            max_rank_for_ratio(10, 20, 0.0),
            Err(Error::InvalidRatio { .. })
        ));
    }

    #[test]
    fn error_targets() {
        // Tails: √(30/30), √(14/30), √(5/30), √(1/30), 0.
        let s = array![4.0f32, 3.0, 2.0, 1.0];
        let r = |t| rank_for_error(s.view(), t).unwrap();
        assert_eq!(r(1.0), 0);
        assert_eq!(r(5.0), 0);
        assert_eq!(r((14.0f64 / 30.0).sqrt()), 1);
        assert_eq!(r(0.68), 2);
        assert_eq!(r((1.0f64 / 30.0).sqrt()), 3);
        assert_eq!(r(0.1), 4);
        assert_eq!(r(0.0), 4);
        // A zero tail is met by error 0 before the full rank.
        assert_eq!(rank_for_error(array![2.0f32, 0.0].view(), 0.0).unwrap(), 1);
        assert_eq!(
            rank_for_error(array![0.0f32, 0.0, 0.0].view(), 0.0).unwrap(),
            0
        );
        for bad in [-0.1, f64::NAN] {
            assert!(matches!(
                rank_for_error(s.view(), bad),
                Err(Error::InvalidErrorTarget { .. })
            ));
        }
    }

    #[test]
    fn budgets() {
        assert_eq!(rank_for_budget(10, 20, 30).unwrap(), 1);
        assert_eq!(rank_for_budget(10, 20, 89).unwrap(), 2);
        assert_eq!(rank_for_budget(10, 20, 90).unwrap(), 3);
        assert_eq!(rank_for_budget(10, 20, usize::MAX).unwrap(), 10);
        assert!(matches!(
            rank_for_budget(10, 20, 29),
            Err(Error::BudgetTooSmall {
                budget: 29,
                per_rank: 30
            })
        ));
        assert!(matches!(
            rank_for_budget(0, 5, 100),
            Err(Error::BudgetTooSmall { .. })
        ));
    }

    #[test]
    fn energy_thresholds() {
        let s = array![3.0f32, 1.0];
        assert_eq!(rank_for_energy(s.view(), 0.9).unwrap(), 1);
        assert_eq!(rank_for_energy(s.view(), 0.91).unwrap(), 2);
        assert_eq!(rank_for_energy(array![0.0f32, 0.0].view(), 1.0).unwrap(), 0);
        assert!(matches!(
            rank_for_energy(s.view(), -0.1),
            Err(Error::InvalidEnergy { .. })
        ));
    }
}
