//! The two ways a run of `b`-bit codes fills 32-bit words, least significant
//! bits first.
//!
//! - **Dense**: the codes form one bit stream; code `i` occupies stream bits
//!   `i·b .. (i+1)·b`, and stream bit `j` is bit `j mod 32` of word `j / 32`. For
//!   widths that do not divide 32 (3, 5, 6, 7) some codes straddle two words.
//!   `n` codes take `⌈n·b / 32⌉` words; the unused top bits of the last word are
//!   zero. This is AutoGPTQ's layout (its 3-bit `qweight` and `qzeros`) and
//!   compressed-tensors' `pack_to_int32` since version 0.20.
//! - **Aligned**: each word holds `⌊32 / b⌋` whole codes (code `k` of a word in
//!   bits `k·b .. (k+1)·b`) and its top `32 mod b` bits stay zero; `n` codes
//!   take `⌈n / ⌊32 / b⌋⌉` words. This is compressed-tensors' layout before
//!   version 0.20 (and `tensorpress_codecs::bitpack`).
//!
//! For 1, 2, 4 and 8 bits the two coincide.

use super::PackError;

fn check_bits(layout: &'static str, bits: u8) -> Result<(), PackError> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(PackError::Bits {
            layout,
            bits,
            supported: "1 to 8 bits",
        })
    }
}

fn check_codes(codes: &[u8], bits: u8) -> Result<(), PackError> {
    let limit = 1u16 << bits;
    match codes.iter().position(|&c| u16::from(c) >= limit) {
        Some(index) => Err(PackError::Code {
            index,
            code: codes[index],
            bits,
        }),
        None => Ok(()),
    }
}

fn check_len(
    layout: &'static str,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), PackError> {
    if expected == actual {
        Ok(())
    } else {
        Err(PackError::Shape {
            layout,
            what,
            expected: vec![expected],
            actual: vec![actual],
        })
    }
}

/// Words that `n` densely packed `bits`-bit codes take: `⌈n·bits / 32⌉`.
///
/// # Errors
/// [`PackError::Bits`] outside `1..=8`; [`PackError::Overflow`].
pub fn dense_words(n: usize, bits: u8) -> Result<usize, PackError> {
    check_bits("dense", bits)?;
    let total = n
        .checked_mul(bits as usize)
        .ok_or(PackError::Overflow { layout: "dense" })?;
    Ok(total.div_ceil(32))
}

/// Words that `n` word-aligned `bits`-bit codes take: `⌈n / ⌊32 / bits⌋⌉`.
///
/// # Errors
/// [`PackError::Bits`] outside `1..=8`.
pub fn aligned_words(n: usize, bits: u8) -> Result<usize, PackError> {
    check_bits("aligned", bits)?;
    Ok(n.div_ceil(32 / bits as usize))
}

/// Packs `codes` densely into `out`, which must hold [`dense_words`] words.
///
/// # Errors
/// [`PackError::Bits`], [`PackError::Code`] for a code `≥ 2^bits`,
/// [`PackError::Shape`] for a wrong output length.
///
/// ```
/// use tensorpress_quant_core::pack::bitstream::pack_dense;
///
/// // Eleven 3-bit sevens: 33 bits, the last one spills into a second word.
/// let mut words = [0u32; 2];
/// pack_dense(&[7; 11], 3, &mut words)?;
/// assert_eq!(words, [u32::MAX, 1]);
/// # Ok::<(), tensorpress_quant_core::pack::PackError>(())
/// ```
pub fn pack_dense(codes: &[u8], bits: u8, out: &mut [u32]) -> Result<(), PackError> {
    check_len(
        "dense",
        "output words",
        dense_words(codes.len(), bits)?,
        out.len(),
    )?;
    check_codes(codes, bits)?;
    let mut acc = 0u64;
    let mut filled = 0u32;
    let mut w = 0usize;
    for &c in codes {
        acc |= u64::from(c) << filled;
        filled += u32::from(bits);
        if filled >= 32 {
            out[w] = acc as u32;
            w += 1;
            acc >>= 32;
            filled -= 32;
        }
    }
    if filled > 0 {
        out[w] = acc as u32;
    }
    Ok(())
}

/// Unpacks `out.len()` densely packed codes from `words`, which must hold
/// exactly [`dense_words`] words.
///
/// # Errors
/// [`PackError::Bits`]; [`PackError::Shape`] for a wrong word count.
pub fn unpack_dense(words: &[u32], bits: u8, out: &mut [u8]) -> Result<(), PackError> {
    check_len(
        "dense",
        "input words",
        dense_words(out.len(), bits)?,
        words.len(),
    )?;
    let mask = (1u64 << bits) - 1;
    let mut acc = 0u64;
    let mut avail = 0u32;
    let mut next = words.iter();
    for c in out.iter_mut() {
        if avail < u32::from(bits) {
            // In range: the word count was checked against the code count.
            let w = next.next().copied().unwrap_or(0);
            acc |= u64::from(w) << avail;
            avail += 32;
        }
        *c = (acc & mask) as u8;
        acc >>= bits;
        avail -= u32::from(bits);
    }
    Ok(())
}

/// Packs `codes` word-aligned into `out`, which must hold [`aligned_words`] words.
///
/// # Errors
/// As [`pack_dense`].
///
/// ```
/// use tensorpress_quant_core::pack::bitstream::pack_aligned;
///
/// // Ten 3-bit codes per word; the eleventh starts a new word.
/// let mut words = [0u32; 2];
/// pack_aligned(&[7; 11], 3, &mut words)?;
/// assert_eq!(words, [0x3fff_ffff, 7]);
/// # Ok::<(), tensorpress_quant_core::pack::PackError>(())
/// ```
pub fn pack_aligned(codes: &[u8], bits: u8, out: &mut [u32]) -> Result<(), PackError> {
    check_len(
        "aligned",
        "output words",
        aligned_words(codes.len(), bits)?,
        out.len(),
    )?;
    check_codes(codes, bits)?;
    let per = 32 / bits as usize;
    for (word, chunk) in out.iter_mut().zip(codes.chunks(per)) {
        *word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (k, &c)| w | (u32::from(c) << (k * bits as usize)));
    }
    Ok(())
}

