//! Errors of the quantization layer.

use crate::ggml::GgmlType;

/// Errors of `tensorpress-quant-core`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// Integer formats take 2 to 8 bits.
    #[error("{bits} bits is outside 2..=8")]
    InvalidBits {
        /// The bits asked for.
        bits: u8,
    },
    /// A group size that cannot partition the columns.
    #[error("group size {group} does not fit {cols} columns")]
    InvalidGroupSize {
        /// The group size asked for.
        group: usize,
        /// Columns of the weight.
        cols: usize,
    },
    /// An array has the wrong shape.
    #[error("{what} has shape {actual:?}, expected {expected:?}")]
    Shape {
        /// Which array.
        what: &'static str,
        /// The shape expected.
        expected: Vec<usize>,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// A group index points past the last group.
    #[error("group index {index} is out of range for {groups} groups")]
    GroupIndex {
        /// The offending index.
        index: u32,
        /// Groups per row.
        groups: usize,
    },
    /// A code does not fit in the format's bits.
    #[error("code {code} does not fit in {bits} bits")]
    CodeRange {
        /// The offending code.
        code: u8,
        /// Bits per code.
        bits: u8,
    },
    /// A weight or activation is NaN or infinite.
    #[error("{what}[{row}, {col}] is {value}")]
    NonFinite {
        /// Which array.
        what: &'static str,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// The quantizer needs calibration data it was not given.
    #[error("{method} needs {what}")]
    MissingCalibration {
        /// The method.
        method: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// Codes that a packing layout cannot store, or packed data of the wrong shape.
    #[error(transparent)]
    Pack(#[from] crate::pack::PackError),
    /// Linear algebra failed (e.g. a Hessian that stays singular after damping).
    #[error(transparent)]
    Linalg(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
