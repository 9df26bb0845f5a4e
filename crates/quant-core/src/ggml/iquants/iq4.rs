//! IQ4_NL and IQ4_XS: 4-bit codes into a fixed non-linear table of 16 levels
//! (`KVALUES`, denser near zero, fitted to the shape of LLM weights).
//!
//! - IQ4_NL (18 bytes per 32 values): an f16 scale `d`, then `qs[16]` (element
//!   `j` in the low nibble of byte `j`, element `j + 16` in the high nibble).
//!   A value decodes as `d · KVALUES[q]`.
//! - IQ4_XS (136 bytes per 256 values): `d`, `scales_h` (u16), `scales_l[4]`,
//!   `qs[128]` (16 bytes per sub-block of 32, packed as IQ4_NL). Sub-block `ib`
//!   has the 6-bit scale `ls = (scales_l[ib/2] >> 4(ib%2) & 15) | (scales_h >>
//!   2ib & 3) << 4`, and decodes as `(d · (ls − 32)) · KVALUES[q]`.
//!
//! The encoder is llama.cpp's `quantize_row_iq4_nl_impl` with `ntry = 7`, the
//! path `llama-quantize` takes for both types with or without an importance
//! matrix. (ggml's `quantize_row_iq4_nl_ref`, used for activations, searches
//! less: it is not what GGUF files contain.)

use crate::ggml::kquants::search::signed_absmax;
use crate::ggml::kquants::{f16_at, nearest_int, put_f16, GROUP_MAX_EPS, QK_K};

/// The 16 levels of IQ4_NL and IQ4_XS (`kvalues_iq4nl`).
pub(crate) const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

const NL_SIZE: usize = 18;
const XS_SIZE: usize = 136;
const XS_QS: usize = 8;
/// Candidate scales on each side of the first guess (the C's `ntry`).
const NTRY: i32 = 7;

/// Decodes 16 bytes of nibbles against one scale into 32 values.
#[inline]
fn decode_32(dl: f32, qs: &[u8], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(16);
    for ((a, b), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
        *a = dl * KVALUES[(q & 0x0f) as usize] as f32;
        *b = dl * KVALUES[(q >> 4) as usize] as f32;
    }
}

pub(crate) fn dequantize_nl(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(NL_SIZE).zip(out.chunks_exact_mut(32)) {
        decode_32(f16_at(b, 0), &b[2..18], o);
    }
}

/// The biased 6-bit scale of IQ4_XS sub-block `ib`.
#[inline]
fn xs_scale(b: &[u8], ib: usize) -> i32 {
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
    let hi = ((scales_h >> (2 * ib)) & 3) as u8;
    (lo | (hi << 4)) as i32
}

pub(crate) fn dequantize_xs(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(XS_SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        for (ib, o) in o.chunks_exact_mut(32).enumerate() {
            let dl = d * (xs_scale(b, ib) - 32) as f32;
            decode_32(dl, &b[XS_QS + 16 * ib..][..16], o);
        }
    }
}

