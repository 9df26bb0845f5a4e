//! Low-rank factorizations for tensorpress: truncated SVD `W ≈ A·B` with the
//! rank chosen by count or by retained energy, reconstruction error, and
//! parameter-count / compression-ratio arithmetic.
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
mod rank;
mod svd;

pub use error::{Error, Result};
pub use rank::{
    break_even_rank, compression_ratio, low_rank_params, max_rank_for_ratio, rank_for_energy,
};
pub use svd::{factorize, reconstruction_error, LowRank, RankSelection, ReconstructionError};

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
