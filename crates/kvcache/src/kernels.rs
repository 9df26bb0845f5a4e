//! The inner loops of one decoding step's attention: dot products and
//! weighted sums over f32 rows, and the same over packed low-bit codes with
//! the scale folded into the weight (KIVI's fused dequantization).
//!
//! Each loop has a scalar reference and an AVX2+FMA version chosen at run
//! time (`tensorpress_quant_core::kernels::Isa::detect`, which the
//! `TENSORPRESS_SIMD=scalar` environment variable caps); tests compare every
//! level available on the machine against the reference.
//!
//! Codes are packed `8 / bits` per byte, least significant first, as
//! [`KiviCache`](crate::KiviCache) stores them. A run of 8 codes that starts
//! at a code index divisible by 8 fills `bits` whole bytes, which the AVX2
//! loops read as one little-endian word and spread over 8 lanes with
//! per-lane shifts.

use tensorpress_quant_core::kernels::Isa;

/// Which implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Plain Rust, the reference.
    Scalar,
    /// x86-64 AVX2 with FMA.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
}

impl Level {
    /// The best level this CPU runs (AVX-512 machines run the AVX2 loops).
    pub(crate) fn detect() -> Level {
        match Isa::detect() {
            Isa::Scalar => Level::Scalar,
            _ => Level::Avx2,
        }
    }

    /// Every level this CPU runs, the reference first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Level> {
        let mut out = vec![Level::Scalar];
        if Isa::available().len() > 1 {
            out.push(Level::Avx2);
        }
        out
    }
}

/// The most query heads per KV head the AVX2 code loops keep in registers;
/// more fall back to the scalar loops.
const MAX_GROUPS: usize = 8;

/// Code `index` of `bytes`, packed `bits` (2, 4 or 8) per code.
#[inline]
fn code(bytes: &[u8], index: usize, bits: u8) -> u8 {
    let bit = index * bits as usize;
    let mask = ((1u16 << bits) - 1) as u8;
    (bytes[bit / 8] >> (bit % 8)) & mask
}

/// `Σ a[i]·b[i]`.
pub(crate) fn dot(level: Level, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of unequal lengths");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Level::Avx2` is only produced when the CPU has AVX2 and
        // FMA (`Isa::detect` / `Isa::available`); the lengths are equal.
        Level::Avx2 => unsafe { x86::dot(a, b) },
        _ => a.iter().zip(b).map(|(x, y)| x * y).sum(),
    }
}

/// `y += a·x`.
pub(crate) fn axpy(level: Level, y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy of unequal lengths");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot`.
        Level::Avx2 => unsafe { x86::axpy(y, a, x) },
        _ => {
            for (y, &x) in y.iter_mut().zip(x) {
                *y += a * x;
            }
        }
    }
}

/// Scores of every query head against every stored key row:
/// `scores[q·n + t] = Σ_c rows[t·row + h·d + c] · queries[q·d + c]` with
/// `h = q / groups`, for the `n = rows.len() / row` tokens (one pass over
/// the rows, in storage order).
pub(crate) fn row_scores(
    level: Level,
    rows: &[f32],
    row: usize,
    queries: &[f32],
    d: usize,
    groups: usize,
    scores: &mut [f32],
) {
    let n = rows.len() / row.max(1);
    let q_heads = queries.len() / d.max(1);
    assert!(
        rows.len() == n * row && queries.len() == q_heads * d && scores.len() == q_heads * n,
        "row_scores shapes"
    );
    assert!(q_heads / groups.max(1) * d <= row, "row_scores: heads");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot`; shapes checked above.
        Level::Avx2 => unsafe { x86::row_scores(rows, row, queries, d, groups, scores) },
        _ => {
            for (t, r) in rows.chunks_exact(row).enumerate() {
                for (q, query) in queries.chunks_exact(d).enumerate() {
                    let h = q / groups;
                    scores[q * n + t] = r[h * d..(h + 1) * d]
                        .iter()
                        .zip(query)
                        .map(|(a, b)| a * b)
                        .sum();
                }
            }
        }
    }
}

/// Probability-weighted sums of every stored value row:
/// `acc[q·d + c] += Σ_t probs[q·n + t] · rows[t·row + h·d + c]` with
/// `h = q / groups` (one pass over the rows, in storage order).
pub(crate) fn row_sums(
    level: Level,
    rows: &[f32],
    row: usize,
    probs: &[f32],
    d: usize,
    groups: usize,
    acc: &mut [f32],
) {
    let n = rows.len() / row.max(1);
    let q_heads = acc.len() / d.max(1);
    assert!(
        rows.len() == n * row && acc.len() == q_heads * d && probs.len() == q_heads * n,
        "row_sums shapes"
    );
    assert!(q_heads / groups.max(1) * d <= row, "row_sums: heads");
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot`; shapes checked above.
        Level::Avx2 => unsafe { x86::row_sums(rows, row, probs, d, groups, acc) },
        _ => {
            for (t, r) in rows.chunks_exact(row).enumerate() {
                for (q, a) in acc.chunks_exact_mut(d).enumerate() {
                    let (h, p) = (q / groups, probs[q * n + t]);
                    for (a, &x) in a.iter_mut().zip(&r[(q / groups) * d..(h + 1) * d]) {
                        *a += p * x;
                    }
                }
            }
        }
    }
}

