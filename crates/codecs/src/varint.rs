//! Zigzag mapping and LEB128 variable-length integers.
//!
//! LEB128 stores 7 bits per byte, least significant group first, with the high
//! bit set on every byte but the last (the protobuf/WebAssembly varint). Zigzag
//! maps signed to unsigned so that small magnitudes stay short:
//! `0, -1, 1, -2, … → 0, 1, 2, 3, …`.
//!
//! Decoders take untrusted bytes: they never panic, reject values past 64 bits
//! ([`Error::VarintOverflow`]) and report truncation ([`Error::VarintTruncated`]).

use crate::{Error, Result};

/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Zigzag-encodes a signed integer.
#[inline]
pub fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverts [`zigzag_encode`].
#[inline]
pub fn zigzag_decode(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Appends the LEB128 encoding of `v` to `out` (1 to 10 bytes).
pub fn write_uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the zigzag LEB128 encoding of `v` to `out`.
pub fn write_ivarint(v: i64, out: &mut Vec<u8>) {
    write_uvarint(zigzag_encode(v), out);
}

/// Decodes one LEB128 varint from the start of `bytes`, returning the value and
/// the number of bytes read.
///
/// Non-minimal encodings (redundant `0x80` continuation bytes) are accepted as
/// long as the value fits in 64 bits and the encoding is at most
/// [`MAX_VARINT_LEN`] bytes.
///
/// # Errors
/// [`Error::VarintTruncated`], [`Error::VarintOverflow`] (offset 0).
pub fn read_uvarint(bytes: &[u8]) -> Result<(u64, usize)> {
    read_uvarint_at(bytes, 0)
}

fn read_uvarint_at(bytes: &[u8], offset: usize) -> Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().skip(offset).take(MAX_VARINT_LEN).enumerate() {
        let group = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && (b > 1) {
            // The tenth byte carries only bit 63.
            return Err(Error::VarintOverflow { offset });
        }
        value |= group << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if bytes.len().saturating_sub(offset) >= MAX_VARINT_LEN {
        Err(Error::VarintOverflow { offset })
    } else {
        Err(Error::VarintTruncated { offset })
    }
}

/// Decodes one zigzag LEB128 varint from the start of `bytes`.
///
/// # Errors
/// As [`read_uvarint`].
pub fn read_ivarint(bytes: &[u8]) -> Result<(i64, usize)> {
    read_uvarint(bytes).map(|(u, n)| (zigzag_decode(u), n))
}

/// Encodes a sequence of unsigned integers back to back.
pub fn encode_uvarints(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        write_uvarint(v, &mut out);
    }
    out
}

/// Encodes a sequence of signed integers back to back (zigzag).
///
/// ```
/// use tensorpress_codecs::varint::{decode_ivarints, encode_ivarints};
///
/// let bytes = encode_ivarints(&[0, -1, 1, -64, 64, 300]);
/// assert_eq!(bytes, vec![0x00, 0x01, 0x02, 0x7f, 0x80, 0x01, 0xd8, 0x04]);
/// assert_eq!(decode_ivarints(&bytes)?, vec![0, -1, 1, -64, 64, 300]);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
pub fn encode_ivarints(values: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        write_ivarint(v, &mut out);
    }
    out
}

/// Decodes back-to-back unsigned varints until the input ends.
///
/// # Errors
/// [`Error::VarintTruncated`] / [`Error::VarintOverflow`] with the byte offset of
/// the bad varint.
pub fn decode_uvarints(bytes: &[u8]) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let (v, n) = read_uvarint_at(bytes, offset)?;
        out.push(v);
        offset += n;
    }
    Ok(out)
}

/// Decodes back-to-back signed (zigzag) varints until the input ends.
///
/// # Errors
/// As [`decode_uvarints`].
pub fn decode_ivarints(bytes: &[u8]) -> Result<Vec<i64>> {
    Ok(decode_uvarints(bytes)?
        .into_iter()
        .map(zigzag_decode)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        assert_eq!(encode_uvarints(&[0]), vec![0]);
        assert_eq!(encode_uvarints(&[127]), vec![0x7f]);
        assert_eq!(encode_uvarints(&[128]), vec![0x80, 0x01]);
        assert_eq!(encode_uvarints(&[300]), vec![0xac, 0x02]);
        let max = encode_uvarints(&[u64::MAX]);
        assert_eq!(max.len(), MAX_VARINT_LEN);
        assert_eq!(max[9], 0x01);
        assert_eq!(zigzag_encode(0), 0);
        assert_eq!(zigzag_encode(-1), 1);
        assert_eq!(zigzag_encode(1), 2);
        assert_eq!(zigzag_encode(i64::MIN), u64::MAX);
        assert_eq!(zigzag_encode(i64::MAX), u64::MAX - 1);
    }

    #[test]
    fn malformed_input_is_rejected() {
        assert!(matches!(
            read_uvarint(&[0x80, 0x80]),
            Err(Error::VarintTruncated { offset: 0 })
        ));
        assert!(matches!(
            read_uvarint(&[]),
            Err(Error::VarintTruncated { .. })
        ));
        // Eleven bytes, or a tenth byte above 1, overflow 64 bits.
        assert!(matches!(
            read_uvarint(&[0xff; 11]),
            Err(Error::VarintOverflow { offset: 0 })
        ));
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert!(matches!(
            read_uvarint(&too_big),
            Err(Error::VarintOverflow { .. })
        ));
        // The offset names the bad varint in a sequence.
        assert!(matches!(
            decode_uvarints(&[0x01, 0x02, 0x80]),
            Err(Error::VarintTruncated { offset: 2 })
        ));
        // Non-minimal but in-range encodings decode.
        assert_eq!(read_uvarint(&[0x81, 0x80, 0x00]).unwrap(), (1, 3));
    }

    proptest! {
        #[test]
        fn unsigned_round_trip(values in proptest::collection::vec(any::<u64>(), 0..50)) {
            let bytes = encode_uvarints(&values);
            prop_assert_eq!(decode_uvarints(&bytes).unwrap(), values);
        }

        #[test]
        fn signed_round_trip(values in proptest::collection::vec(any::<i64>(), 0..50)) {
            let bytes = encode_ivarints(&values);
            prop_assert_eq!(decode_ivarints(&bytes).unwrap(), values.clone());
            for &v in &values {
                prop_assert_eq!(zigzag_decode(zigzag_encode(v)), v);
            }
        }

        #[test]
        fn small_magnitudes_are_short(v in -64i64..64) {
            let mut out = Vec::new();
            write_ivarint(v, &mut out);
            prop_assert_eq!(out.len(), 1);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(values) = decode_uvarints(&bytes) {
                // Whatever decodes re-encodes to no more bytes than it came from.
                prop_assert!(encode_uvarints(&values).len() <= bytes.len());
            }
        }
    }
}
