//! Structured pruning: remove whole input channels of a linear layer (FFN
//! neurons: the rows of the gate and up projections and the matching columns
//! of the down projection), so the layers really shrink.
//!
//! A neuron `i` feeding `y = W h` is scored by the output energy it carries
//! on the calibration tokens, `‖W[:, i]‖² · H_ii` with `H = (2/n) Σ h hᵀ` (the
//! structured form of Wanda's `|W|·‖X‖`); the lowest-scored neurons go. The
//! kept columns are then refit by least squares on the calibration inputs,
//! `W_S = W H[:, S] H[S, S]⁻¹`, the optimal-brain-surgeon update for removing
//! whole columns (as in SparseGPT and ZipLM), so the remaining neurons make
//! up for the removed ones.

use ndarray::{Array2, ArrayView2};
use tensorpress_tensor::linalg::spd_inverse;

use crate::{Error, Result};

/// `‖W[:, i]‖² · H_ii` for every input channel `i` of `w` (`[out, in]`).
///
/// # Errors
/// [`Error::ShapeMismatch`] when `h` is not `[in, in]`.
pub fn channel_scores(w: ArrayView2<'_, f32>, h: ArrayView2<'_, f64>) -> Result<Vec<f64>> {
    let cols = w.ncols();
    if h.dim() != (cols, cols) {
        return Err(Error::ShapeMismatch {
            op: "channel_scores",
            lhs: vec![cols, cols],
            rhs: h.shape().to_vec(),
        });
    }
    Ok((0..cols)
        .map(|i| {
            let norm: f64 = w.column(i).iter().map(|v| f64::from(*v).powi(2)).sum();
            norm * h[[i, i]]
        })
        .collect())
}

/// The channels to keep when removing `ceil(ratio · n)` (ratio in `(0, 1)`) of
/// the `n = scores.len()` channels by lowest score, sorted ascending.
///
/// # Errors
/// [`Error::InvalidSparsity`] for a ratio outside `(0, 1)` or NaN;
/// [`Error::EmptyLayer`] when nothing would be left.
pub fn keep_highest(scores: &[f64], ratio: f64, what: &'static str) -> Result<Vec<usize>> {
    if !(ratio > 0.0 && ratio < 1.0) {
        return Err(Error::InvalidSparsity { sparsity: ratio });
    }
    let total = scores.len();
    let removed = (ratio * total as f64).ceil() as usize;
    if removed >= total {
        return Err(Error::EmptyLayer {
            what,
            removed,
            total,
        });
    }
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep = order[..total - removed].to_vec();
    keep.sort_unstable();
    Ok(keep)
}

/// The least-squares refit of `w` (`[out, in]`) on its kept input channels
/// `keep`: `W H[:, S] (H[S, S] + λ·mean(diag)·I)⁻¹`, `[out, keep.len()]`.
/// With `damp = 0` and an invertible `H[S, S]` it is the exact minimizer of
/// `tr((W − W'P) H (W − W'P)ᵀ)` over `W'`, `P` the selection.
///
/// # Errors
/// A shape mismatch, an index out of range, a singular block.
pub fn refit_kept_channels(
    w: ArrayView2<'_, f32>,
    h: ArrayView2<'_, f64>,
    keep: &[usize],
    damp: f64,
) -> Result<Array2<f32>> {
    let cols = w.ncols();
    if h.dim() != (cols, cols) {
        return Err(Error::ShapeMismatch {
            op: "refit_kept_channels",
            lhs: vec![cols, cols],
            rhs: h.shape().to_vec(),
        });
    }
    if let Some(&bad) = keep.iter().find(|&&k| k >= cols) {
        return Err(Error::ShapeMismatch {
            op: "refit_kept_channels (kept channel)",
            lhs: vec![cols],
            rhs: vec![bad],
        });
    }
    let k = keep.len();
    let mean_diag = keep.iter().map(|&i| h[[i, i]]).sum::<f64>() / k.max(1) as f64;
    let hss = Array2::from_shape_fn((k, k), |(a, b)| {
        h[[keep[a], keep[b]]] + if a == b { damp * mean_diag } else { 0.0 }
    });
    let inv = spd_inverse(hss.view())?;
    // W H[:, S], then times the inverse.
    let w64 = w.mapv(f64::from);
    let h_s = Array2::from_shape_fn((cols, k), |(i, b)| h[[i, keep[b]]]);
    Ok(w64.dot(&h_s).dot(&inv).mapv(|v| v as f32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::{Hessian, SeededRng};

    #[test]
    fn refit_beats_dropping_and_scores_pick_the_energetic_channels() {
        let mut rng = SeededRng::new(3);
        // 48 channels that mix 12 factors: removed channels are predictable
        // from the kept ones, so the refit recovers most of their output.
        let x = rng
            .array_normal((2048, 12))
            .dot(&rng.array_normal((12, 48)));
        let w = rng.array_normal((16, 48));
        let mut hs = Hessian::new(48);
        hs.update(x.view()).unwrap();
        let h = hs.finalize(0.0).unwrap().h;
        let scores = channel_scores(w.view(), h.view()).unwrap();
        let keep = keep_highest(&scores, 0.25, "channels").unwrap();
        assert_eq!(keep.len(), 36);
        let kept_min = keep
            .iter()
            .map(|&i| scores[i])
            .fold(f64::INFINITY, f64::min);
        let removed_max = (0..48)
            .filter(|i| !keep.contains(i))
            .map(|i| scores[i])
            .fold(0.0, f64::max);
        assert!(kept_min >= removed_max);
        let x_s = x.select(ndarray::Axis(1), &keep);
        let y = x.dot(&w.t());
        let err = |ws: &Array2<f32>| (&y - &x_s.dot(&ws.t())).mapv(|e| e * e).sum();
        let dropped = w.select(ndarray::Axis(1), &keep);
        let refit = refit_kept_channels(w.view(), h.view(), &keep, 1e-6).unwrap();
        assert!(
            err(&refit) < 0.01 * err(&dropped),
            "{} vs {}",
            err(&refit),
            err(&dropped)
        );
    }

    #[test]
    fn bad_ratios_and_empty_layers_are_errors() {
        let scores = vec![1.0, 2.0, 3.0];
        for r in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(
                keep_highest(&scores, r, "neurons"),
                Err(Error::InvalidSparsity { .. })
            ));
        }
        assert!(matches!(
            keep_highest(&scores, 0.9, "neurons"),
            Err(Error::EmptyLayer {
                removed: 3,
                total: 3,
                ..
            })
        ));
        assert_eq!(keep_highest(&scores, 0.5, "neurons").unwrap(), vec![2]);
    }
}
