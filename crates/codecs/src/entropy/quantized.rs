//! Continuous distributions quantized to unit bins over an integer range: the
//! conditional entropy models of learned compression.

use std::ops::RangeInclusive;

use super::categorical::check_precision;
use super::{EntropyModel, Interval};
use crate::{Error, Result};

/// A univariate distribution given by its cumulative distribution function.
pub trait UnivariateCdf {
    /// `P(X ≤ x)`, nondecreasing in `x`, within `[0, 1]`.
    fn cdf(&self, x: f64) -> f64;
}

/// The normal distribution `N(mean, std²)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    mean: f64,
    std: f64,
}

impl Gaussian {
    /// # Errors
    /// [`Error::InvalidParameter`] for a mean that is not finite or a standard
    /// deviation that is not finite and positive.
    pub fn new(mean: f64, std: f64) -> Result<Self> {
        check_param("mean", mean, mean.is_finite())?;
        check_param("scale", std, std.is_finite() && std > 0.0)?;
        Ok(Self { mean, std })
    }
}

impl UnivariateCdf for Gaussian {
    fn cdf(&self, x: f64) -> f64 {
        let z = (x - self.mean) / (self.std * std::f64::consts::SQRT_2);
        // Both branches use the upper tail, where erfc is accurate; they meet at 0.5.
        if z < 0.0 {
            0.5 * erfc(-z)
        } else {
            1.0 - 0.5 * erfc(z)
        }
    }
}

/// The Laplace distribution with location `mean` and scale `b` (std `b√2`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Laplace {
    mean: f64,
    scale: f64,
}

impl Laplace {
    /// # Errors
    /// [`Error::InvalidParameter`] for a mean that is not finite or a scale that
    /// is not finite and positive.
    pub fn new(mean: f64, scale: f64) -> Result<Self> {
        check_param("mean", mean, mean.is_finite())?;
        check_param("scale", scale, scale.is_finite() && scale > 0.0)?;
        Ok(Self { mean, scale })
    }
}

impl UnivariateCdf for Laplace {
    fn cdf(&self, x: f64) -> f64 {
        let z = (x - self.mean) / self.scale;
        if z < 0.0 {
            0.5 * z.exp()
        } else {
            1.0 - 0.5 * (-z).exp()
        }
    }
}

fn check_param(name: &'static str, value: f64, ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidParameter { name, value })
    }
}

/// The complementary error function `erfc(x) = 1 − erf(x)`, to about 1e-14
/// relative accuracy for `x ≥ 0` (absolute for `x < 0`).
///
/// Below 2.5 it sums the series `erf x = 2/√π · e^{−x²} Σ 2ⁿ x^{2n+1} / (2n+1)!!`
/// (all terms positive); above, it evaluates the continued fraction
/// `erfc x = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …))))`.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x > 27.0 {
        return 0.0;
    }
    let frac_2_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    let gauss = (-x * x).exp();
    if x < 2.5 {
        let x2 = 2.0 * x * x;
        let (mut term, mut sum) = (x, x);
        let mut n = 0.0;
        while term > 1e-17 * sum {
            n += 1.0;
            term *= x2 / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - frac_2_sqrt_pi * gauss * sum
    } else {
        let mut f = x;
        for k in (1..=60).rev() {
            f = x + f64::from(k) * 0.5 / f;
        }
        0.5 * frac_2_sqrt_pi * gauss / f
    }
}

/// A distribution integrated over the unit bins `[k − ½, k + ½)` of the integers
/// `k` in `min..=max`, quantized to `2^precision` with every symbol of the range
/// keeping at least frequency 1 ("leaky" quantization).
///
/// The quantized CDF at symbol `k` is `⌊F(k − ½)·(2^precision − n)⌋ + (k − min)`
/// for `n` symbols, with the tails below `min` and above `max` folded into the
/// end symbols. It is evaluated on demand: encoding costs two CDF evaluations
/// per symbol, decoding a binary search over the range.
///
/// The CDFs are `f64` arithmetic and `exp`, so the encoder and decoder must
/// agree on them bit for bit: the same build on the same platform. For streams
/// that travel, quantize the models once into [`CdfTables`](super::CdfTables).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantized<D> {
    dist: D,
    min: i32,
    max: i32,
    precision: u32,
    /// `2^precision − n`.
    spread: f64,
}

/// A quantized [`Gaussian`] (the Gaussian conditional of Ballé et al. 2018).
pub type QuantizedGaussian = Quantized<Gaussian>;
/// A quantized [`Laplace`].
pub type QuantizedLaplace = Quantized<Laplace>;

