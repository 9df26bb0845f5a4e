//! Encoders. The caller guarantees `values` is a whole number of blocks and
//! `out` has exactly the bytes they encode to.
//!
//! Float-to-code conversions use Rust's saturating `as` casts. For finite inputs
//! the codes stay in range and match numpy exactly; NaN inputs give codes that
//! numpy leaves platform-defined, so they are not specified here (but never panic).

use half::f16;

use super::QK;

const HALF: usize = QK / 2;

/// The value of largest magnitude, keeping its sign; the first one on ties
/// (numpy's `argmax`).
#[inline]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

#[inline]
fn put_f16(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Packs 32 codes into 16 bytes: element `j` low nibble, element `j + 16` high.
#[inline]
fn pack_nibbles(q: &[u8; QK], out: &mut [u8]) {
    for j in 0..HALF {
        out[j] = (q[j] & 0x0f) | (q[j + HALF] << 4);
    }
}

/// Packs the fifth bits of 32 codes into a little-endian `u32`.
#[inline]
fn pack_high_bits(q: &[u8; QK], out: &mut [u8]) {
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (j, &v)| acc | (((v >> 4) as u32 & 1) << j));
    out[..4].copy_from_slice(&qh.to_le_bytes());
}

pub(crate) fn q4_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(18)) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            // `as u8` truncates toward zero, as numpy's trunc + astype(uint8).
            *q = ((v * id + 8.5) as u8).min(15);
        }
        put_f16(b, 0, d);
        pack_nibbles(&q, &mut b[2..18]);
    }
}

pub(crate) fn q4_1(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(20)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (((v - min) * id + 0.5) as u8).min(15);
        }
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        pack_nibbles(&q, &mut b[4..20]);
    }
}

pub(crate) fn q5_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(22)) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = ((v * id + 16.5) as u8).min(31);
        }
        put_f16(b, 0, d);
        pack_high_bits(&q, &mut b[2..6]);
        pack_nibbles(&q, &mut b[6..22]);
    }
}

pub(crate) fn q5_1(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(24)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = (((v - min) * id + 0.5) as u8).min(31);
        }
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        pack_high_bits(&q, &mut b[4..8]);
        pack_nibbles(&q, &mut b[8..24]);
    }
}

pub(crate) fn q8_0(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        put_f16(b, 0, d);
        for (q, &v) in b[2..34].iter_mut().zip(x) {
            // `round` is half away from zero, as ggml's roundf and gguf's np_roundf.
            *q = (v * id).round() as i8 as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_keeps_first_of_tied_magnitudes() {
        let mut x = [0.0f32; QK];
        x[0] = -2.0;
        x[1] = 2.0;
        let mut b = [0u8; 18];
        q4_0(&x, &mut b);
        // d = -2 / -8 = 0.25 > 0, so -2 maps to code 0 and +2 clips to 15.
        assert_eq!(f16::from_le_bytes([b[0], b[1]]).to_f32(), 0.25);
        assert_eq!(b[2] & 0x0f, 0);
        assert_eq!(b[3] & 0x0f, 15);
    }

    #[test]
    fn zero_block_encodes_zero_scale() {
        let x = [0.0f32; QK];
        let mut b = [0xffu8; 34];
        q8_0(&x, &mut b);
        assert!(b.iter().all(|&v| v == 0));
        let mut b = [0xffu8; 24];
        q5_1(&x, &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }
}
