//! Property tests of the GGML codecs: error bounds and round-trip stability.

use half::f16;
use proptest::prelude::*;
use tensorpress_quant_core::ggml::{self, GgmlType};

const BLOCK_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Blocks of 32 values at one magnitude (1e-3 … 1e3), sometimes constant.
fn blocks() -> impl Strategy<Value = Vec<f32>> {
    (1usize..6, -3i32..4, any::<bool>()).prop_flat_map(|(n, exp, constant)| {
        let scale = 10f32.powi(exp);
        prop::collection::vec(-1.0f32..1.0, 32 * n).prop_map(move |v| {
            if constant {
                vec![v[0] * scale; v.len()]
            } else {
                v.into_iter().map(|x| x * scale).collect()
            }
        })
    })
}

/// For each block: the f32 scale the encoder used, the representable range
/// in f32 arithmetic, and the error that storing scale and minimum as f16 adds.
fn block_bound(ty: GgmlType, x: &[f32], enc: &[u8]) -> (f32, f32, f32, f32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let signed_max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0);
    let d16 = f16_at(enc, 0);
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let levels = if ty == GgmlType::Q4_0 { 8.0 } else { 16.0 };
            let d = signed_max / -levels;
            // Codes −L … L−1 around zero, in units of d (which may be negative).
            let (a, b) = (-levels * d, (levels - 1.0) * d);
            (d.abs(), a.min(b), a.max(b), levels * (d - d16).abs())
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let levels = if ty == GgmlType::Q4_1 { 15.0 } else { 31.0 };
            let d = (max - min) / levels;
            let m16 = f16_at(enc, 2);
            (d, min, max, levels * (d - d16).abs() + (min - m16).abs())
        }
        GgmlType::Q8_0 => {
            let d = amax / 127.0;
            (d, -amax, amax, 127.0 * (d - d16).abs())
        }
        _ => unreachable!("not a block type"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every value comes back within half a step of its clamp to the block's
    /// representable range, plus the error of storing the scale in f16.
    #[test]
    fn error_within_half_a_step(x in blocks()) {
        for ty in BLOCK_TYPES {
            let mut enc = Vec::new();
            ggml::quantize(ty, &x, &mut enc).unwrap();
            let mut y = vec![0.0f32; x.len()];
            ggml::dequantize(ty, &enc, &mut y).unwrap();
            for (i, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let eb = &enc[i * ty.type_size()..(i + 1) * ty.type_size()];
                let (d, lo, hi, scale_err) = block_bound(ty, xb, eb);
                for (&a, &b) in xb.iter().zip(yb) {
                    let clamped = a.clamp(lo, hi);
                    let slop = 4.0 * f32::EPSILON * (a.abs() + d * 32.0);
                    let bound = (a - clamped).abs() + 0.5 * d + scale_err + slop;
                    prop_assert!(
                        (a - b).abs() <= bound,
                        "{ty}: {a} -> {b}, error {} > bound {bound} (d = {d})", (a - b).abs()
                    );
                }
            }
        }
    }

    /// Quantizing a dequantized tensor again changes nothing (up to f32
    /// rounding of `d·q + m`, which can move a scale by one f16 ulp).
    #[test]
    fn dequantize_quantize_is_stable(x in blocks()) {
        for ty in BLOCK_TYPES {
            let mut enc = Vec::new();
            ggml::quantize(ty, &x, &mut enc).unwrap();
            let mut y = vec![0.0f32; x.len()];
            ggml::dequantize(ty, &enc, &mut y).unwrap();
            let mut enc2 = Vec::new();
            ggml::quantize(ty, &y, &mut enc2).unwrap();
            let mut z = vec![0.0f32; x.len()];
            ggml::dequantize(ty, &enc2, &mut z).unwrap();
            let amax = y.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (&a, &b) in y.iter().zip(&z) {
                prop_assert!((a - b).abs() <= amax * 2e-3, "{ty}: {a} -> {b}");
            }
            if matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0) {
                // Symmetric formats: a bit-exact fixed point, except for blocks
                // whose scale underflowed to zero in f16 (their codes are moot).
                let size = ty.type_size();
                for (a, b) in enc.chunks(size).zip(enc2.chunks(size)) {
                    if f16_at(a, 0) != 0.0 {
                        prop_assert_eq!(a, b, "{}", ty);
                    }
                }
            }
        }
    }

    /// F16 and BF16 round to nearest and decode exactly; F32 is the identity.
    #[test]
    fn float_types_round_to_nearest(x in prop::collection::vec(-7e4f32..7e4, 1..64)) {
        let mut enc = Vec::new();
        ggml::quantize(GgmlType::F32, &x, &mut enc).unwrap();
        let mut y = vec![0.0f32; x.len()];
        ggml::dequantize(GgmlType::F32, &enc, &mut y).unwrap();
        prop_assert_eq!(&x, &y);
        for (ty, rel) in [(GgmlType::F16, 2f32.powi(-11)), (GgmlType::BF16, 2f32.powi(-8))] {
            enc.clear();
            ggml::quantize(ty, &x, &mut enc).unwrap();
            ggml::dequantize(ty, &enc, &mut y).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                let overflowed = ty == GgmlType::F16 && a.abs() >= 65520.0;
                if overflowed {
                    prop_assert!(b.is_infinite() && b.signum() == a.signum());
                } else {
                    prop_assert!((a - b).abs() <= a.abs() * rel + 6e-8, "{ty}: {a} -> {b}");
                }
            }
        }
    }
}

/// A block so small that its scale underflows to zero in f16 decodes to zeros.
#[test]
fn scale_underflow_decodes_to_zero() {
    let x = [1e-9f32; 32];
    for ty in BLOCK_TYPES {
        let mut enc = Vec::new();
        ggml::quantize(ty, &x, &mut enc).unwrap();
        let mut y = [1.0f32; 32];
        ggml::dequantize(ty, &enc, &mut y).unwrap();
        // Symmetric formats store a zero scale; asymmetric ones also a minimum
        // that f16 flushes to zero.
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: {y:?}");
    }
}
