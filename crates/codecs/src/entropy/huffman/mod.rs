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
//!
//! [`compress_pairs`] / [`decompress_pairs`] code bytes two at a time (the
//! "extended" Huffman code of the pair alphabet), which halves the per-symbol
//! loss of whole-bit codes on sources of a few bits per byte.

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

/// Compresses bytes as pairs `a | b << 8` with the Huffman code of the
/// pairs' counts (codes at most `max_length` bits): a Huffman code loses up
/// to about one bit per coded symbol, so coding two bytes per symbol halves
/// that loss per byte. Layout: one byte, 1 when the last pair holds a single
/// byte (padded with 0) and 0 otherwise, then [`compress`] of the pairs.
///
/// # Errors
/// As [`code_lengths`].
pub fn compress_pairs(bytes: &[u8], max_length: u32) -> Result<Vec<u8>> {
    let pairs: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from(p[0]) | u16::from(p.get(1).copied().unwrap_or(0)) << 8)
        .collect();
    let mut out = vec![u8::from(bytes.len() % 2 == 1)];
    out.extend(compress(&pairs, max_length)?);
    Ok(out)
}

/// Decompresses the output of [`compress_pairs`], refusing streams of more
/// than `max_bytes` bytes.
///
/// # Errors
/// As [`decompress`]; [`Error::CorruptStream`] for a bad odd-length flag or a
/// padded last pair whose padding is not 0.
pub fn decompress_pairs(bytes: &[u8], max_bytes: usize) -> Result<Vec<u8>> {
    let (&flag, rest) = bytes.split_first().ok_or(Error::Truncated {
        unit: "bytes",
        needed: 1,
        available: 0,
    })?;
    if flag > 1 {
        return Err(Error::CorruptStream {
            codec: "Huffman pairs",
            position: 0,
        });
    }
    let pairs: Vec<u16> = decompress(rest, max_bytes.div_ceil(2))?;
    let mut out: Vec<u8> = pairs.iter().flat_map(|p| p.to_le_bytes()).collect();
    if flag == 1 {
        match out.pop() {
            Some(0) => {}
            _ => {
                return Err(Error::CorruptStream {
                    codec: "Huffman pairs",
                    position: pairs.len() * 2 - 1,
                })
            }
        }
    }
    if out.len() > max_bytes {
        return Err(Error::TooManySymbols {
            declared: out.len() as u64,
            limit: max_bytes,
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
