//! Errors of the tensor layer.

use crate::DType;

/// Errors of `tensorpress-tensor`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A byte buffer's length disagrees with the shape and dtype it claims.
    #[error("byte count {actual} does not match the shape and dtype, which need {expected}")]
    ByteCount {
        /// Bytes the shape and dtype need.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// A size computation overflowed `usize`.
    #[error("size computation overflowed")]
    Overflow,
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation that compared them.
        op: &'static str,
        /// The first shape.
        lhs: Vec<usize>,
        /// The second shape.
        rhs: Vec<usize>,
    },
    /// An operation does not support this dtype.
    #[error("{op} does not support dtype {dtype}")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The dtype it was given.
        dtype: DType,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
