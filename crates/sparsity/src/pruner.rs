//! The [`WeightPruner`] trait: one interface over magnitude, Wanda and
//! SparseGPT, for a pipeline stage that prunes every targeted layer.

use ndarray::{Array2, ArrayView2};
use tensorpress_quant_core::Calibration;

use crate::magnitude::{magnitude_prune, prune_by_score, wanda_scores, PruneScope};
use crate::mask::SparsityMask;
use crate::nm::{nm_magnitude, nm_mask};
use crate::sparsegpt::{SparseGpt, SparsityTarget};
use crate::{Error, Result};

/// A pruned weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// The weight, `[out, in]`, exactly zero where the mask prunes (SparseGPT
    /// also updates the kept entries).
    pub weight: Array2<f32>,
    /// Which entries were kept.
    pub mask: SparsityMask,
}

/// A method that prunes an f32 weight `[out_features, in_features]`.
pub trait WeightPruner: Send + Sync + std::fmt::Debug {
    /// What the pruner does, for tables and logs (`SparseGPT 50%`).
    fn label(&self) -> String;
    /// Whether it uses calibration data (the layer Hessian, channel norms).
    fn calibrates(&self) -> bool;
    /// Prunes `w`, using `cal` where the method needs calibration data.
    ///
    /// # Errors
    /// The method's own errors; [`Error::MissingCalibration`] when it needs
    /// data that `cal` lacks.
    fn prune(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<Pruned>;
}

/// Magnitude pruning: the smallest `|W|` go. Unstructured targets prune over
/// the whole matrix by default (the classic layer-wise baseline); N:M within
/// each group.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::{Magnitude, SparsityTarget, WeightPruner};
///
/// let w = array![[0.1f32, -0.9, 0.5, 0.2], [3.0, 0.0, -1.0, 0.3]];
/// let p = Magnitude::new(SparsityTarget::NM { n: 2, m: 4 }).prune(w.view(), None)?;
/// assert_eq!(p.weight, array![[0.0, -0.9, 0.5, 0.0], [3.0, 0.0, -1.0, 0.0]]);
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Magnitude {
    /// What to prune ([`SparsityTarget::KeepZeros`] is not a magnitude target).
    pub target: SparsityTarget,
    /// Where an unstructured target compares magnitudes.
    pub scope: PruneScope,
}

impl Magnitude {
    /// Magnitude pruning to `target`, per tensor.
    pub fn new(target: SparsityTarget) -> Self {
        Magnitude {
            target,
            scope: PruneScope::PerTensor,
        }
    }
}

fn unsupported(method: &'static str) -> Error {
    Error::UnsupportedTarget {
        method,
        target: "existing zeros",
    }
}

impl WeightPruner for Magnitude {
    fn label(&self) -> String {
        format!("magnitude {}", self.target)
    }

    fn calibrates(&self) -> bool {
        false
    }

    fn prune(&self, w: ArrayView2<'_, f32>, _cal: Option<&Calibration>) -> Result<Pruned> {
        self.target.validate(w.ncols())?;
        let mask = match self.target {
            SparsityTarget::Unstructured(s) => magnitude_prune(w, s, self.scope)?,
            SparsityTarget::NM { n, m } => nm_magnitude(w, n, m)?,
            SparsityTarget::KeepZeros => return Err(unsupported("magnitude")),
        };
        Ok(Pruned {
            weight: mask.applied(w)?,
            mask,
        })
    }
}

/// Wanda (Sun, Liu, Bair, Kolter, 2023): prune by `|W_ij| · ‖X_j‖₂` within
/// each output row (unstructured) or each N:M group, with no weight update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wanda {
    /// What to prune.
    pub target: SparsityTarget,
}

impl Wanda {
    /// Wanda to `target`.
    pub fn new(target: SparsityTarget) -> Self {
        Wanda { target }
    }
}

impl WeightPruner for Wanda {
    fn label(&self) -> String {
        format!("Wanda {}", self.target)
    }

    fn calibrates(&self) -> bool {
        true
    }

    fn prune(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<Pruned> {
        self.target.validate(w.ncols())?;
        let stats =
            cal.and_then(|c| c.channel_stats.as_ref())
                .ok_or(Error::MissingCalibration {
                    method: "Wanda",
                    what: "the input-channel norms",
                })?;
        let scores = wanda_scores(w, stats.l2_norm().view())?;
        let mask = match self.target {
            SparsityTarget::Unstructured(s) => {
                prune_by_score(scores.view(), s, PruneScope::PerRow)?
            }
            SparsityTarget::NM { n, m } => nm_mask(scores.view(), n, m)?,
            SparsityTarget::KeepZeros => return Err(unsupported("Wanda")),
        };
        Ok(Pruned {
            weight: mask.applied(w)?,
            mask,
        })
    }
}

impl WeightPruner for SparseGpt {
    fn label(&self) -> String {
        match &self.quant {
            Some(spec) => format!("SparseGPT {} + {spec} joint", self.target),
            None => format!("SparseGPT {}", self.target),
        }
    }

    fn calibrates(&self) -> bool {
        true
    }

    fn prune(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<Pruned> {
        let h = cal
            .and_then(|c| c.hessian.as_ref())
            .ok_or(Error::MissingCalibration {
                method: "SparseGPT",
                what: "the layer Hessian",
            })?;
        let out = SparseGpt::prune(self, w, h)?;
        Ok(Pruned {
            weight: out.weight,
            mask: out.mask,
        })
    }
}
