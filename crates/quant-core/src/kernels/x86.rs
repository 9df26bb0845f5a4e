//! AVX2+FMA and AVX-512 (F/BW/VL/VNNI) kernels. Each function computes what
//! its namesake in `scalar` computes (up to float summation order).
//!
//! Callers guarantee the CPU level (`Isa::check` or `Isa::detect`) and the
//! slice lengths the scalar versions assume: whole blocks, `x` as long as the
//! row. Loads go through `load_*` helpers that take fixed-size arrays, so the
//! only unchecked memory access is the unaligned load of a whole array.

use std::arch::x86_64::*;

use super::scalar::{Int4Row, NIB_BYTES, Q4_0_BYTES, Q8_0_BYTES};
use super::BLOCK;

#[inline]
#[target_feature(enable = "avx2")]
fn load_f32x8(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 8 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_f32x8(out: &mut [f32; 8], v: __m256) {
    // SAFETY: `out` is 8 writable f32; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_u8x16(x: &[u8; 16]) -> __m128i {
    // SAFETY: `x` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_u8x32(x: &[u8; 32]) -> __m256i {
    // SAFETY: `x` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load_f32x16(x: &[f32; 16]) -> __m512 {
    // SAFETY: `x` is 16 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

/// Splits a slice into a fixed-size array reference (the length is known to
/// the caller; the check compiles away inside `chunks_exact` loops).
#[inline(always)]
fn arr<T, const N: usize>(s: &[T]) -> &[T; N] {
    s.try_into().expect("chunk of the array length")
}

#[inline(always)]
fn arr_mut<T, const N: usize>(s: &mut [T]) -> &mut [T; N] {
    s.try_into().expect("chunk of the array length")
}

/// The little-endian f16 at `b[at..at + 2]` as f32, through F16C.
#[inline]
#[target_feature(enable = "f16c")]
fn f16c_at(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 nibble codes of a block as (codes 0–15, codes 16–31).
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(qs: &[u8; 16]) -> (__m128i, __m128i) {
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
fn nibbles256(qs: &[u8; 16]) -> __m256i {
    let (lo, hi) = nibbles(qs);
    _mm256_set_m128i(hi, lo)
}

/// Eight unsigned bytes (the low 8 of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2")]
fn u8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Eight signed bytes (the low 8 of `v`) as f32.
#[inline]
#[target_feature(enable = "avx2")]
fn i8x8_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// The 32 codes of a block, given as bytes (codes 0–15, codes 16–31), as
/// four vectors of 8 f32; `signed` reads the bytes as `i8`, else as `u8`.
#[inline]
#[target_feature(enable = "avx2")]
fn block_f32(lo: __m128i, hi: __m128i, signed: bool) -> [__m256; 4] {
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
fn block_dot_i8_f32(lo: __m128i, hi: __m128i, xb: &[f32]) -> __m256 {
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
fn dot_i8(a: __m256i, b: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Σ a_i·b_i over 32 unsigned (`a` ≤ 127) by signed bytes, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn dot_u8i8(a: __m256i, b: __m256i) -> __m256i {
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

/// `xgsum[g]` is the sum of `x` over group `g` (shared by all rows).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int4_dot_f32(row: &Int4Row<'_>, x: &[f32], xgsum: &[f32]) -> f32 {
    let mut total = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for (g, (qg, xg)) in row
        .qs
        .chunks(row.group / 2)
        .zip(x.chunks(row.group))
        .enumerate()
    {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (qs, xb) in qg.chunks_exact(NIB_BYTES).zip(xg.chunks_exact(BLOCK)) {
            let (lo, hi) = nibbles(arr(qs));
            acc[0] = _mm256_fmadd_ps(u8x8_f32(lo), load_f32x8(arr(&xb[0..8])), acc[0]);
            acc[1] = _mm256_fmadd_ps(
                u8x8_f32(_mm_srli_si128(lo, 8)),
                load_f32x8(arr(&xb[8..16])),
                acc[1],
            );
            acc[2] = _mm256_fmadd_ps(u8x8_f32(hi), load_f32x8(arr(&xb[16..24])), acc[2]);
            acc[3] = _mm256_fmadd_ps(
                u8x8_f32(_mm_srli_si128(hi, 8)),
                load_f32x8(arr(&xb[24..32])),
                acc[3],
            );
        }
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(row.scales[g]), total);
        mins += row.mins[g] * xgsum[g];
    }
    hsum(total) + mins
}

/// `xgsum[g]` is `Σ_b d_b · sums_b` over the activation blocks of group `g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn int4_dot_q8(row: &Int4Row<'_>, xq: &[i8], xd: &[f32], xgsum: &[f32]) -> f32 {
    let per_group = row.group / BLOCK;
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut total = _mm256_setzero_ps();
    for (g, (qg, xg)) in row
        .qs
        .chunks(row.group / 2)
        .zip(xq.chunks(row.group))
        .enumerate()
    {
        let xd = &xd[g * per_group..];
        let mut acc = [_mm256_setzero_ps(); 2];
        for (i, (qs, xb)) in qg
            .chunks_exact(NIB_BYTES)
            .zip(xg.chunks_exact(BLOCK))
            .enumerate()
        {
            let p = dot_u8i8(nibbles256(arr(qs)), load_u8x32(arr(xb)));
            acc[i & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(xd[i]), acc[i & 1]);
        }
        let acc = _mm256_add_ps(acc[0], acc[1]);
        total = _mm256_fmadd_ps(acc, _mm256_set1_ps(row.scales[g]), total);
    }
    let mins: f32 = row.mins.iter().zip(xgsum).map(|(m, s)| m * s).sum();
    hsum(total) + mins
}

// ---------------------------------------------------------------- Q4_0, AVX2

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn q4_0_codes(blk: &[u8]) -> (__m128i, __m128i) {
    let (lo, hi) = nibbles(arr(&blk[2..Q4_0_BYTES]));
    let eight = _mm_set1_epi8(8);
    (_mm_sub_epi8(lo, eight), _mm_sub_epi8(hi, eight))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q4_0_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        let (lo, hi) = q4_0_codes(blk);
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_mul_ps(q, d));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let mut total = [_mm256_setzero_ps(); 2];
    for (b, (blk, xb)) in bytes
        .chunks_exact(Q4_0_BYTES)
        .zip(x.chunks_exact(BLOCK))
        .enumerate()
    {
        let (lo, hi) = q4_0_codes(blk);
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        total[b & 1] = _mm256_fmadd_ps(block_dot_i8_f32(lo, hi, xb), d, total[b & 1]);
    }
    hsum(_mm256_add_ps(total[0], total[1]))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut acc = [_mm256_setzero_ps(); 2];
    for (b, (blk, xb)) in bytes
        .chunks_exact(Q4_0_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .enumerate()
    {
        let (lo, hi) = q4_0_codes(blk);
        let p = dot_i8(_mm256_set_m128i(hi, lo), load_u8x32(arr(xb)));
        let f = _mm256_set1_ps(f16c_at(blk, 0) * xd[b]);
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc[b & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
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
    let mut total = [_mm256_setzero_ps(); 2];
    for (b, (blk, xb)) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(x.chunks_exact(BLOCK))
        .enumerate()
    {
        let q = load_u8x32(arr(&blk[2..]));
        let (lo, hi) = (_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        total[b & 1] = _mm256_fmadd_ps(block_dot_i8_f32(lo, hi, xb), d, total[b & 1]);
    }
    hsum(_mm256_add_ps(total[0], total[1]))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q8_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut acc = [_mm256_setzero_ps(); 2];
    for (b, (blk, xb)) in bytes
        .chunks_exact(Q8_0_BYTES)
        .zip(xq.chunks_exact(BLOCK))
        .enumerate()
    {
        let p = dot_i8(load_u8x32(arr(&blk[2..])), load_u8x32(arr(xb)));
        let f = _mm256_set1_ps(f16c_at(blk, 0) * xd[b]);
        acc[b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc[b & 1]);
    }
    hsum(_mm256_add_ps(acc[0], acc[1]))
}

// ------------------------------------------------------------------ AVX-512

/// Two blocks of nibble codes (32 bytes) as 64 bytes in order: block 0's
/// codes 0–31, then block 1's.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn nibbles512(qs: &[u8; 32]) -> __m512i {
    let raw = load_u8x32(qs);
    let mask = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(raw, mask); // [b0 lo, b1 lo]
    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask); // [b0 hi, b1 hi]
    let z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); // b0lo b1lo b0hi b1hi
    _mm512_shuffle_i64x2(z, z, 0b11_01_10_00) // b0lo b0hi b1lo b1hi
}

#[inline]
#[target_feature(enable = "avx512f")]
fn hsum512(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// AVX-512 f32 product of an int4 row: 16 codes per FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,avx2,f16c")]
pub(crate) fn int4_dot_f32_512(row: &Int4Row<'_>, x: &[f32], xgsum: &[f32]) -> f32 {
    let mut total = _mm512_setzero_ps();
    let mut mins = 0.0f32;
    for (g, (qg, xg)) in row
        .qs
        .chunks(row.group / 2)
        .zip(x.chunks(row.group))
        .enumerate()
    {
        let mut acc = [_mm512_setzero_ps(); 2];
        for (qs, xb) in qg.chunks_exact(NIB_BYTES).zip(xg.chunks_exact(BLOCK)) {
            let (lo, hi) = nibbles(arr(qs));
            let qlo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
            let qhi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
            acc[0] = _mm512_fmadd_ps(qlo, load_f32x16(arr(&xb[..16])), acc[0]);
            acc[1] = _mm512_fmadd_ps(qhi, load_f32x16(arr(&xb[16..])), acc[1]);
        }
        let acc = _mm512_add_ps(acc[0], acc[1]);
        total = _mm512_fmadd_ps(acc, _mm512_set1_ps(row.scales[g]), total);
        mins += row.mins[g] * xgsum[g];
    }
    hsum512(total) + mins
}

/// Per-block factors of two blocks, each broadcast over its 8 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn pair_factors(f0: f32, f1: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_set1_ps(f0), _mm256_set1_ps(f1), 1)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load_u8x64(x: &[u8; 64]) -> __m512i {
    // SAFETY: `x` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(x.as_ptr().cast()) }
}

/// AVX-512 VNNI int8 product of an int4 row, two blocks per `vpdpbusd`
/// (groups of an even number of blocks; others take the AVX2 kernel).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn int4_dot_q8_512(row: &Int4Row<'_>, xq: &[i8], xd: &[f32], xgsum: &[f32]) -> f32 {
    let per_group = row.group / BLOCK;
    let cols = row.qs.len() * 2;
    if !per_group.is_multiple_of(2) || !(cols % row.group).is_multiple_of(2 * BLOCK) {
        return int4_dot_q8(row, xq, xd, xgsum);
    }
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let mut total = _mm512_setzero_ps();
    for (g, (qg, xg)) in row
        .qs
        .chunks(row.group / 2)
        .zip(xq.chunks(row.group))
        .enumerate()
    {
        let xd = &xd[g * per_group..];
        let mut acc = [_mm512_setzero_ps(); 2];
        for (i, (qs, xb)) in qg
            .chunks_exact(2 * NIB_BYTES)
            .zip(xg.chunks_exact(2 * BLOCK))
            .enumerate()
        {
            let p = _mm512_dpbusd_epi32(
                _mm512_setzero_si512(),
                nibbles512(arr(qs)),
                load_u8x64(arr(xb)),
            );
            let f = pair_factors(xd[2 * i], xd[2 * i + 1]);
            acc[i & 1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), f, acc[i & 1]);
        }
        let acc = _mm512_add_ps(acc[0], acc[1]);
        total = _mm512_fmadd_ps(acc, _mm512_set1_ps(row.scales[g]), total);
    }
    let mins: f32 = row.mins.iter().zip(xgsum).map(|(m, s)| m * s).sum();
    hsum512(total) + mins
}

/// AVX-512 VNNI int8 product of a Q4_0 row: codes stay unsigned (0–15) and
/// the offset 8 is taken off with the activation block sums.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn q4_0_dot_q8_512(bytes: &[u8], xq: &[i8], xd: &[f32], xsums: &[i32]) -> f32 {
    let xu: &[u8] = bytemuck::cast_slice(xq);
    let blocks = bytes.len() / Q4_0_BYTES;
    let mut acc = _mm512_setzero_ps();
    let mut offset = 0.0f32;
    for b in (0..blocks & !1).step_by(2) {
        let b0 = &bytes[b * Q4_0_BYTES..(b + 1) * Q4_0_BYTES];
        let b1 = &bytes[(b + 1) * Q4_0_BYTES..(b + 2) * Q4_0_BYTES];
        let mut qs = [0u8; 32];
        qs[..16].copy_from_slice(&b0[2..]);
        qs[16..].copy_from_slice(&b1[2..]);
        let xb = &xu[b * BLOCK..(b + 2) * BLOCK];
        let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), nibbles512(&qs), load_u8x64(arr(xb)));
        let (f0, f1) = (f16c_at(b0, 0) * xd[b], f16c_at(b1, 0) * xd[b + 1]);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), pair_factors(f0, f1), acc);
        offset += f0 * xsums[b] as f32 + f1 * xsums[b + 1] as f32;
    }
    let mut total = hsum512(acc) - 8.0 * offset;
    if !blocks.is_multiple_of(2) {
        let b = blocks - 1;
        total += q4_0_dot_q8(&bytes[b * Q4_0_BYTES..], &xq[b * BLOCK..], &xd[b..]);
    }
    total
}
