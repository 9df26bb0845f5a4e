//! Q6_K: 6-bit symmetric codes in 16 sub-blocks of 16, each with a signed
//! 8-bit scale against the f16 super-block scale `d`.
//!
//! Block layout (210 bytes): `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`. In
//! each half `h` of 128 elements, element `128h + 32k + l` keeps its low nibble
//! in `ql[64h + 32(k % 2) + l]` (bits `4(k / 2)..`) and its two high bits in
//! bits `2k..2k+2` of `qh[32h + l]`; codes are biased by 32.

use super::search::make_qx_quants;
use super::{f16_at, nearest_int, put_f16, GROUP_MAX_EPS, QK_K};

const SIZE: usize = 210;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, D);
        // Sub-block g = 8h + 2k + u holds elements 128h + 32k + 16u + i.
        for (g, o) in o.chunks_exact_mut(16).enumerate() {
            let (h, k, u) = (g / 8, (g % 8) / 2, g % 2);
            let dl = d * (b[SCALES + g] as i8) as f32;
            let ql = &b[64 * h + 32 * (k % 2) + 16 * u..][..16];
            let qh = &b[QH + 32 * h + 16 * u..][..16];
            for ((o, &lo), &hi) in o.iter_mut().zip(ql).zip(qh) {
                let q = ((lo >> (4 * (k / 2))) & 0x0f) | (((hi >> (2 * k)) & 3) << 4);
                *o = dl * (q as i8 - 32) as f32;
            }
        }
    }
}

/// Quantizes one super-block given the search's sub-block scales and codes.
fn finish(x: &[f32], scales: &[f32; 16], b: &mut [u8], l: &mut [i8; QK_K]) {
    let (mut max_abs, mut max_scale) = (0.0f32, 0.0f32);
    for &s in scales {
        if s.abs() > max_abs {
            max_abs = s.abs();
            max_scale = s;
        }
    }
    if max_abs < GROUP_MAX_EPS {
        b.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_all = put_f16(b, D, 1.0 / iscale);
    for (j, &s) in scales.iter().enumerate() {
        b[SCALES + j] = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    for j in 0..QK_K / 16 {
        let d = d_all * (b[SCALES + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * (j + 1) {
            l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        for i in 0..32 {
            let at = |k: usize| l[128 * h + 32 * k + i] as u8;
            b[64 * h + i] = (at(0) & 0x0f) | ((at(2) & 0x0f) << 4);
            b[64 * h + 32 + i] = (at(1) & 0x0f) | ((at(3) & 0x0f) << 4);
            b[QH + 32 * h + i] =
                (at(0) >> 4) | ((at(1) >> 4) << 2) | ((at(2) >> 4) << 4) | ((at(3) >> 4) << 6);
        }
    }
}

/// `quantize_row_q6_K_ref`: sub-block codes by `make_qx_quants` with weights `x²`.
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        for (j, s) in scales.iter_mut().enumerate() {
            let r = 16 * j..16 * (j + 1);
            *s = make_qx_quants(&x[r.clone()], 32, &mut l[r], None);
        }
        finish(x, &scales, b, &mut l);
    }
}

/// `quantize_row_q6_K_impl`: the same with the importance itself as the
/// weights (llama.cpp does not mix in `σ² + x²` here).
pub(crate) fn quantize_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(SIZE)) {
        let mut scales = [0.0f32; 16];
        for (j, s) in scales.iter_mut().enumerate() {
            let r = 16 * j..16 * (j + 1);
            *s = make_qx_quants(&x[r.clone()], 32, &mut l[r.clone()], Some(&qw[r]));
        }
        finish(x, &scales, b, &mut l);
    }
}
