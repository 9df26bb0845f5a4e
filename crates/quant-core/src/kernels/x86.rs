//! AVX2+FMA and AVX-512 (F/BW/VL/VNNI) kernels. Each function computes what
//! its namesake in `scalar` computes (up to float summation order).
//!
//! Callers guarantee the CPU level (`Isa::check` or `Isa::detect`) and the
//! slice lengths the scalar versions assume: whole blocks, `x` as long as the
//! row. Loads go through `load_*` helpers that take fixed-size arrays, so the
//! only unchecked memory access is the unaligned load of a whole array.

use std::arch::x86_64::*;

use super::scalar::{Int4Row, NIB_BYTES, Q8_0_BYTES};
use super::{BLOCK, UNIT};

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_f32x8(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 8 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_f32x8(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable f32; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_u8x16(x: &[u8; 16]) -> __m128i {
    // SAFETY: `x` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load_u8x32(x: &[u8; 32]) -> __m256i {
    // SAFETY: `x` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn load_f32x16(x: &[f32; 16]) -> __m512 {
    // SAFETY: `x` is 16 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// Splits a slice into a fixed-size array reference (the length is known to
/// the caller; the check compiles away inside `chunks_exact` loops).
#[inline(always)]
pub(super) fn arr<T, const N: usize>(s: &[T]) -> &[T; N] {
    s.try_into().expect("chunk of the array length")
}

#[inline(always)]
pub(super) fn arr_mut<T, const N: usize>(s: &mut [T]) -> &mut [T; N] {
    s.try_into().expect("chunk of the array length")
}

/// The little-endian f16 at `b[at..at + 2]` as f32, through F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) fn f16c_at(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 nibble codes of a block as (codes 0–15, codes 16–31).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn nibbles(qs: &[u8; 16]) -> (__m128i, __m128i) {
    let raw = load_u8x16(qs);
    let mask = _mm_set1_epi8(0x0f);
    (
        _mm_and_si128(raw, mask),
        _mm_and_si128(_mm_srli_epi16(raw, 4), mask),
    )
}

/// The 32 nibble codes of a block in one register, codes 0–31 in order.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn nibbles256(qs: &[u8; 16]) -> __m256i {
    let (lo, hi) = nibbles(qs);
    _mm256_set_m128i(hi, lo)
}

/// Eight unsigned bytes (the low 8 of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn u8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Eight signed bytes (the low 8 of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn i8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// The 32 codes of a block, given as bytes (codes 0–15, codes 16–31), as
/// four vectors of 8 f32; `signed` reads the bytes as `i8`, else as `u8`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn block_f32(lo: __m128i, hi: __m128i, signed: bool) -> [__m256; 4] {
    let cvt = |v: __m128i| if signed { i8x8_f32(v) } else { u8x8_f32(v) };
    [
        cvt(lo),
        cvt(_mm_srli_si128(lo, 8)),
        cvt(hi),
        cvt(_mm_srli_si128(hi, 8)),
    ]
}

/// `Σ q·x` over one block of signed codes (codes 0–15, codes 16–31) as 8
/// f32 lanes, in two independent chains.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn block_dot_i8_f32(lo: __m128i, hi: __m128i, xb: &[f32]) -> __m256 {
    let q = block_f32(lo, hi, true);
    let p0 = _mm256_mul_ps(q[0], load_f32x8(arr(&xb[0..8])));
    let p1 = _mm256_mul_ps(q[1], load_f32x8(arr(&xb[8..16])));
    let p0 = _mm256_fmadd_ps(q[2], load_f32x8(arr(&xb[16..24])), p0);
    let p1 = _mm256_fmadd_ps(q[3], load_f32x8(arr(&xb[24..32])), p1);
    _mm256_add_ps(p0, p1)
}

