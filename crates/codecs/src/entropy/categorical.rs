//! The categorical model: a quantized distribution over `0..alphabet`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{EntropyModel, Interval, MAX_PRECISION};
use crate::varint::{read_uvarint, write_uvarint};
use crate::{Error, Result};

/// A distribution over the symbols `0..len()`, quantized to frequencies that
/// sum to `2^precision`.
///
/// [`from_counts`](Categorical::from_counts) gives every symbol with a nonzero
/// count a frequency of at least 1 (so it stays codable) and symbols that never
/// occur a frequency of 0. Among those frequencies it picks, greedily, ones that
/// minimize the coded size `Σ count_i · (precision − log2 freq_i)`: each symbol
/// starts at its rounded share, then single units move where they cost least
/// (the cost is convex in each frequency, so the greedy steps are optimal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Categorical {
    precision: u32,
    /// `cdf[i]` = Σ freq below symbol `i`; `len() + 1` entries, the last `2^precision`.
    cdf: Vec<u32>,
}

/// A `f64` key ordered totally, for the heap of greedy adjustments.
#[derive(PartialEq)]
struct Key(f64, usize);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

pub(crate) fn check_precision(precision: u32) -> Result<()> {
    if (1..=MAX_PRECISION).contains(&precision) {
        Ok(())
    } else {
        Err(Error::InvalidPrecision {
            precision,
            max: MAX_PRECISION,
        })
    }
}

/// Quantizes nonnegative weights to frequencies summing to `2^precision`, every
/// positive weight getting at least 1 (see [`Categorical`]).
pub(crate) fn quantize_weights(weights: &[f64], precision: u32) -> Result<Vec<u32>> {
    check_precision(precision)?;
    let m = 1u64 << precision;
    let total: f64 = weights.iter().sum();
    let nonzero = weights.iter().filter(|&&w| w > 0.0).count();
    if nonzero == 0 || !total.is_finite() {
        return Err(Error::EmptyModel);
    }
    if nonzero as u64 > m {
        return Err(Error::TooManySymbolsForPrecision {
            symbols: nonzero,
            precision,
        });
    }
    let scale = m as f64 / total;
    let mut freq: Vec<u32> = weights
        .iter()
        .map(|&w| {
            if w > 0.0 {
                ((w * scale).round() as u32).clamp(1, m as u32)
            } else {
                0
            }
        })
        .collect();
    let mut sum: u64 = freq.iter().map(|&f| u64::from(f)).sum();
    // Units move one at a time to where the coded size `Σ w log2(1/f)` changes least.
    if sum > m {
        let cost = |i: usize, f: u32| Key(-(weights[i] * (f as f64 / (f - 1) as f64).ln()), i);
        let mut heap: BinaryHeap<Key> = (0..freq.len())
            .filter(|&i| freq[i] > 1)
            .map(|i| cost(i, freq[i]))
            .collect();
        while sum > m {
            let Some(Key(_, i)) = heap.pop() else {
                break;
            };
            freq[i] -= 1;
            sum -= 1;
            if freq[i] > 1 {
                heap.push(cost(i, freq[i]));
            }
        }
    } else if sum < m {
        let gain = |i: usize, f: u32| Key(weights[i] * ((f + 1) as f64 / f as f64).ln(), i);
        let mut heap: BinaryHeap<Key> = (0..freq.len())
            .filter(|&i| freq[i] > 0)
            .map(|i| gain(i, freq[i]))
            .collect();
        while sum < m {
            let Some(Key(_, i)) = heap.pop() else {
                break;
            };
            freq[i] += 1;
            sum += 1;
            heap.push(gain(i, freq[i]));
        }
    }
    debug_assert_eq!(sum, m);
    Ok(freq)
}

impl Categorical {
    /// A good default precision: 14 bits keeps the quantization loss far below
    /// 0.1% for alphabets up to a few hundred symbols.
    pub const DEFAULT_PRECISION: u32 = 14;

    /// Quantizes the empirical distribution of `counts` (`counts[s]` occurrences
    /// of symbol `s`) to `precision` bits.
    ///
    /// # Errors
    /// [`Error::InvalidPrecision`] outside `1..=16`, [`Error::InvalidAlphabet`]
    /// for an empty alphabet or one above 2^16, [`Error::EmptyModel`] when every
    /// count is zero, [`Error::TooManySymbolsForPrecision`] when more than
    /// `2^precision` symbols occur.
    pub fn from_counts(counts: &[u64], precision: u32) -> Result<Self> {
        check_alphabet(counts.len())?;
        let weights: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        Self::from_frequencies(&quantize_weights(&weights, precision)?, precision)
    }

