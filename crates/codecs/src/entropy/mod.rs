//! Entropy coding: models, and the coders that turn symbols and their
//! probabilities into bits.
//!
//! The layers are separate, as in constriction: an *entropy model* says how
//! likely each symbol is, quantized to integer frequencies that sum to
//! `2^precision`; a *coder* turns symbols and models into words; the words are
//! plain `u16`s (rANS) or bytes (Huffman, range coding).
//!
//! | Coder | Model | Use |
//! |---|---|---|
//! | [`rans`] (asymmetric numeral systems, Duda 2013) | any [`EntropyModel`]; a fast path for one static [`Categorical`] | quantized weights, learned-compression latents |
//! | [`huffman`] (Huffman 1952), canonical, length-limited | code lengths from counts | byte-aligned streams, simple decoders |
//! | [`range`] coder | [`AdaptiveModel`] (counts updated per symbol) | sources whose statistics drift |
//!
//! Models:
//! - [`Categorical`]: any alphabet of up to 2^16 symbols, from counts.
//! - [`Quantized`] ([`QuantizedGaussian`], [`QuantizedLaplace`]): a continuous
//!   distribution with mean and scale, integrated over unit bins of an integer
//!   range: the conditional models of learned image compression (the Gaussian
//!   conditional of Ballé et al. 2018, "Variational image compression with a
//!   scale hyperprior").
//! - [`CdfTables`]: a set of quantized CDFs, one chosen per element by an index
//!   (CompressAI's `EntropyBottleneck`/`GaussianConditional` layout): portable,
//!   since the CDFs are integers.
//!
//! Every decoder treats its input as untrusted: truncated, corrupted or
//! malicious streams give an [`Error`](crate::Error), never a panic, and
//! headers that declare a symbol count are checked against a caller's limit
//! before anything is allocated (a symbol can cost almost zero bits, so the
//! stream's length does not bound the count).
//!
//! ```
//! use tensorpress_codecs::entropy::{empirical_entropy, huffman, rans};
//!
//! let symbols: Vec<u8> = (0..10_000u32).map(|i| (i * i % 7 % 4) as u8).collect();
//! let packed = rans::compress(&symbols, rans::DEFAULT_PRECISION)?;
//! assert_eq!(rans::decompress::<u8>(&packed, symbols.len())?, symbols);
//!
//! let coded = huffman::compress(&symbols, huffman::DEFAULT_MAX_LENGTH)?;
//! assert_eq!(huffman::decompress::<u8>(&coded, symbols.len())?, symbols);
//!
//! // Both stay close to the empirical entropy (bits per symbol).
//! let h = empirical_entropy(&symbols);
//! assert!(packed.len() as f64 * 8.0 < 1.01 * h * symbols.len() as f64 + 200.0);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

mod categorical;
mod cdf_tables;
pub mod huffman;
mod quantized;
pub mod range;
pub mod rans;

pub use categorical::{Categorical, DecodeTable};
pub use cdf_tables::{CdfTable, CdfTables};
pub use quantized::{
    erfc, Gaussian, Laplace, Quantized, QuantizedGaussian, QuantizedLaplace, UnivariateCdf,
};
pub use range::AdaptiveModel;

/// Highest precision (bits of the quantized probabilities) of every model here.
pub const MAX_PRECISION: u32 = 16;

/// The cumulative-frequency interval of one symbol: `start .. start + freq`
/// within `0 .. 2^precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Quantized CDF below the symbol.
    pub start: u32,
    /// Quantized probability (`≥ 1` for a symbol that can be coded).
    pub freq: u32,
}

/// A model that quantizes a distribution over symbols to integer frequencies
/// summing to `2^precision`: it gives the interval (cdf start, frequency) of a
/// symbol and finds the symbol whose interval holds a slot.
pub trait EntropyModel {
    /// What is coded.
    type Symbol: Copy;

