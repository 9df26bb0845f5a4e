//! A range coder (Martin 1979; the carry-propagating byte-wise form of LZMA)
//! and an adaptive model whose counts follow the source as it is coded.
//!
//! The encoder keeps `low` (33 bits, the carry in bit 32) and `range` in
//! `[2^24, 2^32)`; coding `(start, freq)` of `total` narrows the range to
//! `⌊range/total⌋·freq` and shifts out bytes while it is below `2^24`. A byte
//! that a later carry may still change waits in a cache, with the count of
//! `0xFF` bytes behind it. The stream begins with a zero byte (the empty
//! cache) and ends with four flush bytes; the decoder consumes exactly those.
//!
//! [`AdaptiveModel`] starts every symbol at count 1 and adds an increment after
//! each coded symbol, halving all counts when the total passes a limit, so
//! recent symbols weigh more: suited to sources whose statistics drift.
//!
//! [`compress`] / [`decompress`]: varint symbol count, varint alphabet size,
//! then the range-coded bytes with a default [`AdaptiveModel`].

use super::{read_count, EntropyModel, Symbol};
use crate::varint::write_uvarint;
use crate::{Error, Result};

const CODEC: &str = "range";
const TOP: u32 = 1 << 24;
/// Largest total of a model the range coder accepts (so `range / total ≥ 2^8`).
pub const MAX_TOTAL: u32 = 1 << 16;

/// Counts that adapt as symbols are coded, kept in a Fenwick tree (prefix sums
/// and symbol search in `O(log alphabet)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveModel {
    counts: Vec<u32>,
    /// Fenwick tree over `counts`, 1-based (`tree[0]` unused).
    tree: Vec<u32>,
    total: u32,
    increment: u32,
    limit: u32,
}

impl AdaptiveModel {
    /// Count added to a symbol each time it is coded.
    pub const DEFAULT_INCREMENT: u32 = 32;
    /// Total above which counts are halved.
    pub const DEFAULT_LIMIT: u32 = MAX_TOTAL;

    /// A model over `0..alphabet` with the default increment and limit.
    ///
    /// # Errors
    /// As [`with_params`](Self::with_params).
    pub fn new(alphabet: usize) -> Result<Self> {
        Self::with_params(alphabet, Self::DEFAULT_INCREMENT, Self::DEFAULT_LIMIT)
    }

    /// A model over `0..alphabet` adding `increment` per coded symbol and halving
    /// the counts (rounding up, so none reaches 0) when their total exceeds `limit`.
    ///
    /// # Errors
    /// [`Error::InvalidAlphabet`] unless `1 ≤ alphabet` and
    /// `alphabet + increment ≤ limit ≤ 2^16`, with `increment ≥ 1`.
    pub fn with_params(alphabet: usize, increment: u32, limit: u32) -> Result<Self> {
        let fits = alphabet >= 1
            && increment >= 1
            && limit <= MAX_TOTAL
            && alphabet as u64 + u64::from(increment) <= u64::from(limit);
        if !fits {
            return Err(Error::InvalidAlphabet {
                size: alphabet,
                max: (limit.min(MAX_TOTAL).saturating_sub(increment.max(1))) as usize,
            });
        }
        let mut model = Self {
            counts: vec![1; alphabet],
            tree: vec![0; alphabet + 1],
            total: alphabet as u32,
            increment,
            limit,
        };
        model.rebuild();
        Ok(model)
    }

    /// Symbols in the alphabet.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Never true: the alphabet has at least one symbol.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The current total of the counts.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// `(start, freq)` of `symbol` under the current counts, `None` outside the alphabet.
    pub fn interval(&self, symbol: usize) -> Option<(u32, u32)> {
        let freq = *self.counts.get(symbol)?;
        let mut start = 0;
        let mut i = symbol;
        while i > 0 {
            start += self.tree[i];
            i &= i - 1;
        }
        Some((start, freq))
    }

