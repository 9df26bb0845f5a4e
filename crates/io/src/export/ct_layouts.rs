//! The tensors of compressed-tensors' unpacked and float layouts
//! (`int-quantized`, `float-quantized`, `naive-quantized`,
//! `nvfp4-pack-quantized`, `mxfp4-pack-quantized`, `mxfp6-pack-quantized`,
//! `mxfp8-quantized`), and the byte packings they share with the reader.
//!
//! Element codes are the bit patterns tensorpress' [`FloatFormat`]s use (the
//! `ml_dtypes` encodings), which are also compressed-tensors' FP4 nibbles
//! (sign in bit 3, then the magnitude index into `0, 0.5, 1, 1.5, 2, 3, 4, 6`)
//! and FP6 E2M3 codes (sign in bit 5), so packing moves bits without a table.
//!
//! [`FloatFormat`]: tensorpress_quant_core::formats::FloatFormat

use ndarray::{Array2, ArrayView2};
use tensorpress_quant_core::{Granularity, QuantizedTensor};
use tensorpress_tensor::DType;

use super::{FloatDType, Staged};

/// Two 4-bit codes per byte along each row: column `2j` in the low nibble,
/// `2j + 1` in the high one (compressed-tensors' `pack_fp4_to_uint8`).
/// `cols` must be even.
pub(crate) fn pack_nibbles(codes: ArrayView2<'_, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(codes.len() / 2);
    for row in codes.rows() {
        let row: Vec<u8> = row.iter().copied().collect();
        out.extend(
            row.chunks_exact(2)
                .map(|p| (p[0] & 0xf) | ((p[1] & 0xf) << 4)),
        );
    }
    out
}

/// The inverse of [`pack_nibbles`]: `bytes.len() · 2` codes.
pub(crate) fn unpack_nibbles(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|&b| [b & 0xf, b >> 4]).collect()
}

/// Four 6-bit codes per three bytes along each row, little-endian in a
/// 24-bit word (compressed-tensors' `pack_fp6_to_uint8`). `cols` must be a
/// multiple of 4.
pub(crate) fn pack_fp6(codes: ArrayView2<'_, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(codes.len() / 4 * 3);
    for row in codes.rows() {
        let row: Vec<u8> = row.iter().copied().collect();
        for q in row.chunks_exact(4) {
            let word = q
                .iter()
                .enumerate()
                .fold(0u32, |w, (i, &c)| w | (u32::from(c & 0x3f) << (6 * i)));
            out.extend_from_slice(&word.to_le_bytes()[..3]);
        }
    }
    out
}

/// The inverse of [`pack_fp6`]: `bytes.len() / 3 · 4` codes.
pub(crate) fn unpack_fp6(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(3)
        .flat_map(|t| {
            let word = u32::from_le_bytes([t[0], t[1], t[2], 0]);
            [0, 6, 12, 18].map(|s| ((word >> s) & 0x3f) as u8)
        })
        .collect()
}

/// The odd mantissas of E4M3 values: every E4M3 value is one of these times
/// a power of two.
const E4M3_MANTISSAS: [f32; 8] = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0];

