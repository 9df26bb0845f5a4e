//! Canonical codes from lengths: serialization, encoding and table decoding.

use super::MAX_CODE_LENGTH;
use crate::entropy::Symbol;
use crate::varint::{read_uvarint, write_uvarint};
use crate::{CodeLengthFault, Error, Result};

const CODEC: &str = "Huffman";

/// A canonical prefix code: codes of each length are consecutive integers in
/// symbol order, shorter codes first, so the lengths alone define the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HuffmanCode {
    lengths: Vec<u8>,
    /// `(code << 4) | length` per symbol, code right-aligned; 0 for absent symbols.
    codes: Vec<u32>,
    max_length: u32,
}

impl HuffmanCode {
    /// The canonical code of `lengths` (0 = symbol absent).
    ///
    /// # Errors
    /// [`Error::InvalidCodeLengths`] for a length above 15 or lengths whose Kraft
    /// sum exceeds one; [`Error::EmptyModel`] when every length is 0;
    /// [`Error::InvalidAlphabet`] above 2^16 symbols.
    pub fn from_lengths(lengths: &[u8]) -> Result<Self> {
        if lengths.len() > 1 << 16 {
            return Err(Error::InvalidAlphabet {
                size: lengths.len(),
                max: 1 << 16,
            });
        }
        let mut per_length = [0u32; MAX_CODE_LENGTH as usize + 1];
        for (symbol, &l) in lengths.iter().enumerate() {
            if u32::from(l) > MAX_CODE_LENGTH {
                return Err(Error::InvalidCodeLengths {
                    kind: CodeLengthFault::TooLong {
                        symbol,
                        length: l.into(),
                        max: MAX_CODE_LENGTH,
                    },
                });
            }
            per_length[usize::from(l)] += 1;
        }
        let max_length = (1..=MAX_CODE_LENGTH)
            .rev()
            .find(|&l| per_length[l as usize] > 0)
            .ok_or(Error::EmptyModel)?;
        let kraft: u64 = (1..=MAX_CODE_LENGTH)
            .map(|l| u64::from(per_length[l as usize]) << (MAX_CODE_LENGTH - l))
            .sum();
        if kraft > 1 << MAX_CODE_LENGTH {
            return Err(Error::InvalidCodeLengths {
                kind: CodeLengthFault::Oversubscribed,
            });
        }
        // First code of each length, then consecutive codes in symbol order.
        let mut next = [0u32; MAX_CODE_LENGTH as usize + 2];
        for l in 1..=MAX_CODE_LENGTH as usize {
            next[l + 1] = (next[l] + per_length[l]) << 1;
        }
        let codes = lengths
            .iter()
            .map(|&l| {
                if l == 0 {
                    return 0;
                }
                let code = next[usize::from(l)];
                next[usize::from(l)] += 1;
                (code << 4) | u32::from(l)
            })
            .collect();
        Ok(Self {
            lengths: lengths.to_vec(),
            codes,
            max_length,
        })
    }

    /// The code of `counts` limited to `max_length` bits (package-merge, see
    /// [`code_lengths`](super::code_lengths)).
    ///
    /// # Errors
    /// As [`code_lengths`](super::code_lengths).
    pub fn from_counts(counts: &[u64], max_length: u32) -> Result<Self> {
        Self::from_lengths(&super::code_lengths(counts, max_length)?)
    }

    /// Code length of each symbol (0 = absent).
    pub fn lengths(&self) -> &[u8] {
        &self.lengths
    }

    /// The longest code, in bits.
    pub fn max_length(&self) -> u32 {
        self.max_length
    }

    /// The code of `symbol` as `(bits, length)`, bits right-aligned, or `None`
    /// for a symbol without a code.
    pub fn code(&self, symbol: usize) -> Option<(u32, u32)> {
        match self.codes.get(symbol) {
            Some(&c) if c != 0 => Some((c >> 4, c & 15)),
            _ => None,
        }
    }

