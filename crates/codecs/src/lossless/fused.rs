//! The decoder's fast path: rANS decoding of a chunk's symbols fused with the
//! merge of the raw bytes, through one packed table of `2^precision` `u32`s
//! (`symbol << 24 | (freq − 1) << 12 | (slot − start)`, precision ≤ 12: 16 KiB,
//! L1-resident).
//!
//! It reads the words [`Rans<LANES>`](crate::entropy::rans::Rans) writes and
//! checks the stream as its decoder does: states in range at the start, every
//! word consumed and every state back at `2^16` at the end. Reads past the end
//! see zeros and are reported after the loop.

use super::float::{FloatFormat, LANES};

#[cfg(target_arch = "x86_64")]
mod avx2;
use crate::entropy::Categorical;
use crate::{Error, Result};

/// Highest precision the packed table holds.
pub(crate) const MAX_FUSED_PRECISION: u32 = 12;
const STATE_LOWER: u32 = 1 << 16;
const CODEC: &str = "rANS";

/// The packed slot table of `model`, `None` above [`MAX_FUSED_PRECISION`] or
/// for an alphabet wider than a byte.
pub(crate) fn packed_table(model: &Categorical) -> Option<Vec<u32>> {
    let p = model.precision();
    if p > MAX_FUSED_PRECISION || model.len() > 256 {
        return None;
    }
    let mut table = Vec::with_capacity(1 << p);
    for (s, w) in model.cdf().windows(2).enumerate() {
        let freq = w[1] - w[0];
        for slot in w[0]..w[1] {
            table.push(((s as u32) << 24) | ((freq - 1) << 12) | (slot - w[0]));
        }
    }
    Some(table)
}

/// How a format writes one element from its symbol and raw bytes.
trait Merge {
    const W: usize;
    const R: usize;
    fn put(sym: u32, raw: &[u8], out: &mut [u8]);
    /// The two-byte merge the AVX2 path applies (`W = 2`, `R = 1`).
    #[cfg(target_arch = "x86_64")]
    const MERGE2: avx2::Merge2 = avx2::Merge2::Bf16;
}

struct F32;
struct Bf16;
struct F16;

impl Merge for F32 {
    const W: usize = 4;
    const R: usize = 3;
    #[inline(always)]
    fn put(sym: u32, r: &[u8], out: &mut [u8]) {
        let r2 = u32::from(r[2]);
        let v = u32::from(r[0])
            | (u32::from(r[1]) << 8)
            | ((r2 & 0x7f) << 16)
            | (sym << 23)
            | ((r2 & 0x80) << 24);
        out.copy_from_slice(&v.to_le_bytes());
    }
}

impl Merge for Bf16 {
    const W: usize = 2;
    const R: usize = 1;
    #[inline(always)]
    fn put(sym: u32, r: &[u8], out: &mut [u8]) {
        let r = u32::from(r[0]);
        let v = (r & 0x7f) | (sym << 7) | ((r & 0x80) << 8);
        out.copy_from_slice(&(v as u16).to_le_bytes());
    }
}

impl Merge for F16 {
    const W: usize = 2;
    const R: usize = 1;
    #[cfg(target_arch = "x86_64")]
    const MERGE2: avx2::Merge2 = avx2::Merge2::F16;
    #[inline(always)]
    fn put(sym: u32, r: &[u8], out: &mut [u8]) {
        out[0] = r[0];
        out[1] = sym as u8;
    }
}

