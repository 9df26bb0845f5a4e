//! Scalar reference kernels of the K-quants Q4_K, Q5_K and Q6_K: the meaning
//! of their SIMD variants. Rows are the GGUF super-blocks of 256 values.
//!
//! The int8 products run per activation block of 32: Q4_K/Q5_K sub-blocks
//! are 32 wide (one integer sum, one float multiply, and the minimum times
//! the activation block's code sum); a Q6_K block of 32 holds two
//! sub-blocks of 16, whose integer sums are combined with their 8-bit
//! scales in integers before the one float multiply.

use super::BLOCK;
use crate::ggml::kquants::{f16_at, scale_min_k4};

/// Bytes of a Q4_K super-block: `d`, `dmin`, 12 scale bytes, 128 of nibbles.
pub(crate) const Q4_K_BYTES: usize = 144;
/// Bytes of a Q5_K super-block: Q4_K's with 32 bytes of fifth bits.
pub(crate) const Q5_K_BYTES: usize = 176;
/// Bytes of a Q6_K super-block: `ql[128]`, `qh[64]`, 16 i8 scales, `d`.
pub(crate) const Q6_K_BYTES: usize = 210;
/// Values per super-block.
pub(crate) const SUPER: usize = 256;
/// Offset of the 12 scale bytes of Q4_K/Q5_K.
pub(crate) const K_SCALES: usize = 4;
/// Offset of the fifth bits of Q5_K.
pub(crate) const Q5_K_QH: usize = 16;
/// Offset of the nibbles of Q5_K.
pub(crate) const Q5_K_QS: usize = 48;
/// Offset of the nibbles of Q4_K.
pub(crate) const Q4_K_QS: usize = 16;
/// Offset of the high bits of Q6_K.
pub(crate) const Q6_K_QH: usize = 128;
/// Offset of the scales of Q6_K.
pub(crate) const Q6_K_SCALES: usize = 192;
/// Offset of the f16 scale of Q6_K.
pub(crate) const Q6_K_D: usize = 208;

/// The decode factors `(d · sc_j, dmin · m_j)` of the 8 sub-blocks of a
/// Q4_K/Q5_K super-block, computed as the codec computes them.
#[inline]
pub(crate) fn k_factors(blk: &[u8]) -> [(f32, f32); 8] {
    let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
    std::array::from_fn(|j| {
        let (sc, m) = scale_min_k4(j, &blk[K_SCALES..K_SCALES + 12]);
        (d * sc as f32, dmin * m as f32)
    })
}

/// The 32 codes of sub-block `j` of a Q4_K (`qh = None`) or Q5_K super-block.
#[inline]
fn k_codes(qs: &[u8], qh: Option<&[u8]>, j: usize) -> [u8; BLOCK] {
    let shift = 4 * (j % 2);
    let lo = &qs[32 * (j / 2)..][..32];
    std::array::from_fn(|l| {
        let hi = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
        ((lo[l] >> shift) & 0x0f) | hi
    })
}

/// Splits a Q4_K/Q5_K super-block into (nibbles, fifth bits).
#[inline]
fn k_parts(blk: &[u8], five: bool) -> (&[u8], Option<&[u8]>) {
    if five {
        (
            &blk[Q5_K_QS..Q5_K_QS + 128],
            Some(&blk[Q5_K_QH..Q5_K_QH + 32]),
        )
    } else {
        (&blk[Q4_K_QS..Q4_K_QS + 128], None)
    }
}

/// Bytes of a Q4_K (`five = false`) or Q5_K super-block.
#[inline]
pub(crate) fn k_bytes(five: bool) -> usize {
    if five {
        Q5_K_BYTES
    } else {
        Q4_K_BYTES
    }
}

/// Q4_K or Q5_K (`five`) row: `w = d·sc·q − dmin·m` per sub-block of 32.
pub(crate) fn k_dequant(bytes: &[u8], five: bool, out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(k_bytes(five))
        .zip(out.chunks_exact_mut(SUPER))
    {
        let f = k_factors(blk);
        let (qs, qh) = k_parts(blk, five);
        for (j, o) in o.chunks_exact_mut(BLOCK).enumerate() {
            let (dl, ml) = f[j];
            for (o, q) in o.iter_mut().zip(k_codes(qs, qh, j)) {
                *o = dl * q as f32 - ml;
            }
        }
    }
}