    /// The symbol whose interval holds `target < total`, with its `(start, freq)`.
    pub fn find(&self, target: u32) -> (usize, u32, u32) {
        let n = self.counts.len();
        let mut pos = 0;
        let mut rem = target;
        let mut step = n.next_power_of_two();
        while step > 0 {
            if pos + step <= n && self.tree[pos + step] <= rem {
                pos += step;
                rem -= self.tree[pos];
            }
            step >>= 1;
        }
        let symbol = pos.min(n - 1);
        (symbol, target - rem, self.counts[symbol])
    }

    /// Counts `symbol` once more; halves every count when the total passes the limit.
    pub fn update(&mut self, symbol: usize) {
        self.counts[symbol] += self.increment;
        self.total += self.increment;
        if self.total > self.limit {
            for c in &mut self.counts {
                *c = c.div_ceil(2);
            }
            self.total = self.counts.iter().sum();
            self.rebuild();
        } else {
            let mut i = symbol + 1;
            while i < self.tree.len() {
                self.tree[i] += self.increment;
                i += i & i.wrapping_neg();
            }
        }
    }

    fn rebuild(&mut self) {
        self.tree[1..].copy_from_slice(&self.counts);
        for i in 1..self.tree.len() {
            let parent = i + (i & i.wrapping_neg());
            if parent < self.tree.len() {
                self.tree[parent] += self.tree[i];
            }
        }
    }
}

/// The range encoder (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct RangeEncoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Default for RangeEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeEncoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::new(),
        }
    }

    /// Codes the interval `start .. start + freq` of `total`.
    ///
    /// # Errors
    /// [`Error::InvalidFrequencies`] unless `freq ≥ 1`, `start + freq ≤ total`
    /// and `total ≤ 2^16`.
    pub fn encode(&mut self, start: u32, freq: u32, total: u32) -> Result<()> {
        if freq == 0 || u64::from(start) + u64::from(freq) > u64::from(total) || total > MAX_TOTAL {
            return Err(Error::InvalidFrequencies {
                sum: u64::from(start) + u64::from(freq),
                expected: total.into(),
            });
        }
        let r = self.range / total;
        self.low += u64::from(r) * u64::from(start);
        self.range = r * freq;
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
        Ok(())
    }

    /// Codes `symbol` with `model`, then updates the model.
    ///
    /// # Errors
    /// [`Error::ZeroProbability`] (with index 0) for a symbol outside the alphabet.
    pub fn encode_adaptive(&mut self, model: &mut AdaptiveModel, symbol: usize) -> Result<()> {
        let (start, freq) = model
            .interval(symbol)
            .ok_or(Error::ZeroProbability { index: 0 })?;
        self.encode(start, freq, model.total())?;
        model.update(symbol);
        Ok(())
    }

    /// Codes `symbol` with a static [`EntropyModel`] (total `2^precision`).
    ///
    /// # Errors
    /// [`Error::ZeroProbability`] (with index 0) for a symbol the model cannot code.
    pub fn encode_model<M: EntropyModel>(&mut self, model: &M, symbol: M::Symbol) -> Result<()> {
        let iv = model
            .interval(symbol)
            .ok_or(Error::ZeroProbability { index: 0 })?;
        let total = 1u32
            .checked_shl(model.precision())
            .ok_or(Error::InvalidPrecision {
                precision: model.precision(),
                max: 16,
            })?;
        self.encode(iv.start, iv.freq, total)
    }

    /// Flushes the state and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }

    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low > 0xFFFF_FFFF {
            let carry = (self.low >> 32) as u8;
            let mut byte = self.cache;
            loop {
                self.out.push(byte.wrapping_add(carry));
                byte = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = (self.low >> 24) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }
}

/// The range decoder. Reads past the end see zeros; [`finish`](Self::finish)
/// reports them.
#[derive(Debug, Clone)]
pub struct RangeDecoder<'a> {
    code: u32,
    range: u32,
    bytes: &'a [u8],
    pos: usize,
    decoded: usize,
}

