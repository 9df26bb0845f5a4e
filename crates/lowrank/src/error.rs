//! Errors of the low-rank crate.

/// Errors of `tensorpress-lowrank`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rank above `min(out, in)`.
    #[error("rank {rank} exceeds the largest possible rank {max}")]
    InvalidRank {
        /// The rank asked for.
        rank: usize,
        /// `min(out, in)`.
        max: usize,
    },
    /// A retained-energy fraction outside `[0, 1]`.
    #[error("energy fraction {energy} is outside [0, 1]")]
    InvalidEnergy {
        /// The value given.
        energy: f64,
    },
    /// A compression ratio that is not positive and finite.
    #[error("compression ratio {ratio} must be positive and finite")]
    InvalidRatio {
        /// The value given.
        ratio: f64,
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
    /// An error of the tensor layer (non-finite input, SVD failure, …).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
