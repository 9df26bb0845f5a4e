//! The GGML tensor types: ids, names and block geometry.

use std::fmt;

use crate::{Error, Result};

/// Elements per super-block of the k-quants and i-quants.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:expr, $size:expr; )*) => {
        /// A GGML tensor type, as stored in a GGUF file's tensor infos.
        ///
        /// The ids are those of `ggml_type` in llama.cpp's `ggml.h` (and of
        /// `GGMLQuantizationType` in the `gguf` Python package); ids that ggml has
        /// retired (4, 5, 31–33, 36–38) are not types.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum GgmlType {
            $( $(#[$doc])* $variant, )*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The type with ggml id `id`, or `None` for an unknown id.
            pub const fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// The ggml id.
            pub const fn id(self) -> u32 {
                match self { $( GgmlType::$variant => $id, )* }
            }

            /// The name ggml prints (`"F32"`, `"Q4_0"`, `"Q6_K"`, `"IQ4_XS"`, …).
            pub const fn name(self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }

            /// Elements per block (1 for the plain element types).
            pub const fn block_size(self) -> usize {
                match self { $( GgmlType::$variant => $block, )* }
            }

            /// Bytes per block.
            pub const fn type_size(self) -> usize {
                match self { $( GgmlType::$variant => $size, )* }
            }
        }
    };
}

ggml_types! {
    /// IEEE 754 single precision.
    F32 = 0, "F32", 1, 4;
    /// IEEE 754 half precision.
    F16 = 1, "F16", 1, 2;
    /// 32 4-bit values with an f16 scale, symmetric (`d · (q − 8)`).
    Q4_0 = 2, "Q4_0", 32, 2 + 16;
    /// 32 4-bit values with an f16 scale and an f16 minimum (`d · q + m`).
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16;
    /// 32 5-bit values with an f16 scale, symmetric (`d · (q − 16)`).
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16;
    /// 32 5-bit values with an f16 scale and an f16 minimum.
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16;
    /// 32 8-bit values with an f16 scale (`d · q`).
    Q8_0 = 8, "Q8_0", 32, 2 + 32;
    /// 32 8-bit values with an f32 scale and the f32 sum `d · Σq` (activations).
    Q8_1 = 9, "Q8_1", 32, 4 + 4 + 32;
    /// k-quant, 2 bits per weight in 256-element super-blocks.
    Q2K = 10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4;
    /// k-quant, 3 bits.
    Q3K = 11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    /// k-quant, 4 bits.
    Q4K = 12, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12;
    /// k-quant, 5 bits.
    Q5K = 13, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    /// k-quant, 6 bits.
    Q6K = 14, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    /// k-quant, 8 bits with an f32 scale and block sums (activations).
    Q8K = 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8;
    /// i-quant, 2.06 bits per weight.
    IQ2XXS = 16, "IQ2_XXS", QK_K, 2 + QK_K / 4;
    /// i-quant, 2.31 bits.
    IQ2XS = 17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32;
    /// i-quant, 3.06 bits.
    IQ3XXS = 18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8;
    /// i-quant, 1.56 bits.
    IQ1S = 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16;
    /// 4-bit non-linear grid in 32-element blocks.
    IQ4NL = 20, "IQ4_NL", 32, 2 + 16;
    /// i-quant, 3.44 bits.
    IQ3S = 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    /// i-quant, 2.5 bits.
    IQ2S = 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16;
    /// 4-bit non-linear grid in 256-element super-blocks.
    IQ4XS = 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    /// Signed 8-bit integer.
    I8 = 24, "I8", 1, 1;
    /// Signed 16-bit integer.
    I16 = 25, "I16", 1, 2;
    /// Signed 32-bit integer.
    I32 = 26, "I32", 1, 4;
    /// Signed 64-bit integer.
    I64 = 27, "I64", 1, 8;
    /// IEEE 754 double precision.
    F64 = 28, "F64", 1, 8;
    /// i-quant, 1.75 bits.
    IQ1M = 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    /// bfloat16.
    BF16 = 30, "BF16", 1, 2;
    /// Ternary, 1.69 bits per weight.
    TQ1_0 = 34, "TQ1_0", QK_K, 2 + 4 * 13;
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35, "TQ2_0", QK_K, 2 + 64;
    /// OCP microscaling FP4: 32 E2M1 values with an E8M0 scale.
    MXFP4 = 39, "MXFP4", 32, 1 + 16;
    /// NVIDIA FP4: 64 E2M1 values with four FP8 E4M3 scales.
    NVFP4 = 40, "NVFP4", 64, 4 + 32;
    /// 1-bit values with an f16 scale in 128-element blocks.
    Q1_0 = 41, "Q1_0", 128, 2 + 16;
}

