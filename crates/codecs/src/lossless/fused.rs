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
    let mut pos = 2 * LANES;
    let mask = (1u32 << p) - 1;
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