    /// A model with the given frequencies, which must sum to `2^precision`.
    ///
    /// # Errors
    /// [`Error::InvalidPrecision`], [`Error::InvalidAlphabet`],
    /// [`Error::InvalidFrequencies`] when the sum differs.
    pub fn from_frequencies(freqs: &[u32], precision: u32) -> Result<Self> {
        check_precision(precision)?;
        check_alphabet(freqs.len())?;
        let expected = 1u64 << precision;
        let mut cdf = Vec::with_capacity(freqs.len() + 1);
        let mut sum = 0u64;
        cdf.push(0);
        for &f in freqs {
            sum += u64::from(f);
            if sum > expected {
                return Err(Error::InvalidFrequencies { sum, expected });
            }
            cdf.push(sum as u32);
        }
        if sum != expected {
            return Err(Error::InvalidFrequencies { sum, expected });
        }
        Ok(Self { precision, cdf })
    }

    /// Symbols in the alphabet (including those of frequency 0).
    pub fn len(&self) -> usize {
        self.cdf.len() - 1
    }

    /// Never true: a model has at least one symbol.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bits of the frequencies.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// Frequency of each symbol.
    pub fn frequencies(&self) -> Vec<u32> {
        self.cdf.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// The quantized CDF: `len() + 1` entries from 0 to `2^precision`.
    pub fn cdf(&self) -> &[u32] {
        &self.cdf
    }

    /// Bits an ideal coder spends on symbols with these counts under this model
    /// (`Σ count_s · (precision − log2 freq_s)`); infinite if a counted symbol
    /// has frequency 0.
    pub fn cross_entropy_bits(&self, counts: &[u64]) -> f64 {
        let freqs = self.frequencies();
        counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(s, &c)| match freqs.get(s) {
                Some(&f) if f > 0 => c as f64 * (f64::from(self.precision) - f64::from(f).log2()),
                _ => f64::INFINITY,
            })
            .sum()
    }

    /// Appends the model: varint alphabet size, one precision byte, then a varint
    /// frequency per symbol (1 byte for a symbol that does not occur).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_uvarint(self.len() as u64, out);
        out.push(self.precision as u8);
        for w in self.cdf.windows(2) {
            write_uvarint(u64::from(w[1] - w[0]), out);
        }
    }

    /// Reads a model written by [`write_to`](Self::write_to); returns it and the
    /// bytes it took.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::VarintOverflow`], and the errors of
    /// [`from_frequencies`](Self::from_frequencies).
    pub fn read_from(bytes: &[u8]) -> Result<(Self, usize)> {
        let (len, mut pos) = read_uvarint(bytes)?;
        // Each frequency takes at least one byte: check before allocating.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        check_alphabet(len)?;
        let needed = len.saturating_add(1);
        if bytes.len() - pos < needed {
            return Err(Error::Truncated {
                unit: "bytes",
                needed: pos.saturating_add(needed),
                available: bytes.len(),
            });
        }
        let precision = u32::from(bytes[pos]);
        pos += 1;
        check_precision(precision)?;
        let mut freqs = Vec::with_capacity(len);
        for _ in 0..len {
            let (f, used) = read_uvarint(&bytes[pos..])?;
            pos += used;
            if f > 1u64 << precision {
                return Err(Error::InvalidFrequencies {
                    sum: f,
                    expected: 1 << precision,
                });
            }
            freqs.push(f as u32);
        }
        Ok((Self::from_frequencies(&freqs, precision)?, pos))
    }

    /// The slot → symbol table of the fast rANS decoder
    /// ([`Rans::decode_categorical`](super::rans::Rans::decode_categorical)).
    pub fn decode_table(&self) -> DecodeTable {
        let slots = 1usize << self.precision;
        let mut entries = Vec::with_capacity(slots);
        let mut symbols = Vec::with_capacity(slots);
        for (s, w) in self.cdf.windows(2).enumerate() {
            let (start, freq) = (w[0], w[1] - w[0]);
            for slot in start..w[1] {
                entries.push(((freq - 1) << 16) | (slot - start));
                symbols.push(s as u16);
            }
        }
        DecodeTable {
            precision: self.precision,
            alphabet: self.len(),
            entries: entries.into_boxed_slice(),
            symbols: symbols.into_boxed_slice(),
        }
    }

    /// Binary search of the symbol whose interval holds `slot`.
    fn find(&self, slot: u32) -> usize {
        self.cdf.partition_point(|&c| c <= slot) - 1
    }
}

