//! Layer sensitivities of CPTQuant and the greedy bit allocation of MPTQ-ViT.
//!
//! CPTQuant (Nanda, Balija and Sahoo, 2024, "CPTQuant - A Novel Mixed
//! Precision Post-Training Quantization Techniques for Large Language
//! Models") ranks layers by three measures and gives the more sensitive ones
//! more bits:
//!
//! - [`canonical_correlations`] / [`cca_sensitivity`] (its CMPQ): canonical
//!   correlation analysis between a layer's input and output activations;
//! - [`pruning_sensitivity`] (its PMPQ): how much the output moves when the
//!   smallest weights are pruned;
//! - [`taylor_importance`] (its TDMPQ): the first-order Taylor estimate
//!   `Σ |W ⊙ ∂L/∂W|` of the loss change when the weights are perturbed away.
//!
//! [`greedy_allocate`] is the greedy mixed-precision rule of MPTQ-ViT (Tai and
//! Wu, 2024, "MPTQ-ViT: Mixed-Precision Post-Training Quantization for Vision
//! Transformer"), kept for comparison with the exact
//! [`allocate`](crate::allocate).

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use tensorpress_tensor::linalg;

use crate::allocate::{spent, validate};
use crate::{error_proxy::output_error, Allocation, Budget, Error, LayerChoices, Result};

/// Canonical correlations between the columns of `x` (`[tokens, p]`) and of
/// `y` (`[tokens, q]`), descending, `min(p, q)` of them, each in `[0, 1]`.
///
/// Both are centered; the covariances `Cxx`, `Cyy` get `ridge × mean
/// eigenvalue` added to their diagonals (regularized CCA; `ridge = 0` is
/// plain CCA), and the correlations are the singular values of
/// `Cxx^{-1/2} Cxy Cyy^{-1/2}`, the whitening done by symmetric
/// eigendecomposition. Directions of (numerically) zero variance are
/// dropped, so rank-deficient data is fine; all-constant data gives zeros.
/// Computed in f64.
///
/// The measure is invariant to invertible linear maps of either side, so the
/// correlations of a purely linear layer `y = x Wᵀ` (full rank) are all 1:
/// CMPQ applies it to blocks with nonlinearities, e.g. the input and output
/// hidden states of a transformer block.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the token counts differ;
/// [`Error::NoSamples`] with fewer than 2 tokens; [`Error::OutOfRange`] for a
/// negative or non-finite `ridge`; tensor errors for non-finite input.
///
/// ```
/// use ndarray::{concatenate, Axis};
/// use tensorpress_sensitivity::canonical_correlations;
/// use tensorpress_tensor::SeededRng;
///
/// let mut rng = SeededRng::new(0);
/// let x = rng.array_normal((5000, 3));
/// // y: a linear map of x (perfectly correlated) beside pure noise.
/// let mixed = x.dot(&rng.array_normal((3, 2)));
/// let y = concatenate![Axis(1), mixed, rng.array_normal((5000, 2))];
/// let rho = canonical_correlations(x.view(), y.view(), 0.0)?;
/// assert_eq!(rho.len(), 3);
/// assert!(rho[0] > 0.999 && rho[1] > 0.999); // the two mixed directions
/// assert!(rho[2] < 0.1); // noise
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn canonical_correlations(
    x: ArrayView2<'_, f32>,
    y: ArrayView2<'_, f32>,
    ridge: f64,
) -> Result<Array1<f64>> {
    const OP: &str = "canonical_correlations";
    if x.nrows() != y.nrows() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.shape().to_vec(),
            rhs: y.shape().to_vec(),
        });
    }
    if x.nrows() < 2 {
        return Err(Error::NoSamples { op: OP });
    }
    if !(ridge.is_finite() && ridge >= 0.0) {
        return Err(Error::OutOfRange {
            op: OP,
            name: "ridge",
            value: ridge,
            range: "[0, ∞)",
        });
    }
    check_finite(OP, x)?;
    check_finite(OP, y)?;
    let xc = centered(x);
    let yc = centered(y);
    let scale = 1.0 / (x.nrows() - 1) as f64;
    let cxx = linalg::gram(xc.view()) * scale;
    let cyy = linalg::gram(yc.view()) * scale;
    let cxy = linalg::matmul(xc.t(), yc.view())? * scale;
    let wx = inverse_sqrt(cxx.view(), ridge)?;
    let wy = inverse_sqrt(cyy.view(), ridge)?;
    let m = linalg::matmul(linalg::matmul(wx.view(), cxy.view())?.view(), wy.view())?;
    let s = linalg::singular_values(m.view())?;
    Ok(s.mapv(|v| v.clamp(0.0, 1.0)))
}

