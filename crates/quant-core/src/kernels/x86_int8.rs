//! AVX2+FMA kernels of [`super::Int8Matrix`], and the int8 activation
//! quantizer of [`super::Q8Vector`]. Each function computes what its
//! namesake in `int8` (or `scalar`) computes (up to float summation order); callers
//! guarantee the CPU level and whole blocks, as for `x86`.

use std::arch::x86_64::*;

use super::int8::Int8Row;
use super::x86::{
    arr, arr_mut, block_dot_i8_f32, block_f32, dot_f32, dot_i8, hsum, load_f32x8, load_u8x32,
    prefetch, prefetch_distance, store_f32x8, two_chains,
};
use super::BLOCK;

/// The 32 codes of block `b` of a row, as (codes 0–15, codes 16–31).
#[inline]
#[target_feature(enable = "avx2")]
fn codes(c: &[u8], b: usize) -> (__m128i, __m128i) {
    let q = load_u8x32(arr(&c[b * BLOCK..][..BLOCK]));
    (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1))
}

#[target_feature(enable = "avx2,fma")]
pub(crate) fn int8_dequant(row: &Int8Row<'_>, out: &mut [f32]) {
    let c: &[u8] = bytemuck::cast_slice(row.codes);
    let per_group = row.group / BLOCK;
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let g = b / per_group;
        let (s, m) = (_mm256_set1_ps(row.scales[g]), _mm256_set1_ps(row.mins[g]));
        let (lo, hi) = codes(c, b);
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_fmadd_ps(q, s, m));
        }
    }
}

/// `Σ_g scale_g Σ c·x + Σ_g min_g xgsum_g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int8_dot_f32(row: &Int8Row<'_>, x: &[f32], xgsum: &[f32]) -> f32 {
    let c: &[u8] = bytemuck::cast_slice(row.codes);
    let (blocks, per_group) = (c.len() / BLOCK, row.group / BLOCK);
    let ahead = prefetch_distance();
    let mut total = _mm256_setzero_ps();
    for (g, &s) in row.scales.iter().enumerate() {
        let (first, end) = (g * per_group, ((g + 1) * per_group).min(blocks));
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = first;
        while b + 2 <= end {
            prefetch(c, b * BLOCK + ahead);
            let (lo, hi) = codes(c, b);
            a0 = _mm256_add_ps(a0, block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]));
            let (lo, hi) = codes(c, b + 1);
            a1 = _mm256_add_ps(a1, block_dot_i8_f32(lo, hi, &x[(b + 1) * BLOCK..][..BLOCK]));
            b += 2;
        }
        if b < end {
            let (lo, hi) = codes(c, b);
            a0 = _mm256_add_ps(a0, block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]));
        }
        total = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(s), total);
    }
    hsum(total) + dot_f32(row.mins, xgsum)
}

/// `Σ_b scale_g(b) · xd_b · Σ c·x_q` (the `min` terms are added by the caller).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn int8_dot_q8(row: &Int8Row<'_>, xq: &[i8], xd: &[f32]) -> f32 {
    let c: &[u8] = bytemuck::cast_slice(row.codes);
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let per_group = row.group / BLOCK;
    let block = |b: usize, acc: __m256| {
        let p = dot_i8(
            load_u8x32(arr(&c[b * BLOCK..][..BLOCK])),
            load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])),
        );
        let f = _mm256_set1_ps(row.scales[b / per_group] * xd[b]);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc)
    };
    two_chains(c.len() / BLOCK, c, BLOCK, block)
}

/// Quantizes one block of 32 activations to int8 exactly as
/// `scalar::quantize_block_q8` does (the same `max|x| / 127` scale, the same
/// `x · (1/d)` products, ties rounded away from zero), eight lanes at a
/// time; returns (scale, sum of the codes).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn quantize_block_q8(x: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let v: [__m256; 4] = std::array::from_fn(|i| load_f32x8(arr(&x[8 * i..8 * i + 8])));
    let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| {
        _mm256_max_ps(m, _mm256_and_ps(v, abs_mask))
    });
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let (half, neg_half, one) = (
        _mm256_set1_ps(0.5),
        _mm256_set1_ps(-0.5),
        _mm256_set1_ps(1.0),
    );
    let codes: [__m256i; 4] = std::array::from_fn(|i| {
        let s = _mm256_mul_ps(v[i], id);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(s);
        let frac = _mm256_sub_ps(s, t);
        let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
        let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, neg_half), one);
        _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, up), down))
    });
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(codes[0], codes[1]),
        _mm256_add_epi32(codes[2], codes[3]),
    );
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    // |codes| ≤ 127: the saturating packs are exact; they interleave 128-bit
    // lanes, which the final permutation undoes.
    let p = _mm256_packs_epi16(
        _mm256_packs_epi32(codes[0], codes[1]),
        _mm256_packs_epi32(codes[2], codes[3]),
    );
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    store_u8x32(bytemuck::cast_mut(q), p);
    (d, _mm_cvtsi128_si32(s))
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_u8x32(out: &mut [u8; 32], v: __m256i) {
    // SAFETY: `out` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
}