impl<D: UnivariateCdf> Quantized<D> {
    /// Quantizes `dist` over `range` at `precision` bits.
    ///
    /// # Errors
    /// [`Error::InvalidPrecision`], [`Error::InvalidRange`] for an empty range
    /// or one with more than `2^precision` symbols.
    pub fn new(dist: D, range: RangeInclusive<i32>, precision: u32) -> Result<Self> {
        check_precision(precision)?;
        let (min, max) = (*range.start(), *range.end());
        let n = i64::from(max) - i64::from(min) + 1;
        if n < 1 || n > 1i64 << precision {
            return Err(Error::InvalidRange {
                min: min.into(),
                max: max.into(),
                precision,
            });
        }
        Ok(Self {
            dist,
            min,
            max,
            precision,
            spread: ((1i64 << precision) - n) as f64,
        })
    }

    /// The integer range.
    pub fn range(&self) -> RangeInclusive<i32> {
        self.min..=self.max
    }

    /// The quantized CDF below symbol `k` (for `k` in `min..=max + 1`).
    fn cdf_at(&self, k: i64) -> u32 {
        let min = i64::from(self.min);
        if k <= min {
            0
        } else if k > i64::from(self.max) {
            1 << self.precision
        } else {
            let f = self.dist.cdf(k as f64 - 0.5).clamp(0.0, 1.0);
            (f * self.spread).floor() as u32 + (k - min) as u32
        }
    }
}

impl Quantized<Gaussian> {
    /// A quantized `N(mean, std²)` over `range`.
    ///
    /// # Errors
    /// As [`Gaussian::new`] and [`Quantized::new`].
    pub fn gaussian(
        mean: f64,
        std: f64,
        range: RangeInclusive<i32>,
        precision: u32,
    ) -> Result<Self> {
        Self::new(Gaussian::new(mean, std)?, range, precision)
    }
}

impl Quantized<Laplace> {
    /// A quantized Laplace distribution over `range`.
    ///
    /// # Errors
    /// As [`Laplace::new`] and [`Quantized::new`].
    pub fn laplace(
        mean: f64,
        scale: f64,
        range: RangeInclusive<i32>,
        precision: u32,
    ) -> Result<Self> {
        Self::new(Laplace::new(mean, scale)?, range, precision)
    }
}

impl<D: UnivariateCdf> EntropyModel for Quantized<D> {
    type Symbol = i32;

    fn precision(&self) -> u32 {
        self.precision
    }

    fn interval(&self, symbol: i32) -> Option<Interval> {
        if !(self.min..=self.max).contains(&symbol) {
            return None;
        }
        let start = self.cdf_at(symbol.into());
        let end = self.cdf_at(i64::from(symbol) + 1);
        (end > start).then_some(Interval {
            start,
            freq: end - start,
        })
    }

    fn symbol_at(&self, slot: u32) -> Option<(i32, Interval)> {
        if slot >> self.precision != 0 {
            return None;
        }
        // The largest k with cdf_at(k) ≤ slot.
        let (mut lo, mut hi) = (i64::from(self.min), i64::from(self.max));
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            if self.cdf_at(mid) <= slot {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let symbol = lo as i32;
        let iv = self.interval(symbol)?;
        (iv.start <= slot && slot - iv.start < iv.freq).then_some((symbol, iv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_reference_values() {
        // Reference values to 16 digits (from the series at high precision).
        let cases = [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_266),
            (2.5, 0.000_406_952_017_444_958_9),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "erfc({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn erfc_is_monotone_across_the_switch() {
        let mut prev = erfc(2.3);
        let mut x = 2.3;
        while x < 2.7 {
            x += 1e-4;
            let v = erfc(x);
            assert!(v <= prev, "erfc not decreasing at {x}");
            prev = v;
        }
    }

    #[test]
    fn quantized_gaussian_covers_the_range() {
        let m = Quantized::gaussian(0.3, 2.0, -20..=20, 12).unwrap();
        let mut next = 0;
        for k in -20..=20 {
            let iv = m.interval(k).unwrap();
            assert_eq!(iv.start, next);
            assert!(iv.freq >= 1);
            next = iv.start + iv.freq;
        }
        assert_eq!(next, 4096);
        assert_eq!(m.interval(21), None);
        for slot in (0..4096).step_by(7) {
            let (k, iv) = m.symbol_at(slot).unwrap();
            assert!(iv.start <= slot && slot < iv.start + iv.freq, "{k}");
        }
        // The mode is near the mean.
        let mode = (-20..=20).max_by_key(|&k| m.interval(k).unwrap().freq);
        assert_eq!(mode, Some(0));
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(Quantized::gaussian(0.0, 0.0, 0..=1, 8).is_err());
        assert!(Quantized::laplace(f64::NAN, 1.0, 0..=1, 8).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 1..=0;
        assert!(Quantized::gaussian(0.0, 1.0, empty, 8).is_err());
        assert!(Quantized::gaussian(0.0, 1.0, 0..=256, 8).is_err());
        assert!(Quantized::gaussian(0.0, 1.0, 0..=255, 8).is_ok());
    }
}
