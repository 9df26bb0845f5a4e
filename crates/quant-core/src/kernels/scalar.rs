//! Scalar reference kernels: the meaning of every SIMD variant.
//!
//! Nibble layout (GGML's Q4_0 order): a block of 32 codes is 16 bytes; byte
//! `j` holds code `j` in its low nibble and code `j + 16` in its high nibble.

use super::BLOCK;

/// The little-endian f16 at `at`, as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Bytes of one block of 32 nibbles.
pub(crate) const NIB_BYTES: usize = BLOCK / 2;
/// Bytes of a Q4_0 block: f16 scale + 16 bytes of nibbles.
pub(crate) const Q4_0_BYTES: usize = 18;
/// Bytes of a Q8_0 block: f16 scale + 32 signed bytes.
pub(crate) const Q8_0_BYTES: usize = 34;

/// `Σ a_i b_i`.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// Quantizes one block of 32 to int8 (GGML's `quantize_row_q8_0_ref` with an
/// f32 scale); returns the scale.
pub(crate) fn quantize_block_q8(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &x) in q.iter_mut().zip(x) {
        *q = round_away(x * id) as i8;
    }
    d
}

/// `v.round()` (ties away from zero, GGML's `roundf`) for `|v| ≤ 127.5`,
/// without the libm call `f32::round` becomes on baseline x86-64: the
/// truncation and the fraction `v − trunc(v)` are exact, and the compiler
/// vectorizes the comparisons (quantizing a prompt's activations went
/// through `roundf` once per value).
#[inline]
pub(crate) fn round_away(v: f32) -> i32 {
    let t = v as i32;
    let frac = v - t as f32;
    t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)
}

/// The 32 codes of one nibble block.
#[inline]
pub(crate) fn nibbles(qs: &[u8]) -> [u8; BLOCK] {
    let mut q = [0u8; BLOCK];
    for j in 0..NIB_BYTES {
        q[j] = qs[j] & 0x0f;
        q[j + NIB_BYTES] = qs[j] >> 4;
    }
    q
}

/// One row of an int4 matrix: `w = scale[g] · q + min[g]` for column groups of `group`.
pub(crate) struct Int4Row<'a> {
    pub qs: &'a [u8],
    pub scales: &'a [f32],
    pub mins: &'a [f32],
    pub group: usize,
}

pub(crate) fn int4_dequant(row: &Int4Row<'_>, out: &mut [f32]) {
    for (b, (qs, o)) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let g = b * BLOCK / row.group;
        let (s, m) = (row.scales[g], row.mins[g]);
        for (o, q) in o.iter_mut().zip(nibbles(qs)) {
            *o = s * q as f32 + m;
        }
    }
}

pub(crate) fn int4_dot_f32(row: &Int4Row<'_>, x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (b, (qs, x)) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(x.chunks_exact(BLOCK))
        .enumerate()
    {
        let g = b * BLOCK / row.group;
        let (s, m) = (row.scales[g], row.mins[g]);
        let mut acc = 0.0f32;
        for (q, x) in nibbles(qs).into_iter().zip(x) {
            acc += (s * q as f32 + m) * x;
        }
        total += acc;
    }
    total
}

pub(crate) fn int4_dot_q8(row: &Int4Row<'_>, xq: &[i8], xd: &[f32], xsums: &[i32]) -> f32 {
    let mut total = 0.0f32;
    for (b, (qs, xq)) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .enumerate()
    {
        let g = b * BLOCK / row.group;
        let isum: i32 = nibbles(qs)
            .into_iter()
            .zip(xq)
            .map(|(q, &x)| q as i32 * x as i32)
            .sum();
        total += xd[b] * (row.scales[g] * isum as f32 + row.mins[g] * xsums[b] as f32);
    }
    total
}

/// A Q4_0 row held split: `qs` the blocks' nibbles, `d` their f16 scales.
pub(crate) fn q4_0_dequant(qs: &[u8], d: &[u16], out: &mut [f32]) {
    for ((q, &d), o) in qs
        .chunks_exact(NIB_BYTES)
        .zip(d)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = half::f16::from_bits(d).to_f32();
        for (o, q) in o.iter_mut().zip(nibbles(q)) {
            *o = d * (q as i32 - 8) as f32;
        }
    }
}

pub(crate) fn q4_0_dot_f32(qs: &[u8], d: &[u16], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((q, &d), x) in qs.chunks_exact(NIB_BYTES).zip(d).zip(x.chunks_exact(BLOCK)) {
        let acc: f32 = nibbles(q)
            .into_iter()
            .zip(x)
            .map(|(q, x)| (q as i32 - 8) as f32 * x)
            .sum();
        total += half::f16::from_bits(d).to_f32() * acc;
    }
    total
}

pub(crate) fn q4_0_dot_q8(qs: &[u8], d: &[u16], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (((q, &d), xq), &dx) in qs
        .chunks_exact(NIB_BYTES)
        .zip(d)
        .zip(xq.chunks_exact(BLOCK))
        .zip(xd)
    {
        let isum: i32 = nibbles(q)
            .into_iter()
            .zip(xq)
            .map(|(q, &x)| (q as i32 - 8) * x as i32)
            .sum();
        total += half::f16::from_bits(d).to_f32() * dx * isum as f32;
    }
    total
}

pub(crate) fn q8_0_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = f16_at(blk, 0);
        for (o, &q) in o.iter_mut().zip(&blk[2..]) {
            *o = d * (q as i8) as f32;
        }
    }
}

pub(crate) fn q8_0_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for (blk, x) in bytes.chunks_exact(Q8_0_BYTES).zip(x.chunks_exact(BLOCK)) {
        let acc: f32 = blk[2..]
            .iter()
            .zip(x)
            .map(|(&q, x)| (q as i8) as f32 * x)
            .sum();
        total += f16_at(blk, 0) * acc;
    }
    total
}

pub(crate) fn q8_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let mut total = 0.0f32;
    for ((blk, xq), &dx) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .zip(xd)
    {
        let isum: i32 = blk[2..]
            .iter()
            .zip(xq)
            .map(|(&q, &x)| (q as i8) as i32 * x as i32)
            .sum();
        total += f16_at(blk, 0) * dx * isum as f32;
    }
    total
}
