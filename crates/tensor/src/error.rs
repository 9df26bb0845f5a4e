//! Errors of the tensor layer.

use crate::DType;

/// Errors of `tensorpress-tensor`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// A matrix that must be square is not.
    #[error("{op} needs a square matrix, got {rows}×{cols}")]
    NotSquare {
        /// The operation.
        op: &'static str,
        /// Rows of the matrix given.
        rows: usize,
        /// Columns of the matrix given.
        cols: usize,
    },
    /// A Cholesky factorization met a non-positive pivot: the matrix (plus the
    /// largest diagonal damping tried) is not positive definite.
    #[error(
        "matrix is not positive definite (pivot {pivot} failed; relative damp tried up to {damp_tried})"
    )]
    NotPositiveDefinite {
        /// Index of the first pivot that was not positive in the last attempt.
        pivot: usize,
        /// The last relative damp tried (`0.0` when no damping was applied).
        damp_tried: f64,
    },
    /// An iterative decomposition (SVD, eigendecomposition) did not converge.
    #[error("{op} did not converge")]
    NoConvergence {
        /// The decomposition.
        op: &'static str,
    },
    /// A NaN or infinity where finite values are required.
    #[error("{op}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// The operation that found it.
        op: &'static str,
        /// Row (token, for activations) of the value.
        row: usize,
        /// Column (channel) of the value.
        col: usize,
        /// The value itself (NaN or ±infinity).
        value: f64,
    },
    /// A damping schedule whose parameters cannot work.
    #[error(
        "invalid damping schedule: initial {initial} must be > 0, factor {factor} > 1, max {max} >= initial"
    )]
    InvalidDampSchedule {
        /// Relative damp of the first attempt.
        initial: f64,
        /// Multiplier between attempts.
        factor: f64,
        /// Largest relative damp tried.
        max: f64,
    },
    /// A damping value that is negative or not finite.
    #[error("damp must be finite and >= 0, got {damp}")]
    InvalidDamp {
        /// The value given.
        damp: f64,
    },
    /// A statistic was asked of an accumulator that has seen no samples.
    #[error("{op}: no samples accumulated")]
    NoSamples {
        /// The operation.
        op: &'static str,
    },
    /// Parts handed to a `from_parts` constructor are inconsistent.
    #[error("{what}: inconsistent parts ({detail})")]
    InvalidParts {
        /// The type being rebuilt.
        what: &'static str,
        /// Which invariant failed.
        detail: &'static str,
    },
    /// Asked for more distinct samples than the population holds.
    #[error("cannot choose {k} distinct indices out of {n}")]
    SampleTooLarge {
        /// Indices requested.
        k: usize,
        /// Population size.
        n: usize,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
