//! Small floating-point element formats (minifloats): FP8, FP6, FP4 and the
//! all-finite formats of LLM-FP4's search.
//!
//! A format has a sign bit, `e` exponent bits with bias `2^(e−1) − 1` and `m`
//! mantissa bits, with subnormals. The OCP formats (OCP 8-bit Floating Point
//! Specification, 2023; OCP Microscaling Formats v1.0, 2023) differ in their
//! special values:
//!
//! | format | ml_dtypes name | specials | max |
//! |---|---|---|---|
//! | [`FloatFormat::E4M3`] | `float8_e4m3fn` | `S.1111.111` is NaN, no ∞ | 448 |
//! | [`FloatFormat::E5M2`] | `float8_e5m2` | IEEE: ±∞ and NaNs | 57344 |
//! | [`FloatFormat::E2M3`] | `float6_e2m3fn` | none | 7.5 |
//! | [`FloatFormat::E3M2`] | `float6_e3m2fn` | none | 28 |
//! | [`FloatFormat::E2M1`] | `float4_e2m1fn` | none | 6 |
//!
//! # Two encoders
//!
//! [`FloatFormat::encode`] is the plain conversion of the `ml_dtypes` package
//! (`np.float32(x).astype(ml_dtypes.float8_e4m3fn)`), bit for bit (the golden
//! test `tests/ml_dtypes_golden.rs` checks every code and a few thousand
//! inputs): round to nearest, ties to even, and then
//!
//! - values that round past the largest finite value become ∞ in E5M2, **NaN**
//!   in E4M3 (it has no ∞), and saturate to ±max in the FP6/FP4 formats (they
//!   have neither);
//! - ∞ stays ∞ in E5M2, becomes NaN in E4M3 and ±max in FP6/FP4;
//! - NaN becomes the quiet NaN of its sign in E4M3/E5M2; the FP6/FP4 formats
//!   have no NaN and `ml_dtypes` returns a zero of the *opposite* sign
//!   (`float4_e2m1fn(+nan)` is `-0`), which [`FloatFormat::encode`] reproduces.
//!
//! [`FloatFormat::encode_saturating`] is the encoder quantization uses (OCP's
//! "saturating" conversion mode, the one the MX and NVFP4 recipes specify):
//! the same rounding, but finite overflow and ∞ clamp to ±max in every format.
//! Quantizers first divide by a scale chosen so that the group maximum lands
//! on (or near) the largest value, so saturation only clips the few values the
//! scale choice deliberately cuts off.

use crate::{Error, Result};

/// Which codes of a [`FloatFormat`] are special.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Specials {
    /// IEEE 754 style: the all-ones exponent holds ±∞ (mantissa 0) and NaNs
    /// (`float8_e5m2`).
    Ieee,
    /// No infinities; only the all-ones magnitude `S.1…1.1…1` is NaN
    /// (`float8_e4m3fn`: "finite and NaN").
    FiniteNan,
    /// Every code is a finite number (`float6_e2m3fn`, `float6_e3m2fn`,
    /// `float4_e2m1fn`, and the formats of LLM-FP4's search).
    AllFinite,
}

/// A small floating-point format: sign, `e` exponent bits (bias
/// `2^(e−1) − 1`), `m` mantissa bits, subnormals, and its special values.
///
/// ```
/// use tensorpress_quant_core::formats::FloatFormat;
///
/// let f = FloatFormat::E2M1;
/// assert_eq!(f.bits(), 4);
/// assert_eq!(f.max(), 6.0);
/// // The eight magnitudes of FP4: 0, 0.5, 1, 1.5, 2, 3, 4, 6.
/// let values: Vec<f32> = (0..8).map(|c| f.decode(c)).collect();
/// assert_eq!(values, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
/// assert_eq!(f.encode(2.5), 0b0100); // a tie: to even (2.0)
/// assert_eq!(f.encode(-5.0), 0b1110); // a tie: -4.0
/// assert_eq!(FloatFormat::E4M3.encode_saturating(1e6), 0x7e); // 448
/// assert!(FloatFormat::E4M3.decode(FloatFormat::E4M3.encode(1e6)).is_nan());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloatFormat {
    exp_bits: u8,
    man_bits: u8,
    specials: Specials,
}