    /// Bits of the frequencies, in `1..=`[`MAX_PRECISION`]; they sum to `2^precision`.
    fn precision(&self) -> u32;

    /// The interval of `symbol`, or `None` when it has zero probability or lies
    /// outside the model's support.
    fn interval(&self, symbol: Self::Symbol) -> Option<Interval>;

    /// The symbol whose interval holds `slot < 2^precision`, and that interval.
    /// `None` only for a model that cannot answer (a decoder reports a corrupt stream).
    fn symbol_at(&self, slot: u32) -> Option<(Self::Symbol, Interval)>;
}

impl<M: EntropyModel + ?Sized> EntropyModel for &M {
    type Symbol = M::Symbol;

    fn precision(&self) -> u32 {
        (**self).precision()
    }

    fn interval(&self, symbol: Self::Symbol) -> Option<Interval> {
        (**self).interval(symbol)
    }

    fn symbol_at(&self, slot: u32) -> Option<(Self::Symbol, Interval)> {
        (**self).symbol_at(slot)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
}

/// Symbol types of the byte-oriented coders (the categorical fast path of
/// [`rans`], [`huffman`], [`range`]): `u8` (alphabets up to 256) and `u16`
/// (up to 65,536).
pub trait Symbol: Copy + Eq + Default + std::fmt::Debug + sealed::Sealed {
    /// Largest alphabet the type can index.
    const MAX_ALPHABET: usize;

    /// The symbol as an index.
    fn index(self) -> usize;

    /// The symbol of `index`; the caller keeps `index < MAX_ALPHABET`.
    fn from_index(index: u16) -> Self;
}

impl Symbol for u8 {
    const MAX_ALPHABET: usize = 256;

    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }

    #[inline(always)]
    fn from_index(index: u16) -> Self {
        index as u8
    }
}

impl Symbol for u16 {
    const MAX_ALPHABET: usize = 1 << 16;

    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }

    #[inline(always)]
    fn from_index(index: u16) -> Self {
        index
    }
}

/// How often each symbol occurs: a vector as long as the largest symbol plus one.
pub fn symbol_counts<S: Symbol>(symbols: &[S]) -> Vec<u64> {
    let mut counts = vec![0u64; S::MAX_ALPHABET];
    for &s in symbols {
        counts[s.index()] += 1;
    }
    let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    counts.truncate(used);
    counts
}

/// Shannon entropy, in bits per symbol, of the distribution the counts give
/// (0 for no symbols).
pub fn entropy_of_counts(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / t;
            -p * p.log2()
        })
        .sum()
}

/// Empirical entropy of `symbols`, in bits per symbol: the bound that no coder
/// of independent symbols beats on average, `n × H` bits for `n` symbols.
pub fn empirical_entropy<S: Symbol>(symbols: &[S]) -> f64 {
    entropy_of_counts(&symbol_counts(symbols))
}

/// Reads a varint length field and checks it against `limit`.
fn read_count(bytes: &[u8], pos: &mut usize, limit: usize) -> crate::Result<usize> {
    let (n, used) = crate::varint::read_uvarint(&bytes[*pos..])?;
    *pos += used;
    match usize::try_from(n) {
        Ok(n) if n <= limit => Ok(n),
        _ => Err(crate::Error::TooManySymbols { declared: n, limit }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_and_degenerate_sources() {
        assert_eq!(entropy_of_counts(&[]), 0.0);
        assert_eq!(entropy_of_counts(&[5]), 0.0);
        assert!((entropy_of_counts(&[1, 1, 1, 1]) - 2.0).abs() < 1e-12);
        assert!((entropy_of_counts(&[3, 1]) - 0.811_278_124_459_132_8).abs() < 1e-12);
    }

    #[test]
    fn counts_are_trimmed_to_the_largest_symbol() {
        assert_eq!(symbol_counts(&[2u8, 0, 2]), vec![1, 0, 2]);
        assert_eq!(symbol_counts::<u16>(&[]), Vec::<u64>::new());
    }
}