/// Σ a_i·b_i over 32 signed bytes, as 8 i32 lanes (GGML's sign trick:
/// `vpmaddubsw` multiplies unsigned by signed bytes).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_i8(a: __m256i, b: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Σ a_i·b_i over 32 unsigned (`a` ≤ 127) by signed bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn dot_u8i8(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut ca = a[..n].chunks_exact(16);
    let mut cb = b[..n].chunks_exact(16);
    for (a, b) in (&mut ca).zip(&mut cb) {
        acc0 = _mm256_fmadd_ps(load_f32x8(arr(&a[..8])), load_f32x8(arr(&b[..8])), acc0);
        acc1 = _mm256_fmadd_ps(load_f32x8(arr(&a[8..])), load_f32x8(arr(&b[8..])), acc1);
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(a, b)| a * b)
        .sum();
    hsum(_mm256_add_ps(acc0, acc1)) + tail
}

// ---------------------------------------------------------------- int4, AVX2

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int4_dequant(row: &Int4Row<'_>, out: &mut [f32]) {
    for (b, (qs, o)) in row
        .qs
        .chunks_exact(NIB_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let g = b * BLOCK / row.group;
        let (s, m) = (_mm256_set1_ps(row.scales[g]), _mm256_set1_ps(row.mins[g]));
        let (lo, hi) = nibbles(arr(qs));
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, false)) {
            store_f32x8(arr_mut(o), _mm256_fmadd_ps(q, s, m));
        }
    }
}

/// The blocks of group `g` of a row of `blocks` blocks, `per_group` per group.
#[inline(always)]
fn group_blocks(g: usize, per_group: usize, blocks: usize) -> std::ops::Range<usize> {
    g * per_group..((g + 1) * per_group).min(blocks)
}

/// `Σ q·x` over one block of unsigned nibble codes, as 8 f32 lanes in two
/// independent FMA chains added to `acc`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nib_block_dot_f32(qs: &[u8; 16], xb: &[f32; 32], acc: [__m256; 2]) -> [__m256; 2] {
    let (lo, hi) = nibbles(qs);
    let a0 = _mm256_fmadd_ps(u8x8_f32(lo), load_f32x8(arr(&xb[0..8])), acc[0]);
    let a1 = _mm256_fmadd_ps(
        u8x8_f32(_mm_srli_si128(lo, 8)),
        load_f32x8(arr(&xb[8..16])),
        acc[1],
    );
    let a0 = _mm256_fmadd_ps(u8x8_f32(hi), load_f32x8(arr(&xb[16..24])), a0);
    let a1 = _mm256_fmadd_ps(
        u8x8_f32(_mm_srli_si128(hi, 8)),
        load_f32x8(arr(&xb[24..32])),
        a1,
    );
    [a0, a1]
}

/// `xgsum[g]` is the sum of `x` over group `g` (shared by all rows).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int4_dot_f32(row: &Int4Row<'_>, x: &[f32], xgsum: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let blocks = row.qs.len() / NIB_BYTES;
    let per_group = row.group / BLOCK;
    let mut total = _mm256_setzero_ps();
    for (g, &scale) in row.scales.iter().enumerate() {
        // Two blocks at a time into four chains, so the FMA latency hides.
        let mut a = [_mm256_setzero_ps(); 2];
        let mut c = [_mm256_setzero_ps(); 2];
        let range = group_blocks(g, per_group, blocks);
        let mut b = range.start;
        while b + 2 <= range.end {
            prefetch(row.qs, b * NIB_BYTES + ahead);
            a = nib_block_dot_f32(arr(&row.qs[b * 16..][..16]), arr(&x[b * 32..][..32]), a);
            c = nib_block_dot_f32(
                arr(&row.qs[b * 16 + 16..][..16]),
                arr(&x[b * 32 + 32..][..32]),
                c,
            );
            b += 2;
        }
        if b < range.end {
            a = nib_block_dot_f32(arr(&row.qs[b * 16..][..16]), arr(&x[b * 32..][..32]), a);
        }
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(c[0], c[1]));
        total = _mm256_fmadd_ps(s, _mm256_set1_ps(scale), total);
    }
    hsum(total) + dot_f32(row.mins, xgsum)
}

