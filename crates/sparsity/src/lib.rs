//! Weight sparsity for tensorpress: unstructured pruning by magnitude or by an
//! importance score (Wanda's `|W| · ‖X_j‖₂`), SparseGPT's one-shot OBS pruning
//! with the layer Hessian (alone or jointly with quantization), N:M
//! semi-structured masks (2:4, 4:8), the [`SparsityMask`] type and sparsity
//! statistics. [`WeightPruner`] puts magnitude, Wanda and SparseGPT behind one
//! interface for the compression pipeline. [`training`] has the training-side
//! helpers for activation sparsity: DEFT's density loss, ProSparse's
//! progressive L1 schedule and FATReLU, and delta (temporal) encoding, each
//! with its gradient.
//!
//! Weights are `[out_features, in_features]`; N:M groups run along the input
//! dimension, as sparse tensor cores and compressed-tensors' 2:4 format expect.
//!
//! # Quick start
//!
//! ```
//! use ndarray::Axis;
//! use tensorpress_sparsity::{nm_mask, prune_by_score, wanda_scores, PruneScope, SparsityStats};
//! use tensorpress_tensor::{ChannelStats, SeededRng};
//!
//! let mut rng = SeededRng::new(0);
//! let w = rng.array_normal((8, 16));        // weight [out, in]
//! let x = rng.array_normal((64, 16));       // calibration activations [tokens, in]
//! let mut stats = ChannelStats::new(16);
//! stats.update(x.view())?;
//!
//! // Wanda: prune half of each row by |W| · ‖X_j‖₂.
//! let scores = wanda_scores(w.view(), stats.l2_norm().view())?;
//! let mask = prune_by_score(scores.view(), 0.5, PruneScope::PerRow)?;
//! assert_eq!(mask.density(), 0.5);
//!
//! // 2:4 by the same scores, then check the pattern on the pruned weight.
//! let mask24 = nm_mask(scores.view(), 2, 4)?;
//! let pruned = mask24.applied(w.view())?;
//! mask24.validate_n_m(2, 4)?;
//! assert_eq!(SparsityStats::of(pruned.view()).sparsity, 0.5);
//! assert_eq!(pruned.index_axis(Axis(0), 0).iter().filter(|v| **v != 0.0).count(), 8);
//! # Ok::<(), tensorpress_sparsity::Error>(())
//! ```

mod allocation;
mod error;
pub mod kernels;
mod magnitude;
mod mask;
mod nm;
mod pruner;
mod sparsegpt;
mod stats;
mod structured;
pub mod training;

pub use allocation::{global_threshold_ratios, pq_index, SapRule};
pub use error::{Error, Result, SparseDefect};
pub use magnitude::{magnitude_prune, prune_by_score, wanda_scores, PruneScope};
pub use mask::SparsityMask;
pub use nm::{nm_magnitude, nm_mask};
pub use pruner::{Magnitude, Pruned, Wanda, WeightPruner};
pub use sparsegpt::{SparseGpt, SparseGptOutput, SparsityTarget};
pub use stats::{is_n_m_sparse, SparsityStats};
pub use structured::{channel_scores, keep_highest, refit_kept_channels};
