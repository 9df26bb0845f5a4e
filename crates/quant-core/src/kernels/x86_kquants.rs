//! AVX2+FMA kernels of the K-quants Q4_K, Q5_K and Q6_K. Each function
//! computes what its namesake in `scalar_kquants` computes (up to float
//! summation order); callers guarantee the CPU level and whole super-blocks,
//! as for `x86`.
//!
//! A super-block's codes come out of its bytes 32 at a time, in column
//! order, as one register per activation block: the int8 products are one
//! `vpmaddubsw` per block (Q6_K: sign trick, then `vpmaddwd` against its two
//! 16-wide sub-block scales) and one float multiply. The int8 products
//! stream near the memory rate at AVX2, so `Isa::Avx512` runs them as they
//! are. The f32 products are bound by the code conversions; Q4_K and Q6_K
//! have AVX-512 variants that measured 5–10% faster than AVX2 at 4096×4096
//! ([`q4_k_dot_f32_512`]: per-sub-block tables `dl·k − ml` indexed by
//! `vpermps`; [`q6_k_dot_f32_512`]: 16 codes per conversion). The same
//! table design for Q5_K (`vpermt2ps`) measured no faster than AVX2, so
//! Q5_K's f32 product runs the AVX2 code at AVX-512.

use std::arch::x86_64::*;

use super::scalar_kquants::{
    k_bytes, k_factors, q6_k_scale, K_SCALES, Q4_K_BYTES, Q4_K_QS, Q5_K_QH, Q5_K_QS, Q6_K_BYTES,
    Q6_K_D, Q6_K_QH, Q6_K_SCALES, SUPER,
};
use super::x86::{
    arr, arr_mut, block_dot_i8_f32, block_f32, dot_u8i8, f16c_at, hsum, hsum512, i8x8_f32,
    load_f32x16, load_f32x8, load_u8x16, load_u8x32, prefetch, prefetch_distance, store_f32x8,
};
use super::x86_legacy::halves;
use super::BLOCK;

/// Sub-blocks (Q4_K/Q5_K) or 32-blocks (Q6_K) per super-block.
const PER_SUPER: usize = SUPER / BLOCK;

/// Prefetches the cache lines of super-block `s` (of `size` bytes) `ahead`
/// bytes ahead.
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch_super(bytes: &[u8], s: usize, size: usize, ahead: usize) {
    for line in (0..size).step_by(64) {
        prefetch(bytes, s * size + ahead + line);
    }
}

/// The codes of sub-blocks `2c` and `2c + 1` of a Q4_K (`FIVE = false`)
/// or Q5_K super-block, as 32 bytes each in column order.
#[inline]
#[target_feature(enable = "avx2")]
fn k_codes<const FIVE: bool>(blk: &[u8], c: usize) -> [__m256i; 2] {
    let qs = if FIVE { Q5_K_QS } else { Q4_K_QS };
    let raw = load_u8x32(arr(&blk[qs + 32 * c..][..32]));
    let mask = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(raw, mask);
    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
    if !FIVE {
        return [lo, hi];
    }
    let qh = load_u8x32(arr(&blk[Q5_K_QH..Q5_K_QH + 32]));
    let sixteen = _mm256_set1_epi8(0x10);
    let fifth = |j: usize| {
        let bit = _mm256_set1_epi8((1u8 << j) as i8);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        _mm256_and_si256(set, sixteen)
    };
    [
        _mm256_or_si256(lo, fifth(2 * c)),
        _mm256_or_si256(hi, fifth(2 * c + 1)),
    ]
}

