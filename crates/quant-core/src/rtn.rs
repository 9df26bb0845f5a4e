//! Round-to-nearest quantization, with an optional search for the clipping
//! range that minimises each group's rounding error.
//!
//! The clipping search is GPTQ's `mse` option (Frantar et al., 2023, reference
//! `Quantizer.find_params`): the range `[min, max]` of a group is shrunk by
//! factors `p = 1, 0.99, …, 1 − max_shrink + 0.01` and the `p` with the smallest
//! `Σ |x − x̂|^norm` wins (`norm = 2.4` by default, which weighs large errors a
//! little more than squared error does).

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::formats::{CodeGrid, Grid};
use crate::int::{min_max, GroupParams};
use crate::qtensor::QuantizedTensor;
use crate::spec::{Granularity, QuantSpec};
use crate::{check_finite, Calibration, Result, WeightQuantizer};

/// The grid search over clipping ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipSearch {
    /// Candidates per unit of shrink (GPTQ: 100, i.e. steps of 1 %).
    pub grid: usize,
    /// Largest fraction of the range that may be clipped away (GPTQ: 0.8).
    pub max_shrink: f32,
    /// Exponent of the error norm (GPTQ: 2.4).
    pub norm: f32,
}

impl Default for ClipSearch {
    fn default() -> Self {
        ClipSearch {
            grid: 100,
            max_shrink: 0.8,
            norm: 2.4,
        }
    }
}

impl ClipSearch {
    /// The parameters for `values` that minimise `Σ |x − x̂|^norm` over the
    /// shrink factors, on any grid ([`IntGrid`](crate::int::IntGrid) or a
    /// format's [`Grid`]: for float formats the shrink scales the group's
    /// maximum, for MX it can lower the shared exponent).
    pub fn search<G: CodeGrid + ?Sized>(&self, grid: &G, values: &[f32]) -> GroupParams {
        let (lo, hi) = min_max(values);
        let steps = ((self.max_shrink * self.grid as f32) as usize).max(1);
        let mut best = grid.params_for_range(lo, hi);
        let mut best_err = f32::INFINITY;
        for i in 0..steps {
            let p = 1.0 - i as f32 / self.grid as f32;
            let params = grid.params_for_range(p * lo, p * hi);
            let err: f32 = values
                .iter()
                .map(|&x| (grid.round_trip(x, params) - x).abs().powf(self.norm))
                .sum();
            if err < best_err {
                best_err = err;
                best = params;
            }
        }
        best
    }
}

/// Round-to-nearest: every weight to its nearest grid point, with scales from
/// each group's range (or the range the clipping search picks).
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
///
/// let w = Array2::from_shape_fn((4, 64), |(i, j)| ((i * 64 + j) as f32 * 0.37).sin());
/// let q = Rtn::new(QuantSpec::int(4).group(32)).quantize(w.view(), None)?;
/// let err = (&q.dequantize() - &w).iter().fold(0.0f32, |m, e| m.max(e.abs()));
/// // Within half a step of a 4-bit grid spanning [-1, 1] (a step is 2/15).
/// assert!(err <= 1.0 / 15.0 + 1e-6);
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rtn {
    /// The target quantization.
    pub spec: QuantSpec,
    /// Search the clipping range per group (`None`: the full min–max range).
    pub clip: Option<ClipSearch>,
}

impl Rtn {
    /// RTN to `spec` over the full range of each group.
    pub fn new(spec: QuantSpec) -> Self {
        Rtn { spec, clip: None }
    }

    /// Searches each group's clipping range (GPTQ's `mse` option).
    pub fn with_clip_search(mut self, clip: ClipSearch) -> Self {
        self.clip = Some(clip);
        self
    }

    /// Parameters for one group of values (NVFP4 with tensor scale 1: see
    /// [`group_params_on`](Self::group_params_on)).
    pub fn group_params(&self, values: &[f32]) -> GroupParams {
        self.group_params_on(&Grid::new(&self.spec, None), values)
    }

    /// Parameters for one group of values on `grid`.
    pub fn group_params_on(&self, grid: &Grid, values: &[f32]) -> GroupParams {
        match &self.clip {
            Some(c) => c.search(grid, values),
            None => grid.params(values),
        }
    }
}

