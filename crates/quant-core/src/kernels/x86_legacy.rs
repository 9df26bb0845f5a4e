//! AVX2+FMA kernels of Q4_1, Q5_0 and IQ4_NL. Each function computes what
//! its namesake in `scalar_legacy` computes (up to float summation order);
//! callers guarantee the CPU level and whole blocks, as for `x86`.
//!
//! Q4_1's products are Q4_0's kernels with unsigned codes
//! (`x86::q4_0_dot_*::<0>`) plus `Σ_b m_b · s_b`, the minima against a
//! per-block activation sum shared by all rows ([`dot_f16`]); at AVX-512
//! they are the unit kernels (`x86::q4_0_dot_*_units::<0>`). Q5_0 and IQ4_NL
//! have no AVX-512 variant yet (their 22- and 18-byte blocks would first
//! have to be split like Q4_0's for the unit design): `Isa::Avx512` runs the
//! AVX2 code.

use std::arch::x86_64::*;

use super::scalar::{NIB_BYTES, Q4_0_BYTES};
use super::scalar_legacy::{Q4_1Row, IQ4_NL_BYTES, Q5_0_BYTES};
use super::x86::{
    arr, arr_mut, block_dot_i8_f32, block_f32, dot_i8, f16c, f16c_at, hsum, load_u8x16, load_u8x32,
    nibbles, store_f32x8, two_chains,
};
use super::BLOCK;
use crate::ggml::iquants::iq4::KVALUES;

/// Eight f16 (bits) as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load_f16x8(bits: &[u16; 8]) -> __m256 {
    // SAFETY: `bits` is 16 readable bytes; `loadu` has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bits.as_ptr().cast()) })
}

/// `Σ f16(a_i) · b_i` (a row's f16 minima against per-block activation sums).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f16(a: &[u16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_ps();
    let mut ca = a[..n].chunks_exact(8);
    let mut cb = b[..n].chunks_exact(8);
    for (a, b) in (&mut ca).zip(&mut cb) {
        acc = _mm256_fmadd_ps(load_f16x8(arr(a)), super::x86::load_f32x8(arr(b)), acc);
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&a, b)| f16c(a) * b)
        .sum();
    hsum(acc) + tail
}

/// Q4_1 row: `w = d·q + m`, multiplied and added separately (as the codec
/// does, so the values are the codec's bit for bit).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_1_dequant(row: &Q4_1Row<'_>, out: &mut [f32]) {
    for (b, o) in out.chunks_exact_mut(BLOCK).enumerate() {
        let d = _mm256_set1_ps(f16c(row.d[b]));
        let m = _mm256_set1_ps(f16c(row.m[b]));
        let (lo, hi) = nibbles(arr(&row.qs[b * NIB_BYTES..][..NIB_BYTES]));
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, false)) {
            store_f32x8(arr_mut(o), _mm256_add_ps(_mm256_mul_ps(q, d), m));
        }
    }
}

/// `xsum[b]` is the sum of `x` over block `b`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_1_dot_f32(row: &Q4_1Row<'_>, x: &[f32], xsum: &[f32]) -> f32 {
    super::x86::q4_0_dot_f32::<0>(row.qs, row.d, x) + dot_f16(row.m, xsum)
}

/// `xms[b]` is `d_b · Σ q` of activation block `b`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q4_1_dot_q8(row: &Q4_1Row<'_>, xq: &[i8], xd: &[f32], xms: &[f32]) -> f32 {
    super::x86::q4_0_dot_q8::<0>(row.qs, row.d, xq, xd) + dot_f16(row.m, xms)
}

/// AVX-512 f32 product of a Q4_1 row: the Q4_0 unit kernel on unsigned
/// codes (`xr = unit_x_f32(x)`) plus the minima term.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,avx2,f16c")]
pub(crate) fn q4_1_dot_f32_units(row: &Q4_1Row<'_>, xr: &[f32], x: &[f32], xsum: &[f32]) -> f32 {
    super::x86::q4_0_dot_f32_units::<0>(row.qs, row.d, xr, x) + dot_f16(row.m, xsum)
}

/// The unit forms of the int8 activations for [`q4_1_dot_q8_units`]:
/// `unit_x_q8(xq, xd)` and zero offsets.
pub(crate) struct UnitQ8<'a> {
    pub xu: &'a [u8],
    pub xd4: &'a [f32],
    pub zeros: &'a [i32],
}

/// AVX-512 VNNI int8 product of a Q4_1 row: the Q4_0 unit kernel on
/// unsigned codes (integer sums from zero) plus the minima term.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,fma,avx2,f16c")]
pub(crate) fn q4_1_dot_q8_units(
    row: &Q4_1Row<'_>,
    u: &UnitQ8<'_>,
    xq: &[i8],
    xd: &[f32],
    xms: &[f32],
) -> f32 {
    super::x86::q4_0_dot_q8_units::<0>(row.qs, row.d, u.xu, u.xd4, u.zeros, xq, xd)
        + dot_f16(row.m, xms)
}

// ------------------------------------------------------------------- Q5_0

