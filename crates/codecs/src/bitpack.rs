//! Packing of 1–8-bit codes into `u32` words, least significant bits first.
//!
//! This is the layout of compressed-tensors' `pack-quantized` format
//! (`pack_to_int32`): each word holds `32 / bits` codes, code `k` of a word in
//! bits `k·bits .. (k+1)·bits`; codes never straddle words (for 3, 5, 6 and 7
//! bits the top `32 mod bits` bits of each word are zero), and each row is padded
//! with zero codes to a whole number of words. Signed values are stored in offset
//! binary (`v + 2^(bits-1)`), see [`signed_to_offset`].

use ndarray::{s, Array2, ArrayView1, ArrayView2, Zip};

use crate::{Error, Result};

fn check_bits(bits: u8) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidBits { bits })
    }
}

/// Codes per `u32` word: `32 / bits`.
///
/// # Errors
/// [`Error::InvalidBits`] outside `1..=8`.
pub fn codes_per_word(bits: u8) -> Result<usize> {
    check_bits(bits)?;
    Ok(32 / bits as usize)
}

/// Words needed for `n` codes of `bits` bits.
///
/// # Errors
/// [`Error::InvalidBits`] outside `1..=8`.
pub fn packed_len(n: usize, bits: u8) -> Result<usize> {
    Ok(n.div_ceil(codes_per_word(bits)?))
}

/// Packs `codes` into `out`, which must hold exactly [`packed_len`] words.
///
/// # Errors
/// [`Error::InvalidBits`], [`Error::CodeTooWide`] for a code `≥ 2^bits`,
/// [`Error::OutputLength`].
pub fn pack_into(codes: &[u8], bits: u8, out: &mut [u32]) -> Result<()> {
    let per = codes_per_word(bits)?;
    let expected = codes.len().div_ceil(per);
    if out.len() != expected {
        return Err(Error::OutputLength {
            unit: "words",
            expected,
            got: out.len(),
        });
    }
    let limit = 1u16 << bits;
    if let Some((index, &code)) = codes
        .iter()
        .enumerate()
        .find(|(_, &c)| u16::from(c) >= limit)
    {
        return Err(Error::CodeTooWide { index, code, bits });
    }
    for (word, chunk) in out.iter_mut().zip(codes.chunks(per)) {
        *word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (k, &c)| w | (u32::from(c) << (k * bits as usize)));
    }
    Ok(())
}

/// Packs `codes` into a new vector of [`packed_len`] words.
///
/// # Errors
/// As [`pack_into`].
///
/// ```
/// use tensorpress_codecs::bitpack::pack;
///
/// // Four 8-bit codes fill one word, first code in the low byte.
/// assert_eq!(pack(&[0x81, 0x82, 0, 0], 8)?, vec![0x8281]);
/// // Ten 3-bit codes per word; the top two bits stay zero.
/// assert_eq!(pack(&[7; 11], 3)?, vec![0x3fff_ffff, 7]);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
pub fn pack(codes: &[u8], bits: u8) -> Result<Vec<u32>> {
    let mut out = vec![0u32; packed_len(codes.len(), bits)?];
    pack_into(codes, bits, &mut out)?;
    Ok(out)
}

/// Unpacks `out.len()` codes from `words`.
///
/// # Errors
/// [`Error::InvalidBits`]; [`Error::Truncated`] when `words` holds fewer than
/// [`packed_len`]`(out.len())` words (extra words are ignored).
pub fn unpack_into(words: &[u32], bits: u8, out: &mut [u8]) -> Result<()> {
    let per = codes_per_word(bits)?;
    let needed = out.len().div_ceil(per);
    if words.len() < needed {
        return Err(Error::Truncated {
            unit: "words",
            needed,
            available: words.len(),
        });
    }
    let mask = (1u32 << bits) - 1;
    for (chunk, &word) in out.chunks_mut(per).zip(words) {
        for (k, c) in chunk.iter_mut().enumerate() {
            *c = ((word >> (k * bits as usize)) & mask) as u8;
        }
    }
    Ok(())
}

