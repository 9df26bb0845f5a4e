//! Errors of the sensitivity metrics.

/// Errors of `tensorpress-sensitivity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// A metric that is undefined for an all-zero matrix or spectrum.
    #[error("{metric} is undefined for an all-zero matrix")]
    ZeroMatrix {
        /// The metric.
        metric: &'static str,
    },
    /// A relative error whose reference output is zero.
    #[error("relative output error is undefined: the reference output is zero")]
    ZeroReference,
    /// A singular value that is negative or not finite.
    #[error("singular value {index} is {value}: must be finite and >= 0")]
    InvalidSingularValue {
        /// Its index.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// An estimator asked for zero samples.
    #[error("{op} needs at least one sample")]
    NoSamples {
        /// The estimator.
        op: &'static str,
    },
    /// An error of the tensor layer (non-finite input, SVD failure, …).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
