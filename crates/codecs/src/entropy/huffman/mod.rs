//! Canonical, length-limited Huffman codes (Huffman 1952, "A method for the
//! construction of minimum-redundancy codes"), table-decoded.
//!
//! [`code_lengths`] finds the optimal lengths under a maximum (package-merge);
//! [`HuffmanCode`] assigns canonical codes, which the lengths alone define, so
//! a code is stored as 4 bits per symbol; [`HuffmanTable`] decodes with one
//! lookup per symbol in a table of `2^max_length` entries.
//!
//! A Huffman code spends a whole number of bits per symbol, so it loses up to
//! about one bit per symbol against the entropy on skewed sources (rANS does not).
//!
//! [`compress`] / [`decompress`]: varint symbol count, the code
//! ([`HuffmanCode::write_to`]), then the bits, MSB first, zero-padded to a byte.

mod code;
mod lengths;

pub use code::{HuffmanCode, HuffmanTable};
pub use lengths::code_lengths;

use super::{read_count, symbol_counts, Symbol};
use crate::varint::write_uvarint;
use crate::{Error, Result};

/// Longest code length supported (lengths are stored in 4 bits).
pub const MAX_CODE_LENGTH: u32 = 15;
/// The maximum code length [`compress`] is usually given: 15, as DEFLATE uses.
pub const DEFAULT_MAX_LENGTH: u32 = 15;

/// Compresses `symbols` with the Huffman code of their counts, codes at most
/// `max_length` bits, header included.
///
/// # Errors
/// As [`code_lengths`].
pub fn compress<S: Symbol>(symbols: &[S], max_length: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_uvarint(symbols.len() as u64, &mut out);
    if symbols.is_empty() {
        return Ok(out);
    }
    let code = HuffmanCode::from_counts(&symbol_counts(symbols), max_length)?;
    code.write_to(&mut out);
    code.encode(symbols, &mut out)?;
    Ok(out)
}

/// Decompresses the output of [`compress`], refusing headers that declare more
/// than `max_symbols` symbols (or more symbols than the stream has bits).
///
/// # Errors
/// [`Error::TooManySymbols`], the code's read errors, [`Error::CorruptStream`],
/// [`Error::Truncated`], [`Error::TrailingData`], [`Error::InvalidAlphabet`].
pub fn decompress<S: Symbol>(bytes: &[u8], max_symbols: usize) -> Result<Vec<S>> {
    let mut pos = 0;
    let n = read_count(bytes, &mut pos, max_symbols)?;
    if n == 0 {
        return match bytes.len() - pos {
            0 => Ok(Vec::new()),
            count => Err(Error::TrailingData {
                unit: "bytes",
                count,
            }),
        };
    }
    let (code, used) = HuffmanCode::read_from(&bytes[pos..])?;
    pos += used;
    let payload = &bytes[pos..];
    // Every symbol takes at least one bit.
    if n > payload.len().saturating_mul(8) {
        return Err(Error::Truncated {
            unit: "bits",
            needed: n,
            available: payload.len().saturating_mul(8),
        });
    }
    let mut out = vec![S::default(); n];
    let used = code.decode_table().decode(payload, &mut out)?;
    if used < payload.len() {
        return Err(Error::TrailingData {
            unit: "bytes",
            count: payload.len() - used,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_a_binding_limit() {
        let symbols: Vec<u16> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 20).trailing_zeros() as u16 * 300)
            .collect();
        let packed = compress(&symbols, 4).unwrap();
        assert_eq!(decompress::<u16>(&packed, symbols.len()).unwrap(), symbols);
        assert!(decompress::<u8>(&packed, symbols.len()).is_err());
        assert!(decompress::<u16>(&packed, symbols.len() - 1).is_err());
        let mut longer = packed.clone();
        longer.push(0);
        assert!(decompress::<u16>(&longer, symbols.len()).is_err());
    }

    #[test]
    fn empty_input() {
        let packed = compress::<u8>(&[], 15).unwrap();
        assert_eq!(packed, [0]);
        assert!(decompress::<u8>(&packed, 0).unwrap().is_empty());
    }
}
