//! Scalar reference kernels of the legacy 32-blocks Q4_1 and Q5_0 and of
//! IQ4_NL: the meaning of their SIMD variants.
//!
//! Q4_1 rows are held split like Q4_0's (nibbles, f16 scales, f16 minima);
//! Q5_0 and IQ4_NL rows are the GGUF blocks. The int8 products take one
//! integer sum per block and one float multiply, plus the minimum times the
//! activation block's code sum for Q4_1.

use super::scalar::{f16_at, nibbles, NIB_BYTES};
use super::BLOCK;
use crate::ggml::iquants::iq4::KVALUES;

/// Bytes of a Q5_0 block: f16 scale, 32 high bits, 16 bytes of nibbles.
pub(crate) const Q5_0_BYTES: usize = 22;
/// Bytes of an IQ4_NL block: f16 scale, 16 bytes of nibbles.
pub(crate) const IQ4_NL_BYTES: usize = 18;
/// Bytes of a Q4_1 block: f16 scale, f16 minimum, 16 bytes of nibbles.
pub(crate) const Q4_1_BYTES: usize = 20;

/// The f16 bits as f32.
#[inline]
fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// A Q4_1 row held split: nibbles `qs`, f16 scales `d` and minima `m`;
/// `w = d·q + m`.
pub(crate) struct Q4_1Row<'a> {
    pub qs: &'a [u8],
    pub d: &'a [u16],
    pub m: &'a [u16],
}

/// Dequantizes a Q4_1 row into `out`.
pub(crate) fn q4_1_dequant(row: &Q4_1Row<'_>, out: &mut [f32]) {
    for (((q, &d), &m), o) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(row.d)
        .zip(row.m)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let (d, m) = (f16(d), f16(m));
        for (o, q) in o.iter_mut().zip(nibbles(q)) {
            *o = d * q as f32 + m;
        }
    }
}

/// `Σ w·x` over a Q4_1 row.
pub(crate) fn q4_1_dot_f32(row: &Q4_1Row<'_>, x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (((q, &d), &m), x) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(row.d)
        .zip(row.m)
        .zip(x.chunks_exact(BLOCK))
    {
        let qx: f32 = nibbles(q)
            .into_iter()
            .zip(x)
            .map(|(q, x)| q as f32 * x)
            .sum();
        let sx: f32 = x.iter().sum();
        total += f16(d) * qx + f16(m) * sx;
    }
    total
}

/// `Σ w·x̂` over a Q4_1 row, int8 activations (`xsums` their block code sums).
pub(crate) fn q4_1_dot_q8(row: &Q4_1Row<'_>, xq: &[i8], xd: &[f32], xsums: &[i32]) -> f32 {
    let mut total = 0.0f32;
    for (b, ((q, &d), &m)) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(row.d)
        .zip(row.m)
        .enumerate()
    {
        let isum: i32 = nibbles(q)
            .into_iter()
            .zip(&xq[b * BLOCK..][..BLOCK])
            .map(|(q, &x)| q as i32 * x as i32)
            .sum();
        total += xd[b] * (f16(d) * isum as f32 + f16(m) * xsums[b] as f32);
    }
    total
}

/// The 32 codes of a Q5_0 block (`0..=31`, biased by 16).
#[inline]
pub(crate) fn q5_0_codes(blk: &[u8]) -> [u8; BLOCK] {
    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    let mut q = nibbles(&blk[6..Q5_0_BYTES]);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((qh >> j) & 1) << 4) as u8;
    }
    q
}

/// Dequantizes Q5_0 blocks into `out`: `w = d·(q − 16)`.
pub(crate) fn q5_0_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q5_0_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = f16_at(blk, 0);
        for (o, q) in o.iter_mut().zip(q5_0_codes(blk)) {
            *o = d * (q as i32 - 16) as f32;
        }
    }
}

/// `Σ w·x` over a row of Q5_0 blocks.
pub(crate) fn q5_0_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (blk, x) in bytes.chunks_exact(Q5_0_BYTES).zip(x.chunks_exact(BLOCK)) {
        let acc: f32 = q5_0_codes(blk)
            .into_iter()
            .zip(x)
            .map(|(q, x)| (q as i32 - 16) as f32 * x)
            .sum();
        total += f16_at(blk, 0) * acc;
    }
    total
}

/// `Σ w·x̂` over a row of Q5_0 blocks, int8 activations.
pub(crate) fn q5_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((blk, xq), &dx) in bytes
        .chunks_exact(Q5_0_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .zip(xd)
    {
        let isum: i32 = q5_0_codes(blk)
            .into_iter()
            .zip(xq)
            .map(|(q, &x)| (q as i32 - 16) * x as i32)
            .sum();
        total += f16_at(blk, 0) * dx * isum as f32;
    }
    total
}

/// The 32 levels of an IQ4_NL block (`KVALUES` of its nibbles).
#[inline]
fn iq4_nl_levels(blk: &[u8]) -> [i8; BLOCK] {
    nibbles(&blk[2..IQ4_NL_BYTES]).map(|q| KVALUES[q as usize])
}

/// Dequantizes IQ4_NL blocks into `out`: `w = d·KVALUES[q]`.
pub(crate) fn iq4_nl_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(IQ4_NL_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = f16_at(blk, 0);
        for (o, q) in o.iter_mut().zip(iq4_nl_levels(blk)) {
            *o = d * q as f32;
        }
    }
}

/// `Σ w·x` over a row of IQ4_NL blocks.
pub(crate) fn iq4_nl_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (blk, x) in bytes.chunks_exact(IQ4_NL_BYTES).zip(x.chunks_exact(BLOCK)) {
        let acc: f32 = iq4_nl_levels(blk)
            .into_iter()
            .zip(x)
            .map(|(q, x)| q as f32 * x)
            .sum();
        total += f16_at(blk, 0) * acc;
    }
    total
}

/// `Σ w·x̂` over a row of IQ4_NL blocks, int8 activations.
pub(crate) fn iq4_nl_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((blk, xq), &dx) in bytes
        .chunks_exact(IQ4_NL_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .zip(xd)
    {
        let isum: i32 = iq4_nl_levels(blk)
            .into_iter()
            .zip(xq)
            .map(|(q, &x)| q as i32 * x as i32)
            .sum();
        total += f16_at(blk, 0) * dx * isum as f32;
    }
    total
}