/// Unpacks `n` codes from `words`.
///
/// # Errors
/// As [`unpack_into`].
pub fn unpack(words: &[u32], bits: u8, n: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    unpack_into(words, bits, &mut out)?;
    Ok(out)
}

/// Packs each row of `codes` (`[rows, cols]`, along the input dimension) into
/// `[rows, packed_len(cols)]` words, as compressed-tensors' `weight_packed`.
///
/// # Errors
/// As [`pack_into`]; a [`Error::CodeTooWide`] index is the flat row-major index.
pub fn pack_rows(codes: ArrayView2<'_, u8>, bits: u8) -> Result<Array2<u32>> {
    let (rows, cols) = codes.dim();
    let words = packed_len(cols, bits)?;
    let mut out = Array2::<u32>::zeros((rows, words));
    let mut row_codes = vec![0u8; cols];
    let mut row_words = vec![0u32; words];
    for (r, (src, mut dst)) in codes.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        Zip::from(&mut row_codes[..])
            .and(&src)
            .for_each(|b, &c| *b = c);
        pack_into(&row_codes, bits, &mut row_words).map_err(|e| match e {
            Error::CodeTooWide { index, code, bits } => Error::CodeTooWide {
                index: r * cols + index,
                code,
                bits,
            },
            e => e,
        })?;
        dst.assign(&ArrayView1::from(&row_words[..]));
    }
    Ok(out)
}

/// Unpacks `[rows, words]` into `[rows, cols]` codes (the inverse of [`pack_rows`]).
///
/// # Errors
/// [`Error::InvalidBits`]; [`Error::Truncated`] when a row has fewer than
/// `packed_len(cols)` words.
pub fn unpack_rows(words: ArrayView2<'_, u32>, bits: u8, cols: usize) -> Result<Array2<u8>> {
    let needed = packed_len(cols, bits)?;
    if words.ncols() < needed {
        return Err(Error::Truncated {
            unit: "words per row",
            needed,
            available: words.ncols(),
        });
    }
    let mut out = Array2::<u8>::zeros((words.nrows(), cols));
    let mut row_words = vec![0u32; needed];
    let mut row_codes = vec![0u8; cols];
    for (src, mut dst) in words.outer_iter().zip(out.outer_iter_mut()) {
        Zip::from(&mut row_words[..])
            .and(&src.slice(s![..needed]))
            .for_each(|b, &w| *b = w);
        unpack_into(&row_words, bits, &mut row_codes)?;
        dst.assign(&ArrayView1::from(&row_codes[..]));
    }
    Ok(out)
}

/// Signed values to offset binary codes: `v + 2^(bits-1)`.
///
/// # Errors
/// [`Error::InvalidBits`]; [`Error::ValueOutOfRange`] outside
/// `[-2^(bits-1), 2^(bits-1))`.
pub fn signed_to_offset(values: &[i8], bits: u8) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let half = 1i16 << (bits - 1);
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            let v = i16::from(value);
            if (-half..half).contains(&v) {
                Ok((v + half) as u8)
            } else {
                Err(Error::ValueOutOfRange { index, value, bits })
            }
        })
        .collect()
}

