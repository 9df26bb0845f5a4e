//! OCP Microscaling (MX) formats, v1.0 (Open Compute Project, "OCP
//! Microscaling Formats (MX) Specification", 2023; Rouhani et al., 2023).
//!
//! A block of 32 elements shares one E8M0 scale: an 8-bit biased exponent
//! `e` meaning `2^(e − 127)` (`0xFF` is NaN). The spec's conversion
//! (section 6.3) picks
//!
//! `X = floor(log2(amax)) − emax_elem`,
//!
//! where `emax_elem` is the exponent of the element format's largest value
//! (2 for FP4 E2M1 and FP6 E2M3, 4 for FP6 E3M2, 8 for FP8 E4M3, 15 for FP8
//! E5M2), and encodes each element as `x / 2^X` rounded to nearest even in the
//! element format, clamped to its largest value (a block maximum can land up
//! to `2^(emax+1)`, past the largest element value). `floor(log2(amax))` is
//! taken exactly from the bits of `amax`; an all-zero block gets `e = 0`.
//!
//! # llama.cpp's MXFP4
//!
//! GGML's MXFP4 blocks (and the `gguf` package's numpy reference) use the same
//! scale exponent (`floor(log2(amax)) − 2 + 127`) but pick each element by an
//! argmin over the sixteen values: nearest, with ties toward the smaller
//! magnitude, and `+0` for everything that rounds to zero.
//! [`MxRounding::Ggml`] reproduces that bit for bit (checked against the
//! package in `tests/ml_dtypes_golden.rs`). Two differences remain by design:
//! the package computes `floor(np.log2(amax))` in float32, which rounds up
//! to the next integer for an `amax` within a few ulps below a power of two
//! (from `2^3` up), where this module uses the exact exponent as the OCP spec
//! says; and it wraps the exponent byte for `amax < 2^−125`, where this module
//! clamps it to 0.

use super::float::floor_log2;
use super::FloatFormat;

/// Elements per MX block.
pub const MX_BLOCK: usize = 32;

/// The E8M0 code of NaN.
pub const E8M0_NAN: u8 = 0xff;

/// The element format of an MX format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MxFormat {
    /// MXFP4: FP4 E2M1 elements.
    Fp4,
    /// MXFP6 with FP6 E2M3 elements.
    Fp6E2M3,
    /// MXFP6 with FP6 E3M2 elements.
    Fp6E3M2,
    /// MXFP8 with FP8 E4M3 elements.
    Fp8E4M3,
    /// MXFP8 with FP8 E5M2 elements.
    Fp8E5M2,
}

impl MxFormat {
    /// Every MX format of the spec with floating-point elements.
    pub const ALL: [MxFormat; 5] = [
        MxFormat::Fp4,
        MxFormat::Fp6E2M3,
        MxFormat::Fp6E3M2,
        MxFormat::Fp8E4M3,
        MxFormat::Fp8E5M2,
    ];

    /// The element format.
    pub const fn element(self) -> FloatFormat {
        match self {
            MxFormat::Fp4 => FloatFormat::E2M1,
            MxFormat::Fp6E2M3 => FloatFormat::E2M3,
            MxFormat::Fp6E3M2 => FloatFormat::E3M2,
            MxFormat::Fp8E4M3 => FloatFormat::E4M3,
            MxFormat::Fp8E5M2 => FloatFormat::E5M2,
        }
    }

    /// Bits per element.
    pub const fn bits(self) -> u8 {
        self.element().bits()
    }
}

impl std::fmt::Display for MxFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MxFormat::Fp4 => "mxfp4",
            MxFormat::Fp6E2M3 => "mxfp6_e2m3",
            MxFormat::Fp6E3M2 => "mxfp6_e3m2",
            MxFormat::Fp8E4M3 => "mxfp8_e4m3",
            MxFormat::Fp8E5M2 => "mxfp8_e5m2",
        })
    }
}

/// How MX elements are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MxRounding {
    /// The OCP spec: nearest, ties to even, clamped to the largest value.
    #[default]
    NearestEven,
    /// llama.cpp / `gguf`: nearest, ties toward zero, clamped, zeros as `+0`.
    Ggml,
}

/// The scale `2^(e − 127)` of an E8M0 code (NaN for `0xFF`). Exact: `2^−127`
/// is an f32 subnormal.
pub fn e8m0_to_scale(e: u8) -> f32 {
    if e == E8M0_NAN {
        return f32::NAN;
    }
    super::float::pow2(i32::from(e) - 127) as f32
}

/// The E8M0 code of `scale` when it is a power of two in `[2^−127, 2^127]`.
pub fn e8m0_from_scale(scale: f32) -> Option<u8> {
    if scale.is_nan() || scale <= 0.0 || scale.is_infinite() {
        return None;
    }
    let k = floor_log2(scale);
    let exact = super::float::pow2(k) as f32 == scale;
    (exact && (-127..=127).contains(&k)).then(|| (k + 127) as u8)
}

/// The shared exponent of a block whose largest magnitude is `amax`:
/// `floor(log2(amax)) − emax_elem + 127`, clamped to `0 ..= 254`; 0 for a
/// zero (or NaN) maximum.
pub fn shared_exponent(format: MxFormat, amax: f32) -> u8 {
    if amax.is_nan() || amax <= 0.0 {
        return 0;
    }
    if amax.is_infinite() {
        return 254;
    }
    (floor_log2(amax) - format.element().emax() + 127).clamp(0, 254) as u8
}