/// Decodes the words of one chunk with `table` (precision `p`) into `out`,
/// merging each symbol with its raw bytes.
pub(crate) fn decode(
    format: FloatFormat,
    table: &[u32],
    p: u32,
    words: &[u16],
    raw: &[u8],
    out: &mut [u8],
) -> Result<()> {
    match format {
        FloatFormat::F32 => run::<F32>(table, p, words, raw, out),
        FloatFormat::Bf16 => run::<Bf16>(table, p, words, raw, out),
        FloatFormat::F16 => run::<F16>(table, p, words, raw, out),
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step<M: Merge>(
    x: &mut u32,
    table: &[u32],
    mask: u32,
    p: u32,
    words: &[u16],
    pos: &mut usize,
    raw: &[u8],
    out: &mut [u8],
) {
    let e = table[(*x & mask) as usize];
    M::put(e >> 24, raw, out);
    let y = (((e >> 12) & 0xfff) + 1) * (*x >> p) + (e & 0xfff);
    let w = u32::from(words.get(*pos).copied().unwrap_or(0));
    let refill = y < STATE_LOWER;
    *x = if refill { (y << 16) | w } else { y };
    *pos += usize::from(refill);
}

fn run<M: Merge>(table: &[u32], p: u32, words: &[u16], raw: &[u8], out: &mut [u8]) -> Result<()> {
    run_from::<M>(table, p, words, raw, out, simd_enabled())
}

/// Whether the AVX2 decoder may run (the CPU has AVX2; detection is cached
/// by `std`).
fn simd_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`decode`] with the AVX2 path on or off (tests compare the two).
#[cfg(test)]
pub(crate) fn decode_with(
    format: FloatFormat,
    table: &[u32],
    p: u32,
    words: &[u16],
    raw: &[u8],
    out: &mut [u8],
    simd: bool,
) -> Result<()> {
    let simd = simd && simd_enabled();
    match format {
        FloatFormat::F32 => run_from::<F32>(table, p, words, raw, out, simd),
        FloatFormat::Bf16 => run_from::<Bf16>(table, p, words, raw, out, simd),
        FloatFormat::F16 => run_from::<F16>(table, p, words, raw, out, simd),
    }
}

fn run_from<M: Merge>(
    table: &[u32],
    p: u32,
    words: &[u16],
    raw: &[u8],
    out: &mut [u8],
    simd: bool,
) -> Result<()> {
    let mut lanes = open(table, p, words)?;
    #[cfg(target_arch = "x86_64")]
    if simd && M::W == 2 && M::R == 1 {
        let mut jobs = [job(&mut lanes, table, p, words, raw, out)];
        // SAFETY: `simd` is only true when the CPU has AVX2 (`simd_enabled`);
        // `open` checked that the table holds `2^p` entries; the bounds of
        // `words`, `raw` and `out` are checked inside before every access.
        let done = unsafe { avx2::rounds(&mut jobs, M::MERGE2) };
        lanes.done = done;
    }
    let _ = simd;
    close::<M>(lanes, table, p, words, raw, out)
}

/// Two chunks decoded together: with AVX2, bf16 and f16 chunks run their
/// rounds in lockstep so that one chunk's table gathers and multiplies
/// overlap the other's; otherwise (and for f32) one after the other.
/// Returns the first chunk's error first.
#[allow(clippy::type_complexity)]
pub(crate) fn decode_pair(
    format: FloatFormat,
    a: (&[u32], u32, &[u16], &[u8], &mut [u8]),
    b: (&[u32], u32, &[u16], &[u8], &mut [u8]),
) -> Result<()> {
    match format {
        FloatFormat::Bf16 => pair::<Bf16>(a, b, simd_enabled()),
        FloatFormat::F16 => pair::<F16>(a, b, simd_enabled()),
        FloatFormat::F32 => {
            run::<F32>(a.0, a.1, a.2, a.3, a.4)?;
            run::<F32>(b.0, b.1, b.2, b.3, b.4)
        }
    }
}

#[allow(clippy::type_complexity)]
fn pair<M: Merge>(
    a: (&[u32], u32, &[u16], &[u8], &mut [u8]),
    b: (&[u32], u32, &[u16], &[u8], &mut [u8]),
    simd: bool,
) -> Result<()> {
    let (ta, pa, wa, ra, oa) = a;
    let (tb, pb, wb, rb, ob) = b;
    if !simd {
        run_from::<M>(ta, pa, wa, ra, oa, false)?;
        return run_from::<M>(tb, pb, wb, rb, ob, false);
    }
    let mut la = open(ta, pa, wa)?;
    let mut lb = match open(tb, pb, wb) {
        Ok(l) => l,
        Err(e) => {
            close::<M>(la, ta, pa, wa, ra, oa)?;
            return Err(e);
        }
    };
    #[cfg(target_arch = "x86_64")]
    {
        let mut jobs = [
            job(&mut la, ta, pa, wa, ra, oa),
            job(&mut lb, tb, pb, wb, rb, ob),
        ];
        // SAFETY: `simd` is only true when the CPU has AVX2; `open` checked
        // both tables; bounds are checked inside before every access.
        let done = unsafe { avx2::rounds(&mut jobs, M::MERGE2) };
        la.done = done;
        lb.done = done;
    }
    let first = close::<M>(la, ta, pa, wa, ra, oa);
    let second = close::<M>(lb, tb, pb, wb, rb, ob);
    first.and(second)
}

/// The AVX2 decoder's view of a two-byte chunk (it decodes whole rounds of
/// `raw` and `out` only).
#[cfg(target_arch = "x86_64")]
fn job<'a>(
    lanes: &'a mut Lanes,
    table: &'a [u32],
    p: u32,
    words: &'a [u16],
    raw: &'a [u8],
    out: &'a mut [u8],
) -> avx2::Job<'a> {
    avx2::Job {
        states: &mut lanes.states,
        table,
        p,
        words,
        pos: &mut lanes.pos,
        raw,
        out,
    }
}