/// `xgsum[g]` is `Σ_b d_b · sums_b` over the activation blocks of group `g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int4_dot_q8(row: &Int4Row<'_>, xq: &[i8], xd: &[f32], xgsum: &[f32]) -> f32 {
    let ahead = prefetch_distance();
    let blocks = row.qs.len() / NIB_BYTES;
    let per_group = row.group / BLOCK;
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let block = |b: usize, scale: f32, acc: __m256| {
        let codes = nibbles256(arr(&row.qs[b * NIB_BYTES..][..NIB_BYTES]));
        let p = dot_u8i8(codes, load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(scale * xd[b]), acc)
    };
    // The scale goes into each block's factor, so the two chains run on
    // across groups.
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for (g, &scale) in row.scales.iter().enumerate() {
        let range = group_blocks(g, per_group, blocks);
        let mut b = range.start;
        while b + 2 <= range.end {
            prefetch(row.qs, b * NIB_BYTES + ahead);
            a0 = block(b, scale, a0);
            a1 = block(b + 1, scale, a1);
            b += 2;
        }
        if b < range.end {
            a0 = block(b, scale, a0);
        }
    }
    hsum(_mm256_add_ps(a0, a1)) + dot_f32(row.mins, xgsum)
}

// ---------------------------------------------------------------- Q4_0, AVX2

/// `Σ_b block(b, ·)` over `blocks` blocks in two FMA chains (even and odd
/// blocks, so the FMA latency hides), prefetching `stride` bytes per block
/// ahead in `bytes`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn two_chains(
    blocks: usize,
    bytes: &[u8],
    stride: usize,
    block: impl Fn(usize, __m256) -> __m256,
) -> f32 {
    let ahead = prefetch_distance();
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut b = 0;
    while b + 2 <= blocks {
        prefetch(bytes, b * stride + ahead);
        a0 = block(b, a0);
        a1 = block(b + 1, a1);
        b += 2;
    }
    if b < blocks {
        a0 = block(b, a0);
    }
    hsum(_mm256_add_ps(a0, a1))
}

/// The f16 `bits` as f32, through F16C.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) fn f16c(bits: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The 32 codes of Q4_0 block `b` of a row, minus `OFF` (8 for Q4_0, 0
/// for Q4_1's unsigned codes), as signed bytes (codes 0–15, codes 16–31).
#[inline]
#[target_feature(enable = "avx2")]
fn q4_0_codes<const OFF: i8>(qs: &[u8], b: usize) -> (__m128i, __m128i) {
    let (lo, hi) = nibbles(arr(&qs[b * NIB_BYTES..][..NIB_BYTES]));
    let off = _mm_set1_epi8(OFF);
    (_mm_sub_epi8(lo, off), _mm_sub_epi8(hi, off))
}

/// A Q4_0 row held split: `qs` the blocks' nibbles, `d` their f16 scales.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dequant(qs: &[u8], d: &[u16], out: &mut [f32]) {
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let scale = _mm256_set1_ps(f16c(d[b]));
        let (lo, hi) = q4_0_codes::<8>(qs, b);
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_mul_ps(q, scale));
        }
    }
}

/// `Σ_b d_b Σ (q − OFF)·x` over a row of split nibble blocks (Q4_0 with
/// `OFF = 8`; Q4_1's scaled part with `OFF = 0`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dot_f32<const OFF: i8>(qs: &[u8], d: &[u16], x: &[f32]) -> f32 {
    let block = |b: usize, acc: __m256| {
        let (lo, hi) = q4_0_codes::<OFF>(qs, b);
        let scale = _mm256_set1_ps(f16c(d[b]));
        _mm256_fmadd_ps(
            block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]),
            scale,
            acc,
        )
    };
    two_chains(d.len(), qs, NIB_BYTES, block)
}

/// The int8 form of [`q4_0_dot_f32`] (same `OFF`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dot_q8<const OFF: i8>(qs: &[u8], d: &[u16], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let block = |b: usize, acc: __m256| {
        let (lo, hi) = q4_0_codes::<OFF>(qs, b);
        let (codes, xb) = (
            _mm256_set_m128i(hi, lo),
            load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])),
        );
        // Unsigned codes (Q4_1) need no sign trick.
        let p = if OFF == 0 {
            dot_u8i8(codes, xb)
        } else {
            dot_i8(codes, xb)
        };
        let f = _mm256_set1_ps(f16c(d[b]) * xd[b]);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc)
    };
    two_chains(d.len(), qs, NIB_BYTES, block)
}

