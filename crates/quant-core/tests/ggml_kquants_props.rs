//! Property tests of the k-quant and IQ4 codecs: error bounds, requantization
//! stability, importance weighting, and typed errors on malformed input.
//!
//! # The bounds
//!
//! The encoders search scales to minimise a (weighted) squared error and then
//! round sub-block scales to 4–8 bits, so no half-a-step bound holds element
//! by element (an encoder may clip an outlier when that lowers the error of
//! the rest). What holds, per super-block of 256 values with absolute maximum
//! `a`, with `Δ = 2a / (2^b − 1)` the step of a uniform `b`-bit grid spanning
//! `±a` (`b` = 2, 3, 4, 5, 6 for Q2_K…Q6_K, 4 for IQ4_NL/IQ4_XS):
//!
//! - the RMS error is at most `2.5 · Δ/√12` (the RMS error of that uniform
//!   grid on uniform data, times 2.5: the worst seen in 3000 adversarial rows
//!   per type was 1.9 times, for IQ4_XS and Q6_K);
//! - every element is within `3Δ` (worst seen: 2.2Δ, Q6_K, which clips hardest);
//! - both plus the rounding of the f16 super-block scales `d` (and `dmin`):
//!   relative `2^-11`, or absolute `2^-25` once they are subnormal (rows with
//!   small values), times the largest multiple of `d` an element can be
//!   (sub-block scale times code, e.g. 63 · 31 for Q5_K).
//!
//! Q8_K rounds to nearest against `d = a/127` with no search, so every element is
//! within half a step, `a/254`, up to f32 rounding.
//!
//! A broken encoder or decoder (a wrong nibble, a swapped scale) gives errors
//! of the order of `a`, far beyond these.

use proptest::prelude::*;
use tensorpress_quant_core::ggml::{self, GgmlType, QK_K};
use tensorpress_quant_core::Error;

/// The searched types, their bits `b`, and the largest multiple of the f16
/// super-block scale that an element decodes to (sub-block scale × code).
const SEARCHED: [(GgmlType, i32, f32); 7] = [
    (GgmlType::Q2K, 2, 15.0 * 3.0),
    (GgmlType::Q3K, 3, 32.0 * 4.0),
    (GgmlType::Q4K, 4, 63.0 * 15.0),
    (GgmlType::Q5K, 5, 63.0 * 31.0),
    (GgmlType::Q6K, 6, 128.0 * 32.0),
    (GgmlType::IQ4NL, 4, 127.0),
    (GgmlType::IQ4XS, 4, 32.0 * 127.0),
];

/// Rows of 1–3 super-blocks at one magnitude (1e-3 … 1e3) with one of several
/// shapes: uniform, cubed (heavy tails), sparse, constant, or small values with
/// a few outliers.
fn rows() -> impl Strategy<Value = Vec<f32>> {
    (1usize..4, -3i32..4, 0u8..5).prop_flat_map(|(n, exp, kind)| {
        let scale = 10f32.powi(exp);
        (
            prop::collection::vec(-1.0f32..1.0, QK_K * n),
            prop::collection::vec(any::<bool>(), QK_K * n),
        )
            .prop_map(move |(v, coin)| {
                let c = v[0];
                v.into_iter()
                    .zip(coin)
                    .enumerate()
                    .map(|(i, (u, heads))| {
                        scale
                            * match kind {
                                0 => u,
                                1 => u * u * u,
                                2 => u * f32::from(heads && i % 3 == 0),
                                3 => c,
                                _ => u * if i % 37 == 0 { 10.0 } else { 0.1 },
                            }
                    })
                    .collect()
            })
    })
}