/// `Σ w·x` over a Q4_K or Q5_K (`five`) row.
pub(crate) fn k_dot_f32(bytes: &[u8], five: bool, x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (blk, x) in bytes.chunks_exact(k_bytes(five)).zip(x.chunks_exact(SUPER)) {
        let f = k_factors(blk);
        let (qs, qh) = k_parts(blk, five);
        for (j, x) in x.chunks_exact(BLOCK).enumerate() {
            let (dl, ml) = f[j];
            let qx: f32 = k_codes(qs, qh, j)
                .into_iter()
                .zip(x)
                .map(|(q, x)| q as f32 * x)
                .sum();
            let sx: f32 = x.iter().sum();
            total += dl * qx - ml * sx;
        }
    }
    total
}

/// `Σ w·x̂` over a Q4_K or Q5_K row, int8 activations (`xsums` their block code sums).
pub(crate) fn k_dot_q8(bytes: &[u8], five: bool, xq: &[i8], xd: &[f32], xsums: &[i32]) -> f32 {
    let mut total = 0.0f32;
    for (s, blk) in bytes.chunks_exact(k_bytes(five)).enumerate() {
        let f = k_factors(blk);
        let (qs, qh) = k_parts(blk, five);
        for (j, &(dl, ml)) in f.iter().enumerate() {
            let b = 8 * s + j;
            let isum: i32 = k_codes(qs, qh, j)
                .into_iter()
                .zip(&xq[b * BLOCK..][..BLOCK])
                .map(|(q, &x)| q as i32 * x as i32)
                .sum();
            total += xd[b] * (dl * isum as f32 - ml * xsums[b] as f32);
        }
    }
    total
}

/// The 32 codes minus 32 of block `b` (of 8) of a Q6_K super-block: the
/// values of sub-blocks `2b` (the first 16) and `2b + 1`.
#[inline]
pub(crate) fn q6_k_codes(blk: &[u8], b: usize) -> [i8; BLOCK] {
    let (h, k) = (b / 4, b % 4);
    let ql = &blk[64 * h + 32 * (k % 2)..][..32];
    let qh = &blk[Q6_K_QH + 32 * h..][..32];
    std::array::from_fn(|l| {
        let q = ((ql[l] >> (4 * (k / 2))) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4);
        q as i8 - 32
    })
}

/// The scale of sub-block `g` (of 16) of a Q6_K super-block.
#[inline]
pub(crate) fn q6_k_scale(blk: &[u8], g: usize) -> i8 {
    blk[Q6_K_SCALES + g] as i8
}

/// Q6_K row: `w = d·sc·(q − 32)` per sub-block of 16.
pub(crate) fn q6_k_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q6_K_BYTES)
        .zip(out.chunks_exact_mut(SUPER))
    {
        let d = f16_at(blk, Q6_K_D);
        for (b, o) in o.chunks_exact_mut(BLOCK).enumerate() {
            let q = q6_k_codes(blk, b);
            for (u, (o, q)) in o.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d * q6_k_scale(blk, 2 * b + u) as f32;
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = dl * q as f32;
                }
            }
        }
    }
}

/// `Σ w·x` over a Q6_K row.
pub(crate) fn q6_k_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (blk, x) in bytes.chunks_exact(Q6_K_BYTES).zip(x.chunks_exact(SUPER)) {
        let d = f16_at(blk, Q6_K_D);
        for (b, x) in x.chunks_exact(BLOCK).enumerate() {
            let q = q6_k_codes(blk, b);
            for (u, (q, x)) in q.chunks_exact(16).zip(x.chunks_exact(16)).enumerate() {
                let qx: f32 = q.iter().zip(x).map(|(&q, x)| q as f32 * x).sum();
                total += d * q6_k_scale(blk, 2 * b + u) as f32 * qx;
            }
        }
    }
    total
}

/// `Σ w·x̂` over a Q6_K row, int8 activations: per block of 32 the two sub-block sums times their scales in integers, one float multiply.
pub(crate) fn q6_k_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (s, blk) in bytes.chunks_exact(Q6_K_BYTES).enumerate() {
        let d = f16_at(blk, Q6_K_D);
        for j in 0..SUPER / BLOCK {
            let b = 8 * s + j;
            let q = q6_k_codes(blk, j);
            let mut isum = 0i32;
            for (u, (q, x)) in q
                .chunks_exact(16)
                .zip(xq[b * BLOCK..][..BLOCK].chunks_exact(16))
                .enumerate()
            {
                let part: i32 = q.iter().zip(x).map(|(&q, &x)| q as i32 * x as i32).sum();
                isum += q6_k_scale(blk, 2 * j + u) as i32 * part;
            }
            total += d * xd[b] * isum as f32;
        }
    }
    total
}
