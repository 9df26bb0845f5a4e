//! Low-rank factorizations for tensorpress: truncated SVD `W ≈ A·B` (exact, or
//! randomized after Halko, Martinsson & Tropp 2011) with the rank chosen by
//! count, retained energy, target error or parameter budget; tensor trains
//! (matrix-product operators, as in CompactifAI); spectral metrics (effective
//! rank, nuclear norm and its L1,2 approximation, the nuclear-norm subgradient
//! of Trained Rank Pruning); reconstruction error and parameter-count /
//! compression-ratio arithmetic.
//!
//! | item | computes |
//! |---|---|
//! | [`factorize`] | exact truncated SVD, rank from a [`RankSelection`] |
//! | [`randomized_svd`] | randomized truncated SVD, seeded ([`RandomizedSvd`]) |
//! | [`rank_for_energy`], [`rank_for_error`], [`rank_for_budget`], [`max_rank_for_ratio`] | rank selection |
//! | [`tensor_train`] | TT-SVD into a [`TensorTrain`] of cores `[r, o, i, r']` |
//! | [`metrics`] | effective rank, nuclear norm, Matrix Nuclear-Norm, `U Vᵀ` |
//!
//! Weights are `[out_features, in_features]`; `A` is `[out, r]` and `B` is
//! `[r, in]`, so a linear layer `y = W x` becomes `y = A (B x)`.
//!
//! # Quick start
//!
//! ```
//! use tensorpress_lowrank::{factorize, reconstruction_error, RankSelection};
//! use tensorpress_tensor::SeededRng;
//!
//! // A 64×48 matrix of rank 6 plus a little noise.
//! let mut rng = SeededRng::new(0);
//! let w = rng.array_normal((64, 6)).dot(&rng.array_normal((6, 48)))
//!     + rng.array_normal((64, 48)) * 0.01;
//!
//! // Keep 99.9% of the energy: the rank-6 structure, not the noise.
//! let f = factorize(w.view(), RankSelection::Energy(0.999))?;
//! assert_eq!(f.rank(), 6);
//! assert!(f.compression_ratio() > 4.5);
//! let err = reconstruction_error(w.view(), f.reconstruct().view())?;
//! assert!(err.relative < 0.01);
//! # Ok::<(), tensorpress_lowrank::Error>(())
//! ```

mod error;
pub mod metrics;
mod randomized;
mod rank;
mod svd;
mod tensor_train;

pub use error::{Error, Result};
pub use metrics::{
    effective_rank, effective_rank_of_spectrum, matrix_nuclear_norm, mnn_normalize, nuclear_norm,
    nuclear_norm_subgradient, top_column_norm_sum,
};
pub use randomized::{randomized_svd, RandomizedSvd};
pub use rank::{
    break_even_rank, compression_ratio, low_rank_params, max_rank_for_ratio, rank_for_budget,
    rank_for_energy, rank_for_error,
};
pub use svd::{factorize, reconstruction_error, LowRank, RankSelection, ReconstructionError};
pub use tensor_train::{tensor_train, TensorTrain};

// Activation-aware factorization (ASVD, SVD-LLM), compensation (LoRC, EoRA), BitStack.
mod activation;
mod bitstack;
mod compensate;

pub use activation::{
    activation_error, asvd, channel_rms, svd_llm, Asvd, Whitening, DEFAULT_ASVD_ALPHA,
    DEFAULT_SCALE_FLOOR,
};
pub use bitstack::{
    allocate_blocks, BitStack, BitStackConfig, BlockAllocation, ErrorMetric, SignPlane, StackBlock,
    StackProfile, DEFAULT_MAGNITUDE_RANK,
};
pub use compensate::{eora, lorc, Adapter, Eigenspace, DEFAULT_EIGEN_FLOOR};