fn round_trip(ty: GgmlType, x: &[f32], importance: Option<&[f32]>) -> (Vec<u8>, Vec<f32>) {
    let mut enc = Vec::new();
    ggml::quantize_rows(ty, x, x.len(), importance, &mut enc).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    ggml::dequantize(ty, &enc, &mut y).unwrap();
    (enc, y)
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

/// Checks the bounds of the module docs on every super-block of `x` → `y`.
fn check_bounds(
    (ty, bits, multiple): (GgmlType, i32, f32),
    x: &[f32],
    y: &[f32],
) -> Result<(), TestCaseError> {
    for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
        let a = absmax(xb);
        let step = 2.0 * a / ((1 << bits) - 1) as f32;
        // Rounding of the f16 scales `d` and `dmin` (see the module docs).
        let slop = a * 2f32.powi(-10) + 2.0 * multiple * 2f32.powi(-25);
        let sq: f32 = xb.iter().zip(yb).map(|(p, q)| (p - q) * (p - q)).sum();
        let rms = (sq / QK_K as f32).sqrt();
        let rms_bound = 2.5 * step / 12f32.sqrt() + slop;
        prop_assert!(
            rms <= rms_bound,
            "{ty}: RMS error {rms} > {rms_bound} (absmax {a})"
        );
        for (&p, &q) in xb.iter().zip(yb) {
            prop_assert!(
                (p - q).abs() <= 3.0 * step + slop,
                "{ty}: {p} -> {q}, error > 3 steps of {step}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The searched encoders stay within the bounds of the module docs.
    #[test]
    fn searched_error_within_bounds(x in rows()) {
        for format in SEARCHED {
            let (_, y) = round_trip(format.0, &x, None);
            check_bounds(format, &x, &y)?;
        }
    }

    /// With an importance vector spread over a factor of 4, the weighted
    /// encoders stay within the same bounds.
    #[test]
    fn weighted_error_within_bounds(
        x in rows(),
        imp in prop::collection::vec(0.5f32..2.0, QK_K),
    ) {
        let imp: Vec<f32> = imp.iter().copied().cycle().take(x.len()).collect();
        for format in SEARCHED {
            let (_, y) = round_trip(format.0, &x, Some(&imp));
            check_bounds(format, &x, &y)?;
        }
    }

    /// Q8_K rounds to nearest: within half a step of `absmax / 127`.
    #[test]
    fn q8k_within_half_a_step(x in rows()) {
        let (_, y) = round_trip(GgmlType::Q8K, &x, None);
        for (xb, yb) in x.chunks(QK_K).zip(y.chunks(QK_K)) {
            let a = absmax(xb);
            for (&p, &q) in xb.iter().zip(yb) {
                prop_assert!((p - q).abs() <= a / 254.0 * (1.0 + 1e-5), "{p} -> {q}");
            }
        }
    }

    /// Quantizing a decoded row again stays within the bounds measured from
    /// the decoded row (requantizing a GGUF's weights costs no more than
    /// quantizing them did). Q8_K's decoded values are a fixed point up to f32
    /// rounding of the scale.
    #[test]
    fn requantization_is_stable(x in rows()) {
        for format in SEARCHED {
            let (_, y) = round_trip(format.0, &x, None);
            let (_, z) = round_trip(format.0, &y, None);
            check_bounds(format, &y, &z)?;
        }
        let (_, y) = round_trip(GgmlType::Q8K, &x, None);
        let (_, z) = round_trip(GgmlType::Q8K, &y, None);
        for (yb, zb) in y.chunks(QK_K).zip(z.chunks(QK_K)) {
            let a = absmax(yb);
            for (&p, &q) in yb.iter().zip(zb) {
                prop_assert!((p - q).abs() <= a * 1e-6, "Q8_K: {p} -> {q}");
            }
        }
    }

    /// Every byte length that is not whole blocks is a typed error, serial or
    /// parallel, and so is every output of the wrong length.
    #[test]
    fn truncated_bytes_are_typed_errors(blocks in 0usize..4, cut in 1usize..256) {
        for ty in SEARCHED.iter().map(|f| f.0).chain([GgmlType::Q8K]) {
            let size = ty.type_size();
            let cut = cut % size;
            let len = blocks * size + cut;
            let bytes = vec![0u8; len];
            let mut out = vec![0.0f32; blocks * ty.block_size()];
            let want = if cut == 0 {
                Ok(())
            } else {
                Err(Error::NotWholeBlocks { ty, len, type_size: size })
            };
            prop_assert_eq!(ggml::dequantize(ty, &bytes, &mut out), want.clone());
            prop_assert_eq!(ggml::dequantize_par(ty, &bytes, &mut out), want);
            if cut == 0 {
                let mut longer = vec![0.0f32; out.len() + 1];
                prop_assert_eq!(
                    ggml::dequantize(ty, &bytes, &mut longer),
                    Err(Error::OutputLength { expected: out.len(), actual: out.len() + 1 })
                );
            }
        }
    }

    /// Every value count that is not whole super-blocks is a typed error, and
    /// leaves the output untouched.
    #[test]
    fn odd_lengths_are_typed_errors(blocks in 0usize..3, extra in 1usize..QK_K) {
        let n = blocks * QK_K + extra;
        let x = vec![0.25f32; n];
        let imp = vec![1.0f32; n];
        for ty in SEARCHED.iter().map(|f| f.0).chain([GgmlType::Q8K]) {
            let mut out = vec![9u8];
            let block_size = ty.block_size();
            if n.is_multiple_of(block_size) {
                // IQ4_NL has blocks of 32: whole blocks are fine.
                ggml::quantize(ty, &x, &mut out).unwrap();
                prop_assert_eq!(out.len(), 1 + n / block_size * ty.type_size());
                continue;
            }
            let want = Err(Error::NotBlockMultiple { ty, n, block_size });
            prop_assert_eq!(ggml::quantize(ty, &x, &mut out), want.clone());
            prop_assert_eq!(ggml::quantize_par(ty, &x, &mut out), want.clone());
            prop_assert_eq!(ggml::quantize_rows(ty, &x, n, None, &mut out), want.clone());
            prop_assert_eq!(ggml::quantize_rows_par(ty, &x, n, None, &mut out), want.clone());
            if ty.can_quantize_weighted() {
                prop_assert_eq!(
                    ggml::quantize_rows_par(ty, &x, n, Some(&imp), &mut out),
                    want
                );
            }
            // Rows of whole blocks, but not a whole number of them.
            if blocks > 0 {
                prop_assert_eq!(
                    ggml::quantize_rows(ty, &x, QK_K, None, &mut out),
                    Err(Error::RowLength { len: n, row_len: QK_K })
                );
            }
            prop_assert_eq!(&out, &[9u8], "{} changed the output on error", ty);
        }
    }
}
