//! Errors of the sparsity crate.

/// Errors of `tensorpress-sparsity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A target sparsity outside `[0, 1]`.
    #[error("sparsity {sparsity} is outside [0, 1]")]
    InvalidSparsity {
        /// The value given.
        sparsity: f64,
    },
    /// An N:M pattern with `m == 0` or `n > m`.
    #[error("invalid N:M pattern {n}:{m}")]
    InvalidPattern {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// The input dimension is not a multiple of the N:M group size.
    #[error("{cols} input columns are not a multiple of the group size {m}")]
    IndivisibleGroups {
        /// Columns of the matrix.
        cols: usize,
        /// Group size.
        m: usize,
    },
    /// A group keeps more than `n` of its `m` entries.
    #[error("row {row}, group {group} keeps {kept} entries, more than {n}:{m} allows")]
    PatternViolation {
        /// Row of the group.
        row: usize,
        /// Index of the group within the row.
        group: usize,
        /// Entries kept.
        kept: usize,
        /// Allowed per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// A NaN or infinite score or weight.
    #[error("non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// First shape.
        lhs: Vec<usize>,
        /// Second shape.
        rhs: Vec<usize>,
    },
    /// An error of the tensor layer.
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
