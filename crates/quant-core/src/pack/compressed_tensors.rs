//! compressed-tensors' `pack-quantized` layout (`pack_to_int32` /
//! `unpack_from_int32` in vllm-project/compressed-tensors).
//!
//! - `weight_packed`: `int32 [N, words(K)]`, each row of codes packed along the
//!   input dimension, least significant bits first;
//! - `weight_zero_point` (asymmetric per-channel and per-group scales only):
//!   `int32 [words(N), groups]`, packed along the *output* dimension
//!   (`packed_dim=0`).
//!
//! compressed-tensors quantizes to signed values `q ∈ [−2^(b−1), 2^(b−1))` and
//! packs `q + 2^(b−1)`: the unsigned code. Its zero points are signed too
//! (`zero − 2^(b−1)`) and get the same offset when packed, so both packed
//! tensors hold the unsigned codes and zeros of a
//! [`QuantizedTensor`](crate::QuantizedTensor).
//!
//! The word filling changed in compressed-tensors 0.20: [`CtPacking::Dense`]
//! (current) lets 3-, 5-, 6- and 7-bit codes straddle words,
//! [`CtPacking::Aligned`] (earlier releases) keeps `⌊32/b⌋` whole codes per word.
//! For 1, 2, 4 and 8 bits they are the same bytes.

use ndarray::{Array2, ArrayView2};

use super::{pack_rows, unpack_rows, Fill, PackError};

const LAYOUT: &str = "compressed-tensors";

/// How compressed-tensors fills its `int32` words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CtPacking {
    /// `⌈n·b/32⌉` words, codes straddle words (compressed-tensors ≥ 0.20).
    #[default]
    Dense,
    /// `⌈n/⌊32/b⌋⌉` words of whole codes (compressed-tensors < 0.20).
    Aligned,
}

impl CtPacking {
    fn fill(self) -> Fill {
        match self {
            CtPacking::Dense => Fill::Dense,
            CtPacking::Aligned => Fill::Aligned,
        }
    }

    /// Words that `n` codes of `bits` bits take.
    ///
    /// # Errors
    /// [`PackError::Bits`] outside `1..=8`.
    pub fn words(self, n: usize, bits: u8) -> Result<usize, PackError> {
        self.fill().words(n, bits)
    }

    /// The packing that gives `n` codes exactly `words` words, `prefer` when
    /// both do. Both do when the layouts coincide (1, 2, 4, 8 bits) and for
    /// some short 3/5/6/7-bit rows (20 three-bit codes take 2 words either
    /// way), where only the writer's compressed-tensors version tells them apart.
    pub fn detect(n: usize, words: usize, bits: u8, prefer: CtPacking) -> Option<CtPacking> {
        let other = match prefer {
            CtPacking::Dense => CtPacking::Aligned,
            CtPacking::Aligned => CtPacking::Dense,
        };
        [prefer, other]
            .into_iter()
            .find(|p| p.words(n, bits).ok() == Some(words))
    }

    /// The packing compressed-tensors `version` (`"0.12.2"`, `"0.20.0"`)
    /// writes: [`Aligned`](CtPacking::Aligned) before 0.20,
    /// [`Dense`](CtPacking::Dense) from 0.20 on and when the version does not parse.
    pub fn for_version(version: &str) -> CtPacking {
        let mut parts = version.split(['.', '-', '+']).map(|p| p.parse::<u64>());
        match (parts.next(), parts.next()) {
            (Some(Ok(0)), Some(Ok(minor))) if minor < 20 => CtPacking::Aligned,
            _ => CtPacking::Dense,
        }
    }
}

/// Packs codes `[N, K]` into `weight_packed` `[N, words(K)]`.
///
/// # Errors
/// [`PackError::Bits`] outside `1..=8`, [`PackError::Code`] for a code `≥ 2^bits`.
pub fn pack_weight(
    codes: ArrayView2<'_, u8>,
    bits: u8,
    packing: CtPacking,
) -> Result<Array2<i32>, PackError> {
    pack_rows(LAYOUT, codes, bits, packing.fill())
}

/// Unpacks `weight_packed` `[N, words(K)]` into codes `[N, K]`.
///
/// # Errors
/// [`PackError::Bits`]; [`PackError::Shape`] when the word count does not
/// match `in_features`.
pub fn unpack_weight(
    packed: ArrayView2<'_, i32>,
    bits: u8,
    in_features: usize,
    packing: CtPacking,
) -> Result<Array2<u8>, PackError> {
    unpack_rows(
        LAYOUT,
        "weight_packed",
        packed,
        bits,
        in_features,
        packing.fill(),
    )
}

/// Packs zero points `[N, groups]` (unsigned, code units) into
/// `weight_zero_point` `[words(N), groups]`.
///
/// # Errors
/// As [`pack_weight`].
pub fn pack_zero_points(
    zeros: ArrayView2<'_, u8>,
    bits: u8,
    packing: CtPacking,
) -> Result<Array2<i32>, PackError> {
    let packed = pack_rows(LAYOUT, zeros.t(), bits, packing.fill())?;
    Ok(packed.t().as_standard_layout().into_owned())
}