/// CMPQ's sensitivity of a layer: `1 − mean` of the
/// [`canonical_correlations`] between its input `x` and output `y`. Near 0
/// when the output is (nearly) a linear image of the input; larger when the
/// layer transforms its input more, the layers CPTQuant gives more bits.
///
/// # Errors
/// As [`canonical_correlations`].
pub fn cca_sensitivity(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>, ridge: f64) -> Result<f64> {
    let rho = canonical_correlations(x, y, ridge)?;
    Ok(if rho.is_empty() {
        0.0
    } else {
        1.0 - rho.mean().unwrap_or(0.0)
    })
}

/// PMPQ's sensitivity to sparsity: the relative output error
/// `‖X (W − W_p)ᵀ‖_F / ‖X Wᵀ‖_F` on calibration inputs `x` (`[tokens, in]`)
/// after pruning the `fraction` of weights of `w` (`[out, in]`) smallest in
/// magnitude (unstructured, over the whole matrix; `round(fraction × len)`
/// of them, ties broken by position). 0 at `fraction = 0`, 1 at 1.
///
/// # Errors
/// [`Error::OutOfRange`] unless `0 <= fraction <= 1`;
/// [`Error::ShapeMismatch`] unless `x` has `in` columns;
/// [`Error::ZeroReference`] when `X Wᵀ` is zero but the pruned output is
/// not; tensor errors for non-finite input.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sensitivity::pruning_sensitivity;
///
/// let w = array![[4.0f32, 0.1], [0.2, -3.0]];
/// let x = array![[1.0f32, 0.0], [0.0, 1.0]];
/// // Pruning the two small weights: with x = I the error is their norm
/// // √(0.1² + 0.2²) over the whole weight's √(4² + 0.1² + 0.2² + 3²).
/// let s = pruning_sensitivity(w.view(), x.view(), 0.5)?;
/// assert!((s - (0.05f64 / 25.05).sqrt()).abs() < 1e-6);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn pruning_sensitivity(
    w: ArrayView2<'_, f32>,
    x: ArrayView2<'_, f32>,
    fraction: f64,
) -> Result<f64> {
    const OP: &str = "pruning_sensitivity";
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::OutOfRange {
            op: OP,
            name: "fraction",
            value: fraction,
            range: "[0, 1]",
        });
    }
    check_finite(OP, w)?;
    check_finite(OP, x)?;
    let values: Vec<f32> = w.iter().copied().collect();
    let k = (fraction * values.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    let mut pruned = values;
    for &i in &order[..k] {
        pruned[i] = 0.0;
    }
    let pruned = Array2::from_shape_vec(w.raw_dim(), pruned)
        .unwrap_or_else(|_| unreachable!("the shape of w holds its own values"));
    Ok(output_error(w, pruned.view(), x)
        .map_err(|e| match e {
            Error::ShapeMismatch { lhs, rhs, .. } => Error::ShapeMismatch { op: OP, lhs, rhs },
            e => e,
        })?
        .relative)
}