    /// Appends the lengths: varint alphabet size (up to the last coded symbol),
    /// then one 4-bit length per symbol, two per byte, low nibble first.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let used = self
            .lengths
            .iter()
            .rposition(|&l| l > 0)
            .map_or(0, |i| i + 1);
        write_uvarint(used as u64, out);
        for pair in self.lengths[..used].chunks(2) {
            out.push(pair[0] | pair.get(1).map_or(0, |&h| h << 4));
        }
    }

    /// Reads a code written by [`write_to`](Self::write_to); returns it and the
    /// bytes it took.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::InvalidAlphabet`], and the errors of
    /// [`from_lengths`](Self::from_lengths).
    pub fn read_from(bytes: &[u8]) -> Result<(Self, usize)> {
        let (n, pos) = read_uvarint(bytes)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > 1 << 16 {
            return Err(Error::InvalidAlphabet {
                size: n,
                max: 1 << 16,
            });
        }
        let packed = n.div_ceil(2);
        let body = bytes.get(pos..pos + packed).ok_or(Error::Truncated {
            unit: "bytes",
            needed: pos + packed,
            available: bytes.len(),
        })?;
        let lengths: Vec<u8> = body
            .iter()
            .flat_map(|&b| [b & 15, b >> 4])
            .take(n)
            .collect();
        Ok((Self::from_lengths(&lengths)?, pos + packed))
    }

    /// Appends the codes of `symbols` to `out`, most significant bit first, the
    /// last byte padded with zeros.
    ///
    /// # Errors
    /// [`Error::ZeroProbability`] for a symbol without a code.
    pub fn encode<S: Symbol>(&self, symbols: &[S], out: &mut Vec<u8>) -> Result<()> {
        let mut acc = 0u64;
        let mut bits = 0u32;
        out.reserve(symbols.len() * self.max_length as usize / 8 + 1);
        for (index, &s) in symbols.iter().enumerate() {
            let c = match self.codes.get(s.index()) {
                Some(&c) if c != 0 => c,
                _ => return Err(Error::ZeroProbability { index }),
            };
            let len = c & 15;
            acc = (acc << len) | u64::from(c >> 4);
            bits += len;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            out.push((acc << (8 - bits)) as u8);
        }
        Ok(())
    }

    /// The decoding table: `2^max_length` entries indexed by the next
    /// `max_length` bits, each `(symbol << 4) | length` (length 0: no code).
    pub fn decode_table(&self) -> HuffmanTable {
        let max = self.max_length;
        let mut entries = vec![0u32; 1 << max];
        for (symbol, &c) in self.codes.iter().enumerate() {
            let len = c & 15;
            if len == 0 {
                continue;
            }
            let first = ((c >> 4) << (max - len)) as usize;
            entries[first..first + (1 << (max - len))].fill(((symbol as u32) << 4) | len);
        }
        HuffmanTable {
            max_length: max,
            alphabet: self.lengths.len(),
            entries: entries.into_boxed_slice(),
        }
    }
}

/// The table-driven decoder of a [`HuffmanCode`].
#[derive(Debug, Clone)]
pub struct HuffmanTable {
    max_length: u32,
    alphabet: usize,
    entries: Box<[u32]>,
}