/// Scores of one group of `g` tokens whose keys are quantized per channel:
/// channel `c`'s `g` codes start at code `c·g` of `bytes`, and
/// `out[j·g + i] = Σ_c w[j·d + c] · code(c·g + i)` for the `groups` query
/// heads `j` (`w` holds each query times the channel's scale).
pub(crate) fn key_scores(
    level: Level,
    bytes: &[u8],
    bits: u8,
    g: usize,
    w: &[f32],
    groups: usize,
    out: &mut [f32],
) {
    let d = w.len() / groups.max(1);
    assert!(
        w.len() == groups * d && out.len() == groups * g,
        "key_scores shapes"
    );
    assert!(
        bytes.len() * 8 >= d * g * bits as usize,
        "key_scores: codes"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if g.is_multiple_of(8) && groups <= MAX_GROUPS => {
            // SAFETY: AVX2+FMA present (see `dot`); every run of 8 codes
            // starts at a multiple of 8 (g is) and lies inside `bytes`
            // (checked above); `groups` fits the register array.
            unsafe { x86::key_scores(bytes, bits, g, d, w, groups, out) }
        }
        _ => {
            for j in 0..groups {
                let wj = &w[j * d..(j + 1) * d];
                let oj = &mut out[j * g..(j + 1) * g];
                oj.fill(0.0);
                for (c, &wc) in wj.iter().enumerate() {
                    for (i, o) in oj.iter_mut().enumerate() {
                        *o += wc * f32::from(code(bytes, c * g + i, bits));
                    }
                }
            }
        }
    }
}

