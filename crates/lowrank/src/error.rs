//! Errors of the low-rank crate.

use ndarray::ArrayView2;
use tensorpress_tensor::linalg::Real;

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
    /// A rank of 0 where a method needs at least one direction (a randomized
    /// sketch of width 0 finds nothing).
    #[error("{op}: rank must be at least 1")]
    ZeroRank {
        /// The method.
        op: &'static str,
    },
    /// A relative-error target that is negative or not a number.
    #[error("relative error target {target} must be finite and non-negative")]
    InvalidErrorTarget {
        /// The value given.
        target: f64,
    },
    /// A parameter budget that cannot pay for even one rank of an `[out, in]`
    /// factorization (`out + in` parameters).
    #[error("a budget of {budget} parameters is below the {per_rank} of a single rank")]
    BudgetTooSmall {
        /// The budget given.
        budget: usize,
        /// Parameters per rank, `out + in`.
        per_rank: usize,
    },
    /// A NaN or infinity in an input matrix.
    #[error("{op}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// The operation that found it.
        op: &'static str,
        /// Row of the value.
        row: usize,
        /// Column of the value.
        col: usize,
        /// The value itself (NaN or ±infinity).
        value: f64,
    },
    /// A tensor-train bond dimension of 0.
    #[error("tensor train: the maximum bond dimension must be at least 1")]
    ZeroBond,
    /// Tensor-train mode lists that cannot describe the matrix: their products
    /// differ from its dimensions, they differ in length, or they are empty or
    /// hold a zero.
    #[error(
        "tensor train: out modes {out_modes:?} and in modes {in_modes:?} do not factor a {rows}x{cols} matrix"
    )]
    InvalidModes {
        /// Factors of the output dimension, one per core.
        out_modes: Vec<usize>,
        /// Factors of the input dimension, one per core.
        in_modes: Vec<usize>,
        /// Rows (`out`) of the matrix.
        rows: usize,
        /// Columns (`in`) of the matrix.
        cols: usize,
    },
    /// An error of the tensor layer (SVD failure, …).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
    /// A rank outside `1..=max` where a positive rank is required (adapters,
    /// BitStack magnitude factors).
    #[error("{op}: rank {rank} is outside 1..={max}")]
    RankOutOfRange {
        /// The operation.
        op: &'static str,
        /// The rank asked for.
        rank: usize,
        /// The largest rank allowed, `min(out, in)`.
        max: usize,
    },
    /// A per-channel activation magnitude or scale that is negative or not finite.
    #[error("channel scale {value} at channel {index} must be finite and >= 0")]
    InvalidChannelScale {
        /// The input channel.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A numeric option outside its domain.
    #[error("{name} = {value} is invalid: expected {expected}")]
    InvalidParameter {
        /// The option.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The domain it must lie in.
        expected: &'static str,
    },
    /// The calibration Gram matrix `H` is not positive definite, even after the
    /// largest damping of the schedule (or, for an eigendecomposition, has no
    /// positive eigenvalue).
    #[error(
        "calibration matrix is not positive definite (pivot {pivot} failed; relative damp tried up to {damp_tried})"
    )]
    HessianNotPositiveDefinite {
        /// First pivot that failed in the last attempt (0 for an eigendecomposition).
        pivot: usize,
        /// The last relative damp tried.
        damp_tried: f64,
    },
    /// More BitStack blocks asked for than the stack holds.
    #[error("asked for {requested} blocks of a stack of {available}")]
    BlocksOutOfRange {
        /// Blocks asked for.
        requested: usize,
        /// Blocks in the stack.
        available: usize,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Fails with [`Error::NonFinite`] at the first NaN or infinity of `w`.
pub(crate) fn check_finite<T: Real>(op: &'static str, w: ArrayView2<'_, T>) -> Result<()> {
    for (row, values) in w.outer_iter().enumerate() {
        if let Some((col, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                op,
                row,
                col,
                value: value.as_f64(),
            });
        }
    }
    Ok(())
}
