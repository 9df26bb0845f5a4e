//! Q4_K: 4-bit codes in 8 sub-blocks of 32, each with a 6-bit scale and a
//! 6-bit minimum against the f16 super-block scales `d` and `dmin`; and the
//! scale search that Q5_K shares.
//!
//! Block layout (144 bytes): `d`, `dmin`, `scales[12]` (see
//! [`pack_scale_min_k4`]), `qs[128]` (byte `32c + l` holds element `64c + l`
//! in its low nibble and `64c + 32 + l` in its high one).

use super::search::{make_qkx_quants, make_qp_quants, AsymSearch};
use super::{f16_at, nearest_int, pack_scale_min_k4, put_f16, scale_min_k4, QK_K};

const SIZE: usize = 144;
/// Offset of the 12 scale bytes in Q4_K and Q5_K blocks.
pub(super) const SCALES: usize = 4;
const QS: usize = 16;

/// The per-sub-block decode factors `(d · sc, dmin · m)` of a Q4_K/Q5_K block.
#[inline]
pub(super) fn factors(b: &[u8]) -> [(f32, f32); 8] {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    std::array::from_fn(|j| {
        let (sc, m) = scale_min_k4(j, &b[SCALES..SCALES + 12]);
        (d * sc as f32, dmin * m as f32)
    })
}

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let f = factors(b);
        for (j, o) in o.chunks_exact_mut(32).enumerate() {
            let (dl, ml) = f[j];
            let qs = &b[QS + 32 * (j / 2)..][..32];
            let shift = 4 * (j % 2);
            for (o, &q) in o.iter_mut().zip(qs) {
                *o = dl * ((q >> shift) & 0x0f) as f32 - ml;
            }
        }
    }
}

/// Re-derives every code in `0..=nmax` from the stored scales and minima; a
/// sub-block whose scale decodes to zero keeps the search's codes.
fn requantize(x: &[f32], b: &[u8], nmax: i32, l: &mut [u8; QK_K]) {
    let d_all = f16_at(b, 0);
    let m_all = f16_at(b, 2);
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, &b[SCALES..SCALES + 12]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = m_all * m as f32;
        for i in 32 * j..32 * (j + 1) {
            l[i] = nearest_int((x[i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// The reference (`quantize_row_q{4,5}_K_ref`) header and codes of one
/// super-block: writes `d`, `dmin` and the scales into `b[..16]` and the codes
/// `0..=search.nmax` into `l`.
pub(super) fn ref_block(x: &[f32], search: AsymSearch, b: &mut [u8], l: &mut [u8; QK_K]) {
    let mut aux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * (j + 1)];
        let sum_x2 = xs.iter().fold(0.0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx_quants(xs, &weights, search, &mut l[32 * j..], &mut aux);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls = scales.map(|s| (nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (nearest_int(inv_min * m) as u8).min(63));
    pack_scale_min_k4(&ls, &lm, &mut b[SCALES..SCALES + 12]);
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    requantize(x, b, search.nmax as i32, l);
}

/// The importance-weighted (`quantize_row_q{4,5}_K_impl`) header and codes of
/// one super-block. `clamp_scales` applies the `MIN(63, ·)` that only the Q5_K
/// variant has (it matters only for negative sub-block scales).
pub(super) fn weighted_block(
    x: &[f32],
    qw: &[f32],
    nmax: u8,
    clamp_scales: bool,
    b: &mut [u8],
    l: &mut [u8; QK_K],
) {
    let search = AsymSearch {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    };
    let mut aux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut sw = [0.0f32; 8];
    let sigma2 = 2.0 * x.iter().fold(0.0f32, |s, &v| s + v * v) / QK_K as f32;
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * (j + 1)];
        for ((w, &q), &v) in weights.iter_mut().zip(&qw[32 * j..]).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        sw[j] = weights.iter().fold(0.0f32, |s, &w| s + w);
        let (s, m) = make_qkx_quants(xs, &weights, search, &mut l[32 * j..], &mut aux);
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(&scales, 63, &mut ls, &sw);
    let m_block = make_qp_quants(&mins, 63, &mut lm, &sw);
    if clamp_scales {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    pack_scale_min_k4(&ls, &lm, &mut b[SCALES..SCALES + 12]);
    put_f16(b, 0, d_block);
    put_f16(b, 2, m_block);
    requantize(x, b, nmax as i32, l);
}

/// Packs 256 4-bit codes as Q4_K/Q5_K store them.
#[inline]
pub(super) fn pack_nibbles(l: &[u8; QK_K], qs: &mut [u8]) {
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = (l[64 * c + i] & 0x0f) | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// `quantize_row_q4_K_ref`.
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        ref_block(x, SEARCH, b, &mut l);
        pack_nibbles(&l, &mut b[QS..QS + 128]);
    }
}

/// `quantize_row_q4_K_impl` with an importance vector.
pub(crate) fn quantize_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(SIZE)) {
        weighted_block(x, qw, 15, false, b, &mut l);
        pack_nibbles(&l, &mut b[QS..QS + 128]);
    }
}