/// TDMPQ's first-order Taylor importance `Σ |W ⊙ G|` of a weight `w` and the
/// gradient `g = ∂L/∂W` of the loss: the first-order estimate of how much
/// the loss moves when the weights are removed, each weight's term summed in
/// absolute value (Molchanov et al.'s Taylor criterion, per layer). Computed
/// in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] unless `w` and `g` agree; tensor errors for
/// non-finite input.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sensitivity::taylor_importance;
///
/// let w = array![[1.0f32, -2.0], [3.0, 0.0]];
/// let g = array![[0.5f32, 0.5], [-1.0, 4.0]];
/// assert_eq!(taylor_importance(w.view(), g.view())?, 0.5 + 1.0 + 3.0 + 0.0);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn taylor_importance(w: ArrayView2<'_, f32>, g: ArrayView2<'_, f32>) -> Result<f64> {
    const OP: &str = "taylor_importance";
    if w.dim() != g.dim() {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: w.shape().to_vec(),
            rhs: g.shape().to_vec(),
        });
    }
    check_finite(OP, w)?;
    check_finite(OP, g)?;
    let mut total = 0.0;
    Zip::from(&w)
        .and(&g)
        .for_each(|&a, &b| total += (f64::from(a) * f64::from(b)).abs());
    Ok(total)
}

/// MPTQ-ViT's greedy mixed precision (Greedy MP): start every layer at its
/// least-cost candidate, then, while the total exceeds `budget`, lower the
/// one layer whose next smaller candidate (by bits, or bops for
/// [`Budget::Bops`]) adds the least cost per bit (or bop) saved; stop as soon
/// as the total fits. Weighing the cost increase against the size saved is
/// how we read the paper's balance of "model performance and
/// compressibility".
///
/// A baseline for [`allocate`](crate::allocate): it never undoes a step, so
/// it can overshoot the budget with a costly last step and its cost is never
/// below the knapsack optimum (equal to it for convex costs over equal
/// steps). `O(steps × layers)`.
///
/// # Errors
/// As [`allocate`](crate::allocate)'s validation: [`Error::NoLayers`],
/// [`Error::NoChoices`], [`Error::NonFiniteChoice`],
/// [`Error::NegativeChoice`], [`Error::InvalidBudget`], [`Error::NoParams`],
/// [`Error::Infeasible`].
///
/// ```
/// use tensorpress_sensitivity::{allocate, greedy_allocate, AllocateOptions, Budget, Choice, LayerChoices};
///
/// let layers = [
///     LayerChoices::new("a", 1, vec![Choice::new("hi", 10.0, 0.0), Choice::new("lo", 2.0, 5.0)]),
///     LayerChoices::new(
///         "b",
///         1,
///         vec![Choice::new("hi", 10.0, 0.0), Choice::new("mid", 8.0, 1.0), Choice::new("lo", 0.0, 100.0)],
///     ),
/// ];
/// // Greedy lowers b first (1 per 2 bits beats 5 per 8), then must lower a too.
/// let g = greedy_allocate(&layers, Budget::Bits(12.0))?;
/// assert_eq!((g.labels(&layers), g.cost), (vec![("a", "lo"), ("b", "mid")], 6.0));
/// // The knapsack keeps b whole: cost 5.
/// let k = allocate(&layers, Budget::Bits(12.0), AllocateOptions { resolution: 12 })?;
/// assert_eq!(k.cost, 5.0);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn greedy_allocate(layers: &[LayerChoices], budget: Budget) -> Result<Allocation> {
    let capacity = validate(layers, budget)?;
    // Each layer's candidates by weight, then cost, then position.
    let order: Vec<Vec<usize>> = layers
        .iter()
        .map(|l| {
            let key = |k: usize| (budget.weight(&l.choices[k]), l.choices[k].cost);
            let mut idx: Vec<usize> = (0..l.choices.len()).collect();
            idx.sort_by(|&a, &b| {
                let (ka, kb) = (key(a), key(b));
                ka.0.total_cmp(&kb.0)
                    .then(ka.1.total_cmp(&kb.1))
                    .then(a.cmp(&b))
            });
            idx
        })
        .collect();
    // Start: the least-cost candidate (the smallest among equals).
    let mut pos: Vec<usize> = layers
        .iter()
        .zip(&order)
        .map(|(l, o)| {
            (0..o.len())
                .min_by(|&a, &b| l.choices[o[a]].cost.total_cmp(&l.choices[o[b]].cost))
                .unwrap_or(0)
        })
        .collect();
    let picks =
        |pos: &[usize]| -> Vec<usize> { order.iter().zip(pos).map(|(o, &p)| o[p]).collect() };

    while spent(layers, &picks(&pos), budget) > capacity {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, (l, o)) in layers.iter().zip(&order).enumerate() {
            let cur = &l.choices[o[pos[i]]];
            let w = budget.weight(cur);
            // The heaviest strictly lighter candidate, the cheapest among equals.
            let Some(last) = (0..pos[i])
                .rev()
                .find(|&p| budget.weight(&l.choices[o[p]]) < w)
            else {
                continue;
            };
            let lighter = budget.weight(&l.choices[o[last]]);
            let next = (0..=last)
                .find(|&p| budget.weight(&l.choices[o[p]]) == lighter)
                .unwrap_or(last);
            let c = &l.choices[o[next]];
            let score = (c.cost - cur.cost) / (w - budget.weight(c));
            if best.is_none_or(|(s, _, _)| score < s) {
                best = Some((score, i, next));
            }
        }
        let Some((_, i, next)) = best else {
            // Unreachable after validation (the lightest candidates fit).
            return Err(Error::Infeasible {
                budget,
                smallest: budget,
            });
        };
        pos[i] = next;
    }
    Ok(Allocation::from_picks(layers, picks(&pos)))
}

