//! The fused decoder's AVX2 path for two-byte formats (bf16, f16): the eight
//! interleaved rANS lanes in one register, ryg's `rans_word_sse41` scheme
//! widened to AVX2 (Giesen, *Interleaved entropy coders*, 2014,
//! arXiv:1402.3392): one gather of the packed table entries, the state update
//! in 32-bit lanes, and the refills of the lanes that fall below `2^16` served
//! from the shared word stream in lane order through a permutation chosen
//! by the refill mask.
//!
//! It decodes exactly what the scalar loop in the parent module decodes
//! (tests compare the two on random streams) and stops early, leaving the
//! rest to the scalar loop, when fewer than eight words remain.

use std::arch::x86_64::*;

use super::LANES;

/// How the two output bytes are formed from a symbol and a raw byte.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge2 {
    /// `(raw & 0x7f) | sym << 7 | (raw & 0x80) << 8`.
    Bf16,
    /// `raw | sym << 8`.
    F16,
}

/// For each 8-bit refill mask, the word index each lane takes (its rank
/// among the refilling lanes; 0 for lanes that keep their state).
const fn refill_permutations() -> [[u32; 8]; 256] {
    let mut table = [[0u32; 8]; 256];
    let mut m = 0;
    while m < 256 {
        let mut rank = 0;
        let mut lane = 0;
        while lane < 8 {
            if m & (1 << lane) != 0 {
                table[m][lane] = rank;
                rank += 1;
            }
            lane += 1;
        }
        m += 1;
    }
    table
}

static PERMUTE: [[u32; 8]; 256] = refill_permutations();

/// One chunk for [`rounds`]: its table (`2^p` entries), words and read
/// position, lane states, raw bytes (one per element) and output (two bytes
/// per element); only whole rounds of these are decoded.
pub(crate) struct Job<'a> {
    pub(crate) states: &'a mut [u32; LANES],
    pub(crate) table: &'a [u32],
    pub(crate) p: u32,
    pub(crate) words: &'a [u16],
    pub(crate) pos: &'a mut usize,
    pub(crate) raw: &'a [u8],
    pub(crate) out: &'a mut [u8],
}

impl Job<'_> {
    fn rounds(&self) -> usize {
        (self.raw.len() / LANES).min(self.out.len() / (2 * LANES))
    }
}

/// Decodes whole rounds (one symbol per lane) of `K` independent chunks in
/// lockstep — their dependency chains (gather, multiply, refill) overlap —
/// while every chunk has a round left and eight words ahead of its read
/// position, updating states and positions as the scalar loop would;
/// returns the rounds decoded (the same for each chunk).
///
/// # Safety
/// The CPU must support AVX2, and each job's table must hold `2^p` entries.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn rounds<const K: usize>(jobs: &mut [Job<'_>; K], merge: Merge2) -> usize {
    let limit = jobs.iter().map(Job::rounds).min().unwrap_or(0);
    let mut x = [_mm256_setzero_si256(); K];
    let mut mask = [_mm256_setzero_si256(); K];
    let mut shift = [_mm_setzero_si128(); K];
    for k in 0..K {
        debug_assert_eq!(jobs[k].table.len(), 1usize << jobs[k].p);
        // SAFETY: `states` is 8 u32s (32 bytes); unaligned load.
        x[k] = unsafe { _mm256_loadu_si256(jobs[k].states.as_ptr().cast()) };
        mask[k] = _mm256_set1_epi32(((1u32 << jobs[k].p) - 1) as i32);
        shift[k] = _mm_cvtsi32_si128(jobs[k].p as i32);
    }
    let low12 = _mm256_set1_epi32(0xfff);
    let one = _mm256_set1_epi32(1);
    let zero = _mm256_setzero_si256();
    let m7f = _mm256_set1_epi32(0x7f);
    let m80 = _mm256_set1_epi32(0x80);
    let mut round = 0;
    while round < limit && jobs.iter().all(|j| *j.pos + LANES <= j.words.len()) {
        for k in 0..K {
            let job = &mut jobs[k];
            // SAFETY: every index is `x & (2^p − 1)`, inside the `2^p` table.
            let e = unsafe {
                _mm256_i32gather_epi32::<4>(
                    job.table.as_ptr().cast(),
                    _mm256_and_si256(x[k], mask[k]),
                )
            };
            let sym = _mm256_srli_epi32::<24>(e);
            let freq = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32::<12>(e), low12), one);
            let bias = _mm256_and_si256(e, low12);
            let y = _mm256_add_epi32(
                _mm256_mullo_epi32(freq, _mm256_srl_epi32(x[k], shift[k])),
                bias,
            );
            // Lanes whose state fell below 2^16 take the next words, in order.
            let refill = _mm256_cmpeq_epi32(_mm256_srli_epi32::<16>(y), zero);
            let bits = _mm256_movemask_ps(_mm256_castsi256_ps(refill)) as usize;
            // SAFETY: `*pos + 8 <= words.len()` (loop condition): 16 bytes.
            let next = unsafe { _mm_loadu_si128(job.words.as_ptr().add(*job.pos).cast()) };
            let next = _mm256_cvtepu16_epi32(next);
            // SAFETY: `PERMUTE[bits]` is 8 u32s.
            let order = unsafe { _mm256_loadu_si256(PERMUTE[bits].as_ptr().cast()) };
            let next = _mm256_permutevar8x32_epi32(next, order);
            let refilled = _mm256_or_si256(_mm256_slli_epi32::<16>(y), next);
            x[k] = _mm256_blendv_epi8(y, refilled, refill);
            *job.pos += bits.count_ones() as usize;

            // SAFETY: `round < limit`, so bytes `8·round .. 8·round + 8` of
            // `raw` exist.
            let r = unsafe { _mm_loadl_epi64(job.raw.as_ptr().add(LANES * round).cast()) };
            let r = _mm256_cvtepu8_epi32(r);
            let v = match merge {
                Merge2::Bf16 => _mm256_or_si256(
                    _mm256_or_si256(_mm256_and_si256(r, m7f), _mm256_slli_epi32::<7>(sym)),
                    _mm256_slli_epi32::<8>(_mm256_and_si256(r, m80)),
                ),
                Merge2::F16 => _mm256_or_si256(r, _mm256_slli_epi32::<8>(sym)),
            };
            // Eight values below 2^16 to eight u16, in lane order.
            let packed = _mm256_packus_epi32(v, v);
            let packed = _mm256_permute4x64_epi64::<0b1000>(packed);
            // SAFETY: `round < limit`, so bytes `16·round .. 16·round + 16`
            // of `out` exist.
            unsafe {
                _mm_storeu_si128(
                    job.out.as_mut_ptr().add(2 * LANES * round).cast(),
                    _mm256_castsi256_si128(packed),
                )
            };
        }
        round += 1;
    }
    for k in 0..K {
        // SAFETY: as the load above.
        unsafe { _mm256_storeu_si256(jobs[k].states.as_mut_ptr().cast(), x[k]) };
    }
    round
}