// ---------------------------------------------------------------- Q8_0, AVX2

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q8_0_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        let q = load_u8x32(arr(&blk[2..]));
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_mul_ps(q, d));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q8_0_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * Q8_0_BYTES..][..Q8_0_BYTES];
        let q = load_u8x32(arr(&blk[2..]));
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        _mm256_fmadd_ps(block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]), d, acc)
    };
    two_chains(bytes.len() / Q8_0_BYTES, bytes, Q8_0_BYTES, block)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q8_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * Q8_0_BYTES..][..Q8_0_BYTES];
        let p = dot_i8(
            load_u8x32(arr(&blk[2..])),
            load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])),
        );
        let f = _mm256_set1_ps(f16c_at(blk, 0) * xd[b]);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc)
    };
    two_chains(bytes.len() / Q8_0_BYTES, bytes, Q8_0_BYTES, block)
}

// ------------------------------------------------------------------ AVX-512

/// Two blocks of nibble codes (32 bytes) as 64 bytes in order: block 0's
/// codes 0–31, then block 1's.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn nibbles512(qs: &[u8; 32]) -> __m512i {
    nibbles512_raw(load_u8x32(qs))
}

/// [`nibbles512`] of two blocks' 16 bytes already in one register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn nibbles512_raw(raw: __m256i) -> __m512i {
    let mask = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(raw, mask); // [b0 lo, b1 lo]
    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask); // [b0 hi, b1 hi]
    let z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); // b0lo b1lo b0hi b1hi
    _mm512_shuffle_i64x2(z, z, 0b11_01_10_00) // b0lo b0hi b1lo b1hi
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn hsum512(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// One block of unsigned nibble codes times 32 f32 activations, as 16
/// lanes added to `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
fn nib_block_dot_f32_512(qs: &[u8; 16], xb: &[f32; 32], acc: __m512) -> __m512 {
    let (lo, hi) = nibbles(qs);
    let qlo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
    let qhi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
    let acc = _mm512_fmadd_ps(qlo, load_f32x16(arr(&xb[..16])), acc);
    _mm512_fmadd_ps(qhi, load_f32x16(arr(&xb[16..])), acc)
}

/// AVX-512 f32 product of an int4 row: 16 codes per FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,avx2,f16c")]
pub(crate) fn int4_dot_f32_512(row: &Int4Row<'_>, x: &[f32], xgsum: &[f32]) -> f32 {
    let blocks = row.qs.len() / NIB_BYTES;
    let per_group = row.group / BLOCK;
    let block = |b: usize, acc: __m512| {
        nib_block_dot_f32_512(
            arr(&row.qs[b * NIB_BYTES..][..NIB_BYTES]),
            arr(&x[b * BLOCK..][..BLOCK]),
            acc,
        )
    };
    let mut total = _mm512_setzero_ps();
    for (g, &scale) in row.scales.iter().enumerate() {
        let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let range = group_blocks(g, per_group, blocks);
        let mut b = range.start;
        while b + 2 <= range.end {
            a0 = block(b, a0);
            a1 = block(b + 1, a1);
            b += 2;
        }
        if b < range.end {
            a0 = block(b, a0);
        }
        total = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(scale), total);
    }
    hsum512(total) + dot_f32(row.mins, xgsum)
}

/// Per-block factors of two blocks, each broadcast over its 8 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn pair_factors(f0: f32, f1: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_set1_ps(f0), _mm256_set1_ps(f1), 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn load_u8x64(x: &[u8; 64]) -> __m512i {
    // SAFETY: `x` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load_i32x16(x: &[i32; 16]) -> __m512i {
    // SAFETY: `x` is 16 readable i32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }
}