/// `a` with its column means subtracted, in f64.
fn centered(a: ArrayView2<'_, f32>) -> Array2<f64> {
    let a = a.mapv(f64::from);
    match a.mean_axis(Axis(0)) {
        Some(mean) => a - &mean,
        None => a,
    }
}

/// `(C + ridge · mean(λ) · I)^{-1/2}` of a symmetric positive semi-definite
/// `c`, dropping directions whose eigenvalue is below `1e-12 ×` the largest.
fn inverse_sqrt(c: ArrayView2<'_, f64>, ridge: f64) -> Result<Array2<f64>> {
    let e = linalg::eigh(c)?;
    let n = e.values.len();
    let mean = if n == 0 {
        0.0
    } else {
        e.values.sum() / n as f64
    };
    let shifted = e.values.mapv(|l| l.max(0.0) + ridge * mean.max(0.0));
    let top = shifted.iter().fold(0.0f64, |m, &v| m.max(v));
    let scale = shifted.mapv(|l| {
        if l > 1e-12 * top && l > 0.0 {
            1.0 / l.sqrt()
        } else {
            0.0
        }
    });
    let scaled = &e.vectors * &scale.view().insert_axis(Axis(0));
    Ok(linalg::matmul(scaled.view(), e.vectors.t())?)
}