/// The 32 fifth bits of a Q5_0 block (`qh`, little-endian) as bytes: 0xff
/// where the bit is set (llama.cpp's `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2")]
fn bits_to_bytes(qh: &[u8; 4]) -> __m256i {
    let word = i32::from_le_bytes(*qh);
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(word),
        _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        ),
    );
    let bits = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1))
}

/// The 32 codes of a Q5_0 block minus 16, as signed bytes in order: the
/// nibble where the fifth bit is set, else the nibble with 0xf0 (= −16).
#[inline]
#[target_feature(enable = "avx2")]
fn q5_0_codes(blk: &[u8]) -> __m256i {
    let (lo, hi) = nibbles(arr(&blk[6..Q5_0_BYTES]));
    let q = _mm256_set_m128i(hi, lo);
    let high = bits_to_bytes(arr(&blk[2..6]));
    _mm256_or_si256(q, _mm256_andnot_si256(high, _mm256_set1_epi8(-16)))
}

/// The two 128-bit halves of a register.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn halves(v: __m256i) -> (__m128i, __m128i) {
    (_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
}

/// Dequantizes Q5_0 blocks into `out`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q5_0_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(Q5_0_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        let (lo, hi) = halves(q5_0_codes(blk));
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_mul_ps(q, d));
        }
    }
}

/// `Σ w·x` over a row of Q5_0 blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q5_0_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * Q5_0_BYTES..][..Q5_0_BYTES];
        let (lo, hi) = halves(q5_0_codes(blk));
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        _mm256_fmadd_ps(block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]), d, acc)
    };
    two_chains(bytes.len() / Q5_0_BYTES, bytes, Q5_0_BYTES, block)
}

/// `Σ w·x̂` over a row of Q5_0 blocks (sign trick, one float multiply per block).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn q5_0_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * Q5_0_BYTES..][..Q5_0_BYTES];
        let p = dot_i8(q5_0_codes(blk), load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])));
        let f = _mm256_set1_ps(f16c_at(blk, 0) * xd[b]);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc)
    };
    two_chains(bytes.len() / Q5_0_BYTES, bytes, Q5_0_BYTES, block)
}

// ----------------------------------------------------------------- IQ4_NL

/// The 32 levels of an IQ4_NL block as signed bytes (codes 0–15, codes
/// 16–31): `vpshufb` looks the nibbles up in `KVALUES`.
#[inline]
#[target_feature(enable = "avx2")]
fn iq4_nl_levels(blk: &[u8]) -> (__m128i, __m128i) {
    let table: [u8; 16] = KVALUES.map(|v| v as u8);
    let lut = load_u8x16(&table);
    let (lo, hi) = nibbles(arr(&blk[2..IQ4_NL_BYTES]));
    (_mm_shuffle_epi8(lut, lo), _mm_shuffle_epi8(lut, hi))
}

/// Dequantizes IQ4_NL blocks into `out`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn iq4_nl_dequant(bytes: &[u8], out: &mut [f32]) {
    for (blk, o) in bytes
        .chunks_exact(IQ4_NL_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        let (lo, hi) = iq4_nl_levels(blk);
        for (o, q) in o.chunks_exact_mut(8).zip(block_f32(lo, hi, true)) {
            store_f32x8(arr_mut(o), _mm256_mul_ps(q, d));
        }
    }
}

/// `Σ w·x` over a row of IQ4_NL blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn iq4_nl_dot_f32(bytes: &[u8], x: &[f32]) -> f32 {
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * IQ4_NL_BYTES..][..IQ4_NL_BYTES];
        let (lo, hi) = iq4_nl_levels(blk);
        let d = _mm256_set1_ps(f16c_at(blk, 0));
        _mm256_fmadd_ps(block_dot_i8_f32(lo, hi, &x[b * BLOCK..][..BLOCK]), d, acc)
    };
    two_chains(bytes.len() / IQ4_NL_BYTES, bytes, IQ4_NL_BYTES, block)
}

/// `Σ w·x̂` over a row of IQ4_NL blocks (sign trick, one float multiply per block).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn iq4_nl_dot_q8(bytes: &[u8], xq: &[i8], xd: &[f32]) -> f32 {
    let xq: &[u8] = bytemuck::cast_slice(xq);
    let block = |b: usize, acc: __m256| {
        let blk = &bytes[b * IQ4_NL_BYTES..][..IQ4_NL_BYTES];
        let (lo, hi) = iq4_nl_levels(blk);
        let p = dot_i8(
            _mm256_set_m128i(hi, lo),
            load_u8x32(arr(&xq[b * BLOCK..][..BLOCK])),
        );
        let f = _mm256_set1_ps(f16c_at(blk, 0) * xd[b]);
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, acc)
    };
    two_chains(bytes.len() / IQ4_NL_BYTES, bytes, IQ4_NL_BYTES, block)
}

// Block sizes these kernels assume.
const _: () = assert!(Q4_0_BYTES == 18 && Q5_0_BYTES == 22 && IQ4_NL_BYTES == 18);
