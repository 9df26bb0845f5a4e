//! x86-64 sparse kernels: AVX2+FMA (2:4 rows, column updates, CSR rows,
//! bitmask rows by lane permutes) and AVX-512 (column updates, bitmask rows
//! by expand loads).

use std::arch::x86_64::*;

use super::scalar::{self, ColIndex};

/// For an index byte (two 2:4 groups of 4 columns): the lane of each of its
/// four kept values within the byte's 8 columns.
const LUT: [[i32; 4]; 256] = {
    let mut t = [[0i32; 4]; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 4 {
            t[b][k] = (4 * (k / 2) + ((b >> (2 * k)) & 3)) as i32;
            k += 1;
        }
        b += 1;
    }
    t
};

/// One row of a 2:4 matrix times `x`: per 16 columns, 8 kept values, their
/// activations gathered from two 8-lane loads by lane permutes.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `values.len() == 4 · index.len()` and
/// `x.len() == 8 · index.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_24(values: &[f32], index: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(values.len(), 4 * index.len());
    debug_assert_eq!(x.len(), 8 * index.len());
    let pairs = index.len() / 2;
    let (v, xp) = (values.as_ptr(), x.as_ptr());
    // SAFETY (every `step` below): pair `p` reads values `8p..8p+8` and
    // activations `16p..16p+16`, inside the slices because `2p + 1 <
    // index.len()`.
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut q = 0;
    while q + 1 < pairs {
        // SAFETY: pairs `q` and `q + 1` are below `pairs` (see above).
        acc0 = unsafe { step(v, index, xp, q, acc0) };
        // SAFETY: as above.
        acc1 = unsafe { step(v, index, xp, q + 1, acc1) };
        q += 2;
    }
    while q < pairs {
        // SAFETY: pair `q` is below `pairs` (see above).
        acc0 = unsafe { step(v, index, xp, q, acc0) };
        q += 1;
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    // An odd last index byte (8 columns).
    let done = 2 * pairs;
    _mm_cvtss_f32(s) + scalar::dot_24(&values[4 * done..], &index[done..], &x[8 * done..])
}

/// One pair of index bytes of [`dot_24`]: 8 kept values times their
/// gathered activations, added to `acc`.
///
/// # Safety
/// AVX2 and FMA; `v` points at `8p + 8` readable values, `xp` at `16p + 16`
/// readable activations, and `index` has `2p + 2` bytes.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step(v: *const f32, index: &[u8], xp: *const f32, p: usize, acc: __m256) -> __m256 {
    // SAFETY: the LUT rows are 16 bytes, read unaligned; the value and
    // activation reads are in bounds by the caller's contract.
    unsafe {
        let lo = _mm_loadu_si128(LUT[index[2 * p] as usize].as_ptr().cast());
        let hi = _mm_loadu_si128(LUT[index[2 * p + 1] as usize].as_ptr().cast());
        let idx = _mm256_set_m128i(hi, lo);
        let x0 = _mm256_loadu_ps(xp.add(16 * p));
        let x1 = _mm256_loadu_ps(xp.add(16 * p + 8));
        let g = _mm256_blend_ps(
            _mm256_permutevar8x32_ps(x0, idx),
            _mm256_permutevar8x32_ps(x1, idx),
            0xF0,
        );
        _mm256_fmadd_ps(_mm256_loadu_ps(v.add(8 * p)), g, acc)
    }
}

/// `y += x0·c0 + x1·c1 + x2·c2 + x3·c3`, 8 lanes at a time.
///
/// # Safety
/// The CPU must support AVX2 and FMA; every column has `y.len()` entries.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn axpy4_avx2(
    c0: &[f32],
    c1: &[f32],
    c2: &[f32],
    c3: &[f32],
    xs: &[f32; 4],
    y: &mut [f32],
) {
    let n = y.len();
    debug_assert!(c0.len() == n && c1.len() == n && c2.len() == n && c3.len() == n);
    let [x0, x1, x2, x3] = xs.map(|x| _mm256_set1_ps(x));
    let yp = y.as_mut_ptr();
    let mut r = 0;
    while r + 8 <= n {
        // SAFETY: `r + 8 <= n` and every slice has `n` entries.
        unsafe {
            let mut acc = _mm256_loadu_ps(yp.add(r));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(c0.as_ptr().add(r)), x0, acc);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(c1.as_ptr().add(r)), x1, acc);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(c2.as_ptr().add(r)), x2, acc);
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(c3.as_ptr().add(r)), x3, acc);
            _mm256_storeu_ps(yp.add(r), acc);
        }
        r += 8;
    }
    scalar::axpy(&[&c0[r..], &c1[r..], &c2[r..], &c3[r..]], xs, &mut y[r..]);
}