/// AVX-512 VNNI int8 product of an int4 row, two blocks per `vpdpbusd`
/// (groups of an even number of blocks; others take the AVX2 kernel).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn int4_dot_q8_512(row: &Int4Row<'_>, xq: &[i8], xd: &[f32], xgsum: &[f32]) -> f32 {
    let per_group = row.group / BLOCK;
    let blocks = row.qs.len() / NIB_BYTES;
    if !per_group.is_multiple_of(2) || !blocks.is_multiple_of(2) {
        return int4_dot_q8(row, xq, xd, xgsum);
    }
    let xq: &[u8] = bytemuck::cast_slice(xq);
    // Blocks `b` and `b + 1` of group scale `scale`.
    let pair = |b: usize, scale: f32, acc: __m512| {
        let codes = nibbles512(arr(&row.qs[b * NIB_BYTES..][..2 * NIB_BYTES]));
        let xb = load_u8x64(arr(&xq[b * BLOCK..][..2 * BLOCK]));
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes, xb);
        let f = pair_factors(scale * xd[b], scale * xd[b + 1]);
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), f, acc)
    };
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (g, &scale) in row.scales.iter().enumerate() {
        let range = group_blocks(g, per_group, blocks);
        let mut b = range.start;
        while b + 4 <= range.end {
            a0 = pair(b, scale, a0);
            a1 = pair(b + 2, scale, a1);
            b += 4;
        }
        if b < range.end {
            a0 = pair(b, scale, a0);
        }
    }
    hsum512(_mm512_add_ps(a0, a1)) + dot_f32(row.mins, xgsum)
}

// ------------------------------------------------- AVX-512, units of 128 columns
//
// A unit is 4 consecutive nibble blocks (64 code bytes, 128 columns) inside
// one group. Instead of moving codes into column order in every row, the
// activations are put once per product into the order in which the codes
// come out of the raw bytes (`int4::unit_x_f32`, `int4::unit_x_q8`), so the
// inner loops need no shuffles.

/// How far ahead of the unit being read the unit kernels prefetch weights,
/// in bytes (past the row's end it reaches into the next row, which follows
/// in memory). Overridable for tuning with `TENSORPRESS_PREFETCH`.
pub(super) fn prefetch_distance() -> usize {
    static DIST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DIST.get_or_init(|| {
        std::env::var("TENSORPRESS_PREFETCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024)
    })
}

/// Asks for the cache line at `base + offset` (a hint: it never faults, so
/// the address may lie past the slice).
#[inline]
#[target_feature(enable = "sse")]
pub(super) fn prefetch(base: &[u8], offset: usize) {
    _mm_prefetch::<_MM_HINT_T0>(base.as_ptr().wrapping_add(offset).cast());
}

/// Bytes of codes in a unit.
const UNIT_BYTES: usize = UNIT / 2;

/// Σ_j w_j·x_j over the row, f32 activations: per group a 16-entry table
/// `scale·k + min` that `vpermps` indexes with the nibbles directly (it reads
/// the low 4 bits of each lane), one FMA per 16 weights. `xr` is
/// `unit_x_f32(x)`; columns past the last whole unit (a narrower last group)
/// are summed from `x`. Needs `group` a multiple of [`UNIT`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,avx2,f16c")]
pub(crate) fn int4_dot_f32_units(row: &Int4Row<'_>, xr: &[f32], x: &[f32]) -> f32 {
    let units = row.qs.len() / UNIT_BYTES;
    let per_group = row.group / UNIT;
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let mut acc = [_mm512_setzero_ps(); 4];
    let ahead = prefetch_distance();
    // Zipped slices keep the loop free of index checks; the group's
    // parameters change every `per_group` units.
    let (mut params, mut left) = (row.scales.iter().zip(row.mins), 0);
    let (mut s, mut m) = (0.0f32, 0.0f32);
    for (q, xu) in row.qs.chunks_exact(UNIT_BYTES).zip(xr.chunks_exact(UNIT)) {
        if left == 0 {
            if let Some((&gs, &gm)) = params.next() {
                (s, m) = (gs, gm);
            }
            left = per_group;
        }
        left -= 1;
        prefetch(q, ahead);
        let lut = _mm512_fmadd_ps(iota, _mm512_set1_ps(s), _mm512_set1_ps(m));
        let raw = load_u8x64(arr(q));
        let w = |idx: __m512i| _mm512_permutexvar_ps(idx, lut);
        let xs = |k: usize| load_f32x16(arr(&xu[16 * k..16 * k + 16]));
        acc[0] = _mm512_fmadd_ps(w(raw), xs(0), acc[0]);
        acc[1] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<4>(raw)), xs(1), acc[1]);
        acc[2] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<8>(raw)), xs(2), acc[2]);
        acc[3] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<12>(raw)), xs(3), acc[3]);
        acc[0] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<16>(raw)), xs(4), acc[0]);
        acc[1] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<20>(raw)), xs(5), acc[1]);
        acc[2] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<24>(raw)), xs(6), acc[2]);
        acc[3] = _mm512_fmadd_ps(w(_mm512_srli_epi32::<28>(raw)), xs(7), acc[3]);
    }
    let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut tail = _mm256_setzero_ps();
    let first = units * UNIT / BLOCK;
    if let (Some(&s), Some(&m)) = (row.scales.last(), row.mins.last()) {
        let (s, m) = (_mm256_set1_ps(s), _mm256_set1_ps(m));
        for b in first..row.qs.len() / NIB_BYTES {
            let (lo, hi) = nibbles(arr(&row.qs[b * NIB_BYTES..][..NIB_BYTES]));
            let xb = &x[b * BLOCK..][..BLOCK];
            for (k, q) in block_f32(lo, hi, false).into_iter().enumerate() {
                let w = _mm256_fmadd_ps(q, s, m);
                tail = _mm256_fmadd_ps(w, load_f32x8(arr(&xb[8 * k..][..8])), tail);
            }
        }
    }
    hsum512(total) + hsum(tail)
}