/// Unpacks `out.len()` word-aligned codes from `words`, which must hold
/// exactly [`aligned_words`] words.
///
/// # Errors
/// As [`unpack_dense`].
pub fn unpack_aligned(words: &[u32], bits: u8, out: &mut [u8]) -> Result<(), PackError> {
    check_len(
        "aligned",
        "input words",
        aligned_words(out.len(), bits)?,
        words.len(),
    )?;
    let per = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    for (chunk, &word) in out.chunks_mut(per).zip(words) {
        for (k, c) in chunk.iter_mut().enumerate() {
            *c = ((word >> (k * bits as usize)) & mask) as u8;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-by-bit reference of the dense layout.
    fn dense_reference(codes: &[u8], bits: u8) -> Vec<u32> {
        let mut out = vec![0u32; (codes.len() * bits as usize).div_ceil(32)];
        for (i, &c) in codes.iter().enumerate() {
            for b in 0..bits as usize {
                if (c >> b) & 1 == 1 {
                    let j = i * bits as usize + b;
                    out[j / 32] |= 1 << (j % 32);
                }
            }
        }
        out
    }

    #[test]
    fn dense_three_bit_matches_autogptq_word_boundaries() {
        // AutoGPTQ packs 32 three-bit codes into 3 words: codes 0..9 at bits
        // 0..29, code 10 split 2 + 1 bits, codes 11..20 at bits 1..30, code 21
        // split 1 + 2 bits, codes 22..31 at bits 2..31.
        let codes: Vec<u8> = (0..32).map(|i| (i % 8) as u8).collect();
        let mut w = [0u32; 3];
        pack_dense(&codes, 3, &mut w).unwrap();
        let c = |i: usize| u32::from(codes[i]);
        let run = |start: usize, shift: usize| {
            (0..10).fold(0u32, |w, j| w | c(start + j) << (3 * j + shift))
        };
        let expect = [
            run(0, 0) | c(10) << 30,
            (c(10) >> 2) & 1 | run(11, 1) | c(21) << 31,
            (c(21) >> 1) & 3 | run(22, 2),
        ];
        assert_eq!(w, expect);
        let mut back = [0u8; 32];
        unpack_dense(&w, 3, &mut back).unwrap();
        assert_eq!(back.to_vec(), codes);
    }

    #[test]
    fn layouts_agree_when_bits_divide_32() {
        let codes: Vec<u8> = (0..37).map(|i| (i * 5 % 16) as u8).collect();
        for bits in [1u8, 2, 4, 8] {
            let codes: Vec<u8> = codes
                .iter()
                .map(|&c| (u16::from(c) % (1u16 << bits)) as u8)
                .collect();
            let mut d = vec![0; dense_words(37, bits).unwrap()];
            let mut a = vec![0; aligned_words(37, bits).unwrap()];
            pack_dense(&codes, bits, &mut d).unwrap();
            pack_aligned(&codes, bits, &mut a).unwrap();
            assert_eq!(d, a);
        }
        assert_eq!(dense_words(32, 3).unwrap(), 3);
        assert_eq!(aligned_words(32, 3).unwrap(), 4);
    }

    #[test]
    fn errors_are_typed() {
        let mut w = [0u32; 1];
        assert!(matches!(
            pack_dense(&[1, 9], 3, &mut w),
            Err(PackError::Code {
                index: 1,
                code: 9,
                bits: 3
            })
        ));
        assert!(matches!(
            pack_dense(&[1], 9, &mut w),
            Err(PackError::Bits { bits: 9, .. })
        ));
        assert!(matches!(
            unpack_dense(&[0, 0], 4, &mut [0u8; 8]),
            Err(PackError::Shape { .. })
        ));
        assert!(matches!(
            pack_aligned(&[0; 11], 3, &mut w),
            Err(PackError::Shape { .. })
        ));
    }

    fn codes_and_bits() -> impl Strategy<Value = (u8, Vec<u8>)> {
        (1u8..=8).prop_flat_map(|bits| {
            let max = ((1u16 << bits) - 1) as u8;
            (Just(bits), proptest::collection::vec(0..=max, 0..300))
        })
    }

    proptest! {
        #[test]
        fn dense_round_trips_and_matches_the_bit_reference((bits, codes) in codes_and_bits()) {
            let mut w = vec![0u32; dense_words(codes.len(), bits).unwrap()];
            pack_dense(&codes, bits, &mut w).unwrap();
            prop_assert_eq!(&w, &dense_reference(&codes, bits));
            let mut back = vec![0u8; codes.len()];
            unpack_dense(&w, bits, &mut back).unwrap();
            prop_assert_eq!(back, codes);
        }

        #[test]
        fn aligned_round_trips((bits, codes) in codes_and_bits()) {
            let mut w = vec![0u32; aligned_words(codes.len(), bits).unwrap()];
            pack_aligned(&codes, bits, &mut w).unwrap();
            let per = 32 / bits as u32;
            if per * bits as u32 != 32 {
                let unused = !((1u64 << (per * bits as u32)) - 1) as u32;
                prop_assert!(w.iter().all(|x| x & unused == 0));
            }
            let mut back = vec![0u8; codes.len()];
            unpack_aligned(&w, bits, &mut back).unwrap();
            prop_assert_eq!(back, codes);
        }
    }
}