/// A chunk's lane states, read position and the rounds already decoded.
struct Lanes {
    states: [u32; LANES],
    pos: usize,
    done: usize,
}

/// Checks the table and the words and reads the initial states.
fn open(table: &[u32], p: u32, words: &[u16]) -> Result<Lanes> {
    if table.len() != 1 << p || p > MAX_FUSED_PRECISION {
        return Err(Error::Malformed {
            what: "packed table of the wrong size",
        });
    }
    if words.len() < 2 * LANES {
        return Err(Error::Truncated {
            unit: "words",
            needed: 2 * LANES,
            available: words.len(),
        });
    }
    let mut states = [0u32; LANES];
    for (lane, s) in states.iter_mut().enumerate() {
        *s = (u32::from(words[2 * lane]) << 16) | u32::from(words[2 * lane + 1]);
        if *s < STATE_LOWER {
            return Err(Error::CorruptStream {
                codec: CODEC,
                position: 0,
            });
        }
    }
    Ok(Lanes {
        states,
        pos: 2 * LANES,
        done: 0,
    })
}

/// Decodes the rounds after `lanes.done` and the tail with the scalar loop,
/// then checks that every word was read and every state is back at `2^16`.
fn close<M: Merge>(
    lanes: Lanes,
    table: &[u32],
    p: u32,
    words: &[u16],
    raw: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let Lanes {
        mut states,
        mut pos,
        done,
    } = lanes;
    let mask = (1u32 << p) - 1;
    let out = &mut out[done * LANES * M::W..];
    let raw = &raw[done * LANES * M::R..];
    let mut outs = out.chunks_exact_mut(LANES * M::W);
    let mut raws = raw.chunks_exact(LANES * M::R);
    for (o, r) in (&mut outs).zip(&mut raws) {
        for (lane, x) in states.iter_mut().enumerate() {
            let o = &mut o[lane * M::W..(lane + 1) * M::W];
            let r = &r[lane * M::R..(lane + 1) * M::R];
            step::<M>(x, table, mask, p, words, &mut pos, r, o);
        }
    }
    let tail = outs
        .into_remainder()
        .chunks_exact_mut(M::W)
        .zip(raws.remainder().chunks_exact(M::R));
    for (x, (o, r)) in states.iter_mut().zip(tail) {
        step::<M>(x, table, mask, p, words, &mut pos, r, o);
    }
    if pos > words.len() {
        return Err(Error::Truncated {
            unit: "words",
            needed: pos,
            available: words.len(),
        });
    }
    if pos < words.len() {
        return Err(Error::TrailingData {
            unit: "words",
            count: words.len() - pos,
        });
    }
    if states.iter().any(|&s| s != STATE_LOWER) {
        return Err(Error::CorruptStream {
            codec: CODEC,
            position: usize::MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::rans::Rans;
    use proptest::prelude::*;

    /// A chunk of `n` two-byte elements whose symbols follow a skewed
    /// distribution (as exponents do): its words, raw bytes and table.
    fn chunk(n: usize, spread: u32, seed: u64, p: u32) -> (Vec<u16>, Vec<u8>, Vec<u32>) {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let symbols: Vec<u8> = (0..n)
            .map(|_| {
                let r = next();
                (120 + (r % u64::from(spread)) * (r >> 60) / 15) as u8
            })
            .collect();
        let raw: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        let mut counts = [0u64; 256];
        for &x in &symbols {
            counts[usize::from(x)] += 1;
        }
        let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        let model = Categorical::from_counts(&counts[..used], p).unwrap();
        let words = Rans::<LANES>::encode_categorical(&model, &symbols).unwrap();
        (words, raw, packed_table(&model).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The AVX2 rounds and the scalar loop decode the same bytes and
        /// report the same errors, on valid and on damaged streams.
        #[test]
        fn avx2_matches_the_scalar_decoder(
            n in 1usize..3000,
            spread in 1u32..40,
            seed in any::<u64>(),
            p in 8u32..=12,
            damage in proptest::option::of((any::<usize>(), any::<u16>())),
            cut in 0usize..3,
            f16 in any::<bool>(),
        ) {
            let (mut words, raw, table) = chunk(n, spread, seed, p);
            if let Some((at, v)) = damage {
                let at = at % words.len();
                words[at] ^= v;
            }
            words.truncate(words.len().saturating_sub(cut));
            let format = if f16 { FloatFormat::F16 } else { FloatFormat::Bf16 };
            let mut a = vec![0u8; 2 * n];
            let mut b = vec![0u8; 2 * n];
            let ra = decode_with(format, &table, p, &words, &raw, &mut a, true);
            let rb = decode_with(format, &table, p, &words, &raw, &mut b, false);
            prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
            prop_assert_eq!(a, b);
            if damage.is_none() && cut == 0 {
                prop_assert!(ra.is_ok());
            }
        }

        /// Two chunks in lockstep decode as each does alone, and report the
        /// first chunk's error first.
        #[test]
        fn pairs_match_single_chunks(
            na in 1usize..2000,
            nb in 1usize..2000,
            seed in any::<u64>(),
            damage in proptest::option::of((any::<bool>(), any::<usize>(), 1u16..)),
            f16 in any::<bool>(),
        ) {
            let (mut wa, raw_a, ta) = chunk(na, 12, seed, 12);
            let (mut wb, raw_b, tb) = chunk(nb, 30, seed ^ 0x5555, 10);
            if let Some((first, at, v)) = damage {
                let w = if first { &mut wa } else { &mut wb };
                let at = at % w.len();
                w[at] ^= v;
            }
            let format = if f16 { FloatFormat::F16 } else { FloatFormat::Bf16 };
            let (mut pa, mut pb) = (vec![0u8; 2 * na], vec![0u8; 2 * nb]);
            let pair = decode_pair(format, (&ta, 12, &wa, &raw_a, &mut pa), (&tb, 10, &wb, &raw_b, &mut pb));
            let (mut sa, mut sb) = (vec![0u8; 2 * na], vec![0u8; 2 * nb]);
            let one = decode_with(format, &ta, 12, &wa, &raw_a, &mut sa, false);
            let two = decode_with(format, &tb, 10, &wb, &raw_b, &mut sb, false);
            let expect = one.and(two);
            prop_assert_eq!(format!("{pair:?}"), format!("{expect:?}"));
            if pair.is_ok() {
                prop_assert_eq!(pa, sa);
                prop_assert_eq!(pb, sb);
            }
        }
    }
}
