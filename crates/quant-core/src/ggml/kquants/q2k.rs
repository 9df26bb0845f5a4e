//! Q2_K: 2-bit codes in 16 sub-blocks of 16, each with a 4-bit scale and a
//! 4-bit minimum against the f16 super-block scales `d` and `dmin`.
//!
//! Block layout (84 bytes): `scales[16]` (scale in the low nibble, minimum in
//! the high one), `qs[64]` (see [`pack_2bit`]), `d`, `dmin`.

use super::search::{make_qkx_quants, make_qp_quants, AsymSearch};
use super::{f16_at, nearest_int, pack_2bit, put_f16, QK_K};

const SIZE: usize = 84;
const QS: usize = 16;
const D: usize = 80;

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, D);
        let dmin = f16_at(b, D + 2);
        // Sub-block g = 8h + 2s + k holds elements 128h + 32s + 16k + i, whose
        // codes are bits 2s..2s+2 of qs[32h + 16k + i].
        for (g, o) in o.chunks_exact_mut(16).enumerate() {
            let (h, s, k) = (g / 8, (g % 8) / 2, g % 2);
            let dl = d * (b[g] & 0x0f) as f32;
            let ml = dmin * (b[g] >> 4) as f32;
            let qs = &b[QS + 32 * h + 16 * k..][..16];
            for (o, &q) in o.iter_mut().zip(qs) {
                *o = dl * ((q >> (2 * s)) & 3) as f32 - ml;
            }
        }
    }
}

/// Re-derives every code from the stored (f16) scales and minima, leaving a
/// sub-block whose scale decodes to zero with the codes of the search.
fn requantize(x: &[f32], b: &[u8], l: &mut [u8; QK_K]) {
    let dm = f16_at(b, D);
    let mm = f16_at(b, D + 2);
    let groups = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for ((xs, ls), &sc) in groups.zip(&b[..QK_K / 16]) {
        let d = dm * (sc & 0x0f) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (sc >> 4) as f32;
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + m) / d).clamp(0, 3) as u8;
        }
    }
}

/// `quantize_row_q2_K_ref`.
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    let mut l = [0u8; QK_K];
    let mut aux = [0u8; 16];
    let mut weights = [0.0f32; 16];
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * (j + 1)];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx_quants(xs, &weights, SEARCH, &mut l[16 * j..], &mut aux);
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                b[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(b, D, max_scale / 15.0);
        } else {
            b[..16].fill(0);
            put_f16(b, D, 0.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                b[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            put_f16(b, D + 2, max_min / 15.0);
        } else {
            put_f16(b, D + 2, 0.0);
        }
        requantize(x, b, &mut l);
        pack_2bit(&l, &mut b[QS..QS + 64]);
    }
}

/// `quantize_row_q2_K_impl`: the search weighs each value by
/// `importance · sqrt(σ² + x²)` and the sub-block scales and minima are fitted
/// by `make_qp_quants` weighted by each sub-block's total weight.
pub(crate) fn quantize_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 3,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    let mut aux = [0u8; 16];
    let mut weight = [0.0f32; 16];
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut sw = [0.0f32; 16];
        let sigma2 = x.iter().fold(0.0f32, |s, &v| s + v * v) / QK_K as f32;
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * (j + 1)];
            for ((w, &q), &v) in weight.iter_mut().zip(&qw[16 * j..]).zip(xs) {
                *w = q * (sigma2 + v * v).sqrt();
            }
            for &w in &weight {
                sw[j] += w;
            }
            let (s, m) = make_qkx_quants(xs, &weight, SEARCH, &mut l[16 * j..], &mut aux);
            scales[j] = s;
            mins[j] = m;
        }
        let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
        let dm = make_qp_quants(&scales, 15, &mut ls, &sw);
        let mm = make_qp_quants(&mins, 15, &mut lm, &sw);
        put_f16(b, D, dm);
        put_f16(b, D + 2, mm);
        for j in 0..16 {
            b[j] = ls[j] | (lm[j] << 4);
        }
        requantize(x, b, &mut l);
        pack_2bit(&l, &mut b[QS..QS + 64]);
    }
}