impl HuffmanTable {
    /// Decodes `out.len()` symbols from `bytes` (as [`HuffmanCode::encode`] wrote
    /// them); returns the bytes consumed (whole bytes, the last one padded).
    ///
    /// # Errors
    /// [`Error::InvalidAlphabet`] when the code's alphabet does not fit `S`;
    /// [`Error::CorruptStream`] for bits that start no code;
    /// [`Error::Truncated`] when the bits run out.
    pub fn decode<S: Symbol>(&self, bytes: &[u8], out: &mut [S]) -> Result<usize> {
        if self.alphabet > S::MAX_ALPHABET {
            return Err(Error::InvalidAlphabet {
                size: self.alphabet,
                max: S::MAX_ALPHABET,
            });
        }
        let max = self.max_length;
        let entries = &self.entries[..];
        let mask = entries.len().wrapping_sub(1);
        let mut reader = BitReader::new(bytes);
        for (position, o) in out.iter_mut().enumerate() {
            if reader.count < max {
                reader.refill();
            }
            let e = entries[(reader.buf >> (64 - max)) as usize & mask];
            let len = e & 15;
            if len == 0 {
                return Err(Error::CorruptStream {
                    codec: CODEC,
                    position,
                });
            }
            *o = S::from_index((e >> 4) as u16);
            reader.consume(len);
        }
        let used_bits = reader.consumed;
        if used_bits > 8 * bytes.len() as u64 {
            return Err(Error::Truncated {
                unit: "bits",
                needed: used_bits as usize,
                available: 8 * bytes.len(),
            });
        }
        Ok(used_bits.div_ceil(8) as usize)
    }
}

/// Bits MSB first, at most 64 buffered at the top of `buf`; past the end of the
/// input it reads zeros, and `consumed` tells the caller whether it went there.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
    consumed: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            buf: 0,
            count: 0,
            consumed: 0,
        }
    }

    /// Tops the buffer up to at least 56 bits.
    #[inline(always)]
    fn refill(&mut self) {
        if let Some(chunk) = self
            .bytes
            .get(self.pos..)
            .and_then(|b| b.first_chunk::<8>())
        {
            // The bits below `count + 8·take` repeat what the next refill ORs in.
            self.buf |= u64::from_be_bytes(*chunk) >> self.count;
            let take = (63 - self.count) >> 3;
            self.pos += take as usize;
            self.count += 8 * take;
        } else {
            while self.count <= 56 {
                let b = self.bytes.get(self.pos).copied().unwrap_or(0);
                self.buf |= u64::from(b) << (56 - self.count);
                self.count += 8;
                self.pos += 1;
            }
        }
    }

    #[inline(always)]
    fn consume(&mut self, len: u32) {
        self.buf <<= len;
        self.count -= len;
        self.consumed += u64::from(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_codes_follow_deflates_example() {
        // RFC 1951 §3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4).
        let code = HuffmanCode::from_lengths(&[3, 3, 3, 3, 3, 2, 4, 4]).unwrap();
        let codes: Vec<_> = (0..8).map(|s| code.code(s).unwrap().0).collect();
        assert_eq!(
            codes,
            [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]
        );
    }

    #[test]
    fn oversubscribed_and_overlong_lengths_are_errors() {
        assert!(matches!(
            HuffmanCode::from_lengths(&[1, 1, 1]),
            Err(Error::InvalidCodeLengths {
                kind: CodeLengthFault::Oversubscribed
            })
        ));
        assert!(HuffmanCode::from_lengths(&[16]).is_err());
        assert!(HuffmanCode::from_lengths(&[0, 0]).is_err());
    }

    #[test]
    fn incomplete_codes_reject_unused_bit_patterns() {
        let code = HuffmanCode::from_lengths(&[1]).unwrap();
        let mut bytes = Vec::new();
        code.encode(&[0u8; 3], &mut bytes).unwrap();
        assert_eq!(bytes, [0]);
        let table = code.decode_table();
        let mut out = [0u8; 3];
        assert_eq!(table.decode(&bytes, &mut out).unwrap(), 1);
        assert!(matches!(
            table.decode(&[0x80], &mut out),
            Err(Error::CorruptStream { position: 0, .. })
        ));
        let mut many = [0u8; 9];
        assert!(matches!(
            table.decode(&[0], &mut many),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn reader_crosses_the_fast_and_slow_refills() {
        let code = HuffmanCode::from_lengths(&[1, 2, 3, 3]).unwrap();
        let symbols: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 11 % 4) as u8).collect();
        let mut bytes = Vec::new();
        code.encode(&symbols, &mut bytes).unwrap();
        let mut out = vec![0u8; symbols.len()];
        let used = code.decode_table().decode(&bytes, &mut out).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(out, symbols);
    }
}