impl FloatFormat {
    /// FP8 E4M3 (`float8_e4m3fn`): bias 7, max 448, NaN at `S.1111.111`.
    pub const E4M3: FloatFormat = FloatFormat {
        exp_bits: 4,
        man_bits: 3,
        specials: Specials::FiniteNan,
    };
    /// FP8 E5M2 (`float8_e5m2`): bias 15, max 57344, IEEE ∞ and NaN.
    pub const E5M2: FloatFormat = FloatFormat {
        exp_bits: 5,
        man_bits: 2,
        specials: Specials::Ieee,
    };
    /// FP6 E2M3 (`float6_e2m3fn`): bias 1, max 7.5, all finite.
    pub const E2M3: FloatFormat = FloatFormat {
        exp_bits: 2,
        man_bits: 3,
        specials: Specials::AllFinite,
    };
    /// FP6 E3M2 (`float6_e3m2fn`): bias 3, max 28, all finite.
    pub const E3M2: FloatFormat = FloatFormat {
        exp_bits: 3,
        man_bits: 2,
        specials: Specials::AllFinite,
    };
    /// FP4 E2M1 (`float4_e2m1fn`): bias 1, max 6, all finite.
    pub const E2M1: FloatFormat = FloatFormat {
        exp_bits: 2,
        man_bits: 1,
        specials: Specials::AllFinite,
    };

    /// The five OCP formats, widest first.
    pub const OCP: [FloatFormat; 5] = [
        FloatFormat::E4M3,
        FloatFormat::E5M2,
        FloatFormat::E2M3,
        FloatFormat::E3M2,
        FloatFormat::E2M1,
    ];

    /// A format with `exp_bits` exponent and `man_bits` mantissa bits (plus a
    /// sign bit), 2 to 8 bits in all.
    ///
    /// Fails with [`Error::InvalidFloatFormat`] when there is no exponent bit,
    /// the width is outside 2–8 bits, or the specials do not fit (IEEE needs
    /// two exponent bits and a mantissa bit to tell ∞ from NaN; "finite and
    /// NaN" needs a value besides the NaN).
    pub fn new(exp_bits: u8, man_bits: u8, specials: Specials) -> Result<Self> {
        let bits = 1 + u32::from(exp_bits) + u32::from(man_bits);
        let specials_fit = match specials {
            Specials::Ieee => exp_bits >= 2 && man_bits >= 1,
            Specials::FiniteNan => exp_bits + man_bits >= 2,
            Specials::AllFinite => true,
        };
        if exp_bits == 0 || !(2..=8).contains(&bits) || !specials_fit {
            return Err(Error::InvalidFloatFormat {
                exp_bits,
                man_bits,
                specials,
            });
        }
        Ok(FloatFormat {
            exp_bits,
            man_bits,
            specials,
        })
    }

    /// The OCP format with this exponent/mantissa split when there is one
    /// (E4M3, E5M2, E2M3, E3M2, E2M1), otherwise the all-finite format.
    pub fn standard(exp_bits: u8, man_bits: u8) -> Result<Self> {
        match FloatFormat::OCP
            .into_iter()
            .find(|f| f.exp_bits == exp_bits && f.man_bits == man_bits)
        {
            Some(f) => Ok(f),
            None => FloatFormat::new(exp_bits, man_bits, Specials::AllFinite),
        }
    }

    /// Bits per code, sign included.
    pub const fn bits(self) -> u8 {
        1 + self.exp_bits + self.man_bits
    }

    /// Exponent bits.
    pub const fn exponent_bits(self) -> u8 {
        self.exp_bits
    }

    /// Mantissa bits.
    pub const fn mantissa_bits(self) -> u8 {
        self.man_bits
    }

    /// The special values.
    pub const fn specials(self) -> Specials {
        self.specials
    }

    /// Exponent bias, `2^(e−1) − 1`.
    pub const fn bias(self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }

    /// The sign bit of a code.
    pub const fn sign_mask(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// Codes are `0 ..= max_code()`.
    pub const fn max_code(self) -> u8 {
        ((1u16 << self.bits()) - 1) as u8
    }

    /// The largest finite magnitude code.
    const fn max_finite_magnitude(self) -> u32 {
        let all = (1u32 << (self.exp_bits + self.man_bits)) - 1;
        match self.specials {
            Specials::AllFinite => all,
            Specials::FiniteNan => all - 1,
            // The top exponent is reserved.
            Specials::Ieee => (((1u32 << self.exp_bits) - 1) << self.man_bits) - 1,
        }
    }

    /// The exponent of the smallest normal number, `1 − bias`.
    const fn emin(self) -> i32 {
        1 - self.bias()
    }

    /// The exponent of the largest finite number (OCP MX's `emax_elem`:
    /// 8 for E4M3, 15 for E5M2, 2 for E2M3 and E2M1, 4 for E3M2).
    pub const fn emax(self) -> i32 {
        let top_field = (self.max_finite_magnitude() >> self.man_bits) as i32;
        // The top field is at least 1 for every valid format with a normal range;
        // an all-subnormal top (field 0) has the exponent of field 1.
        let field = if top_field == 0 { 1 } else { top_field };
        field - self.bias()
    }

    /// The largest finite value.
    pub fn max(self) -> f32 {
        self.magnitude_value(self.max_finite_magnitude())
    }

    /// The smallest positive (subnormal) value, `2^(1 − bias − m)`.
    pub fn min_subnormal(self) -> f32 {
        pow2(self.emin() - i32::from(self.man_bits)) as f32
    }

    /// The value of a magnitude code (no specials).
    fn magnitude_value(self, mag: u32) -> f32 {
        let m = u32::from(self.man_bits);
        let field = (mag >> m) as i32;
        let frac = mag & ((1 << m) - 1);
        let (significand, exp) = if field == 0 {
            (frac, self.emin())
        } else {
            ((1 << m) | frac, field - self.bias())
        };
        // Exact: the significand has at most 8 bits and the exponent stays
        // well inside f32's range for every format of at most 8 bits.
        (f64::from(significand) * pow2(exp - m as i32)) as f32
    }

    /// Whether `code` is a NaN.
    pub fn is_nan_code(self, code: u8) -> bool {
        let mag = u32::from(code & (self.sign_mask() - 1));
        let all = (1u32 << (self.exp_bits + self.man_bits)) - 1;
        match self.specials {
            Specials::AllFinite => false,
            Specials::FiniteNan => mag == all,
            Specials::Ieee => {
                mag >> self.man_bits == (1 << self.exp_bits) - 1
                    && mag & ((1 << self.man_bits) - 1) != 0
            }
        }
    }

    /// Whether `code` is a finite number (not NaN or ∞).
    pub fn is_finite_code(self, code: u8) -> bool {
        u32::from(code & (self.sign_mask() - 1)) <= self.max_finite_magnitude()
    }

    /// The value of `code`, as `ml_dtypes` decodes it (NaN codes give the
    /// quiet NaN of their sign). Bits above [`bits()`](Self::bits) are ignored.
    pub fn decode(self, code: u8) -> f32 {
        let negative = code & self.sign_mask() != 0;
        let mag = u32::from(code & (self.sign_mask() - 1));
        let v = if mag <= self.max_finite_magnitude() {
            self.magnitude_value(mag)
        } else if self.is_nan_code(code) {
            return f32::from_bits(0x7fc0_0000 | (u32::from(negative) << 31));
        } else {
            f32::INFINITY
        };
        if negative {
            -v
        } else {
            v
        }
    }

    /// The magnitude code of `a` (finite, ≥ 0) rounded to nearest, ties to
    /// even; it may exceed the largest finite magnitude.
    fn round_magnitude(self, a: f32, ties: Ties) -> u64 {
        if a == 0.0 {
            return 0;
        }
        let m = i32::from(self.man_bits);
        let e = floor_log2(a).max(self.emin());
        // `a / 2^(e − m)` is exact in f64 (a has 24 significant bits and the
        // shift stays inside f64's exponent range), and so is its rounding.
        let q = f64::from(a) * pow2(m - e);
        let n = match ties {
            Ties::Even => q.round_ties_even(),
            Ties::TowardZero if q - q.floor() > 0.5 => q.ceil(),
            Ties::TowardZero => q.floor(),
        } as u64;
        // Codes count quanta: the binade of exponent e starts at code
        // (e − emin + 1)·2^m, and n ∈ [2^m, 2^(m+1)] there (n < 2^m below the
        // smallest normal, where e = emin). A carry into the next binade works out.
        (((e - self.emin()) as u64) << m) + n
    }

    /// `x` in this format as `ml_dtypes` converts it: round to nearest, ties to
    /// even, overflow and ∞ to ∞ (E5M2), NaN (E4M3) or ±max (FP6, FP4); NaN
    /// to NaN, or for the formats without NaN to a zero of the opposite sign.
    pub fn encode(self, x: f32) -> u8 {
        self.encode_with(x, false, Ties::Even)
    }

    /// `x` rounded to nearest (ties to even), clamped to `±max` when it
    /// overflows or is infinite. NaN is encoded as by [`encode`](Self::encode).
    pub fn encode_saturating(self, x: f32) -> u8 {
        self.encode_with(x, true, Ties::Even)
    }

    /// `x` rounded to the nearest value with ties toward zero, clamped to
    /// `±max`: the rule of llama.cpp's MXFP4 encoder (an argmin over the
    /// values, smallest magnitude first).
    pub fn encode_saturating_ties_toward_zero(self, x: f32) -> u8 {
        self.encode_with(x, true, Ties::TowardZero)
    }

    fn encode_with(self, x: f32, saturate: bool, ties: Ties) -> u8 {
        let sign = if x.is_sign_negative() {
            self.sign_mask()
        } else {
            0
        };
        if x.is_nan() {
            return match self.specials {
                Specials::AllFinite => sign ^ self.sign_mask(),
                Specials::FiniteNan => sign | (self.sign_mask() - 1),
                Specials::Ieee => {
                    let top = ((1u8 << self.exp_bits) - 1) << self.man_bits;
                    sign | top | (1 << (self.man_bits - 1))
                }
            };
        }
        let max = self.max_finite_magnitude();
        let mag = if x.is_infinite() {
            u64::MAX
        } else {
            self.round_magnitude(x.abs(), ties)
        };
        if mag <= u64::from(max) {
            return sign | mag as u8;
        }
        let overflow = match (saturate, self.specials) {
            (true, _) | (false, Specials::AllFinite) => max as u8,
            (false, Specials::FiniteNan) => self.sign_mask() - 1,
            (false, Specials::Ieee) => ((1u8 << self.exp_bits) - 1) << self.man_bits,
        };
        sign | overflow
    }

    /// `x` rounded onto the format's values, with saturation (decode of
    /// [`encode_saturating`](Self::encode_saturating)).
    pub fn round_saturating(self, x: f32) -> f32 {
        self.decode(self.encode_saturating(x))
    }

    /// The spacing of the format's values around magnitude `|x|`: the quantum
    /// of the binade that holds `|x|` (the subnormal quantum below the normal
    /// range, the top binade's quantum at and above the largest value). A
    /// value inside `[−max, max]` rounds to within half of it.
    pub fn step_at(self, x: f32) -> f32 {
        let a = x.abs().min(self.max());
        let e = if a == 0.0 {
            self.emin()
        } else {
            floor_log2(a).max(self.emin())
        };
        pow2(e - i32::from(self.man_bits)) as f32
    }

    /// All finite non-negative values, ascending (`0` first).
    pub fn positive_values(self) -> Vec<f32> {
        (0..=self.max_finite_magnitude())
            .map(|mag| self.magnitude_value(mag))
            .collect()
    }
}

impl std::fmt::Display for FloatFormat {
    /// `fp8_e4m3`, `fp4_e2m1`, …: the OCP formats and the all-finite formats
    /// of other splits by bits and split; a format with other specials than
    /// [`FloatFormat::standard`] gives its split gets a suffix (`_finite`,
    /// `_fnan`, `_ieee`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (b, e, m) = (self.bits(), self.exp_bits, self.man_bits);
        write!(f, "fp{b}_e{e}m{m}")?;
        if FloatFormat::standard(e, m).ok() != Some(*self) {
            f.write_str(match self.specials {
                Specials::AllFinite => "_finite",
                Specials::FiniteNan => "_fnan",
                Specials::Ieee => "_ieee",
            })?;
        }
        Ok(())
    }
}