/// Q4_K or Q5_K row: `w = dl·q − ml`, multiplied and subtracted separately
/// (the codec's values bit for bit).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn k_dequant<const FIVE: bool>(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(k_bytes(FIVE))
        .zip(out.chunks_exact_mut(SUPER))
    {
        let f = k_factors(blk);
        for (c, o) in o.chunks_exact_mut(2 * BLOCK).enumerate() {
            let codes = k_codes::<FIVE>(blk, c);
            for (u, o) in o.chunks_exact_mut(BLOCK).enumerate() {
                let (dl, ml) = f[2 * c + u];
                let (dl, ml) = (_mm256_set1_ps(dl), _mm256_set1_ps(ml));
                let (lo, hi) = halves(codes[u]);
                for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, false)) {
                    store_f32x8(arr_mut(o), _mm256_sub_ps(_mm256_mul_ps(q, dl), ml));
                }
            }
        }
    }
}

/// The 8 six-bit scales and the 8 six-bit minima of a Q4_K/Q5_K
/// super-block as i32 lanes (llama.cpp's `utmp` unpacking of the 12 bytes;
/// the same values as `scale_min_k4`).
#[inline]
#[target_feature(enable = "avx2")]
fn k_scales_mins(blk: &[u8]) -> (__m256i, __m256i) {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let s: &[u8; 12] = arr(&blk[K_SCALES..K_SCALES + 12]);
    let word = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let sc = [u0 & M6, (u2 & M4) | (((u0 >> 6) & M2) << 4)];
    let mn = [u1 & M6, ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4)];
    let lanes = |w: [u32; 2]| {
        let v = _mm_set_epi32(0, 0, w[1] as i32, w[0] as i32);
        _mm256_cvtepu8_epi32(v)
    };
    (lanes(sc), lanes(mn))
}

/// The lane sums of 8 vectors: lane `j` of the result is `Σ v[j]`.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8_epi32(v: [__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let a = _mm256_hadd_epi32(h01, h23);
    let b = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(a, b, 0x20),
        _mm256_permute2x128_si256(a, b, 0x31),
    )
}

/// [`hsum8_epi32`] for f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8_ps(v: [__m256; 8]) -> __m256 {
    let h01 = _mm256_hadd_ps(v[0], v[1]);
    let h23 = _mm256_hadd_ps(v[2], v[3]);
    let h45 = _mm256_hadd_ps(v[4], v[5]);
    let h67 = _mm256_hadd_ps(v[6], v[7]);
    let a = _mm256_hadd_ps(h01, h23);
    let b = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps(a, b, 0x20),
        _mm256_permute2f128_ps(a, b, 0x31),
    )
}

/// The f32 lanes of i32 lanes times a broadcast `f`.
#[inline]
#[target_feature(enable = "avx2")]
fn scaled(v: __m256i, f: f32) -> __m256 {
    _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(f))
}

/// `xsum[b]` is the sum of `x` over block `b`. Per super-block: the 8
/// sub-block sums `Σ q·x` gathered into one vector, one FMA with the 8
/// factors `d·sc`, one with the minima `dmin·m` against `xsum`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn k_dot_f32<const FIVE: bool>(bytes: &[u8], x: &[f32], xsum: &[f32]) -> f32 {
    let size = k_bytes(FIVE);
    let ahead = prefetch_distance();
    let (mut acc, mut mins) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (s, blk) in bytes.chunks_exact(size).enumerate() {
        prefetch_super(bytes, s, size, ahead);
        let xs = &x[s * SUPER..][..SUPER];
        let mut v = [_mm256_setzero_ps(); PER_SUPER];
        for c in 0..PER_SUPER / 2 {
            for (u, codes) in k_codes::<FIVE>(blk, c).into_iter().enumerate() {
                let j = 2 * c + u;
                let (lo, hi) = halves(codes);
                v[j] = block_dot_i8_f32(lo, hi, &xs[j * BLOCK..][..BLOCK]);
            }
        }
        let (sc, mn) = k_scales_mins(blk);
        let dl = scaled(sc, f16c_at(blk, 0));
        let ml = scaled(mn, f16c_at(blk, 2));
        acc = _mm256_fmadd_ps(hsum8_ps(v), dl, acc);
        let xsum = load_f32x8(arr(&xsum[PER_SUPER * s..][..PER_SUPER]));
        mins = _mm256_fmadd_ps(ml, xsum, mins);
    }
    hsum(_mm256_sub_ps(acc, mins))
}

