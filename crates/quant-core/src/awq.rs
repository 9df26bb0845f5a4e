//! AWQ: activation-aware weight quantization (Lin et al., "AWQ:
//! Activation-aware Weight Quantization for LLM Compression and
//! Acceleration", MLSys 2024).
//!
//! A few input channels carry much larger activations than the rest, and the
//! weights they multiply matter most. AWQ scales those weight columns up by
//! `s` before rounding (so they lose relatively less) and divides the input by
//! `s` in the operation that produces it (an RMSNorm weight or the rows of the
//! previous linear layer), which leaves the full-precision function unchanged:
//! `W x = (W diag(s)) (diag(s)⁻¹ x)`.
//!
//! Two searches, both on calibration statistics:
//!
//! 1. [`Awq::search_scales`]: for the layers that read one input (q/k/v after
//!    the attention norm, gate/up after the MLP norm, down after up), a grid
//!    over the exponent `α ∈ {0, 1/n, …, (n−1)/n}` of
//!    `s = mean|x|^α / mean|ŵ|^(1−α)` (AutoAWQ's "duo scaling": `ŵ` is each
//!    weight divided by its group's largest magnitude; with
//!    [`Awq::duo_scaling`] off, `s = mean|x|^α` as in the paper), normalised so
//!    `max(s)·min(s) = 1`. The loss of a candidate is the output error of the
//!    round-to-nearest weights, `Σ_layers tr(ΔW H ΔWᵀ)` with the layer Hessian
//!    `H = (2/n) Σ x xᵀ` and `ΔW = Q(W diag(s)) diag(s)⁻¹ − W`. This is the
//!    layer-output form of the loss (evaluated as `‖ΔW F‖²` with `H ≈ F Fᵀ`
//!    from the eigenvectors that hold [`Awq::energy`] of `H`'s trace); the
//!    reference implementation measures the output of the whole attention or
//!    MLP module instead. Unlike the
//!    reference, `s = 1` (no scaling) is always a candidate, so a search never
//!    does worse than plain RTN on its own loss.
//! 2. Clipping (the [`WeightQuantizer`] impl): each group's range is clamped
//!    to `±(1 − i/n)·max|w|` for `i < max_shrink·n`, keeping the clamp with the
//!    smallest output error of that group, `δ H_gg δᵀ` (AutoAWQ's
//!    `_search_best_clip`, which measures the same thing on sampled inputs).
//!
//! ```
//! use ndarray::{Array1, Array2};
//! use tensorpress_quant_core::{Awq, QuantSpec};
//!
//! // Input channel 3 carries activations 20× larger than the others.
//! let w = Array2::from_shape_fn((16, 64), |(i, j)| ((i * 64 + j) as f32 * 0.61).sin());
//! let mut x_mean = Array1::from_elem(64, 0.1f32);
//! x_mean[3] = 2.0;
//! let h = Array2::from_diag(&x_mean.mapv(|m| f64::from(m * m)));
//! let found = Awq::new(QuantSpec::int(3).group(32)).search_scales(&[w.view()], h.view(), x_mean.view())?;
//! assert!(found.loss <= found.identity_loss);
//! assert!(found.scales[3] > found.scales[0]);
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::formats::{CodeGrid, Grid};
use crate::int::{min_max, GroupParams};
use crate::qtensor::QuantizedTensor;
use crate::rtn::quantize_groups;
use crate::spec::{Granularity, QuantSpec};
use crate::{check_finite, Calibration, Error, Result, Rtn, WeightQuantizer};

/// `F = V_k diag(√λ_k)` (`[n, k]`, f32) with `H ≈ F Fᵀ`, keeping the largest
/// eigenvalues that hold `energy` of the trace (every positive one when
/// `energy ≥ 1`).
fn hessian_factor(h: ArrayView2<'_, f64>, energy: f64) -> Result<Array2<f32>> {
    let n = h.nrows();
    let e = tensorpress_tensor::linalg::eigh(h)?;
    let total: f64 = e.values.iter().map(|v| v.max(0.0)).sum();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| e.values[b].total_cmp(&e.values[a]));
    let mut kept = Vec::new();
    let mut sum = 0.0;
    for &i in &order {
        let v = e.values[i].max(0.0);
        if v <= 0.0 || (energy < 1.0 && sum >= energy * total) {
            break;
        }
        sum += v;
        kept.push(i);
    }
    let mut f = Array2::<f32>::zeros((n, kept.len().max(1)));
    for (c, &i) in kept.iter().enumerate() {
        let root = e.values[i].max(0.0).sqrt();
        for r in 0..n {
            f[[r, c]] = (e.vectors[[r, i]] * root) as f32;
        }
    }
    Ok(f)
}