/// Offset binary codes back to signed values: `c − 2^(bits-1)`.
///
/// # Errors
/// [`Error::InvalidBits`]; [`Error::CodeTooWide`] for a code `≥ 2^bits`.
pub fn offset_to_signed(codes: &[u8], bits: u8) -> Result<Vec<i8>> {
    check_bits(bits)?;
    let half = 1i16 << (bits - 1);
    codes
        .iter()
        .enumerate()
        .map(|(index, &code)| {
            if u16::from(code) < (1u16 << bits) {
                Ok((i16::from(code) - half) as i8)
            } else {
                Err(Error::CodeTooWide { index, code, bits })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn matches_the_compressed_tensors_layout() {
        // The docstring example of pack_to_int32: int8 values [1, 2] at 8 bits
        // become offset codes [129, 130], packed as 33409.
        let codes = signed_to_offset(&[1, 2], 8).unwrap();
        assert_eq!(codes, vec![129, 130]);
        assert_eq!(pack(&codes, 8).unwrap(), vec![33409]);
        // 4-bit: eight codes per word, code k at bits 4k..4k+4.
        assert_eq!(
            pack(&[1, 2, 3, 4, 5, 6, 7, 8], 4).unwrap(),
            vec![0x8765_4321]
        );
        // 2-bit: sixteen per word; a short row is zero-padded.
        assert_eq!(pack(&[3, 0, 1], 2).unwrap(), vec![0b01_00_11]);
        // 1-bit.
        assert_eq!(pack(&[1; 33], 1).unwrap(), vec![u32::MAX, 1]);
    }

    #[test]
    fn rows_pack_along_the_input_dimension() {
        let codes = array![[1u8, 2, 3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 0, 0, 0, 15]];
        let p = pack_rows(codes.view(), 4).unwrap();
        assert_eq!(p, array![[0x8765_4321u32, 9], [0, 15]]);
        assert_eq!(unpack_rows(p.view(), 4, 9).unwrap(), codes);
        // Transposed inputs pack by logical rows.
        let t = codes.t().to_owned();
        assert_eq!(pack_rows(t.t(), 4).unwrap(), p);
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(pack(&[1], 0), Err(Error::InvalidBits { bits: 0 })));
        assert!(matches!(pack(&[1], 9), Err(Error::InvalidBits { bits: 9 })));
        assert!(matches!(
            pack(&[1, 4, 2], 2),
            Err(Error::CodeTooWide {
                index: 1,
                code: 4,
                bits: 2
            })
        ));
        assert!(matches!(
            pack_rows(array![[0u8, 1], [2, 8]].view(), 3),
            Err(Error::CodeTooWide { index: 3, .. })
        ));
        assert!(matches!(
            unpack(&[0], 4, 9),
            Err(Error::Truncated {
                needed: 2,
                available: 1,
                ..
            })
        ));
        assert!(matches!(
            pack_into(&[1, 2], 4, &mut [0, 0]),
            Err(Error::OutputLength {
                expected: 1,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            signed_to_offset(&[-9], 4),
            Err(Error::ValueOutOfRange {
                index: 0,
                value: -9,
                bits: 4
            })
        ));
        assert!(matches!(
            signed_to_offset(&[8], 4),
            Err(Error::ValueOutOfRange { .. })
        ));
        assert!(matches!(
            offset_to_signed(&[16], 4),
            Err(Error::CodeTooWide { .. })
        ));
        assert!(matches!(
            unpack_rows(array![[0u32]].view(), 4, 9),
            Err(Error::Truncated { .. })
        ));
    }

    fn codes_and_bits() -> impl Strategy<Value = (u8, Vec<u8>)> {
        (1u8..=8).prop_flat_map(|bits| {
            let max = ((1u16 << bits) - 1) as u8;
            (Just(bits), proptest::collection::vec(0..=max, 0..200))
        })
    }

    proptest! {
        #[test]
        fn pack_round_trips((bits, codes) in codes_and_bits()) {
            let words = pack(&codes, bits).unwrap();
            prop_assert_eq!(words.len(), packed_len(codes.len(), bits).unwrap());
            // Unused high bits stay zero.
            let per = 32 / bits as u32;
            if per * bits as u32 != 32 {
                let unused = !((1u64 << (per * bits as u32)) - 1) as u32;
                prop_assert!(words.iter().all(|w| w & unused == 0));
            }
            prop_assert_eq!(unpack(&words, bits, codes.len()).unwrap(), codes);
        }

        #[test]
        fn signed_round_trips(bits in 1u8..=8, raw in proptest::collection::vec(any::<i8>(), 0..100)) {
            let half = 1i16 << (bits - 1);
            let vals: Vec<i8> = raw
                .iter()
                .map(|&v| (i16::from(v).rem_euclid(2 * half) - half) as i8)
                .collect();
            let codes = signed_to_offset(&vals, bits).unwrap();
            prop_assert_eq!(offset_to_signed(&codes, bits).unwrap(), vals);
        }

        #[test]
        fn unpack_never_panics(bits in 0u8..12, words in proptest::collection::vec(any::<u32>(), 0..20), n in 0usize..400) {
            let _ = unpack(&words, bits, n);
        }
    }
}
