//! The plain element types (F32, F16, BF16, F64, I8…I64): little-endian values.

use half::f16;

/// Decodes little-endian elements of `N` bytes each with `f`.
///
/// The caller guarantees `bytes.len() == out.len() * N`.
#[inline]
fn decode<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (chunk, o) in bytes.chunks_exact(N).zip(out.iter_mut()) {
        let mut b = [0u8; N];
        b.copy_from_slice(chunk);
        *o = f(b);
    }
}

pub(crate) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    decode::<4>(bytes, out, f32::from_le_bytes);
}

pub(crate) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    decode::<2>(bytes, out, |b| f16::from_le_bytes(b).to_f32());
}

pub(crate) fn dequantize_bf16(bytes: &[u8], out: &mut [f32]) {
    decode::<2>(bytes, out, |b| {
        f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
    });
}

pub(crate) fn dequantize_f64(bytes: &[u8], out: &mut [f32]) {
    decode::<8>(bytes, out, |b| f64::from_le_bytes(b) as f32);
}

pub(crate) fn dequantize_i8(bytes: &[u8], out: &mut [f32]) {
    decode::<1>(bytes, out, |b| b[0] as i8 as f32);
}

pub(crate) fn dequantize_i16(bytes: &[u8], out: &mut [f32]) {
    decode::<2>(bytes, out, |b| i16::from_le_bytes(b) as f32);
}

pub(crate) fn dequantize_i32(bytes: &[u8], out: &mut [f32]) {
    decode::<4>(bytes, out, |b| i32::from_le_bytes(b) as f32);
}

pub(crate) fn dequantize_i64(bytes: &[u8], out: &mut [f32]) {
    decode::<8>(bytes, out, |b| i64::from_le_bytes(b) as f32);
}

/// Rounds an f32 to bfloat16 as `ggml_compute_fp32_to_bf16` does: NaNs become
/// quiet NaNs with their sign and upper payload, everything else rounds to
/// nearest, ties to even (overflowing to infinity).
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 0x40) as u16;
    }
    // Cannot overflow u32: the largest finite/infinite pattern plus 0x8000 fits.
    ((n + (0x7fff + ((n >> 16) & 1))) >> 16) as u16
}

/// The caller guarantees `out.len() == values.len() * 4`.
pub(crate) fn quantize_f32(values: &[f32], out: &mut [u8]) {
    for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// The caller guarantees `out.len() == values.len() * 2`.
pub(crate) fn quantize_f16(values: &[f32], out: &mut [u8]) {
    for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

/// The caller guarantees `out.len() == values.len() * 2`.
pub(crate) fn quantize_bf16(values: &[f32], out: &mut [u8]) {
    for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        // Exact, ties to even (down and up), carry into the exponent, overflow, NaN.
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3fff_ffff)), 0x4000);
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16_bits(f32::NEG_INFINITY), 0xff80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xffa0_0000)), 0xffe0);
    }

    #[test]
    fn plain_types_decode() {
        let mut out = [0.0f32; 2];
        dequantize_i16(&[0xff, 0xff, 0x02, 0x00], &mut out);
        assert_eq!(out, [-1.0, 2.0]);
        dequantize_bf16(&[0x80, 0x3f, 0x00, 0xc0], &mut out);
        assert_eq!(out, [1.0, -2.0]);
        let mut one = [0.0f32; 1];
        dequantize_f64(&1.5f64.to_le_bytes(), &mut one);
        assert_eq!(one, [1.5]);
        dequantize_i64(&(-7i64).to_le_bytes(), &mut one);
        assert_eq!(one, [-7.0]);
    }
}