/// AVX-512 f32 product of a Q4_K row: per sub-block a 16-entry table
/// `dl·k − ml` that `vpermps` indexes with the nibbles (bytes zero-extended
/// to 16 lanes: the low nibble directly, the high one after a 4-bit shift),
/// one FMA per 16 weights against `x` in column order; no conversions and
/// no minima term.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn q4_k_dot_f32_512(bytes: &[u8], x: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (s, blk) in bytes.chunks_exact(Q4_K_BYTES).enumerate() {
        prefetch_super(bytes, s, Q4_K_BYTES, ahead);
        let xs = &x[s * SUPER..][..SUPER];
        let (sc, mn) = k_scales_mins(blk);
        let (mut dl, mut ml) = ([0.0f32; 8], [0.0f32; 8]);
        store_f32x8(&mut dl, scaled(sc, f16c_at(blk, 0)));
        store_f32x8(&mut ml, scaled(mn, f16c_at(blk, 2)));
        let lut = |j: usize| _mm512_fmsub_ps(iota, _mm512_set1_ps(dl[j]), _mm512_set1_ps(ml[j]));
        for c in 0..PER_SUPER / 2 {
            let (lut_lo, lut_hi) = (lut(2 * c), lut(2 * c + 1));
            for half in 0..2 {
                let raw = load_u8x16(arr(&blk[Q4_K_QS + 32 * c + 16 * half..][..16]));
                let idx = _mm512_cvtepu8_epi32(raw);
                let xlo = load_f32x16(arr(&xs[64 * c + 16 * half..][..16]));
                let xhi = load_f32x16(arr(&xs[64 * c + 32 + 16 * half..][..16]));
                a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, lut_lo), xlo, a0);
                let hi = _mm512_srli_epi32::<4>(idx);
                a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(hi, lut_hi), xhi, a1);
            }
        }
    }
    hsum512(_mm512_add_ps(a0, a1))
}

/// `xms[b]` is `d_b · Σ q` of activation block `b`. Per super-block: the 8
/// integer sums gathered into one vector, converted once, one FMA with the
/// factors `d·sc·d_x`, one for the minima.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn k_dot_q8<const FIVE: bool>(bytes: &[u8], xq: &[i8], xd: &[f32], xms: &[f32]) -> f32 {
    let size = k_bytes(FIVE);
    let ahead = prefetch_distance();
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let (mut acc, mut mins) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (s, blk) in bytes.chunks_exact(size).enumerate() {
        prefetch_super(bytes, s, size, ahead);
        let xs = &xq[s * SUPER..][..SUPER];
        let mut p = [_mm256_setzero_si256(); PER_SUPER];
        for c in 0..PER_SUPER / 2 {
            for (u, codes) in k_codes::<FIVE>(blk, c).into_iter().enumerate() {
                let j = 2 * c + u;
                p[j] = dot_u8i8(codes, load_u8x32(arr(&xs[j * BLOCK..][..BLOCK])));
            }
        }
        let (sc, mn) = k_scales_mins(blk);
        let xd = load_f32x8(arr(&xd[PER_SUPER * s..][..PER_SUPER]));
        let f = _mm256_mul_ps(scaled(sc, f16c_at(blk, 0)), xd);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_epi32(p)), f, acc);
        let xms = load_f32x8(arr(&xms[PER_SUPER * s..][..PER_SUPER]));
        mins = _mm256_fmadd_ps(scaled(mn, f16c_at(blk, 2)), xms, mins);
    }
    hsum(_mm256_sub_ps(acc, mins))
}

// ------------------------------------------------------------------- Q6_K