fn check_alphabet(size: usize) -> Result<()> {
    const MAX: usize = 1 << 16;
    if (1..=MAX).contains(&size) {
        Ok(())
    } else {
        Err(Error::InvalidAlphabet { size, max: MAX })
    }
}

impl EntropyModel for Categorical {
    type Symbol = usize;

    fn precision(&self) -> u32 {
        self.precision
    }

    fn interval(&self, symbol: usize) -> Option<Interval> {
        let start = *self.cdf.get(symbol)?;
        let end = *self.cdf.get(symbol + 1)?;
        (end > start).then_some(Interval {
            start,
            freq: end - start,
        })
    }

    fn symbol_at(&self, slot: u32) -> Option<(usize, Interval)> {
        if slot >> self.precision != 0 {
            return None;
        }
        let s = self.find(slot);
        Some((s, self.interval(s)?))
    }
}

/// The lookup table of a [`Categorical`] for table-driven rANS decoding: for
/// each of the `2^precision` slots, its symbol and, packed in a `u32`,
/// `freq − 1` (high half) and `slot − start` (low half).
#[derive(Debug, Clone)]
pub struct DecodeTable {
    pub(crate) precision: u32,
    pub(crate) alphabet: usize,
    pub(crate) entries: Box<[u32]>,
    pub(crate) symbols: Box<[u16]>,
}

impl DecodeTable {
    /// Bits of the model's frequencies (the table has `2^precision` slots).
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// Symbols in the model's alphabet.
    pub fn alphabet(&self) -> usize {
        self.alphabet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurring_symbol_gets_a_slot() {
        let m = Categorical::from_counts(&[1_000_000, 1, 0, 3], 8).unwrap();
        let f = m.frequencies();
        assert_eq!(f.iter().sum::<u32>(), 256);
        assert_eq!(f[2], 0);
        assert!(f[1] >= 1 && f[3] >= 1);
        assert_eq!(m.interval(2), None);
        assert_eq!(m.interval(4), None);
    }

    #[test]
    fn quantization_follows_the_counts() {
        let m = Categorical::from_counts(&[1, 1, 2], 2).unwrap();
        assert_eq!(m.frequencies(), vec![1, 1, 2]);
        let m = Categorical::from_counts(&[7], 16).unwrap();
        assert_eq!(m.frequencies(), vec![65536]);
    }

    #[test]
    fn bad_models_are_errors() {
        assert!(matches!(
            Categorical::from_counts(&[0, 0], 8),
            Err(Error::EmptyModel)
        ));
        assert!(matches!(
            Categorical::from_counts(&[1, 1, 1], 1),
            Err(Error::TooManySymbolsForPrecision { .. })
        ));
        assert!(matches!(
            Categorical::from_counts(&[1], 17),
            Err(Error::InvalidPrecision { .. })
        ));
        assert!(matches!(
            Categorical::from_frequencies(&[1, 2], 2),
            Err(Error::InvalidFrequencies {
                sum: 3,
                expected: 4
            })
        ));
    }

    #[test]
    fn serialization_round_trips_and_rejects_truncation() {
        let m = Categorical::from_counts(&[5, 0, 9, 300, 1], 12).unwrap();
        let mut bytes = Vec::new();
        m.write_to(&mut bytes);
        let (back, used) = Categorical::read_from(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(used, bytes.len());
        for cut in 0..bytes.len() {
            assert!(Categorical::read_from(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn slots_find_their_symbols() {
        let m = Categorical::from_counts(&[3, 0, 1, 4], 3).unwrap();
        let t = m.decode_table();
        for slot in 0..8u32 {
            let (s, iv) = m.symbol_at(slot).unwrap();
            assert!(iv.start <= slot && slot < iv.start + iv.freq);
            assert_eq!(usize::from(t.symbols[slot as usize]), s);
            assert_eq!(t.entries[slot as usize] & 0xffff, slot - iv.start);
            assert_eq!((t.entries[slot as usize] >> 16) + 1, iv.freq);
        }
    }
}
