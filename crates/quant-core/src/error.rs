//! Errors of the quantization layer.

use crate::ggml::GgmlType;

/// Errors of `tensorpress-quant-core`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An element count is not a whole number of blocks of a block format.
    #[error("{n} elements is not a multiple of the {ty} block size {block_size}")]
    NotBlockMultiple {
        /// The block format.
        ty: GgmlType,
        /// The element count given.
        n: usize,
        /// Elements per block.
        block_size: usize,
    },
    /// An encoded buffer is not a whole number of blocks of a block format.
    #[error("{len} bytes is not a multiple of the {ty} block size of {type_size} bytes")]
    NotWholeBlocks {
        /// The block format.
        ty: GgmlType,
        /// The byte count given.
        len: usize,
        /// Bytes per block.
        type_size: usize,
    },
    /// A caller-owned output buffer has the wrong length.
    #[error("output buffer holds {actual} values, the input decodes to {expected}")]
    OutputLength {
        /// Values the input decodes to.
        expected: usize,
        /// Values the output holds.
        actual: usize,
    },
    /// The operation is not implemented for this format (yet).
    #[error("{op} is not supported for {ty}")]
    Unsupported {
        /// The operation (`"dequantize"`, `"quantize"`).
        op: &'static str,
        /// The format.
        ty: GgmlType,
    },
    /// A size computation overflowed `usize`.
    #[error("size computation overflowed")]
    Overflow,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