/// `y += x0·c0 + x1·c1 + x2·c2 + x3·c3`, 16 lanes at a time.
///
/// # Safety
/// The CPU must support AVX-512F; every column has `y.len()` entries.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn axpy4_avx512(
    c0: &[f32],
    c1: &[f32],
    c2: &[f32],
    c3: &[f32],
    xs: &[f32; 4],
    y: &mut [f32],
) {
    let n = y.len();
    debug_assert!(c0.len() == n && c1.len() == n && c2.len() == n && c3.len() == n);
    let [x0, x1, x2, x3] = xs.map(|x| _mm512_set1_ps(x));
    let yp = y.as_mut_ptr();
    let mut r = 0;
    while r + 16 <= n {
        // SAFETY: `r + 16 <= n` and every slice has `n` entries.
        unsafe {
            let mut acc = _mm512_loadu_ps(yp.add(r));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(c0.as_ptr().add(r)), x0, acc);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(c1.as_ptr().add(r)), x1, acc);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(c2.as_ptr().add(r)), x2, acc);
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(c3.as_ptr().add(r)), x3, acc);
            _mm512_storeu_ps(yp.add(r), acc);
        }
        r += 16;
    }
    scalar::axpy(&[&c0[r..], &c1[r..], &c2[r..], &c3[r..]], xs, &mut y[r..]);
}

/// The sum of the 8 lanes of `v`.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// One CSR row times `x`: scalar loads and FMAs into 8 independent
/// accumulators, without bounds checks.
///
/// Measured against `vgatherdps` kernels (8 lanes with AVX2, 16 with
/// AVX-512, two accumulators each; commit 51754be) on 2048 × 8192 at 50 %
/// and 90 % sparsity, one thread: this loop took 7.7 and 1.7 ms, the AVX2
/// gathers 10.2–12.1 and 1.6–2.5 ms, the AVX-512 gathers 7.8–10.3 and
/// 1.7–2.5 ms (the scalar reference: 13.6 and 3.0 ms). A gather issues
/// one load per lane anyway, and on this Xeon it costs more than the loads
/// it replaces, so both levels run this loop.
///
/// # Safety
/// The CPU must support FMA; `values.len() == cols.len()` and every column
/// is below `x.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn csr_dot_fma<I: ColIndex>(values: &[f32], cols: &[I], x: &[f32]) -> f32 {
    debug_assert_eq!(values.len(), cols.len());
    debug_assert!(cols.iter().all(|c| c.col() < x.len()));
    let n = values.len();
    let mut acc = [0.0f32; 8];
    let mut k = 0;
    while k + 8 <= n {
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `k + t < n`, the length of `values` and `cols`, and
            // every column is below `x.len()` (the caller's contract).
            let (v, c) = unsafe {
                (
                    *values.get_unchecked(k + t),
                    cols.get_unchecked(k + t).col(),
                )
            };
            // SAFETY: as above.
            *acc = v.mul_add(unsafe { *x.get_unchecked(c) }, *acc);
        }
        k += 8;
    }
    let s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    s + scalar::csr_dot(&values[k..], &cols[k..], x)
}

/// For a mask byte: the positions of its set bits, lowest first, one per
/// byte (unused bytes 0).
const COMPACT: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let (mut k, mut j) = (0, 0);
        while j < 8 {
            if (b >> j) & 1 == 1 {
                t[b] |= (j as u64) << (8 * k);
                k += 1;
            }
            j += 1;
        }
        b += 1;
    }
    t
};