/// How exact ties between two values are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ties {
    Even,
    TowardZero,
}

/// `2^k` as an f64 (exact for `|k| ≤ 1022`).
pub(crate) fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// `floor(log2(a))` for a finite `a > 0`, exact (subnormals included).
pub(crate) fn floor_log2(a: f32) -> i32 {
    let bits = a.to_bits() & 0x7fff_ffff;
    let exp = (bits >> 23) as i32;
    if exp == 0 {
        let mant = bits & 0x007f_ffff;
        -149 + (31 - mant.leading_zeros() as i32)
    } else {
        exp - 127
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocp_constants() {
        let cases = [
            (FloatFormat::E4M3, 448.0, 2f32.powi(-9), 8, 0x7e),
            (FloatFormat::E5M2, 57344.0, 2f32.powi(-16), 15, 0x7b),
            (FloatFormat::E2M3, 7.5, 0.125, 2, 0x1f),
            (FloatFormat::E3M2, 28.0, 0.0625, 4, 0x1f),
            (FloatFormat::E2M1, 6.0, 0.5, 2, 0x7),
        ];
        for (f, max, sub, emax, max_code) in cases {
            assert_eq!(f.max(), max, "{f}");
            assert_eq!(f.min_subnormal(), sub, "{f}");
            assert_eq!(f.emax(), emax, "{f}");
            assert_eq!(f.encode(max), max_code, "{f}");
            assert_eq!(f.decode(max_code | f.sign_mask()), -max, "{f}");
        }
        assert_eq!(FloatFormat::E4M3.to_string(), "fp8_e4m3");
        assert_eq!(FloatFormat::E2M1.to_string(), "fp4_e2m1");
        assert_eq!(FloatFormat::standard(5, 2).unwrap(), FloatFormat::E5M2);
        assert_eq!(
            FloatFormat::standard(1, 2).unwrap().specials(),
            Specials::AllFinite
        );
    }

    #[test]
    fn every_code_round_trips() {
        for f in FloatFormat::OCP.into_iter().chain([
            FloatFormat::standard(1, 2).unwrap(),
            FloatFormat::standard(3, 0).unwrap(),
            FloatFormat::standard(7, 0).unwrap(),
            FloatFormat::standard(1, 6).unwrap(),
        ]) {
            for code in 0..=f.max_code() {
                let v = f.decode(code);
                if f.is_nan_code(code) {
                    assert!(v.is_nan());
                    assert!(f.decode(f.encode(v)).is_nan());
                } else {
                    assert_eq!(f.encode(v), code, "{f} code {code:#x} value {v}");
                }
            }
        }
    }

    #[test]
    fn e1m2_is_a_uniform_grid() {
        // LLM-FP4 notes E1M_ formats degenerate to integers.
        let f = FloatFormat::standard(1, 2).unwrap();
        assert_eq!(
            f.positive_values(),
            [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
        );
    }

    #[test]
    fn rounding_and_overflow() {
        let f = FloatFormat::E4M3;
        assert_eq!(
            f.encode(464.0),
            0x7e,
            "a tie below the NaN code: to even 448"
        );
        assert_eq!(f.encode(464.01), 0x7f, "past it: NaN");
        assert_eq!(f.encode_saturating(464.01), 0x7e);
        assert_eq!(f.encode(-f32::INFINITY), 0xff);
        assert_eq!(f.encode_saturating(f32::NEG_INFINITY), 0xfe);
        assert_eq!(
            f.encode(2f32.powi(-10)),
            0,
            "half the smallest subnormal: tie to 0"
        );
        assert_eq!(f.encode(2f32.powi(-10) * 1.0001), 1);
        assert_eq!(f.encode(-0.0), 0x80);
        let g = FloatFormat::E5M2;
        assert_eq!(g.encode(61440.0), 0x7c, "a tie to the infinity code");
        assert_eq!(g.encode_saturating(61440.0), 0x7b);
        assert_eq!(g.encode(f32::NAN), 0x7e);
        assert!(g.decode(0x7c).is_infinite());
        let h = FloatFormat::E2M1;
        assert_eq!(h.encode(f32::NAN), 0x8, "ml_dtypes: +NaN → −0");
        assert_eq!(h.encode(-f32::NAN), 0x0);
        assert_eq!(h.encode(7.0), 0x7, "no NaN, no ∞: saturates");
        assert_eq!(h.encode(f32::INFINITY), 0x7);
    }

    #[test]
    fn step_is_the_local_spacing() {
        let f = FloatFormat::E2M1;
        assert_eq!(f.step_at(0.2), 0.5);
        assert_eq!(f.step_at(1.2), 0.5);
        assert_eq!(f.step_at(2.5), 1.0);
        assert_eq!(f.step_at(5.0), 2.0);
        assert_eq!(f.step_at(100.0), 2.0);
    }

    #[test]
    fn invalid_formats_are_typed_errors() {
        assert!(matches!(
            FloatFormat::new(0, 3, Specials::AllFinite),
            Err(Error::InvalidFloatFormat { exp_bits: 0, .. })
        ));
        assert!(FloatFormat::new(5, 3, Specials::AllFinite).is_err());
        assert!(FloatFormat::new(1, 2, Specials::Ieee).is_err());
        assert!(FloatFormat::new(4, 3, Specials::FiniteNan).is_ok());
    }

    #[test]
    fn floor_log2_is_exact() {
        assert_eq!(floor_log2(1.0), 0);
        assert_eq!(floor_log2(0.999_999_94), -1);
        assert_eq!(floor_log2(f32::from_bits(1)), -149);
        assert_eq!(floor_log2(f32::MIN_POSITIVE), -126);
        assert_eq!(floor_log2(f32::MAX), 127);
        assert_eq!(floor_log2(8.0 * 0.999_999_94), 2);
    }
}