/// The `weight_global_scale` to store for tensorpress' NVFP4 tensor scale `g`.
///
/// compressed-tensors stores the reciprocal (`6 · 448 / amax`, against our
/// `amax / (6 · 448)`) and dequantizes `e2m1 · (block / global)`, where we
/// compute `e2m1 · (block · g)`. The reader takes `g = 1 / global`. Among the
/// f32 values within four ulps of `1 / g` this picks, in order of preference,
/// one whose reciprocal is exactly `g` and which also gives
/// `block / global == block · g` for every E4M3 block scale (then both
/// libraries decode every weight to the same f32), one whose reciprocal is
/// exactly `g` (the reader gets `g` back; decoded weights agree within an
/// ulp), or `1 / g` itself (about one tensor scale in six has no f32 whose
/// reciprocal rounds to it; the reader then gets `g` within an ulp).
pub(crate) fn nvfp4_global_scale(g: f32) -> f32 {
    let base = 1.0 / g;
    let mut candidates = vec![base];
    let (mut up, mut down) = (base, base);
    for _ in 0..4 {
        up = f32::from_bits(up.to_bits() + 1);
        down = f32::from_bits(down.to_bits().saturating_sub(1));
        candidates.extend([up, down]);
    }
    let inverts = |c: &f32| c.is_finite() && *c > 0.0 && 1.0 / *c == g;
    let exact = |c: &f32| E4M3_MANTISSAS.iter().all(|&m| m / *c == m * g);
    candidates
        .iter()
        .find(|c| inverts(c) && exact(c))
        .or_else(|| candidates.iter().find(|c| inverts(c)))
        .copied()
        .unwrap_or(base)
}

/// `weight_scale` (and its shape) for the integer and FP8 layouts: `[1]` per
/// tensor, `[rows, 1]` per channel, `[rows, groups]` per group.
fn float_scales(module: &str, q: &QuantizedTensor, dt: FloatDType) -> Staged {
    let (shape, bytes) = if q.spec().granularity == Granularity::Tensor {
        (vec![1], dt.encode([q.scales()[[0, 0]]]))
    } else {
        (
            q.scales().shape().to_vec(),
            dt.encode(q.scales().iter().copied()),
        )
    };
    (format!("{module}.weight_scale"), dt.dtype(), shape, bytes)
}

/// `int-quantized` / `naive-quantized` integers: `weight` as int8
/// `code − 2^(bits−1)`, float scales, and for asymmetric layers an int8
/// `weight_zero_point` of `zero − 2^(bits−1)` shaped like the scales.
pub(crate) fn stage_naive_int(
    module: &str,
    q: &QuantizedTensor,
    bits: u8,
    zeros: &Array2<u8>,
    dt: FloatDType,
) -> Vec<Staged> {
    let mid = 1i16 << (bits - 1);
    let signed = |c: u8| (i16::from(c) - mid) as i8 as u8;
    let [rows, cols] = q.shape();
    let mut staged = vec![(
        format!("{module}.weight"),
        DType::I8,
        vec![rows, cols],
        q.codes().iter().map(|&c| signed(c)).collect(),
    )];
    staged.push(float_scales(module, q, dt));
    if !q.spec().symmetric {
        let (shape, bytes) = if q.spec().granularity == Granularity::Tensor {
            (vec![1], vec![signed(zeros[[0, 0]])])
        } else {
            (
                zeros.shape().to_vec(),
                zeros.iter().map(|&z| signed(z)).collect(),
            )
        };
        staged.push((
            format!("{module}.weight_zero_point"),
            DType::I8,
            shape,
            bytes,
        ));
    }
    staged
}

/// `float-quantized` / `naive-quantized` FP8: `weight` as F8_E4M3 codes and
/// float scales.
pub(crate) fn stage_fp8(module: &str, q: &QuantizedTensor, dt: FloatDType) -> Vec<Staged> {
    let [rows, cols] = q.shape();
    vec![
        (
            format!("{module}.weight"),
            DType::F8E4M3,
            vec![rows, cols],
            q.codes().to_vec(),
        ),
        float_scales(module, q, dt),
    ]
}

/// `nvfp4-pack-quantized`: `weight_packed` (FP4 pairs), `weight_scale`
/// (E4M3 codes, `[rows, cols/16]`) and `weight_global_scale` (f32 `[1]`, see
/// [`nvfp4_global_scale`]).
pub(crate) fn stage_nvfp4(module: &str, q: &QuantizedTensor) -> Vec<Staged> {
    let [rows, cols] = q.shape();
    let scales = q.scale_codes().unwrap_or_default();
    let global = nvfp4_global_scale(q.global_scale().unwrap_or(1.0));
    vec![
        (
            format!("{module}.weight_packed"),
            DType::U8,
            vec![rows, cols / 2],
            pack_nibbles(q.codes_2d()),
        ),
        (
            format!("{module}.weight_scale"),
            DType::F8E4M3,
            scales.shape().to_vec(),
            scales.iter().copied().collect(),
        ),
        (
            format!("{module}.weight_global_scale"),
            DType::F32,
            vec![1],
            global.to_le_bytes().to_vec(),
        ),
    ]
}

