//! Range asymmetric numeral systems (rANS; Duda 2013, "Asymmetric numeral
//! systems: entropy coding combining speed of Huffman coding with compression
//! rate of arithmetic coding", arXiv:1311.2540).
//!
//! Each coder state is a `u32` kept in `[2^16, 2^32)`; it moves to the word
//! stream 16 bits at a time. Encoding a symbol with interval `(start, freq)` at
//! precision `p` maps `x → ⌊x / freq⌋·2^p + x mod freq + start`, first pushing
//! the low 16 bits of `x` while `x ≥ freq·2^(32−p)`; decoding inverts it, reading
//! a word whenever the state falls below `2^16`. rANS is a stack: the encoder
//! runs over the symbols backwards, and the words are stored reversed so that
//! the decoder reads them front to back.
//!
//! [`Rans<LANES>`](Rans) interleaves `LANES` independent states: symbol `i` is
//! coded by state `i mod LANES`, all sharing one word stream, so the decoder's
//! dependency chains run in parallel (ryg's interleaving; 4 lanes in
//! [`DefaultRans`]). The stream starts with the lanes' final states (two words
//! each, high half first). The encoder starts every state at `2^16`, so a
//! decoder that ends anywhere else, or with words left over, reports the stream
//! as corrupt.
//!
//! Two paths:
//! - [`Rans::encode_with`] / [`Rans::decode_with`]: any [`EntropyModel`],
//!   one per symbol (per-element Gaussians, [`CdfTables`](super::CdfTables)).
//! - [`Rans::encode_categorical`] / [`Rans::decode_categorical`]: one static
//!   [`Categorical`], decoded through its slot → symbol [`DecodeTable`].
//!
//! [`compress`] / [`decompress`] wrap the fast path in a self-contained byte
//! format: varint symbol count, the model ([`Categorical::write_to`]), then the
//! words, little-endian.

use super::categorical::check_precision;
use super::{read_count, symbol_counts, Categorical, DecodeTable, EntropyModel, Interval, Symbol};
use crate::varint::write_uvarint;
use crate::{Error, Result};

/// The lower bound of a normalized state (`L`); states live in `[L, 2^32)`.
pub const STATE_LOWER: u32 = 1 << 16;
/// Bits moved between a state and the stream at a time.
pub const WORD_BITS: u32 = 16;
/// Precision [`compress`] uses unless told otherwise.
pub const DEFAULT_PRECISION: u32 = Categorical::DEFAULT_PRECISION;

const CODEC: &str = "rANS";

/// An rANS coder with `LANES` interleaved states (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rans<const LANES: usize>;

/// Four interleaved states: enough independent chains for an out-of-order core.
pub type DefaultRans = Rans<4>;

/// Encodes one symbol: renormalize (at most one word), then push it on the state.
#[inline(always)]
fn put(state: &mut u32, words: &mut Vec<u16>, iv: Interval, precision: u32) {
    let x_max = u64::from(iv.freq) << (32 - precision);
    if u64::from(*state) >= x_max {
        words.push(*state as u16);
        *state >>= WORD_BITS;
    }
    *state = ((*state / iv.freq) << precision) + (*state % iv.freq) + iv.start;
}

/// Reverses the pushed words behind the final states, for forward decoding.
fn finish<const LANES: usize>(states: [u32; LANES], mut words: Vec<u16>) -> Vec<u16> {
    for &s in states.iter().rev() {
        words.push(s as u16);
        words.push((s >> 16) as u16);
    }
    words.reverse();
    words
}

/// Reads the lanes' initial states.
fn start<const LANES: usize>(words: &[u16]) -> Result<[u32; LANES]> {
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
    Ok(states)
}