/// The codes minus 32 of the 4 blocks of half `h` of a Q6_K super-block,
/// as signed bytes in column order.
#[inline]
#[target_feature(enable = "avx2")]
fn q6_k_codes(blk: &[u8], h: usize) -> [__m256i; 4] {
    let ql0 = load_u8x32(arr(&blk[64 * h..][..32]));
    let ql1 = load_u8x32(arr(&blk[64 * h + 32..][..32]));
    let qh = load_u8x32(arr(&blk[Q6_K_QH + 32 * h..][..32]));
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let bias = _mm256_set1_epi8(32);
    let high = |v: __m256i| _mm256_slli_epi16(_mm256_and_si256(v, m2), 4);
    let code = |low: __m256i, hi2: __m256i| {
        _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low, m4), high(hi2)), bias)
    };
    [
        code(ql0, qh),
        code(ql1, _mm256_srli_epi16(qh, 2)),
        code(_mm256_srli_epi16(ql0, 4), _mm256_srli_epi16(qh, 4)),
        code(_mm256_srli_epi16(ql1, 4), _mm256_srli_epi16(qh, 6)),
    ]
}

/// Q6_K row: `w = (d·sc)·(q − 32)`, the codec's values bit for bit.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q6_k_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q6_K_BYTES)
        .zip(out.chunks_exact_mut(SUPER))
    {
        let d = f16c_at(blk, Q6_K_D);
        for (h, o) in o.chunks_exact_mut(4 * BLOCK).enumerate() {
            let codes = q6_k_codes(blk, h);
            for (k, o) in o.chunks_exact_mut(BLOCK).enumerate() {
                let b = 4 * h + k;
                let (lo, hi) = halves(codes[k]);
                let q = block_f32(lo, hi, true);
                for (i, (o, q)) in o.chunks_exact_mut(8).zip(q).enumerate() {
                    let dl = _mm256_set1_ps(d * q6_k_scale(blk, 2 * b + i / 2) as f32);
                    store_f32x8(arr_mut(o), _mm256_mul_ps(q, dl));
                }
            }
        }
    }
}

/// `Σ q·x` over 16 signed codes (the low 16 bytes of `v`) as 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn half_dot_i8_f32(v: __m128i, x: &[f32]) -> __m256 {
    let p = _mm256_mul_ps(i8x8_f32(v), load_f32x8(arr(&x[..8])));
    _mm256_fmadd_ps(
        i8x8_f32(_mm_srli_si128(v, 8)),
        load_f32x8(arr(&x[8..16])),
        p,
    )
}

/// The 16 i8 sub-block scales of a Q6_K super-block times its `d`, as two
/// vectors (sub-blocks 0–7, 8–15).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn q6_k_factors(blk: &[u8]) -> [__m256; 2] {
    let sc = load_u8x16(arr(&blk[Q6_K_SCALES..Q6_K_SCALES + 16]));
    let d = _mm256_set1_ps(f16c_at(blk, Q6_K_D));
    [
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc)), d),
        _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8))),
            d,
        ),
    ]
}

/// Per super-block: the 16 sub-block sums `Σ q·x` gathered into two
/// vectors, one FMA each with the factors `d·sc`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q6_k_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let (mut t0, mut t1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (s, blk) in bytes.chunks_exact(Q6_K_BYTES).enumerate() {
        prefetch_super(bytes, s, Q6_K_BYTES, ahead);
        let xs = &x[s * SUPER..][..SUPER];
        let mut v = [_mm256_setzero_ps(); 2 * PER_SUPER];
        for h in 0..2 {
            for (k, codes) in q6_k_codes(blk, h).into_iter().enumerate() {
                let b = 4 * h + k;
                let xb = &xs[b * BLOCK..][..BLOCK];
                let (lo, hi) = halves(codes);
                v[2 * b] = half_dot_i8_f32(lo, &xb[..16]);
                v[2 * b + 1] = half_dot_i8_f32(hi, &xb[16..]);
            }
        }
        let [f0, f1] = q6_k_factors(blk);
        let (v0, v1) = v.split_at(PER_SUPER);
        t0 = _mm256_fmadd_ps(hsum8_ps(*arr(v0)), f0, t0);
        t1 = _mm256_fmadd_ps(hsum8_ps(*arr(v1)), f1, t1);
    }
    hsum(_mm256_add_ps(t0, t1))
}

