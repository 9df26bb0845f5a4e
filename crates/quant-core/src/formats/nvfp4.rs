//! NVFP4: FP4 E2M1 elements, one FP8 E4M3 scale per 16 elements, and one f32
//! scale per tensor (NVIDIA, "Introducing NVFP4 for Efficient and Accurate
//! Low-Precision Inference", 2025; the format of Blackwell tensor cores).
//!
//! A value is `e2m1(code) · (e4m3(block scale) · tensor scale)`: the block
//! scale's product with the tensor scale is formed once per block in f32.
//! With a tensor scale of 1 this is exactly the dequantization of GGML's
//! NVFP4 blocks in the `gguf` package (`NVFP4.dequantize_blocks`, checked bit
//! for bit in `tests/ml_dtypes_golden.rs`), which has no tensor scale.
//!
//! # The encoder
//!
//! The `gguf` package has no NVFP4 quantizer; this one follows NVIDIA's
//! reference recipe (TensorRT Model Optimizer):
//!
//! 1. tensor scale `g = amax(W) / (6 · 448)`, so that the largest block scale
//!    lands at E4M3's largest value 448 (`g = 1` for an all-zero tensor);
//! 2. block scale `s = e4m3(amax(block) / (6 · g))`, rounded to nearest even
//!    and saturated; a nonzero block whose scale would round to 0 gets E4M3's
//!    smallest subnormal `2^−9` instead, so it keeps its values;
//! 3. elements `e2m1(x / (s · g))`, nearest even, saturated at ±6.
//!
//! (GGML's `fp32_to_ue4m3` helper rounds block scales half up rather than to
//! even; the two differ only on exact ties.)

use super::FloatFormat;

/// Elements per NVFP4 block.
pub const NVFP4_BLOCK: usize = 16;

/// `6 · 448`: the largest element times the largest block scale.
const RANGE: f32 = 6.0 * 448.0;

/// The tensor scale for a tensor whose largest magnitude is `amax`:
/// `amax / (6 · 448)`, or 1 when `amax` is 0 (or not finite).
pub fn tensor_scale(amax: f32) -> f32 {
    if amax > 0.0 && amax.is_finite() {
        let g = amax / RANGE;
        // A subnormal amax can underflow the division.
        if g > 0.0 {
            return g;
        }
    }
    1.0
}

/// The E4M3 code of the scale of a block whose largest magnitude is `amax`,
/// under tensor scale `global`.
pub fn block_scale_code(amax: f32, global: f32) -> u8 {
    let code = FloatFormat::E4M3.encode_saturating(amax / (6.0 * global));
    if code == 0 && amax > 0.0 {
        1
    } else {
        code
    }
}

/// The element code of `x` in a block of (E4M3-valued) scale `block_scale`
/// under tensor scale `global`; `+0` for values that round to zero.
#[inline]
pub fn encode_element(x: f32, block_scale: f32, global: f32) -> u8 {
    let s = block_scale * global;
    if s.is_nan() || s <= 0.0 {
        return 0;
    }
    let c = FloatFormat::E2M1.encode_saturating(x / s);
    if c & 0x7 == 0 {
        0
    } else {
        c
    }
}

/// The value of element `code` in a block of scale `block_scale`, zeros as `+0`.
#[inline]
pub fn decode_element(code: u8, block_scale: f32, global: f32) -> f32 {
    FloatFormat::E2M1.decode(code) * (block_scale * global) + 0.0
}

/// Quantizes one block (normally [`NVFP4_BLOCK`] values) under tensor scale
/// `global` into `codes`, returning the E4M3 code of the block scale.
///
/// # Panics
///
/// When `codes` is not as long as `values`.
#[track_caller]
pub fn quantize_block(values: &[f32], global: f32, codes: &mut [u8]) -> u8 {
    assert_eq!(values.len(), codes.len(), "one code per value");
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let sc = block_scale_code(amax, global);
    let s = FloatFormat::E4M3.decode(sc);
    for (c, &x) in codes.iter_mut().zip(values) {
        *c = encode_element(x, s, global);
    }
    sc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_block_scale_is_448() {
        let g = tensor_scale(3.0);
        assert_eq!(block_scale_code(3.0, g), 0x7e);
        let mut codes = [0u8; 16];
        let mut values = [0.25f32; 16];
        values[3] = -3.0;
        let sc = quantize_block(&values, g, &mut codes);
        assert_eq!(sc, 0x7e);
        assert_eq!(codes[3], 0xf, "−3 is −6 · (448 · g)");
        let s = FloatFormat::E4M3.decode(sc);
        assert!((decode_element(codes[3], s, g) + 3.0).abs() < 1e-6);
        // 0.25 / 0.5 = 0.5 in element units: exactly representable.
        assert!((decode_element(codes[0], s, g) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn tiny_blocks_keep_a_nonzero_scale() {
        let g = tensor_scale(1000.0);
        let sc = block_scale_code(1e-6, g);
        assert_eq!(sc, 1, "rounds to 0 in E4M3, kept at the smallest subnormal");
        assert_eq!(block_scale_code(0.0, g), 0);
        assert_eq!(encode_element(1.0, 0.0, g), 0);
        assert_eq!(tensor_scale(0.0), 1.0);
        assert_eq!(tensor_scale(f32::from_bits(1)), 1.0);
    }
}
