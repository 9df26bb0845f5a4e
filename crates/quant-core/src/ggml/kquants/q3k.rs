//! Q3_K: 3-bit symmetric codes in 16 sub-blocks of 16, each with a signed
//! 6-bit scale against the f16 super-block scale `d`.
//!
//! Block layout (110 bytes): `hmask[32]` (the third bit of element `e` is bit
//! `e / 32` of `hmask[e % 32]`, and it is set when the code is NOT negative),
//! `qs[64]` (the low two bits, see [`pack_2bit`]), `scales[12]` (sixteen 6-bit
//! values biased by 32: low nibbles in bytes 0–7, high bits in bytes 8–11), `d`.

use super::search::{make_q3_quants, make_qx_quants};
use super::{f16_at, nearest_int, pack_2bit, put_f16, QK_K};

const SIZE: usize = 110;
const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

/// The biased 6-bit scale of sub-block `j` (0..=63; 32 means zero).
#[inline]
fn scale(sc: &[u8], j: usize) -> u8 {
    let lo = (sc[j % 8] >> (4 * (j / 8))) & 0x0f;
    let hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    lo | (hi << 4)
}

/// Packs sixteen biased 6-bit scales with the C's byte operations.
#[inline]
fn pack_scales(ls: &[u8; 16], sc: &mut [u8]) {
    sc[..12].fill(0);
    for (j, &l) in ls.iter().enumerate() {
        if j < 8 {
            sc[j] = l & 0x0f;
        } else {
            sc[j - 8] |= (l & 0x0f) << 4;
        }
        sc[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, D);
        let sc = &b[SCALES..SCALES + 12];
        // Sub-block g = 8h + 2s + k holds elements 128h + 32s + 16k + i.
        for (g, o) in o.chunks_exact_mut(16).enumerate() {
            let (h, s, k) = (g / 8, (g % 8) / 2, g % 2);
            let dl = d * (scale(sc, g) as i8 - 32) as f32;
            let qs = &b[QS + 32 * h + 16 * k..][..16];
            let hm = &b[16 * k..][..16];
            let bit = 4 * h + s;
            for ((o, &q), &m) in o.iter_mut().zip(qs).zip(hm) {
                let low = ((q >> (2 * s)) & 3) as i8;
                let neg = if (m >> bit) & 1 == 0 { 4 } else { 0 };
                *o = dl * (low - neg) as f32;
            }
        }
    }
}

/// Re-derives the codes from the stored scales (sub-blocks whose scale decodes
/// to zero keep the search's codes), then writes `hmask` and `qs`.
fn finish(x: &[f32], b: &mut [u8], l: &mut [i8; QK_K]) {
    let d_all = f16_at(b, D);
    for j in 0..QK_K / 16 {
        let sc = scale(&b[SCALES..SCALES + 12], j) as i8 - 32;
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * (j + 1) {
            l[i] = (nearest_int(x[i] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    let mut low = [0u8; QK_K];
    b[..32].fill(0);
    for (e, (&q, low)) in l.iter().zip(low.iter_mut()).enumerate() {
        let mut q = q;
        if q > 3 {
            b[e % 32] |= 1 << (e / 32);
            q -= 4;
        }
        *low = q as u8;
    }
    pack_2bit(&low, &mut b[QS..QS + 64]);
}

/// `quantize_row_q3_K_ref`.
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            scales[j] = make_q3_quants(&x[16 * j..16 * (j + 1)], 4, &mut l[16 * j..16 * (j + 1)]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut ls = [0u8; 16];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (ls, &s) in ls.iter_mut().zip(&scales) {
                let l = nearest_int(iscale * s) as i8;
                *ls = (l.clamp(-32, 31) + 32) as u8;
            }
            pack_scales(&ls, &mut b[SCALES..SCALES + 12]);
            put_f16(b, D, 1.0 / iscale);
        } else {
            b[SCALES..SCALES + 12].fill(0);
            put_f16(b, D, 0.0);
        }
        finish(x, b, &mut l);
    }
}

/// `quantize_row_q3_K_impl`: sub-block codes by `make_qx_quants` with weights
/// `importance · sqrt(σ² + x²)`, sub-block scales by `make_qx_quants` on the
/// scales weighted by each sub-block's total weight.
pub(crate) fn quantize_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut weight = [0.0f32; 16];
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        let mut sw = [0.0f32; 16];
        let sigma2 = 2.0 * x.iter().fold(0.0f32, |s, &v| s + v * v) / QK_K as f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * (j + 1)];
            for ((w, &q), &v) in weight.iter_mut().zip(&qw[16 * j..]).zip(xs) {
                *w = q * (sigma2 + v * v).sqrt();
            }
            sw[j] = weight.iter().fold(0.0f32, |s, &w| s + w);
            scales[j] = make_qx_quants(xs, 4, &mut l[16 * j..16 * (j + 1)], Some(&weight));
        }
        let mut ls = [0i8; 16];
        let d_block = make_qx_quants(&scales, 32, &mut ls, Some(&sw));
        pack_scales(&ls.map(|v| v as u8), &mut b[SCALES..SCALES + 12]);
        put_f16(b, D, d_block);
        finish(x, b, &mut l);
    }
}