/// Σ_j w_j·x_j over the row, int8 activations: per unit two `vpdpbusd`
/// (low nibbles, high nibbles) against activations in the same order, one
/// conversion and one FMA. `xu`/`xd4` are `unit_x_q8(x)`; blocks past the
/// last whole unit take the AVX2 path. `xgsum[g]` as for [`int4_dot_q8`].
/// Needs `group` a multiple of [`UNIT`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn int4_dot_q8_units(
    row: &Int4Row<'_>,
    xu: &[u8],
    xd4: &[f32],
    xq: &[i8],
    xd: &[f32],
    xgsum: &[f32],
) -> f32 {
    let units = row.qs.len() / UNIT_BYTES;
    let per_group = row.group / UNIT;
    let mask = _mm512_set1_epi8(0x0f);
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let ahead = prefetch_distance();
    let (mut scales, mut left, mut s) = (row.scales.iter(), 0, 0.0f32);
    for (q, (x, d4)) in row
        .qs
        .chunks_exact(UNIT_BYTES)
        .zip(xu.chunks_exact(UNIT).zip(xd4.chunks_exact(16)))
    {
        if left == 0 {
            if let Some(&gs) = scales.next() {
                s = gs;
            }
            left = per_group;
        }
        left -= 1;
        prefetch(q, ahead);
        let raw = load_u8x64(arr(q));
        let lo = _mm512_and_si512(raw, mask);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), mask);
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, load_u8x64(arr(&x[..64])));
        let p = _mm512_dpbusd_epi32(p, hi, load_u8x64(arr(&x[64..])));
        let f = _mm512_mul_ps(load_f32x16(arr(d4)), _mm512_set1_ps(s));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), f, a0);
        std::mem::swap(&mut a0, &mut a1);
    }
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut tail = _mm256_setzero_ps();
    if let Some(&s) = row.scales.last() {
        for b in units * UNIT / BLOCK..row.qs.len() / NIB_BYTES {
            let codes = nibbles256(arr(&row.qs[b * NIB_BYTES..][..NIB_BYTES]));
            let p = dot_u8i8(codes, load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])));
            tail = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(s * xd[b]), tail);
        }
    }
    hsum512(_mm512_add_ps(a0, a1)) + hsum(tail) + dot_f32(row.mins, xgsum)
}

/// The f16 scales of a unit's 4 blocks, each over the 4 lanes the block's
/// products land in.
#[inline]
#[target_feature(enable = "avx512f,f16c")]
fn unit_scales_f16(bits: &[u16; 4]) -> __m512 {
    // SAFETY: `bits` is 8 readable bytes; `loadl_epi64` reads 8 bytes, unaligned.
    let v = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(bits.as_ptr().cast()) });
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(v))
}