/// Unpacks `weight_zero_point` `[words(N), groups]` into zero points `[N, groups]`.
///
/// # Errors
/// As [`unpack_weight`], with `out_features` in place of `in_features`.
pub fn unpack_zero_points(
    packed: ArrayView2<'_, i32>,
    bits: u8,
    out_features: usize,
    packing: CtPacking,
) -> Result<Array2<u8>, PackError> {
    let zeros = unpack_rows(
        LAYOUT,
        "weight_zero_point",
        packed.t(),
        bits,
        out_features,
        packing.fill(),
    )
    .map_err(|e| match e {
        PackError::Shape {
            layout,
            what,
            expected,
            actual,
        } => PackError::Shape {
            layout,
            what,
            expected: expected.into_iter().rev().collect(),
            actual: actual.into_iter().rev().collect(),
        },
        e => e,
    })?;
    Ok(zeros.t().as_standard_layout().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use proptest::prelude::*;

    #[test]
    fn matches_pack_to_int32_examples() {
        // pack_to_int32's docstring: int8 [1, 2] at 8 bits → 33409.
        let codes = array![[129u8, 130]];
        assert_eq!(
            pack_weight(codes.view(), 8, CtPacking::Dense).unwrap(),
            array![[33409]]
        );
        // 4 bits: eight codes per word, first in the low nibble; a row of 9
        // takes two words.
        let codes = array![[1u8, 2, 3, 4, 5, 6, 7, 8, 9]];
        assert_eq!(
            pack_weight(codes.view(), 4, CtPacking::Dense).unwrap(),
            array![[0x8765_4321u32 as i32, 9]]
        );
    }

    #[test]
    fn three_bits_dense_and_aligned_differ() {
        let codes = Array2::from_elem((1, 11), 7u8);
        let dense = pack_weight(codes.view(), 3, CtPacking::Dense).unwrap();
        let aligned = pack_weight(codes.view(), 3, CtPacking::Aligned).unwrap();
        assert_eq!(dense, array![[-1i32, 1]]);
        assert_eq!(aligned, array![[0x3fff_ffff, 7]]);
        let dense = CtPacking::Dense;
        assert_eq!(CtPacking::detect(32, 3, 3, dense), Some(CtPacking::Dense));
        assert_eq!(CtPacking::detect(32, 4, 3, dense), Some(CtPacking::Aligned));
        assert_eq!(CtPacking::detect(32, 5, 3, dense), None);
        // 20 three-bit codes take two words either way.
        assert_eq!(CtPacking::detect(20, 2, 3, dense), Some(CtPacking::Dense));
        let aligned = CtPacking::Aligned;
        assert_eq!(
            CtPacking::detect(20, 2, 3, aligned),
            Some(CtPacking::Aligned)
        );
        assert_eq!(CtPacking::for_version("0.12.2"), CtPacking::Aligned);
        assert_eq!(CtPacking::for_version("0.9.4"), CtPacking::Aligned);
        assert_eq!(CtPacking::for_version("0.20.0"), CtPacking::Dense);
        assert_eq!(CtPacking::for_version("1.0.0"), CtPacking::Dense);
        assert_eq!(CtPacking::for_version("?"), CtPacking::Dense);
    }

    #[test]
    fn zero_points_pack_along_the_output_dimension() {
        // Three output channels, two groups; 4-bit zeros of one group share a word.
        let z = array![[1u8, 4], [2, 5], [3, 6]];
        let p = pack_zero_points(z.view(), 4, CtPacking::Dense).unwrap();
        assert_eq!(p, array![[0x321, 0x654]]);
        assert_eq!(
            unpack_zero_points(p.view(), 4, 3, CtPacking::Dense).unwrap(),
            z
        );
        assert!(matches!(
            unpack_zero_points(p.view(), 4, 9, CtPacking::Dense),
            Err(PackError::Shape { expected, .. }) if expected == [2, 2]
        ));
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            pack_weight(array![[0u8, 1], [2, 8]].view(), 3, CtPacking::Dense),
            Err(PackError::Code {
                index: 3,
                code: 8,
                bits: 3
            })
        ));
        assert!(matches!(
            unpack_weight(array![[0i32]].view(), 4, 9, CtPacking::Dense),
            Err(PackError::Shape { .. })
        ));
    }

    fn case() -> impl Strategy<Value = (u8, CtPacking, Array2<u8>)> {
        (
            1u8..=8,
            prop_oneof![Just(CtPacking::Dense), Just(CtPacking::Aligned)],
            1usize..6,
            0usize..70,
            any::<u64>(),
        )
            .prop_map(|(bits, p, rows, cols, seed)| {
                let mut s = seed | 1;
                let codes = Array2::from_shape_fn((rows, cols), |_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % (1u64 << bits)) as u8
                });
                (bits, p, codes)
            })
    }

    proptest! {
        #[test]
        fn round_trips((bits, packing, codes) in case()) {
            let (rows, cols) = codes.dim();
            let w = pack_weight(codes.view(), bits, packing).unwrap();
            prop_assert_eq!(w.dim(), (rows, packing.words(cols, bits).unwrap()));
            prop_assert_eq!(unpack_weight(w.view(), bits, cols, packing).unwrap(), codes.clone());
            let z = pack_zero_points(codes.view(), bits, packing).unwrap();
            prop_assert_eq!(z.dim(), (packing.words(rows, bits).unwrap(), cols));
            prop_assert_eq!(unpack_zero_points(z.view(), bits, rows, packing).unwrap(), codes);
        }
    }
}
