//! Q5_K: Q4_K with a fifth bit per code (codes `0..=31`).
//!
//! Block layout (176 bytes): `d`, `dmin`, `scales[12]` (as Q4_K), `qh[32]`
//! (the fifth bit of element `32b + l` is bit `b` of `qh[l]`), `qs[128]` (the
//! low nibbles, as Q4_K).

use super::q4k::{factors, pack_nibbles, ref_block, weighted_block};
use super::search::AsymSearch;
use super::QK_K;

const SIZE: usize = 176;
const QH: usize = 16;
const QS: usize = 48;

pub(crate) fn dequantize(bytes: &[u8], out: &mut [f32]) {
    for (b, o) in bytes.chunks_exact(SIZE).zip(out.chunks_exact_mut(QK_K)) {
        let f = factors(b);
        let qh = &b[QH..QH + 32];
        for (j, o) in o.chunks_exact_mut(32).enumerate() {
            let (dl, ml) = f[j];
            let qs = &b[QS + 32 * (j / 2)..][..32];
            let shift = 4 * (j % 2);
            for ((o, &q), &h) in o.iter_mut().zip(qs).zip(qh) {
                let code = ((q >> shift) & 0x0f) | (((h >> j) & 1) << 4);
                *o = dl * code as f32 - ml;
            }
        }
    }
}

/// Splits 256 5-bit codes into the high-bit array and the nibbles.
fn pack(l: &[u8; QK_K], b: &mut [u8]) {
    let mut low = [0u8; QK_K];
    let qh = &mut b[QH..QH + 32];
    qh.fill(0);
    for (e, (&q, low)) in l.iter().zip(low.iter_mut()).enumerate() {
        let mut q = q;
        if q > 15 {
            q -= 16;
            qh[e % 32] |= 1 << (e / 32);
        }
        *low = q;
    }
    pack_nibbles(&low, &mut b[QS..QS + 128]);
}

/// `quantize_row_q5_K_ref`.
pub(crate) fn quantize(values: &[f32], out: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    let mut l = [0u8; QK_K];
    for (x, b) in values.chunks_exact(QK_K).zip(out.chunks_exact_mut(SIZE)) {
        ref_block(x, SEARCH, b, &mut l);
        pack(&l, b);
    }
}

/// `quantize_row_q5_K_impl` with an importance vector.
pub(crate) fn quantize_weighted(values: &[f32], importance: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let blocks = values.chunks_exact(QK_K).zip(importance.chunks_exact(QK_K));
    for ((x, qw), b) in blocks.zip(out.chunks_exact_mut(SIZE)) {
        weighted_block(x, qw, 31, true, b, &mut l);
        pack(&l, b);
    }
}
