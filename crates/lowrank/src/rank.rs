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