/// The element code of `x` in a block of scale `scale` (a power of two).
/// Values that round to zero get the `+0` code whatever their sign.
#[inline]
pub fn encode_element(format: MxFormat, x: f32, scale: f32, rounding: MxRounding) -> u8 {
    let f = format.element();
    // Dividing by a power of two is exact here (the quotient stays normal).
    let y = x / scale;
    let c = match rounding {
        MxRounding::NearestEven => f.encode_saturating(y),
        MxRounding::Ggml => f.encode_saturating_ties_toward_zero(y),
    };
    // Values that round to zero are +0 (GGML never writes −0).
    if c & (f.sign_mask() - 1) == 0 {
        0
    } else {
        c
    }
}

/// Quantizes one block (normally [`MX_BLOCK`] values; a shorter last block
/// works the same way) into `codes`, returning the E8M0 scale code.
///
/// # Panics
///
/// When `codes` is not as long as `values`.
#[track_caller]
pub fn quantize_block(
    format: MxFormat,
    values: &[f32],
    rounding: MxRounding,
    codes: &mut [u8],
) -> u8 {
    assert_eq!(values.len(), codes.len(), "one code per value");
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let e = shared_exponent(format, amax);
    let scale = e8m0_to_scale(e);
    for (c, &x) in codes.iter_mut().zip(values) {
        *c = encode_element(format, x, scale, rounding);
    }
    e
}

/// Decodes one block: `element(code) · 2^(e − 127)`, with zeros as `+0` (as
/// GGML's value tables give them).
///
/// # Panics
///
/// When `out` is not as long as `codes`.
#[track_caller]
pub fn dequantize_block(format: MxFormat, e: u8, codes: &[u8], out: &mut [f32]) {
    assert_eq!(codes.len(), out.len(), "one value per code");
    let scale = e8m0_to_scale(e);
    let f = format.element();
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f.decode(c) * scale + 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e8m0_round_trips() {
        for e in 0..=254u8 {
            let s = e8m0_to_scale(e);
            assert_eq!(e8m0_from_scale(s), Some(e), "{e}");
        }
        assert!(e8m0_to_scale(E8M0_NAN).is_nan());
        assert_eq!(e8m0_to_scale(127), 1.0);
        assert_eq!(e8m0_from_scale(3.0), None);
        assert_eq!(e8m0_from_scale(0.0), None);
        assert_eq!(e8m0_from_scale(2f32.powi(-128)), None);
    }

    #[test]
    fn the_block_maximum_lands_in_the_top_binade() {
        for format in MxFormat::ALL {
            let f = format.element();
            let values: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.013).collect();
            let mut codes = [0u8; 32];
            let e = quantize_block(format, &values, MxRounding::NearestEven, &mut codes);
            let amax = 15.5 * 0.013;
            let scaled = amax / e8m0_to_scale(e);
            assert!(
                scaled >= 2f32.powi(f.emax()) && scaled < 2f32.powi(f.emax() + 1),
                "{format}: {scaled}"
            );
            let mut out = [0.0f32; 32];
            dequantize_block(format, e, &codes, &mut out);
            for (x, y) in values.iter().zip(&out) {
                let step = f.step_at(x / e8m0_to_scale(e)) * e8m0_to_scale(e);
                // Inside the element range: half a step; above it, clamped to max.
                let bound = if x.abs() / e8m0_to_scale(e) <= f.max() {
                    step / 2.0
                } else {
                    x.abs() - f.max() * e8m0_to_scale(e)
                };
                assert!((x - y).abs() <= bound * 1.000_01, "{format}: {x} → {y}");
            }
        }
    }

    #[test]
    fn ggml_rounding_breaks_ties_toward_zero() {
        // Scale 1 (amax 6 → floor(log2 6) − 2 = 0): ties at 0.75, 1.75, 3.5.
        let mut values = [0.0f32; 32];
        values[..6].copy_from_slice(&[6.0, 0.75, 1.75, 3.5, -3.5, -0.2]);
        let mut even = [0u8; 32];
        let mut ggml = [0u8; 32];
        assert_eq!(
            quantize_block(MxFormat::Fp4, &values, MxRounding::NearestEven, &mut even),
            127
        );
        quantize_block(MxFormat::Fp4, &values, MxRounding::Ggml, &mut ggml);
        assert_eq!(&even[..6], &[0x7, 0x2, 0x4, 0x6, 0xe, 0x0]);
        assert_eq!(&ggml[..6], &[0x7, 0x1, 0x3, 0x5, 0xd, 0x0]);
    }

    #[test]
    fn zero_and_tiny_blocks() {
        let mut codes = [9u8; 32];
        assert_eq!(
            quantize_block(
                MxFormat::Fp4,
                &[0.0; 32],
                MxRounding::NearestEven,
                &mut codes
            ),
            0
        );
        assert!(codes.iter().all(|&c| c == 0));
        assert_eq!(shared_exponent(MxFormat::Fp4, f32::from_bits(1)), 0);
        assert_eq!(shared_exponent(MxFormat::Fp8E5M2, f32::MAX), 127 + 127 - 15);
    }
}