impl GgmlType {
    /// Parses a name as [`GgmlType::name`] prints it, case-insensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Whether values are stored in blocks (everything but the plain element types).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Whether [`dequantize`](crate::ggml::dequantize) supports this type.
    pub const fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2K
                | GgmlType::Q3K
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
                | GgmlType::Q8K
                | GgmlType::IQ4NL
                | GgmlType::IQ4XS
        )
    }

    /// Whether [`quantize`](crate::ggml::quantize) supports this type.
    pub const fn can_quantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2K
                | GgmlType::Q3K
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
                | GgmlType::Q8K
                | GgmlType::IQ4NL
                | GgmlType::IQ4XS
        )
    }

    /// Whether [`quantize_rows`](crate::ggml::quantize_rows) accepts an
    /// importance vector for this type (the k-quants Q2_K…Q6_K, IQ4_NL, IQ4_XS).
    pub const fn can_quantize_weighted(self) -> bool {
        matches!(
            self,
            GgmlType::Q2K
                | GgmlType::Q3K
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
                | GgmlType::IQ4NL
                | GgmlType::IQ4XS
        )
    }

    /// Bytes that `n` elements (one row) take.
    ///
    /// Fails with [`Error::NotBlockMultiple`] when `n` is not a whole number of
    /// blocks and with [`Error::Overflow`] when the size overflows `usize`.
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let block_size = self.block_size();
        if !n.is_multiple_of(block_size) {
            return Err(Error::NotBlockMultiple {
                ty: self,
                n,
                block_size,
            });
        }
        (n / block_size)
            .checked_mul(self.type_size())
            .ok_or(Error::Overflow)
    }

    /// Elements that `bytes` bytes hold.
    ///
    /// Fails with [`Error::NotWholeBlocks`] when `bytes` is not a whole number of blocks.
    pub fn elements_in(self, bytes: usize) -> Result<usize> {
        let type_size = self.type_size();
        if !bytes.is_multiple_of(type_size) {
            return Err(Error::NotWholeBlocks {
                ty: self,
                len: bytes,
                type_size,
            });
        }
        (bytes / type_size)
            .checked_mul(self.block_size())
            .ok_or(Error::Overflow)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
            assert!(seen.insert(t.id()));
        }
        assert_eq!(GgmlType::ALL.len(), 34);
        for retired in [4, 5, 31, 32, 33, 36, 37, 38, 42, u32::MAX] {
            assert_eq!(GgmlType::from_id(retired), None);
        }
    }

    #[test]
    fn sizes_match_ggml() {
        // GGML_QUANT_SIZES in gguf-py's constants.py.
        assert_eq!((GgmlType::Q4_0.id(), GgmlType::Q4_0.type_size()), (2, 18));
        assert_eq!(GgmlType::Q4_1.type_size(), 20);
        assert_eq!(GgmlType::Q5_0.type_size(), 22);
        assert_eq!(GgmlType::Q5_1.type_size(), 24);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
        assert_eq!(GgmlType::Q2K.type_size(), 84);
        assert_eq!(GgmlType::Q3K.type_size(), 110);
        assert_eq!(GgmlType::Q4K.type_size(), 144);
        assert_eq!(GgmlType::Q5K.type_size(), 176);
        assert_eq!(GgmlType::Q6K.type_size(), 210);
        assert_eq!(GgmlType::IQ4XS.type_size(), 136);
        assert_eq!(GgmlType::IQ1M.type_size(), 56);
        assert_eq!(
            (GgmlType::MXFP4.id(), GgmlType::MXFP4.type_size()),
            (39, 17)
        );
        assert_eq!(GgmlType::BF16.id(), 30);
        assert_eq!(GgmlType::Q6K.name(), "Q6_K");
        assert_eq!(GgmlType::from_name("iq2_xxs"), Some(GgmlType::IQ2XXS));
    }

    #[test]
    fn row_bytes_is_checked() {
        assert_eq!(GgmlType::Q4_1.row_bytes(576), Ok(18 * 20));
        assert_eq!(GgmlType::F32.row_bytes(3), Ok(12));
        assert_eq!(
            GgmlType::Q8_0.row_bytes(33),
            Err(Error::NotBlockMultiple {
                ty: GgmlType::Q8_0,
                n: 33,
                block_size: 32
            })
        );
        assert_eq!(GgmlType::F64.row_bytes(usize::MAX), Err(Error::Overflow));
        assert_eq!(GgmlType::Q8_0.elements_in(68), Ok(64));
        assert!(matches!(
            GgmlType::Q8_0.elements_in(67),
            Err(Error::NotWholeBlocks { len: 67, .. })
        ));
        assert!(GgmlType::Q4K.is_quantized() && !GgmlType::BF16.is_quantized());
    }
}