/// Q4_0 row (split: nibbles `qs`, f16 scales `d`) times f32 activations:
/// `vpermps` turns nibbles into `code − OFF` as f32 directly (`OFF` as for
/// [`q4_0_dot_f32`]), 8 FMAs per unit
/// against `xr = unit_x_f32(x)`, then one FMA with the blocks' scales.
/// Blocks past the last whole unit take the AVX2 path.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,avx2,f16c")]
pub(crate) fn q4_0_dot_f32_units<const OFF: i8>(
    qs: &[u8],
    d: &[u16],
    xr: &[f32],
    x: &[f32],
) -> f32 {
    let units = qs.len() / UNIT_BYTES;
    let iota = _mm512_setr_ps(
        0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
    );
    let lut = _mm512_sub_ps(iota, _mm512_set1_ps(f32::from(OFF)));
    let w = |idx: __m512i| _mm512_permutexvar_ps(idx, lut);
    let ahead = prefetch_distance();
    let mut total = _mm512_setzero_ps();
    for ((q, xu), d4) in qs
        .chunks_exact(UNIT_BYTES)
        .zip(xr.chunks_exact(UNIT))
        .zip(d.chunks_exact(4))
    {
        prefetch(q, ahead);
        let raw = load_u8x64(arr(q));
        let xs = |k: usize| load_f32x16(arr(&xu[16 * k..16 * k + 16]));
        let a0 = _mm512_mul_ps(w(raw), xs(0));
        let a1 = _mm512_mul_ps(w(_mm512_srli_epi32::<4>(raw)), xs(1));
        let a0 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<8>(raw)), xs(2), a0);
        let a1 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<12>(raw)), xs(3), a1);
        let a0 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<16>(raw)), xs(4), a0);
        let a1 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<20>(raw)), xs(5), a1);
        let a0 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<24>(raw)), xs(6), a0);
        let a1 = _mm512_fmadd_ps(w(_mm512_srli_epi32::<28>(raw)), xs(7), a1);
        total = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), unit_scales_f16(arr(d4)), total);
    }
    let first = units * UNIT / BLOCK;
    let tail = q4_0_dot_f32::<OFF>(&qs[first * NIB_BYTES..], &d[first..], &x[first * BLOCK..]);
    hsum512(total) + tail
}

/// Q4_0 row (split) times int8 activations: codes stay unsigned, the
/// integer sums start at `offsets = unit_offsets_q8(sums, OFF)` (taking off
/// `OFF Σ x_q` per block; zeros for Q4_1), two `vpdpbusd` per unit against `xu`, one FMA with
/// the weight scales times `xd4`. Blocks past the last whole unit take the
/// AVX2 path.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn q4_0_dot_q8_units<const OFF: i8>(
    qs: &[u8],
    d: &[u16],
    xu: &[u8],
    xd4: &[f32],
    offsets: &[i32],
    xq: &[i8],
    xd: &[f32],
) -> f32 {
    let units = qs.len() / UNIT_BYTES;
    let mask = _mm512_set1_epi8(0x0f);
    let ahead = prefetch_distance();
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for ((q, d4), (x, (xd4, off))) in qs.chunks_exact(UNIT_BYTES).zip(d.chunks_exact(4)).zip(
        xu.chunks_exact(UNIT)
            .zip(xd4.chunks_exact(16).zip(offsets.chunks_exact(16))),
    ) {
        prefetch(q, ahead);
        let raw = load_u8x64(arr(q));
        let lo = _mm512_and_si512(raw, mask);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), mask);
        let p = load_i32x16(arr(off));
        let p = _mm512_dpbusd_epi32(p, lo, load_u8x64(arr(&x[..64])));
        let p = _mm512_dpbusd_epi32(p, hi, load_u8x64(arr(&x[64..])));
        let f = _mm512_mul_ps(unit_scales_f16(arr(d4)), load_f32x16(arr(xd4)));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), f, a0);
        std::mem::swap(&mut a0, &mut a1);
    }
    let first = units * UNIT / BLOCK;
    let tail = q4_0_dot_q8::<OFF>(
        &qs[first * NIB_BYTES..],
        &d[first..],
        &xq[first * BLOCK..],
        &xd[first..],
    );
    hsum512(_mm512_add_ps(a0, a1)) + tail
}