impl<'a> RangeDecoder<'a> {
    /// Starts decoding `bytes`.
    ///
    /// # Errors
    /// [`Error::Truncated`] below 5 bytes, [`Error::CorruptStream`] when the
    /// first byte is not 0.
    pub fn new(bytes: &'a [u8]) -> Result<Self> {
        let Some(head) = bytes.first_chunk::<5>() else {
            return Err(Error::Truncated {
                unit: "bytes",
                needed: 5,
                available: bytes.len(),
            });
        };
        if head[0] != 0 {
            return Err(Error::CorruptStream {
                codec: CODEC,
                position: 0,
            });
        }
        Ok(Self {
            code: u32::from_be_bytes([head[1], head[2], head[3], head[4]]),
            range: u32::MAX,
            bytes,
            pos: 5,
            decoded: 0,
        })
    }

    /// The slot `< total` the next symbol's interval holds; follow with
    /// [`consume`](Self::consume).
    fn target(&self, total: u32) -> Result<(u32, u32)> {
        let r = self.range / total;
        let v = self.code / r;
        if v >= total {
            return Err(Error::CorruptStream {
                codec: CODEC,
                position: self.decoded,
            });
        }
        Ok((r, v))
    }

    fn consume(&mut self, r: u32, start: u32, freq: u32) {
        self.code -= r * start;
        self.range = r * freq;
        while self.range < TOP {
            let b = self.bytes.get(self.pos).copied().unwrap_or(0);
            self.code = (self.code << 8) | u32::from(b);
            self.range <<= 8;
            self.pos += 1;
        }
        self.decoded += 1;
    }

    /// Decodes a symbol with `model`, then updates the model as the encoder did.
    ///
    /// # Errors
    /// [`Error::CorruptStream`].
    pub fn decode_adaptive(&mut self, model: &mut AdaptiveModel) -> Result<usize> {
        let (r, v) = self.target(model.total())?;
        let (symbol, start, freq) = model.find(v);
        self.consume(r, start, freq);
        model.update(symbol);
        Ok(symbol)
    }

    /// Decodes a symbol with a static [`EntropyModel`].
    ///
    /// # Errors
    /// [`Error::CorruptStream`], [`Error::InvalidPrecision`].
    pub fn decode_model<M: EntropyModel>(&mut self, model: &M) -> Result<M::Symbol> {
        let p = model.precision();
        super::categorical::check_precision(p)?;
        let (r, v) = self.target(1 << p)?;
        let corrupt = Error::CorruptStream {
            codec: CODEC,
            position: self.decoded,
        };
        let (symbol, iv) = model.symbol_at(v).ok_or(corrupt)?;
        if v.wrapping_sub(iv.start) >= iv.freq || u64::from(iv.start) + u64::from(iv.freq) > 1 << p
        {
            return Err(Error::CorruptStream {
                codec: CODEC,
                position: self.decoded,
            });
        }
        self.consume(r, iv.start, iv.freq);
        Ok(symbol)
    }