fn check_finite(op: &'static str, a: ArrayView2<'_, f32>) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), &value)) => Err(tensorpress_tensor::Error::NonFinite {
            op,
            row,
            col,
            value: f64::from(value),
        }
        .into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, concatenate, s};
    use tensorpress_tensor::SeededRng;

    #[test]
    fn cca_recovers_a_known_correlation() {
        // x = [a, b], y = [a + e, c] with independent unit normals:
        // ρ₁ = 1/√2 (a against a + e), ρ₂ = 0.
        let mut rng = SeededRng::new(11);
        let n = 20_000;
        let (a, b, c, e) = (
            rng.array_normal((n, 1)),
            rng.array_normal((n, 1)),
            rng.array_normal((n, 1)),
            rng.array_normal((n, 1)),
        );
        let x = concatenate![Axis(1), a, b];
        let y = concatenate![Axis(1), &a + &e, c];
        let rho = canonical_correlations(x.view(), y.view(), 0.0).unwrap();
        assert!((rho[0] - 0.5f64.sqrt()).abs() < 0.02, "{rho}");
        assert!(rho[1] < 0.04, "{rho}");
        let sens = cca_sensitivity(x.view(), y.view(), 0.0).unwrap();
        assert!((sens - (1.0 - (rho[0] + rho[1]) / 2.0)).abs() < 1e-12);

        // Invariant to affine maps of either side.
        let y2 = y.mapv(|v| 1000.0 * v - 7.0);
        let rho2 = canonical_correlations(x.view(), y2.view(), 0.0).unwrap();
        assert!(
            (&rho - &rho2).iter().all(|d| d.abs() < 1e-4),
            "{rho} vs {rho2}"
        );

        // A ridge shrinks the correlations toward 0.
        let shrunk = canonical_correlations(x.view(), y.view(), 1.0).unwrap();
        assert!(shrunk[0] < rho[0] - 0.1, "{shrunk} vs {rho}");
    }

    #[test]
    fn cca_of_linear_maps_noise_and_degenerate_data() {
        let mut rng = SeededRng::new(12);
        let x = rng.array_normal((3000, 6));
        // Full-rank linear map: every correlation is 1.
        let y = x.dot(&rng.array_normal((6, 6)));
        let rho = canonical_correlations(x.view(), y.view(), 0.0).unwrap();
        assert!(rho.iter().all(|&r| r > 0.9999), "{rho}");
        assert!(cca_sensitivity(x.view(), y.view(), 0.0).unwrap() < 1e-4);
        // Independent noise: all near 0 (≈ √(p q / n) scale).
        let noise = rng.array_normal((3000, 4));
        let rho = canonical_correlations(x.view(), noise.view(), 0.0).unwrap();
        assert_eq!(rho.len(), 4);
        assert!(rho[0] < 0.12, "{rho}");
        assert!(cca_sensitivity(x.view(), noise.view(), 0.0).unwrap() > 0.9);
        // A duplicated column (rank deficient) and a constant one are fine.
        let dup = concatenate![Axis(1), x.slice(s![.., 0..2]), x.slice(s![.., 0..1])];
        let rho = canonical_correlations(dup.view(), x.view(), 0.0).unwrap();
        assert!(rho[0] > 0.9999 && rho[1] > 0.9999 && rho[2] < 1e-6, "{rho}");
        let constant = Array2::<f32>::ones((3000, 2));
        let rho = canonical_correlations(constant.view(), x.view(), 0.0).unwrap();
        assert_eq!(rho.to_vec(), [0.0, 0.0]);
    }

    #[test]
    fn cca_errors() {
        let x = Array2::<f32>::zeros((10, 2));
        assert!(matches!(
            canonical_correlations(x.view(), Array2::zeros((9, 2)).view(), 0.0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            canonical_correlations(x.slice(s![..1, ..]), x.slice(s![..1, ..]), 0.0),
            Err(Error::NoSamples { .. })
        ));
        let e = canonical_correlations(x.view(), x.view(), -1.0).unwrap_err();
        assert!(matches!(e, Error::OutOfRange { name: "ridge", .. }), "{e}");
        let mut bad = x.clone();
        bad[[3, 1]] = f32::NAN;
        assert!(matches!(
            canonical_correlations(x.view(), bad.view(), 0.0),
            Err(Error::Tensor(tensorpress_tensor::Error::NonFinite {
                row: 3,
                col: 1,
                ..
            }))
        ));
    }

    #[test]
    fn pruning_sensitivity_tracks_the_pruned_energy() {
        let mut rng = SeededRng::new(13);
        let x = rng.array_normal((4000, 64));
        let w = rng.array_normal((32, 64));
        let at = |f| pruning_sensitivity(w.view(), x.view(), f).unwrap();
        assert_eq!(at(0.0), 0.0);
        assert!((at(1.0) - 1.0).abs() < 1e-9);
        let curve: Vec<f64> = [0.1, 0.3, 0.5, 0.7, 0.9].iter().map(|&f| at(f)).collect();
        assert!(curve.windows(2).all(|p| p[0] < p[1]), "{curve:?}");
        // With white inputs the error is √(pruned energy / total energy): for
        // normal weights, the smallest half carries E[z²; |z| < 0.674] ≈ 7.1 %.
        assert!((curve[2] - 0.0713f64.sqrt()).abs() < 0.03, "{}", curve[2]);

        // Heavy-tailed weights (10 % large) lose little at 50 % sparsity.
        let mut heavy = rng.array_normal((32, 64));
        for (i, v) in heavy.iter_mut().enumerate() {
            if i % 10 == 0 {
                *v *= 10.0;
            }
        }
        let h = pruning_sensitivity(heavy.view(), x.view(), 0.5).unwrap();
        assert!(h < 0.5 * curve[2], "{h} vs {}", curve[2]);
    }

    #[test]
    fn pruning_sensitivity_errors() {
        let w = array![[1.0f32, 2.0]];
        let x = array![[1.0f32, 1.0]];
        for f in [-0.1, 1.5, f64::NAN] {
            assert!(matches!(
                pruning_sensitivity(w.view(), x.view(), f),
                Err(Error::OutOfRange {
                    name: "fraction",
                    ..
                })
            ));
        }
        assert!(matches!(
            pruning_sensitivity(w.view(), x.t(), 0.5),
            Err(Error::ShapeMismatch {
                op: "pruning_sensitivity",
                ..
            })
        ));
        // Nothing to prune away: no error.
        assert_eq!(
            pruning_sensitivity(Array2::zeros((1, 2)).view(), x.view(), 0.5).unwrap(),
            0.0
        );
        // A zero output that pruning changes has no relative error:
        // [1, 1]·[1, −1] = 0, but pruning the first weight leaves −1.
        assert!(matches!(
            pruning_sensitivity(array![[1.0f32, -1.0]].view(), x.view(), 0.5),
            Err(Error::ZeroReference)
        ));
        let inf = array![[f32::INFINITY, 1.0]];
        assert!(matches!(
            pruning_sensitivity(inf.view(), x.view(), 0.5),
            Err(Error::Tensor(_))
        ));
    }

    #[test]
    fn taylor_importance_is_the_linear_loss_change() {
        // For a loss linear in W, L = Σ C ⊙ W, the gradient is C and zeroing
        // weight i changes L by exactly w_i c_i: the importance is the sum of
        // those changes in absolute value.
        let mut rng = SeededRng::new(14);
        let w = rng.array_normal((8, 5));
        let c = rng.array_normal((8, 5));
        let loss = |w: &Array2<f32>| -> f64 {
            w.iter()
                .zip(&c)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        let mut exact = 0.0;
        for i in 0..w.len() {
            let mut z = w.clone();
            z.as_slice_mut().unwrap()[i] = 0.0;
            exact += (loss(&w) - loss(&z)).abs();
        }
        let t = taylor_importance(w.view(), c.view()).unwrap();
        assert!((t - exact).abs() < 1e-6 * exact, "{t} vs {exact}");
        // Scaling the gradient scales the importance.
        let t2 = taylor_importance(w.view(), (&c * 3.0).view()).unwrap();
        assert!((t2 - 3.0 * t).abs() < 1e-5 * t);

        assert!(matches!(
            taylor_importance(w.view(), w.t()),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut bad = c.clone();
        bad[[0, 0]] = f32::NAN;
        assert!(matches!(
            taylor_importance(w.view(), bad.view()),
            Err(Error::Tensor(_))
        ));
    }
}
