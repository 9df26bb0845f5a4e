//! Decoders. The caller guarantees `bytes` is a whole number of blocks and
//! `out` holds exactly the values they decode to.

use super::{f16_at, QK};

const HALF: usize = QK / 2;

pub(crate) fn q4_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..HALF {
            o[j] = d * ((qs[j] & 0x0f) as i32 - 8) as f32;
            o[j + HALF] = d * ((qs[j] >> 4) as i32 - 8) as f32;
        }
    }
}

pub(crate) fn q4_1(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qs = &b[4..20];
        for j in 0..HALF {
            o[j] = d * (qs[j] & 0x0f) as f32 + m;
            o[j + HALF] = d * (qs[j] >> 4) as f32 + m;
        }
    }
}

/// The 5-bit codes of one block from the high-bit word and the nibbles.
#[inline]
fn codes5(qh: &[u8], qs: &[u8]) -> [u8; QK] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; QK];
    for j in 0..HALF {
        let hi0 = (((qh >> j) & 1) << 4) as u8;
        let hi1 = (((qh >> (j + HALF)) & 1) << 4) as u8;
        q[j] = (qs[j] & 0x0f) | hi0;
        q[j + HALF] = (qs[j] >> 4) | hi1;
    }
    q
}

pub(crate) fn q5_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let q = codes5(&b[2..6], &b[6..22]);
        for (o, &q) in o.iter_mut().zip(&q) {
            *o = d * (q as i32 - 16) as f32;
        }
    }
}

pub(crate) fn q5_1(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(24).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let q = codes5(&b[4..8], &b[8..24]);
        for (o, &q) in o.iter_mut().zip(&q) {
            *o = d * q as f32 + m;
        }
    }
}

pub(crate) fn q8_0(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in o.iter_mut().zip(&b[2..34]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_block_by_hand() {
        // d = 0.5 (f16 0x3800); byte 0 = 0x9f: element 0 = 15 - 8, element 16 = 9 - 8.
        let mut block = [0x88u8; 18];
        block[0] = 0x00;
        block[1] = 0x38;
        block[2] = 0x9f;
        let mut out = [f32::NAN; 32];
        q4_0(&block, &mut out);
        assert_eq!(out[0], 3.5);
        assert_eq!(out[16], 0.5);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &v)| i == 0 || i == 16 || v == 0.0));
    }

    #[test]
    fn q5_1_high_bits() {
        // d = 1, m = -1, all nibbles 0, high bits set for elements 3 and 20.
        let mut block = [0u8; 24];
        block[1] = 0x3c;
        block[3] = 0xbc;
        block[4..8].copy_from_slice(&((1u32 << 3) | (1 << 20)).to_le_bytes());
        let mut out = [0.0f32; 32];
        q5_1(&block, &mut out);
        assert_eq!(out[3], 15.0);
        assert_eq!(out[20], 15.0);
        assert_eq!(out[0], -1.0);
    }
}