    /// Checks that the stream was consumed exactly.
    ///
    /// # Errors
    /// [`Error::Truncated`] after reads past the end, [`Error::TrailingData`].
    pub fn finish(self) -> Result<()> {
        match self.pos.cmp(&self.bytes.len()) {
            std::cmp::Ordering::Greater => Err(Error::Truncated {
                unit: "bytes",
                needed: self.pos,
                available: self.bytes.len(),
            }),
            std::cmp::Ordering::Less => Err(Error::TrailingData {
                unit: "bytes",
                count: self.bytes.len() - self.pos,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}

/// Compresses `symbols` with a default [`AdaptiveModel`] over `0..=max symbol`.
///
/// # Errors
/// [`Error::InvalidAlphabet`] for an alphabet above `2^16 − 32`.
pub fn compress<S: Symbol>(symbols: &[S]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_uvarint(symbols.len() as u64, &mut out);
    let alphabet = symbols.iter().map(|s| s.index() + 1).max().unwrap_or(0);
    write_uvarint(alphabet as u64, &mut out);
    if symbols.is_empty() {
        return Ok(out);
    }
    let mut model = AdaptiveModel::new(alphabet)?;
    let mut enc = RangeEncoder::new();
    for (index, &s) in symbols.iter().enumerate() {
        enc.encode_adaptive(&mut model, s.index())
            .map_err(|_| Error::ZeroProbability { index })?;
    }
    out.extend(enc.finish());
    Ok(out)
}

/// Decompresses the output of [`compress`], refusing headers that declare more
/// than `max_symbols` symbols.
///
/// # Errors
/// [`Error::TooManySymbols`], [`Error::InvalidAlphabet`], [`Error::Truncated`],
/// [`Error::CorruptStream`], [`Error::TrailingData`].
pub fn decompress<S: Symbol>(bytes: &[u8], max_symbols: usize) -> Result<Vec<S>> {
    let mut pos = 0;
    let n = read_count(bytes, &mut pos, max_symbols)?;
    let alphabet = read_count(bytes, &mut pos, S::MAX_ALPHABET)?;
    if n == 0 {
        return match bytes.len() - pos {
            0 => Ok(Vec::new()),
            count => Err(Error::TrailingData {
                unit: "bytes",
                count,
            }),
        };
    }
    let mut model = AdaptiveModel::new(alphabet)?;
    let mut dec = RangeDecoder::new(&bytes[pos..])?;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let s = dec.decode_adaptive(&mut model)?;
        out.push(S::from_index(s as u16));
    }
    dec.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::Categorical;

    #[test]
    fn fenwick_search_matches_a_linear_scan() {
        let mut m = AdaptiveModel::with_params(7, 5, 100).unwrap();
        for s in [3, 3, 0, 6, 6, 6, 1, 3, 3, 3, 3, 5, 6, 6, 6, 6, 2, 2, 2, 2] {
            m.update(s);
            let mut start = 0;
            for sym in 0..7 {
                let (st, f) = m.interval(sym).unwrap();
                assert_eq!(st, start);
                for t in start..start + f {
                    assert_eq!(m.find(t), (sym, st, f));
                }
                start += f;
            }
            assert_eq!(start, m.total());
            assert!(m.total() <= 100);
        }
    }

    #[test]
    fn drifting_source_beats_a_static_model() {
        // First half mostly 0, second half mostly 3: an adaptive model wins.
        let symbols: Vec<u8> = (0..20_000u32)
            .map(|i| {
                let common = if i < 10_000 { 0 } else { 3 };
                if i % 17 == 0 {
                    (i % 4) as u8
                } else {
                    common
                }
            })
            .collect();
        let packed = compress(&symbols).unwrap();
        assert_eq!(decompress::<u8>(&packed, symbols.len()).unwrap(), symbols);
        let static_bits = 8.0 * crate::entropy::rans::compress(&symbols, 12).unwrap().len() as f64;
        assert!(
            (packed.len() as f64 * 8.0) < 0.8 * static_bits,
            "{} vs {static_bits}",
            packed.len() * 8
        );
    }

    #[test]
    fn static_models_and_carries() {
        let model = Categorical::from_counts(&[1, 1000, 1, 1], 16).unwrap();
        let symbols: Vec<usize> = (0..5000).map(|i| if i % 97 == 0 { 3 } else { 1 }).collect();
        let mut enc = RangeEncoder::new();
        for &s in &symbols {
            enc.encode_model(&model, s).unwrap();
        }
        let bytes = enc.finish();
        let mut dec = RangeDecoder::new(&bytes).unwrap();
        for &s in &symbols {
            assert_eq!(dec.decode_model(&model).unwrap(), s);
        }
        dec.finish().unwrap();
    }

    #[test]
    fn damaged_streams_are_errors() {
        let symbols: Vec<u8> = (0..3000u32).map(|i| (i * i % 13) as u8).collect();
        let packed = compress(&symbols).unwrap();
        for cut in [0, 1, 3, packed.len() / 2, packed.len() - 1] {
            assert!(decompress::<u8>(&packed[..cut], 3000).is_err(), "cut {cut}");
        }
        let mut longer = packed.clone();
        longer.push(7);
        assert!(decompress::<u8>(&longer, 3000).is_err());
        assert!(decompress::<u8>(&packed, 2999).is_err());
    }
}