/// Weighted sum of `n` tokens' values quantized per token in groups of `g`
/// channels: token `t`'s `d` codes start at byte `first + t·stride`, and
/// `acc[j·d + c] += Σ_t ws[(t·(d/g) + c/g)·groups + j] · code_t(c)` for the
/// `groups` query heads `j` (`ws` holds each probability times the group's
/// scale; the groups' minima are added by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn value_sums(
    level: Level,
    bytes: &[u8],
    bits: u8,
    first: usize,
    stride: usize,
    g: usize,
    ws: &[f32],
    groups: usize,
    acc: &mut [f32],
) {
    let d = acc.len() / groups.max(1);
    let per_token = d / g;
    let n = ws.len() / (groups * per_token).max(1);
    assert!(
        acc.len() == groups * d && d.is_multiple_of(g) && ws.len() == groups * n * per_token,
        "value_sums shapes"
    );
    let token_bytes = (d * bits as usize).div_ceil(8);
    assert!(
        n == 0 || first + (n - 1) * stride + token_bytes <= bytes.len(),
        "value_sums: codes"
    );
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 if g.is_multiple_of(8) && groups <= MAX_GROUPS => {
            // SAFETY: AVX2+FMA present (see `dot`); each token's codes start
            // on a byte (the caller's `first` and `stride` are byte offsets)
            // and lie inside `bytes` (checked above); runs of 8 codes start at
            // multiples of 8 within the token (g is a multiple of 8).
            unsafe { x86::value_sums(bytes, bits, first, stride, g, d, n, ws, groups, acc) }
        }
        _ => {
            for j in 0..groups {
                let aj = &mut acc[j * d..(j + 1) * d];
                for t in 0..n {
                    let tb = &bytes[first + t * stride..];
                    for (c, a) in aj.iter_mut().enumerate() {
                        let w = ws[(t * per_token + c / g) * groups + j];
                        *a += w * f32::from(code(tb, c, bits));
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 codes of `BITS` bits starting at byte `at`, as floats.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn codes8<const BITS: u8>(bytes: &[u8], at: usize) -> __m256 {
        if BITS == 8 {
            let w: [u8; 8] = bytes[at..at + 8].try_into().expect("8 bytes");
            let v = _mm_cvtsi64_si128(i64::from_le_bytes(w));
            return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
        }
        let word = if BITS == 2 {
            let w: [u8; 2] = bytes[at..at + 2].try_into().expect("2 bytes");
            u32::from(u16::from_le_bytes(w))
        } else {
            let w: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
            u32::from_le_bytes(w)
        };
        let b = i32::from(BITS);
        let shifts = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);
        let mask = _mm256_set1_epi32((1 << b) - 1);
        let v = _mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts);
        _mm256_cvtepi32_ps(_mm256_and_si256(v, mask))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn load8(x: &[f32], at: usize) -> __m256 {
        let chunk: &[f32; 8] = x[at..at + 8].try_into().expect("8 floats");
        // SAFETY: `chunk` is 8 readable floats; the load is unaligned.
        unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn store8(x: &mut [f32], at: usize, v: __m256) {
        let chunk: &mut [f32; 8] = (&mut x[at..at + 8]).try_into().expect("8 floats");
        // SAFETY: `chunk` is 8 writable floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n8 = a.len() / 8 * 8;
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n8 {
            s0 = _mm256_fmadd_ps(load8(a, i), load8(b, i), s0);
            s1 = _mm256_fmadd_ps(load8(a, i + 8), load8(b, i + 8), s1);
            i += 16;
        }
        if i < n8 {
            s0 = _mm256_fmadd_ps(load8(a, i), load8(b, i), s0);
        }
        let tail: f32 = a[n8..].iter().zip(&b[n8..]).map(|(x, y)| x * y).sum();
        hsum(_mm256_add_ps(s0, s1)) + tail
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n8 = y.len() / 8 * 8;
        let av = _mm256_set1_ps(a);
        for i in (0..n8).step_by(8) {
            store8(y, i, _mm256_fmadd_ps(av, load8(x, i), load8(y, i)));
        }
        for (y, &x) in y[n8..].iter_mut().zip(&x[n8..]) {
            *y += a * x;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn row_scores(
        rows: &[f32],
        row: usize,
        queries: &[f32],
        d: usize,
        groups: usize,
        scores: &mut [f32],
    ) {
        let n = rows.len() / row;
        for (t, r) in rows.chunks_exact(row).enumerate() {
            for (q, query) in queries.chunks_exact(d).enumerate() {
                let h = q / groups;
                scores[q * n + t] = dot(&r[h * d..(h + 1) * d], query);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn row_sums(
        rows: &[f32],
        row: usize,
        probs: &[f32],
        d: usize,
        groups: usize,
        acc: &mut [f32],
    ) {
        let n = rows.len() / row;
        for (t, r) in rows.chunks_exact(row).enumerate() {
            for (q, a) in acc.chunks_exact_mut(d).enumerate() {
                let h = q / groups;
                axpy(a, probs[q * n + t], &r[h * d..(h + 1) * d]);
            }
        }
    }

    /// Picks the instance for the run-time bit width and head count.
    macro_rules! dispatch {
        ($f:ident, $bits:expr, $groups:expr, ($($arg:expr),*)) => {{
            macro_rules! by_groups {
                ($b:literal) => {
                    match $groups {
                        1 => $f::<$b, 1>($($arg),*),
                        2 => $f::<$b, 2>($($arg),*),
                        3 => $f::<$b, 3>($($arg),*),
                        4 => $f::<$b, 4>($($arg),*),
                        5 => $f::<$b, 5>($($arg),*),
                        6 => $f::<$b, 6>($($arg),*),
                        7 => $f::<$b, 7>($($arg),*),
                        _ => $f::<$b, 8>($($arg),*),
                    }
                };
            }
            match $bits {
                2 => by_groups!(2),
                4 => by_groups!(4),
                _ => by_groups!(8),
            }
        }};
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn key_scores(
        bytes: &[u8],
        bits: u8,
        g: usize,
        d: usize,
        w: &[f32],
        groups: usize,
        out: &mut [f32],
    ) {
        dispatch!(key_scores_n, bits, groups, (bytes, g, d, w, out))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn key_scores_n<const BITS: u8, const J: usize>(
        bytes: &[u8],
        g: usize,
        d: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        let channel_bytes = g * BITS as usize / 8;
        for chunk in 0..g / 8 {
            let mut acc = [_mm256_setzero_ps(); J];
            for c in 0..d {
                let codes = codes8::<BITS>(bytes, c * channel_bytes + chunk * BITS as usize);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(w[j * d + c]), codes, *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                store8(out, j * g + chunk * 8, *a);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn value_sums(
        bytes: &[u8],
        bits: u8,
        first: usize,
        stride: usize,
        g: usize,
        d: usize,
        n: usize,
        ws: &[f32],
        groups: usize,
        acc: &mut [f32],
    ) {
        dispatch!(
            value_sums_n,
            bits,
            groups,
            (bytes, first, stride, g, d, n, ws, acc)
        )
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn value_sums_n<const BITS: u8, const J: usize>(
        bytes: &[u8],
        first: usize,
        stride: usize,
        g: usize,
        d: usize,
        n: usize,
        ws: &[f32],
        acc: &mut [f32],
    ) {
        let per_token = d / g;
        for chunk in 0..d / 8 {
            let cg = chunk * 8 / g;
            let at = first + chunk * BITS as usize;
            let mut sum = [_mm256_setzero_ps(); J];
            for t in 0..n {
                let codes = codes8::<BITS>(bytes, at + t * stride);
                let wt = &ws[(t * per_token + cg) * J..(t * per_token + cg + 1) * J];
                for (s, &w) in sum.iter_mut().zip(wt) {
                    *s = _mm256_fmadd_ps(_mm256_set1_ps(w), codes, *s);
                }
            }
            for (j, s) in sum.iter().enumerate() {
                let i = j * d + chunk * 8;
                store8(acc, i, _mm256_add_ps(load8(acc, i), *s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(codes: &[u8], bits: u8) -> Vec<u8> {
        let per = 8 / bits as usize;
        let mut out = vec![0u8; codes.len().div_ceil(per)];
        for (i, &c) in codes.iter().enumerate() {
            out[i / per] |= c << ((i % per) * bits as usize);
        }
        out
    }

    /// Equal up to f32 summation order, for sums of terms at most `bound`
    /// in magnitude in all.
    fn close(a: &[f32], b: &[f32], bound: f32) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + bound))
    }

    proptest! {
        #[test]
        fn dot_and_axpy_match_the_reference(
            x in proptest::collection::vec(-4f32..4.0, 0..70),
            a in -2f32..2.0,
        ) {
            let y: Vec<f32> = x.iter().map(|v| v * 0.5 - 1.0).collect();
            let want = dot(Level::Scalar, &x, &y);
            let mut want_axpy = y.clone();
            axpy(Level::Scalar, &mut want_axpy, a, &x);
            for level in Level::available() {
                let got = dot(level, &x, &y);
                prop_assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{level:?}");
                let mut got_axpy = y.clone();
                axpy(level, &mut got_axpy, a, &x);
                prop_assert!(close(&got_axpy, &want_axpy, 10.0), "{level:?}");
            }
        }

        #[test]
        fn row_loops_match_the_reference(
            heads in 1usize..4,
            groups in 1usize..4,
            d in 1usize..40,
            n in 0usize..9,
            seed in 0u64..1000,
        ) {
            let row = heads * d;
            let q_heads = heads * groups;
            let f = |i: usize| (((i as u64 * 2654435761 + seed) % 1000) as f32) / 250.0 - 2.0;
            let rows: Vec<f32> = (0..n * row).map(f).collect();
            let queries: Vec<f32> = (0..q_heads * d).map(|i| f(i + 7)).collect();
            let probs: Vec<f32> = (0..q_heads * n).map(|i| f(i + 3).abs()).collect();
            let mut want = vec![0f32; q_heads * n];
            row_scores(Level::Scalar, &rows, row, &queries, d, groups, &mut want);
            let mut want_sums = vec![1f32; q_heads * d];
            row_sums(Level::Scalar, &rows, row, &probs, d, groups, &mut want_sums);
            for q in 0..q_heads {
                for t in 0..n {
                    let h = q / groups;
                    let def: f32 = (0..d).map(|c| rows[t * row + h * d + c] * queries[q * d + c]).sum();
                    prop_assert!((def - want[q * n + t]).abs() <= 1e-4 * (1.0 + 4.0 * d as f32));
                }
            }
            for level in Level::available() {
                let mut got = vec![0f32; q_heads * n];
                row_scores(level, &rows, row, &queries, d, groups, &mut got);
                prop_assert!(close(&got, &want, 4.0 * d as f32), "{level:?}");
                let mut got_sums = vec![1f32; q_heads * d];
                row_sums(level, &rows, row, &probs, d, groups, &mut got_sums);
                prop_assert!(close(&got_sums, &want_sums, 4.0 * n as f32), "{level:?}");
            }
        }

        #[test]
        fn fused_code_loops_match_the_reference(
            bits in prop_oneof![Just(2u8), Just(4), Just(8)],
            g in prop_oneof![Just(8usize), Just(16), Just(32)],
            gpd in 1usize..4,
            groups in 1usize..10,
            n in 0usize..12,
            seed in 0u64..1000,
        ) {
            let d = g * gpd;
            let max = (1u16 << bits) as u64;
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); s >> 33 };
            // Keys: d channels × g tokens.
            let kcodes: Vec<u8> = (0..d * g).map(|_| (next() % max) as u8).collect();
            let kbytes = pack(&kcodes, bits);
            let w: Vec<f32> = (0..groups * d).map(|_| (next() % 1000) as f32 / 500.0 - 1.0).collect();
            let mut want = vec![0f32; groups * g];
            key_scores(Level::Scalar, &kbytes, bits, g, &w, groups, &mut want);
            // Against the definition, too.
            for j in 0..groups {
                for i in 0..g {
                    let def: f32 = (0..d).map(|c| w[j * d + c] * f32::from(kcodes[c * g + i])).sum();
                    prop_assert!((def - want[j * g + i]).abs() <= 1e-3 * (1.0 + def.abs()));
                }
            }
            // Values: n tokens of d codes, each row padded to a stride.
            let token_bytes = d * bits as usize / 8;
            let (first, stride) = (3, token_bytes + 5);
            let mut vbytes = vec![0u8; first + n * stride + 2];
            let mut vcodes = vec![0u8; n * d];
            for t in 0..n {
                for c in 0..d {
                    vcodes[t * d + c] = (next() % max) as u8;
                }
                let p = pack(&vcodes[t * d..(t + 1) * d], bits);
                vbytes[first + t * stride..first + t * stride + token_bytes].copy_from_slice(&p);
            }
            let ws: Vec<f32> = (0..groups * n * gpd).map(|_| (next() % 1000) as f32 / 1000.0).collect();
            let start: Vec<f32> = (0..groups * d).map(|i| i as f32 * 0.01).collect();
            let mut want_v = start.clone();
            value_sums(Level::Scalar, &vbytes, bits, first, stride, g, &ws, groups, &mut want_v);
            for j in 0..groups {
                for c in 0..d {
                    let def: f32 = start[j * d + c] + (0..n).map(|t| ws[(t * gpd + c / g) * groups + j] * f32::from(vcodes[t * d + c])).sum::<f32>();
                    prop_assert!((def - want_v[j * d + c]).abs() <= 1e-3 * (1.0 + def.abs()));
                }
            }
            for level in Level::available() {
                let mut got = vec![0f32; groups * g];
                key_scores(level, &kbytes, bits, g, &w, groups, &mut got);
                prop_assert!(close(&got, &want, (d * max as usize) as f32), "keys {level:?}");
                let mut got_v = start.clone();
                value_sums(level, &vbytes, bits, first, stride, g, &ws, groups, &mut got_v);
                prop_assert!(close(&got_v, &want_v, (n * max as usize + groups * d) as f32), "values {level:?}");
            }
        }
    }
}