impl WeightQuantizer for Rtn {
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        _cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor> {
        let (rows, cols) = w.dim();
        self.spec.validate(cols)?;
        check_finite(w)?;
        let grid = Grid::for_weight(&self.spec, w)?;
        let gs = self.spec.group_size(cols);
        let groups = self.spec.n_groups(cols)?;
        let tensor_params = match self.spec.granularity {
            Granularity::Tensor => {
                let all: Vec<f32> = w.iter().copied().collect();
                Some(self.group_params_on(&grid, &all))
            }
            _ => None,
        };
        let (codes, scales, zeros) = quantize_groups(w, gs, groups, |_, values, codes| {
            let p = tensor_params.unwrap_or_else(|| self.group_params_on(&grid, values));
            for (c, &x) in codes.iter_mut().zip(values) {
                *c = grid.quantize(x, p);
            }
            (p.scale, p.zero)
        });
        QuantizedTensor::new(self.spec, rows, cols, codes, scales, zeros, None)?.on_grid(&grid)
    }
}

/// Runs `group(first_col, values, codes) -> (scale, zero)` on every group of `gs`
/// columns of every row of `w` (rows in parallel), collecting the codes
/// (`[rows · cols]`) and the `[rows, groups]` scales and zero points.
pub(crate) fn quantize_groups<F>(
    w: ArrayView2<'_, f32>,
    gs: usize,
    groups: usize,
    group: F,
) -> (Vec<u8>, Array2<f32>, Array2<f32>)
where
    F: Fn(usize, &[f32], &mut [u8]) -> (f32, f32) + Sync,
{
    let (rows, cols) = w.dim();
    let mut codes = vec![0u8; rows * cols];
    let mut scales = Array2::<f32>::zeros((rows, groups));
    let mut zeros = Array2::<f32>::zeros((rows, groups));
    codes
        .par_chunks_mut(cols.max(1))
        .zip(scales.axis_iter_mut(Axis(0)).into_par_iter())
        .zip(zeros.axis_iter_mut(Axis(0)).into_par_iter())
        .enumerate()
        .for_each(|(r, ((code_row, mut s_row), mut z_row))| {
            let row: Vec<f32> = w.row(r).to_vec();
            for g in 0..groups {
                let (a, b) = (g * gs, ((g + 1) * gs).min(cols));
                let (s, z) = group(a, &row[a..b], &mut code_row[a..b]);
                s_row[g] = s;
                z_row[g] = z;
            }
        });
    (codes, scales, zeros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn weight(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = tensorpress_tensor::SeededRng::new(seed);
        rng.array_normal((rows, cols))
    }

    #[test]
    fn clip_search_never_does_worse_than_min_max() {
        let w = weight(8, 256, 1);
        for bits in [2u8, 3, 4] {
            let spec = QuantSpec::int(bits).group(64);
            let plain = Rtn::new(spec).quantize(w.view(), None).unwrap();
            let clipped = Rtn::new(spec)
                .with_clip_search(ClipSearch::default())
                .quantize(w.view(), None)
                .unwrap();
            let e = |q: &QuantizedTensor| (&q.dequantize() - &w).mapv(|x| x * x).sum();
            assert!(e(&clipped) <= e(&plain) * 1.0001, "bits {bits}");
            if bits == 2 {
                assert!(e(&clipped) < 0.9 * e(&plain), "clipping helps at 2 bits");
            }
        }
    }

    #[test]
    fn per_tensor_shares_one_scale() {
        let w = weight(3, 10, 2);
        let q = Rtn::new(QuantSpec::int(8).tensor())
            .quantize(w.view(), None)
            .unwrap();
        let s = q.scales()[[0, 0]];
        assert!(q.scales().iter().all(|&x| x == s));
    }

    #[test]
    fn nan_is_a_typed_error() {
        let mut w = weight(2, 8, 3);
        w[[1, 5]] = f32::NAN;
        let err = Rtn::new(QuantSpec::int(4))
            .quantize(w.view(), None)
            .unwrap_err();
        assert!(
            matches!(err, crate::Error::NonFinite { row: 1, col: 5, .. }),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn error_within_half_a_step(
            bits in 2u8..=8,
            sym in any::<bool>(),
            group in prop::sample::select(vec![8usize, 16, 24, 100]),
            seed in 0u64..1000,
        ) {
            let w = weight(3, 48, seed);
            let mut spec = QuantSpec::int(bits).group(group);
            if !sym { spec = spec.asymmetric(); }
            let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
            let d = q.dequantize();
            for r in 0..3 {
                for c in 0..48 {
                    let g = q.group_of(c);
                    let step = q.scales()[[r, g]];
                    prop_assert!((d[[r, c]] - w[[r, c]]).abs() <= step / 2.0 * 1.0001 + 1e-7);
                }
            }
        }
    }
}
