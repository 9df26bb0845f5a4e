//! The uniform integer grid: scales and zero points from a group's range, and
//! rounding onto the grid.
//!
//! Conventions follow GPTQ's reference `Quantizer` (Frantar et al., 2023) and
//! compressed-tensors, which agree:
//!
//! - asymmetric: the range `[min(x, 0), max(x, 0)]` maps onto codes
//!   `0 ..= 2^b − 1`: `scale = (max − min) / (2^b − 1)`, `zero = round(−min / scale)`;
//! - symmetric: `scale = 2·max|x| / (2^b − 1)` and `zero = 2^(b−1)`, so codes
//!   span `−2^(b−1) … 2^(b−1) − 1` steps around zero (for 4 bits, `max|x| / 7.5`
//!   per step and values `−8 … 7`);
//! - a group of zeros gets the range `[−1, 1]` so its scale is never 0.
//!
//! A value is `(code − zero) · scale`.

/// Scale and zero point of one group, in code units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupParams {
    /// Step between adjacent codes.
    pub scale: f32,
    /// The code that represents 0.
    pub zero: f32,
}

/// A `bits`-bit integer grid, symmetric or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntGrid {
    bits: u8,
    symmetric: bool,
}

impl IntGrid {
    /// A grid of `bits` bits (the caller validates `2..=8`).
    pub fn new(bits: u8, symmetric: bool) -> Self {
        IntGrid { bits, symmetric }
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Whether the zero point is fixed.
    pub fn symmetric(&self) -> bool {
        self.symmetric
    }

    /// The largest code, `2^bits − 1`.
    pub fn max_code(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Parameters for the range `[lo, hi]` (widened to include 0).
    pub fn params_for_range(&self, lo: f32, hi: f32) -> GroupParams {
        let maxq = self.max_code() as f32;
        let (mut lo, mut hi) = (lo.min(0.0), hi.max(0.0));
        if self.symmetric {
            let m = hi.max(-lo);
            lo = -m;
            hi = m;
        }
        if lo == 0.0 && hi == 0.0 {
            lo = -1.0;
            hi = 1.0;
        }
        let scale = (hi - lo) / maxq;
        let zero = if self.symmetric {
            (maxq + 1.0) / 2.0
        } else {
            (-lo / scale).round_ties_even()
        };
        GroupParams { scale, zero }
    }

    /// Parameters from the min and max of `values`.
    pub fn params(&self, values: &[f32]) -> GroupParams {
        let (lo, hi) = min_max(values);
        self.params_for_range(lo, hi)
    }

    /// The code of `x`: `clamp(round(x / scale) + zero, 0, 2^b − 1)`, rounding
    /// half to even as `torch.round` does.
    #[inline]
    pub fn quantize(&self, x: f32, p: GroupParams) -> u8 {
        let q = (x / p.scale).round_ties_even() + p.zero;
        q.clamp(0.0, self.max_code() as f32) as u8
    }

    /// The value of `code`.
    #[inline]
    pub fn dequantize(&self, code: u8, p: GroupParams) -> f32 {
        p.scale * (code as f32 - p.zero)
    }

    /// `x` rounded onto the grid.
    #[inline]
    pub fn round_trip(&self, x: f32, p: GroupParams) -> f32 {
        self.dequantize(self.quantize(x, p), p)
    }
}

/// Minimum and maximum (0, 0 for an empty slice). NaN is skipped.
pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_int4_matches_gptq_convention() {
        let g = IntGrid::new(4, true);
        let p = g.params(&[-3.0, 1.0, 2.0]);
        assert_eq!(p.scale, 6.0 / 15.0);
        assert_eq!(p.zero, 8.0);
        assert_eq!(g.quantize(-3.0, p), 0); // round(-7.5) = -8 → code 0
        assert_eq!(g.quantize(3.0, p), 15); // clamped at +7
        assert_eq!(g.quantize(0.0, p), 8);
        assert_eq!(g.dequantize(8, p), 0.0);
    }

    #[test]
    fn asymmetric_range_includes_zero() {
        let g = IntGrid::new(2, false);
        let p = g.params(&[1.0, 4.0]);
        // Range widened to [0, 4]: scale 4/3, zero 0.
        assert!((p.scale - 4.0 / 3.0).abs() < 1e-6);
        assert_eq!(p.zero, 0.0);
        assert_eq!(g.quantize(4.0, p), 3);
        let p = g.params(&[0.0, 0.0]);
        assert_eq!(p.scale, 2.0 / 3.0, "a zero group gets the range [-1, 1]");
    }

    #[test]
    fn round_trip_is_within_half_a_step_inside_the_range() {
        for bits in 2..=8u8 {
            for sym in [false, true] {
                let g = IntGrid::new(bits, sym);
                let xs: Vec<f32> = (0..97)
                    .map(|i| ((i * 37) % 97) as f32 / 13.0 - 3.1)
                    .collect();
                let p = g.params(&xs);
                for &x in &xs {
                    let e = (g.round_trip(x, p) - x).abs();
                    assert!(
                        e <= p.scale / 2.0 * 1.0001,
                        "bits {bits} sym {sym}: {x} → err {e}"
                    );
                }
            }
        }
    }
}