/// ggml's `best_index_int8`: the index of the level nearest to `x` (binary
/// search; ties go up).
#[inline]
fn best_index(x: f32) -> u8 {
    let v = |i: usize| KVALUES[i] as f32;
    if x <= v(0) {
        return 0;
    }
    if x >= v(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < v(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - v(mu - 1) < v(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The scale search of one 32-value sub-block: returns the scale (0 for an
/// all-zero sub-block). The codes are re-derived by the caller.
fn sub_block_scale(xb: &[f32], weight: &[f32]) -> f32 {
    let (amax, max) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = KVALUES[0] as f32;
    let fit = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for (&x, &w) in xb.iter().zip(weight) {
            let q = KVALUES[best_index(id * x) as usize] as f32;
            sumqx += w * q * x;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / v0;
    let (sumqx, sumq2) = fit(1.0 / d0);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let (sumqx, sumq2) = fit((itry as f32 + v0) / max);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// The per-value weights: `importance · sqrt(σ² + x²)`, or `x²` without one.
fn weights(xb: &[f32], sigma2: f32, qw: Option<&[f32]>, out: &mut [f32]) {
    match qw {
        Some(qw) => {
            for ((w, &q), &x) in out.iter_mut().zip(qw).zip(xb) {
                *w = q * (sigma2 + x * x).sqrt();
            }
        }
        None => {
            for (w, &x) in out.iter_mut().zip(xb) {
                *w = x * x;
            }
        }
    }
}

/// `2 · mean(x²)`, accumulated in order as the C does.
fn sigma2(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |s, &v| s + v * v) * (2.0 / x.len() as f32)
}

/// Packs 32 codes into 16 bytes of nibbles.
#[inline]
fn pack_32(l: &[u8], qs: &mut [u8]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

fn encode_nl(x: &[f32], qw: Option<&[f32]>, b: &mut [u8]) {
    let mut weight = [0.0f32; 32];
    weights(x, sigma2(x), qw, &mut weight);
    let d = sub_block_scale(x, &weight);
    put_f16(b, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let l: [u8; 32] = std::array::from_fn(|j| best_index(id * x[j]));
    pack_32(&l, &mut b[2..18]);
}

fn encode_xs(x: &[f32], qw: Option<&[f32]>, b: &mut [u8]) {
    let s2 = sigma2(x);
    let mut weight = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let (mut amax_scale, mut max_scale) = (0.0f32, 0.0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        let r = 32 * ib..32 * (ib + 1);
        weights(&x[r.clone()], s2, qw.map(|q| &q[r.clone()]), &mut weight);
        *s = sub_block_scale(&x[r], &weight);
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    put_f16(b, 0, d);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut scales_h = 0u16;
    b[4..8].fill(0);
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        let dl = d * l as f32;
        let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
        let codes: [u8; 32] = std::array::from_fn(|j| best_index(idl * x[32 * ib + j]));
        pack_32(&codes, &mut b[XS_QS + 16 * ib..XS_QS + 16 * (ib + 1)]);
        let l = (l + 32) as u8;
        b[4 + ib / 2] |= (l & 0x0f) << (4 * (ib % 2));
        scales_h |= ((l >> 4) as u16) << (2 * ib);
    }
    b[2..4].copy_from_slice(&scales_h.to_le_bytes());
}

/// `quantize_iq4_nl` without an importance matrix.
pub(crate) fn quantize_nl(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(32).zip(out.chunks_exact_mut(NL_SIZE)) {
        encode_nl(x, None, b);
    }
}

/// `quantize_iq4_nl` with an importance vector.
pub(crate) fn quantize_nl_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let blocks = values.chunks_exact(32).zip(importance.chunks_exact(32));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(NL_SIZE)) {
        encode_nl(x, Some(qw), b);
    }
}

/// `quantize_iq4_xs` without an importance matrix.
pub(crate) fn quantize_xs(values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(XS_SIZE)) {
        encode_xs(x, None, b);
    }
}

/// `quantize_iq4_xs` with an importance vector.
pub(crate) fn quantize_xs_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(XS_SIZE)) {
        encode_xs(x, Some(qw), b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_index_picks_nearest_level() {
        for (i, &v) in KVALUES.iter().enumerate() {
            assert_eq!(best_index(v as f32) as usize, i);
        }
        assert_eq!(best_index(-1000.0), 0);
        assert_eq!(best_index(1000.0), 15);
        // Halfway between −10 and 1 goes up; just below goes down.
        assert_eq!(best_index(-4.5), 8);
        assert_eq!(best_index(-4.6), 7);
        assert_eq!(best_index(0.0), 8);
        let _ = best_index(f32::NAN);
    }

    #[test]
    fn zero_block_encodes_zero_scale() {
        let mut b = [0xffu8; NL_SIZE];
        quantize_nl(&[0.0; 32], &mut b);
        assert_eq!(&b[..2], &[0, 0]);
        // Code 8 (level 1) is the one nearest to zero.
        assert!(b[2..].iter().all(|&q| q == 0x88));
        let mut b = [0xffu8; XS_SIZE];
        quantize_xs(&[0.0; QK_K], &mut b);
        // d = −0/32 is negative zero, as in ggml.
        assert_eq!(&b[..2], &[0x00, 0x80]);
        let mut y = [1.0f32; QK_K];
        dequantize_xs(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