/// The MX layouts: FP4 pairs or FP6 quadruples in `weight_packed`
/// (`mxfp4-`/`mxfp6-pack-quantized`) or FP8 codes in `weight`
/// (`mxfp8-quantized`), and `weight_scale` as uint8 E8M0 exponents
/// `[rows, cols/32]`.
pub(crate) fn stage_mx(module: &str, q: &QuantizedTensor) -> Vec<Staged> {
    let [rows, cols] = q.shape();
    let scales = q.scale_codes().unwrap_or_default();
    let weight = match q.spec().bits() {
        4 => (
            format!("{module}.weight_packed"),
            DType::U8,
            vec![rows, cols / 2],
            pack_nibbles(q.codes_2d()),
        ),
        6 => (
            format!("{module}.weight_packed"),
            DType::U8,
            vec![rows, cols / 4 * 3],
            pack_fp6(q.codes_2d()),
        ),
        _ => (
            format!("{module}.weight"),
            DType::F8E4M3,
            vec![rows, cols],
            q.codes().to_vec(),
        ),
    };
    vec![
        weight,
        (
            format!("{module}.weight_scale"),
            DType::U8,
            scales.shape().to_vec(),
            scales.iter().copied().collect(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn packings_round_trip(rows in 1usize..4, quads in 1usize..6, seed in any::<u64>()) {
            let cols = quads * 4;
            let mut s = seed;
            let codes = Array2::from_shape_fn((rows, cols), |_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 58) as u8
            });
            let fp6 = pack_fp6(codes.view());
            prop_assert_eq!(fp6.len(), rows * cols / 4 * 3);
            prop_assert_eq!(unpack_fp6(&fp6), codes.iter().copied().collect::<Vec<_>>());
            let nibbles = codes.mapv(|c| c & 0xf);
            let packed = pack_nibbles(nibbles.view());
            prop_assert_eq!(unpack_nibbles(&packed), nibbles.iter().copied().collect::<Vec<_>>());
        }

        #[test]
        fn global_scales_invert_when_they_can(amax in 1e-3f32..1e3) {
            let g = amax / (6.0 * 448.0);
            let stored = nvfp4_global_scale(g);
            let back = 1.0 / stored;
            // Within an ulp always, and exact whenever some f32 inverts to g.
            prop_assert!((back.to_bits() as i64 - g.to_bits() as i64).abs() <= 1);
            let reachable = (-4i32..=4)
                .map(|d| f32::from_bits(((1.0 / g).to_bits() as i64 + d as i64) as u32))
                .any(|c| 1.0 / c == g);
            prop_assert_eq!(back == g, reachable);
        }
    }

    #[test]
    fn nibbles_and_fp6_follow_compressed_tensors() {
        // Column 0 in the low nibble: 0.5 (code 1) then −6 (code 0xf).
        assert_eq!(pack_nibbles(ndarray::arr2(&[[1u8, 0xf]]).view()), [0xf1]);
        // Codes 1, 2, 3, 0x3f: word 1 | 2 << 6 | 3 << 12 | 63 << 18.
        let word: u32 = 1 | (2 << 6) | (3 << 12) | (63 << 18);
        assert_eq!(
            pack_fp6(ndarray::arr2(&[[1u8, 2, 3, 0x3f]]).view()),
            word.to_le_bytes()[..3]
        );
        assert_eq!(nvfp4_global_scale(0.5), 2.0);
    }
}