/// AVX-512 f32 product of a Q6_K row: 16 codes per conversion
/// (`vpmovsxbd`, `vcvtdq2ps`), scaled by their sub-block's `d·sc` and one
/// FMA against `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) fn q6_k_dot_f32_512(bytes: &[u8], x: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (s, blk) in bytes.chunks_exact(Q6_K_BYTES).enumerate() {
        prefetch_super(bytes, s, Q6_K_BYTES, ahead);
        let xs = &x[s * SUPER..][..SUPER];
        let mut dl = [0.0f32; 2 * PER_SUPER];
        let [f0, f1] = q6_k_factors(blk);
        let (d0, d1) = dl.split_at_mut(PER_SUPER);
        store_f32x8(arr_mut(d0), f0);
        store_f32x8(arr_mut(d1), f1);
        for h in 0..2 {
            for (k, codes) in q6_k_codes(blk, h).into_iter().enumerate() {
                let b = 4 * h + k;
                let (lo, hi) = halves(codes);
                let w = |v: __m128i, g: usize| {
                    let q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
                    _mm512_mul_ps(q, _mm512_set1_ps(dl[g]))
                };
                let x0 = load_f32x16(arr(&xs[b * BLOCK..][..16]));
                let x1 = load_f32x16(arr(&xs[b * BLOCK + 16..][..16]));
                a0 = _mm512_fmadd_ps(w(lo, 2 * b), x0, a0);
                a1 = _mm512_fmadd_ps(w(hi, 2 * b + 1), x1, a1);
            }
        }
    }
    hsum512(_mm512_add_ps(a0, a1))
}

/// Per block of 32: the sign trick's `vpmaddubsw`, then `vpmaddwd` against
/// the block's two 16-wide sub-block scales (picked from the 16 scale bytes
/// by `vpshufb`); per super-block the 8 block sums gathered into one
/// vector, converted once, one FMA with `d · d_x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q6_k_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut acc = _mm256_setzero_ps();
    for (s, blk) in bytes.chunks_exact(Q6_K_BYTES).enumerate() {
        prefetch_super(bytes, s, Q6_K_BYTES, ahead);
        let xs = &xq[s * SUPER..][..SUPER];
        let scales = load_u8x16(arr(&blk[Q6_K_SCALES..Q6_K_SCALES + 16]));
        let mut p = [_mm256_setzero_si256(); PER_SUPER];
        for h in 0..2 {
            for (k, w) in q6_k_codes(blk, h).into_iter().enumerate() {
                let b = 4 * h + k;
                let xb = load_u8x32(arr(&xs[b * BLOCK..][..BLOCK]));
                // |w| ≤ 32 and |x| ≤ 127: the pair sums fit in i16.
                let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xb, w));
                // Bytes 0–7 pick scale 2b, bytes 8–15 scale 2b + 1.
                let pick = _mm_set_epi64x(
                    (0x0101_0101_0101_0101u64 * (2 * b as u64 + 1)) as i64,
                    (0x0101_0101_0101_0101u64 * (2 * b as u64)) as i64,
                );
                let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                p[b] = _mm256_madd_epi16(prod, sc);
            }
        }
        let xd = load_f32x8(arr(&xd[PER_SUPER * s..][..PER_SUPER]));
        let f = _mm256_mul_ps(_mm256_set1_ps(f16c_at(blk, Q6_K_D)), xd);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hsum8_epi32(p)), f, acc);
    }
    hsum(acc)
}
