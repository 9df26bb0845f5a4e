//! Q8_K: the 8-bit type ggml quantizes activations to for k-quant dot products.
//!
//! Block layout (292 bytes): `d` (f32), `qs[256]` (i8), `bsums[16]` (i16, the
//! sums of each 16 codes). A value decodes as `d · q`.

use super::search::signed_absmax;
use super::{nearest_int, QK_K};

const SIZE: usize = 292;
const QS: usize = 4;
const BSUMS: usize = 260;

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (o, &q) in o.iter_mut().zip(&b[QS..QS + QK_K]) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// `quantize_row_q8_K_ref`. An all-zero block gets zero sums too (the C leaves
/// them unwritten).
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        let (amax, max) = signed_absmax(x);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b[QS..QS + QK_K].iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = b[QS + 16 * j..QS + 16 * (j + 1)]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            b[BSUMS + 2 * j..BSUMS + 2 * j + 2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        b[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sums_and_scale() {
        let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 - 100.0) * 0.5).collect();
        let mut b = [0u8; SIZE];
        quantize(&x, &mut b);
        // The largest magnitude is 77.5 (the last element); ggml's scale is
        // 1 / (−127 / max), negative, with codes of the opposite sign.
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        assert_eq!(d, 1.0 / (-127.0f32 / 77.5));
        let mut y = [0.0f32; QK_K];
        dequantize(&b, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= d.abs() / 2.0 + 1e-5, "{a} -> {b}");
        }
        for j in 0..16 {
            let want: i32 = b[QS + 16 * j..QS + 16 * j + 16]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            let got = i16::from_le_bytes([b[BSUMS + 2 * j], b[BSUMS + 2 * j + 1]]);
            assert_eq!(got as i32, want);
        }
    }
}