/// Checks that decoding consumed the stream exactly and returned to the start.
fn check_end<const LANES: usize>(states: &[u32; LANES], pos: usize, words: usize) -> Result<()> {
    if pos > words {
        return Err(Error::Truncated {
            unit: "words",
            needed: pos,
            available: words,
        });
    }
    if pos < words {
        return Err(Error::TrailingData {
            unit: "words",
            count: words - pos,
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

impl<const LANES: usize> Rans<LANES> {
    const LANES_OK: () = assert!(LANES >= 1, "an rANS coder needs at least one lane");

    /// Encodes `symbols[i]` with model `model_at(i)` for every `i`.
    ///
    /// # Errors
    /// [`Error::ZeroProbability`] for a symbol its model cannot code,
    /// [`Error::InvalidPrecision`] for a model outside `1..=16` bits, and any
    /// error of `model_at`.
    pub fn encode_with<M, F>(symbols: &[M::Symbol], mut model_at: F) -> Result<Vec<u16>>
    where
        M: EntropyModel,
        F: FnMut(usize) -> Result<M>,
    {
        let () = Self::LANES_OK;
        let mut states = [STATE_LOWER; LANES];
        let mut words = Vec::with_capacity(symbols.len() / 2 + 2 * LANES);
        for (i, &sym) in symbols.iter().enumerate().rev() {
            let model = model_at(i)?;
            let p = model.precision();
            check_precision(p)?;
            let iv = model
                .interval(sym)
                .filter(|iv| iv.freq >= 1 && u64::from(iv.start) + u64::from(iv.freq) <= 1 << p)
                .ok_or(Error::ZeroProbability { index: i })?;
            put(&mut states[i % LANES], &mut words, iv, p);
        }
        Ok(finish(states, words))
    }

    /// Decodes `n` symbols, symbol `i` with model `model_at(i)` (the models the
    /// encoder used).
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::TrailingData`], [`Error::CorruptStream`]
    /// for a stream the encoder cannot have written, any error of `model_at`.
    pub fn decode_with<M, F>(words: &[u16], n: usize, mut model_at: F) -> Result<Vec<M::Symbol>>
    where
        M: EntropyModel,
        F: FnMut(usize) -> Result<M>,
    {
        let () = Self::LANES_OK;
        let mut states = start::<LANES>(words)?;
        let mut pos = 2 * LANES;
        let mut out = Vec::with_capacity(n.min(words.len().saturating_mul(16)));
        for i in 0..n {
            let model = model_at(i)?;
            let p = model.precision();
            check_precision(p)?;
            let x = states[i % LANES];
            let slot = x & ((1 << p) - 1);
            let corrupt = Error::CorruptStream {
                codec: CODEC,
                position: i,
            };
            let (sym, iv) = model.symbol_at(slot).ok_or(corrupt)?;
            let bias = slot.wrapping_sub(iv.start);
            if bias >= iv.freq || iv.freq > 1 << p {
                return Err(Error::CorruptStream {
                    codec: CODEC,
                    position: i,
                });
            }
            let mut x = iv.freq * (x >> p) + bias;
            if x < STATE_LOWER {
                let w = *words.get(pos).ok_or(Error::Truncated {
                    unit: "words",
                    needed: pos + 1,
                    available: words.len(),
                })?;
                x = (x << WORD_BITS) | u32::from(w);
                pos += 1;
            }
            states[i % LANES] = x;
            out.push(sym);
        }
        check_end(&states, pos, words.len())?;
        Ok(out)
    }

    /// Encodes `symbols` with one static categorical model (the fast path).
    ///
    /// # Errors
    /// [`Error::ZeroProbability`] for a symbol outside the alphabet or of frequency 0.
    pub fn encode_categorical<S: Symbol>(model: &Categorical, symbols: &[S]) -> Result<Vec<u16>> {
        let () = Self::LANES_OK;
        let p = model.precision();
        let cdf = model.cdf();
        let mut states = [STATE_LOWER; LANES];
        let mut words = Vec::with_capacity(symbols.len() / 2 + 2 * LANES);
        for (i, &sym) in symbols.iter().enumerate().rev() {
            let s = sym.index();
            let iv = match (cdf.get(s), cdf.get(s + 1)) {
                (Some(&start), Some(&end)) if end > start => Interval {
                    start,
                    freq: end - start,
                },
                _ => return Err(Error::ZeroProbability { index: i }),
            };
            put(&mut states[i % LANES], &mut words, iv, p);
        }
        Ok(finish(states, words))
    }

    /// Decodes `out.len()` symbols coded by [`encode_categorical`](Self::encode_categorical)
    /// with the model of `table`.
    ///
    /// The loop per symbol is one table lookup, a multiply-add and a branch-free
    /// refill; reads past the end of `words` see zeros and are reported after the
    /// loop, so the hot loop has no early exit.
    ///
    /// # Errors
    /// [`Error::InvalidAlphabet`] when the model's alphabet does not fit `S`;
    /// [`Error::Truncated`], [`Error::TrailingData`], [`Error::CorruptStream`].
    pub fn decode_categorical<S: Symbol>(
        table: &DecodeTable,
        words: &[u16],
        out: &mut [S],
    ) -> Result<()> {
        let () = Self::LANES_OK;
        if table.alphabet > S::MAX_ALPHABET {
            return Err(Error::InvalidAlphabet {
                size: table.alphabet,
                max: S::MAX_ALPHABET,
            });
        }
        let mut states = start::<LANES>(words)?;
        let mut pos = 2 * LANES;
        let p = table.precision;
        let entries = &table.entries[..];
        let symbols = &table.symbols[..];
        // Both tables hold 2^p entries, so `x & mask` indexes them in bounds.
        let mask = entries.len().min(symbols.len()).wrapping_sub(1) as u32;
        let mut chunks = out.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (x, o) in states.iter_mut().zip(chunk.iter_mut()) {
                decode_step(x, o, entries, symbols, mask, p, words, &mut pos);
            }
        }
        for (x, o) in states.iter_mut().zip(chunks.into_remainder()) {
            decode_step(x, o, entries, symbols, mask, p, words, &mut pos);
        }
        check_end(&states, pos, words.len())
    }
}

/// One table-driven decode: lookup, state update, refill without a branch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_step<S: Symbol>(
    x: &mut u32,
    out: &mut S,
    entries: &[u32],
    symbols: &[u16],
    mask: u32,
    p: u32,
    words: &[u16],
    pos: &mut usize,
) {
    let slot = (*x & mask) as usize;
    let e = entries[slot];
    *out = S::from_index(symbols[slot]);
    let y = ((e >> 16) + 1) * (*x >> p) + (e & 0xffff);
    let w = u32::from(words.get(*pos).copied().unwrap_or(0));
    let refill = y < STATE_LOWER;
    *x = if refill { (y << WORD_BITS) | w } else { y };
    *pos += usize::from(refill);
}

/// Compresses `symbols` with a [`Categorical`] model of their counts at
/// `precision` bits and [`DefaultRans`], header included (see the [module docs](self)).
///
/// # Errors
/// [`Error::InvalidPrecision`], [`Error::TooManySymbolsForPrecision`].
pub fn compress<S: Symbol>(symbols: &[S], precision: u32) -> Result<Vec<u8>> {
    check_precision(precision)?;
    let mut out = Vec::new();
    write_uvarint(symbols.len() as u64, &mut out);
    if symbols.is_empty() {
        return Ok(out);
    }
    let model = Categorical::from_counts(&symbol_counts(symbols), precision)?;
    model.write_to(&mut out);
    let words = DefaultRans::encode_categorical(&model, symbols)?;
    out.reserve(2 * words.len());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    Ok(out)
}

/// Decompresses the output of [`compress`], refusing headers that declare more
/// than `max_symbols` symbols.
///
/// # Errors
/// [`Error::TooManySymbols`], the model's read errors, [`Error::Truncated`]
/// (also for an odd number of stream bytes), [`Error::TrailingData`],
/// [`Error::CorruptStream`], [`Error::InvalidAlphabet`] for a model too wide for `S`.
pub fn decompress<S: Symbol>(bytes: &[u8], max_symbols: usize) -> Result<Vec<S>> {
    let mut pos = 0;
    let n = read_count(bytes, &mut pos, max_symbols)?;
    if n == 0 {
        if pos < bytes.len() {
            return Err(Error::TrailingData {
                unit: "bytes",
                count: bytes.len() - pos,
            });
        }
        return Ok(Vec::new());
    }
    let (model, used) = Categorical::read_from(&bytes[pos..])?;
    pos += used;
    if model.len() > S::MAX_ALPHABET {
        return Err(Error::InvalidAlphabet {
            size: model.len(),
            max: S::MAX_ALPHABET,
        });
    }
    let payload = &bytes[pos..];
    if !payload.len().is_multiple_of(2) {
        return Err(Error::Truncated {
            unit: "bytes",
            needed: payload.len() + 1,
            available: payload.len(),
        });
    }
    let words: Vec<u16> = payload
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut out = vec![S::default(); n];
    DefaultRans::decode_categorical(&model.decode_table(), &words, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::{CdfTables, Quantized};

    fn skewed(n: usize) -> Vec<u8> {
        (0..n as u64)
            .map(|i| {
                let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58;
                (h.trailing_zeros().min(7)) as u8
            })
            .collect()
    }

    #[test]
    fn fast_and_general_paths_write_the_same_words() {
        let symbols = skewed(1001);
        let model = Categorical::from_counts(&symbol_counts(&symbols), 12).unwrap();
        let fast = Rans::<3>::encode_categorical(&model, &symbols).unwrap();
        let idx: Vec<usize> = symbols.iter().map(|&s| usize::from(s)).collect();
        let general = Rans::<3>::encode_with(&idx, |_| Ok(&model)).unwrap();
        assert_eq!(fast, general);
        let back = Rans::<3>::decode_with(&general, idx.len(), |_| Ok(&model)).unwrap();
        assert_eq!(back, idx);
        let mut out = vec![0u8; symbols.len()];
        Rans::<3>::decode_categorical(&model.decode_table(), &fast, &mut out).unwrap();
        assert_eq!(out, symbols);
    }

    #[test]
    fn single_lane_and_single_symbol_models() {
        let symbols = vec![4u8; 100];
        let packed = compress(&symbols, 16).unwrap();
        assert_eq!(decompress::<u8>(&packed, 100).unwrap(), symbols);
        // A certain symbol costs nothing: only the header and the states remain.
        assert!(packed.len() < 30, "{}", packed.len());
        let model = Categorical::from_counts(&[1, 2, 3], 4).unwrap();
        let words = Rans::<1>::encode_with(&[0, 1, 2, 2], |_| Ok(&model)).unwrap();
        assert_eq!(
            Rans::<1>::decode_with(&words, 4, |_| Ok(&model)).unwrap(),
            vec![0, 1, 2, 2]
        );
    }

    #[test]
    fn per_element_gaussians_round_trip() {
        let values: Vec<i32> = (0..500).map(|i| ((i * 37) % 23) - 11).collect();
        let model_at = |i: usize| {
            let mean = ((i * 37) % 23) as f64 - 11.0 + 0.3;
            Quantized::gaussian(mean, 0.5 + (i % 5) as f64, -40..=40, 16)
        };
        let words = DefaultRans::encode_with(&values, model_at).unwrap();
        // Means close to the values: far below the 6.4 bits of a uniform code.
        assert!(words.len() * 16 < values.len() * 4, "{}", words.len());
        assert_eq!(
            DefaultRans::decode_with(&words, values.len(), model_at).unwrap(),
            values
        );
    }

    #[test]
    fn cdf_tables_round_trip() {
        let tables = CdfTables::gaussian_scales(&[0.2, 1.0, 4.0], 1e-6, 12).unwrap();
        let idx = |i: usize| i % 3;
        let values: Vec<i32> = (0..300)
            .map(|i| {
                let r = tables.table(idx(i)).unwrap().range();
                ((i as i32 % 7) - 3).clamp(*r.start(), *r.end())
            })
            .collect();
        let model_at = |i: usize| tables.table(idx(i));
        let words = DefaultRans::encode_with(&values, model_at).unwrap();
        let back = DefaultRans::decode_with(&words, values.len(), model_at).unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn out_of_model_symbols_are_errors() {
        let model = Categorical::from_counts(&[1, 0, 1], 8).unwrap();
        assert!(matches!(
            DefaultRans::encode_categorical(&model, &[0u8, 1]),
            Err(Error::ZeroProbability { index: 1 })
        ));
        assert!(matches!(
            DefaultRans::encode_categorical(&model, &[7u8]),
            Err(Error::ZeroProbability { index: 0 })
        ));
        let wide = Categorical::from_counts(&vec![1; 300], 12).unwrap();
        let mut out = [0u8; 1];
        assert!(matches!(
            DefaultRans::decode_categorical(&wide.decode_table(), &[0; 8], &mut out),
            Err(Error::InvalidAlphabet { .. })
        ));
    }

    #[test]
    fn damaged_streams_are_errors() {
        let symbols = skewed(4000);
        let packed = compress(&symbols, 12).unwrap();
        assert!(decompress::<u8>(&packed, 3999).is_err());
        for cut in [
            0,
            1,
            5,
            packed.len() / 2,
            packed.len() - 2,
            packed.len() - 1,
        ] {
            assert!(decompress::<u8>(&packed[..cut], 4000).is_err(), "cut {cut}");
        }
        let mut longer = packed.clone();
        longer.extend_from_slice(&[0, 0]);
        assert!(decompress::<u8>(&longer, 4000).is_err());
        // Flipping a bit of the payload is caught by the final-state check
        // (or decodes to different symbols).
        let mut flipped = packed.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x10;
        assert_ne!(decompress::<u8>(&flipped, 4000).ok(), Some(symbols));
    }
}