/// One bitmask row times `x`, 8 columns (one mask byte) per step: the
/// activations of the kept columns are permuted to the front and multiplied
/// with the next `popcount` values, read by a masked load.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `mask.len() == x.len().div_ceil(8)`,
/// no bit set past `x.len()`, and `values` holds one value per set bit.
#[target_feature(enable = "avx2,fma,popcnt")]
pub(super) unsafe fn bitmask_dot_avx2(mask: &[u8], values: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(mask.len(), x.len().div_ceil(8));
    debug_assert_eq!(
        values.len(),
        mask.iter().map(|b| b.count_ones() as usize).sum::<usize>()
    );
    let full = x.len() / 8;
    let (vp, xp) = (values.as_ptr(), x.as_ptr());
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // `k` values of the row come before byte `q`.
    let step = |q: usize, k: usize, acc: __m256| -> __m256 {
        let b = mask[q];
        let idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(COMPACT[b as usize] as i64));
        let first = _mm256_cmpgt_epi32(_mm256_set1_epi32(b.count_ones() as i32), iota);
        // SAFETY: byte `q < full` covers columns `8q..8q + 8`, inside `x`;
        // the masked load reads values `k..k + popcount(b)`, which exist
        // because `values` holds one value per set bit and `k` counts those
        // of bytes `0..q`.
        unsafe {
            let xg = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xp.add(8 * q)), idx);
            _mm256_fmadd_ps(_mm256_maskload_ps(vp.add(k), first), xg, acc)
        }
    };
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let (mut q, mut k) = (0, 0);
    while q + 2 <= full {
        let k1 = k + mask[q].count_ones() as usize;
        acc0 = step(q, k, acc0);
        acc1 = step(q + 1, k1, acc1);
        k = k1 + mask[q + 1].count_ones() as usize;
        q += 2;
    }
    if q < full {
        acc0 = step(q, k, acc0);
        k += mask[q].count_ones() as usize;
    }
    // A last byte of fewer than 8 columns.
    let done = 8 * full;
    hsum256(_mm256_add_ps(acc0, acc1))
        + scalar::bitmask_dot(&mask[full..], &values[k..], &x[done..])
}

/// One bitmask row times `x`, 16 columns per step: `vexpandps` loads the
/// next `popcount(mask)` values into the lanes of their columns; four steps
/// (four accumulators) per `u64` of mask, unrolled by hand (a loop over an
/// array of accumulators kept them on the stack and ran 1.5× slower).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; `mask.len() == x.len().div_ceil(8)`,
/// no bit set past `x.len()`, and `values` holds one value per set bit.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
pub(super) unsafe fn bitmask_dot_avx512(mask: &[u8], values: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(mask.len(), x.len().div_ceil(8));
    debug_assert_eq!(
        values.len(),
        mask.iter().map(|b| b.count_ones() as usize).sum::<usize>()
    );
    let cols = x.len();
    let (mp, vp, xp) = (mask.as_ptr(), values.as_ptr(), x.as_ptr());
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (mut acc2, mut acc3) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (mut j, mut k) = (0, 0);
    while j + 64 <= cols {
        // SAFETY: mask bytes `j/8..j/8 + 8` cover columns `j..j + 64`, inside
        // the row (`j + 64 <= cols`), read unaligned.
        let word = u64::from_le(unsafe { mp.add(j / 8).cast::<u64>().read_unaligned() });
        let m0 = word as u16;
        let m1 = (word >> 16) as u16;
        let m2 = (word >> 32) as u16;
        let m3 = (word >> 48) as u16;
        let k1 = k + m0.count_ones() as usize;
        let k2 = k1 + m1.count_ones() as usize;
        let k3 = k2 + m2.count_ones() as usize;
        let k4 = k3 + m3.count_ones() as usize;
        // SAFETY: columns `j..j + 64` are inside `x`; the expand loads read
        // values `k..k4` (`k` counts the set bits of the columns before `j`,
        // `k4` those before `j + 64`), which exist because `values` holds
        // one value per set bit.
        unsafe {
            let v0 = _mm512_maskz_expandloadu_ps(m0, vp.add(k));
            let v1 = _mm512_maskz_expandloadu_ps(m1, vp.add(k1));
            let v2 = _mm512_maskz_expandloadu_ps(m2, vp.add(k2));
            let v3 = _mm512_maskz_expandloadu_ps(m3, vp.add(k3));
            acc0 = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xp.add(j)), acc0);
            acc1 = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xp.add(j + 16)), acc1);
            acc2 = _mm512_fmadd_ps(v2, _mm512_loadu_ps(xp.add(j + 32)), acc2);
            acc3 = _mm512_fmadd_ps(v3, _mm512_loadu_ps(xp.add(j + 48)), acc3);
        }
        k = k4;
        j += 64;
    }
    while j < cols {
        let rem = cols - j;
        let lanes: __mmask16 = if rem >= 16 { !0 } else { (1u16 << rem) - 1 };
        let hi = if rem > 8 { mask[j / 8 + 1] } else { 0 };
        let m = u16::from_le_bytes([mask[j / 8], hi]) & lanes;
        // SAFETY: the lanes of `lanes` are columns `j..min(j + 16, cols)`,
        // inside `x`; the expand load reads values `k..k + popcount(m)`, as
        // above.
        unsafe {
            let v = _mm512_maskz_expandloadu_ps(m, vp.add(k));
            acc0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lanes, xp.add(j)), acc0);
        }
        k += m.count_ones() as usize;
        j += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3));
    _mm512_reduce_add_ps(s)
}