/// The clipping search of AWQ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AwqClip {
    /// Candidates per unit of shrink (AutoAWQ: 20).
    pub grid: usize,
    /// Largest fraction of the range that may be clipped away (AutoAWQ: 0.5).
    pub max_shrink: f32,
}

impl Default for AwqClip {
    fn default() -> Self {
        AwqClip {
            grid: 20,
            max_shrink: 0.5,
        }
    }
}

/// AWQ's scale and clipping searches around round-to-nearest quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Awq {
    /// The target quantization.
    pub spec: QuantSpec,
    /// Points of the grid over the exponent α (AutoAWQ: 20).
    pub grid: usize,
    /// Divide by the normalised weight magnitude too (AutoAWQ's default).
    pub duo_scaling: bool,
    /// The clipping search (`None`: the full range of each group).
    pub clip: Option<AwqClip>,
    /// Share of the Hessian's trace kept when the scale search evaluates its
    /// loss in the Hessian's eigenbasis (1: exact; default 0.9999, which keeps
    /// a fraction of the directions of an LLM layer input and makes the search
    /// several times cheaper).
    pub energy: f64,
}

/// The result of [`Awq::search_scales`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSearch {
    /// Per-input-channel scales `s` (multiply the weight columns, divide the input).
    pub scales: Array1<f32>,
    /// The exponent that won (`None`: no scaling won, `s = 1`).
    pub alpha: Option<f32>,
    /// The output error with `scales`.
    pub loss: f64,
    /// The output error without scaling.
    pub identity_loss: f64,
}

impl Awq {
    /// AWQ onto `spec` with AutoAWQ's defaults (20-point grids, duo scaling,
    /// clipping search).
    pub fn new(spec: QuantSpec) -> Self {
        Awq {
            spec,
            grid: 20,
            duo_scaling: true,
            clip: Some(AwqClip::default()),
            energy: 0.9999,
        }
    }

    /// Without the clipping search.
    pub fn without_clip(mut self) -> Self {
        self.clip = None;
        self
    }

    /// Searches the scales of the layers `weights` (`[out_i, in]` each) that
    /// read one input with Hessian `hessian` (`[in, in]`) and mean absolute
    /// activation `x_abs_mean` (`[in]`).
    ///
    /// # Errors
    /// [`Error::Shape`] when the inputs disagree, [`Error::NonFinite`] for a
    /// NaN or infinity in a weight, [`Error::InvalidOption`] for a zero grid;
    /// the quantizer's errors for a spec that does not fit the weights.
    pub fn search_scales(
        &self,
        weights: &[ArrayView2<'_, f32>],
        hessian: ArrayView2<'_, f64>,
        x_abs_mean: ArrayView1<'_, f32>,
    ) -> Result<ScaleSearch> {
        let n = x_abs_mean.len();
        if self.grid == 0 {
            return Err(Error::InvalidOption {
                option: "awq grid",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        if hessian.dim() != (n, n) {
            return Err(Error::Shape {
                what: "AWQ Hessian",
                expected: vec![n, n],
                actual: hessian.shape().to_vec(),
            });
        }
        for w in weights {
            if w.ncols() != n {
                return Err(Error::Shape {
                    what: "AWQ weight",
                    expected: vec![w.nrows(), n],
                    actual: w.shape().to_vec(),
                });
            }
            check_finite(*w)?;
        }
        if let Some(i) = x_abs_mean.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "mean |activation|",
                row: 0,
                col: i,
                value: x_abs_mean[i],
            });
        }
        let h = hessian_factor(hessian, self.energy)?;
        let w_mean = self.weight_magnitude(weights, n);
        let identity = Array1::from_elem(n, 1.0f32);
        let identity_loss = self.loss(weights, &h, &identity)?;
        let candidates: Vec<(f32, Array1<f32>)> = (0..self.grid)
            .map(|i| {
                let alpha = i as f32 / self.grid as f32;
                (alpha, self.scales_for(alpha, x_abs_mean, &w_mean))
            })
            .collect();
        let losses: Vec<Result<f64>> = candidates
            .par_iter()
            .map(|(_, s)| self.loss(weights, &h, s))
            .collect();
        let mut best = ScaleSearch {
            scales: identity,
            alpha: None,
            loss: identity_loss,
            identity_loss,
        };
        for ((alpha, s), loss) in candidates.into_iter().zip(losses) {
            let loss = loss?;
            if loss < best.loss {
                best.scales = s;
                best.alpha = Some(alpha);
                best.loss = loss;
            }
        }
        Ok(best)
    }

    /// Mean over the rows of every weight of `|w| / max |w of its group|`.
    fn weight_magnitude(&self, weights: &[ArrayView2<'_, f32>], n: usize) -> Array1<f32> {
        let gs = self.spec.group_size(n).max(1);
        let mut sum = Array1::<f64>::zeros(n);
        let mut rows = 0usize;
        for w in weights {
            for row in w.rows() {
                let row = row.to_vec();
                for (g, chunk) in row.chunks(gs).enumerate() {
                    let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1e-6;
                    for (j, v) in chunk.iter().enumerate() {
                        sum[g * gs + j] += f64::from(v.abs() / max);
                    }
                }
                rows += 1;
            }
        }
        sum.mapv(|v| (v / rows.max(1) as f64) as f32)
    }

    /// `s = mean|x|^α / (mean|ŵ|^(1−α) + 1e-4)`, clamped at 1e-4 and
    /// normalised so `max(s)·min(s) = 1`.
    fn scales_for(
        &self,
        alpha: f32,
        x_abs_mean: ArrayView1<'_, f32>,
        w_mean: &Array1<f32>,
    ) -> Array1<f32> {
        let mut s: Array1<f32> = x_abs_mean
            .iter()
            .zip(w_mean)
            .map(|(&x, &w)| {
                let v = if self.duo_scaling {
                    x.powf(alpha) / (w.powf(1.0 - alpha) + 1e-4)
                } else {
                    x.powf(alpha)
                };
                v.max(1e-4)
            })
            .collect();
        let (lo, hi) = min_max(s.as_slice().unwrap_or(&[]));
        let norm = (lo * hi).sqrt();
        if norm.is_finite() && norm > 0.0 {
            s.mapv_inplace(|v| v / norm);
        }
        s
    }

    /// `Σ tr(ΔW H ΔWᵀ) = Σ ‖ΔW F‖²` of round-to-nearest after scaling by
    /// `s`, with `H ≈ F Fᵀ` (`hessian_factor`).
    fn loss(
        &self,
        weights: &[ArrayView2<'_, f32>],
        h: &Array2<f32>,
        s: &Array1<f32>,
    ) -> Result<f64> {
        let rtn = Rtn::new(self.spec);
        let mut total = 0.0f64;
        for w in weights {
            let scaled = w * &s.view().insert_axis(Axis(0));
            let deq = rtn.quantize(scaled.view(), None)?.dequantize();
            let delta = &deq / &s.view().insert_axis(Axis(0)) - w;
            let df = delta.dot(h);
            total += df.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        }
        Ok(total)
    }

    /// The clamp of one group (columns `a..b` of a row) with the smallest
    /// output error `δ H_gg δᵀ`.
    fn clip_group(
        &self,
        clip: &AwqClip,
        grid: &Grid,
        values: &[f32],
        h_gg: ArrayView2<'_, f32>,
    ) -> GroupParams {
        let (lo, hi) = min_max(values);
        let max = lo.abs().max(hi.abs());
        let steps = ((clip.max_shrink * clip.grid as f32) as usize).max(1);
        let mut best = grid.params_for_range(lo, hi);
        let mut best_err = f32::INFINITY;
        let mut delta = vec![0.0f32; values.len()];
        for i in 0..steps {
            let m = max * (1.0 - i as f32 / clip.grid as f32);
            let p = grid.params_for_range(lo.max(-m), hi.min(m));
            for (d, &x) in delta.iter_mut().zip(values) {
                *d = grid.round_trip(x.clamp(-m, m), p) - x;
            }
            let mut err = 0.0f32;
            for (r, &dr) in delta.iter().enumerate() {
                if dr != 0.0 {
                    let row = h_gg.row(r);
                    err += dr * row.iter().zip(&delta).map(|(h, d)| h * d).sum::<f32>();
                }
            }
            if err < best_err {
                best_err = err;
                best = p;
            }
        }
        best
    }
}

impl WeightQuantizer for Awq {
    /// Round-to-nearest onto the spec with the clipping search weighted by
    /// the layer Hessian in `cal` (plain RTN ranges without one, or for
    /// per-tensor granularity). The scales of [`Awq::search_scales`] must
    /// already be folded into `w` and `cal`.
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor> {
        let (rows, cols) = w.dim();
        let hessian = cal.and_then(|c| c.hessian.as_ref());
        let (Some(clip), Some(h)) = (self.clip, hessian) else {
            return Rtn::new(self.spec).quantize(w, None);
        };
        if self.spec.granularity == Granularity::Tensor {
            return Rtn::new(self.spec).quantize(w, None);
        }
        self.spec.validate(cols)?;
        check_finite(w)?;
        if h.h.dim() != (cols, cols) {
            return Err(Error::Shape {
                what: "AWQ Hessian",
                expected: vec![cols, cols],
                actual: h.h.shape().to_vec(),
            });
        }
        let h32 = h.h.mapv(|v| v as f32);
        let grid = Grid::for_weight(&self.spec, w)?;
        let gs = self.spec.group_size(cols);
        let groups = self.spec.n_groups(cols)?;
        let (codes, scales, zeros) = quantize_groups(w, gs, groups, |a, values, codes| {
            let b = a + values.len();
            let h_gg = h32.slice(ndarray::s![a..b, a..b]);
            let p = self.clip_group(&clip, &grid, values, h_gg);
            for (c, &x) in codes.iter_mut().zip(values) {
                *c = grid.quantize(x, p);
            }
            (p.scale, p.zero)
        });
        QuantizedTensor::new(self.spec, rows, cols, codes, scales, zeros, None)?.on_grid(&grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::{Hessian, SeededRng};

    /// Activations with a few large channels, their Hessian and mean |x|.
    fn activations(n: usize, tokens: usize, seed: u64) -> (Array2<f32>, Array1<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut x: Array2<f32> = rng.array_normal((tokens, n));
        for j in (0..n).step_by(17) {
            x.column_mut(j).mapv_inplace(|v| v * 25.0);
        }
        let mean = x.map_axis(Axis(0), |c| {
            c.iter().map(|v| v.abs()).sum::<f32>() / tokens as f32
        });
        (x, mean)
    }

    fn hessian(x: &Array2<f32>) -> Calibration {
        let mut h = Hessian::new(x.ncols());
        h.update(x.view()).unwrap();
        Calibration {
            hessian: Some(h.finalize(0.0).unwrap()),
            channel_stats: None,
        }
    }

    #[test]
    fn scaling_lowers_the_output_error_of_rtn() {
        let (x, mean) = activations(128, 512, 1);
        let w: Array2<f32> = SeededRng::new(2).array_normal((64, 128));
        let cal = hessian(&x);
        let h = &cal.hessian.as_ref().unwrap().h;
        let awq = Awq::new(QuantSpec::int(3).group(64));
        let found = awq
            .search_scales(&[w.view()], h.view(), mean.view())
            .unwrap();
        assert!(found.alpha.is_some(), "some α beats no scaling");
        assert!(found.loss < 0.9 * found.identity_loss, "{found:?}");
        // The returned loss is the loss of the returned scales.
        let f = hessian_factor(h.view(), awq.energy).unwrap();
        let again = awq.loss(&[w.view()], &f, &found.scales).unwrap();
        // The truncated eigenbasis is within 1 % of the exact loss.
        let exact = hessian_factor(h.view(), 1.0).unwrap();
        let full = awq.loss(&[w.view()], &exact, &found.scales).unwrap();
        assert!(
            (full - found.loss).abs() <= 0.01 * full,
            "{full} vs {}",
            found.loss
        );
        assert!((again - found.loss).abs() <= 1e-6 * found.loss.max(1.0));
    }

    #[test]
    fn clipping_never_raises_the_output_error() {
        let (x, _) = activations(128, 256, 3);
        let w: Array2<f32> = SeededRng::new(4).array_normal((32, 128));
        let cal = hessian(&x);
        let h = &cal.hessian.as_ref().unwrap().h;
        let err = |q: &QuantizedTensor| {
            let d = &q.dequantize() - &w;
            (&d.mapv(f64::from).dot(h) * &d.mapv(f64::from)).sum()
        };
        for spec in [
            QuantSpec::int(4).group(32),
            QuantSpec::int(3).group(64).asymmetric(),
        ] {
            let awq = Awq::new(spec);
            let plain = Rtn::new(spec).quantize(w.view(), None).unwrap();
            let clipped = awq.quantize(w.view(), Some(&cal)).unwrap();
            assert!(err(&clipped) <= err(&plain) * 1.0001, "{spec:?}");
            // Without a Hessian it is plain RTN.
            assert_eq!(awq.quantize(w.view(), None).unwrap(), plain);
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let w = Array2::<f32>::ones((4, 8));
        let h = Array2::<f64>::eye(8);
        let awq = Awq::new(QuantSpec::int(4).group(8));
        let short = Array1::<f32>::ones(7);
        assert!(matches!(
            awq.search_scales(&[w.view()], h.view(), short.view()),
            Err(Error::Shape { .. })
        ));
        let mut bad = w.clone();
        bad[[1, 2]] = f32::NAN;
        let ones = Array1::<f32>::ones(8);
        assert!(matches!(
            awq.search_scales(&[bad.view()], h.view(), ones.view()),
            Err(Error::NonFinite { row: 1, col: 2, .. })
        ));
        let zero_grid = Awq { grid: 0, ..awq };
        assert!(matches!(
            zero_grid.search_scales(&[w.view()], h.view(), ones.view()),
            Err(Error::InvalidOption { .. })
        ));
    }
}
