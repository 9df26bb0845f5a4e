//! SparseGPT: massive language models can be accurately pruned in one shot
//! (Frantar & Alistarh, ICML 2023).
//!
//! SparseGPT is GPTQ's column sweep with pruning in place of (or before)
//! rounding: with the layer Hessian `H = (2/n) Σ x xᵀ` and `U` the upper
//! Cholesky factor of `H⁻¹`, column `i` of the weight is visited in order;
//! its pruned entries are set to zero (its kept entries are rounded onto the
//! quantization grid in the joint mode) and the resulting error
//! `(w_i − q_i) / U_ii` is spread over the columns not yet visited along
//! `U_i,·`, the optimal-brain-surgeon update that keeps the layer's outputs on
//! the calibration inputs as close as possible. Updates are applied lazily in
//! blocks of 128 columns (one GEMM per block).
//!
//! The mask is chosen adaptively as the sweep goes, as in the reference code:
//! - unstructured: at the start of each block, the lowest `w² / U_ii²` of the
//!   whole block (all rows) are pruned to the target ratio;
//! - N:M: at the start of every group of `M` columns, each row keeps the `N`
//!   entries of highest `w² / U_ii²`;
//! - [`SparsityTarget::KeepZeros`]: the entries that are already zero stay
//!   pruned (quantizing an already pruned model without filling it back in:
//!   prune-then-quantize).
//!
//! Joint pruning and quantization (the paper's §4, "joint sparsification and
//! quantization") rounds every kept entry as GPTQ would in the same sweep:
//! one pass gives a sparse and quantized weight.

use ndarray::{s, Array2, ArrayView2, Axis};
use tensorpress_quant_core::formats::{CodeGrid, Grid};
use tensorpress_quant_core::int::GroupParams;
use tensorpress_quant_core::{Calibration, Granularity, QuantSpec, QuantizedTensor};
use tensorpress_tensor::linalg::{cholesky_inverse_upper_damped, matmul, DampSchedule};
use tensorpress_tensor::FinalizedHessian;

use crate::mask::{check_pattern, SparsityMask};
use crate::{Error, Result};

/// How much of a weight to prune, and in which pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparsityTarget {
    /// A fraction in `(0, 1)` of the entries, anywhere.
    Unstructured(f64),
    /// Keep `n` of every `m` consecutive input columns (2:4, 4:8).
    NM {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// Prune exactly the entries that are already zero (for quantizing a
    /// pruned weight without filling its zeros back in).
    KeepZeros,
}

impl SparsityTarget {
    /// Checks the target against a weight with `cols` input columns.
    ///
    /// # Errors
    /// [`Error::InvalidSparsity`] for a ratio outside `(0, 1)`,
    /// [`Error::InvalidPattern`] for `n > m` or `m = 0`,
    /// [`Error::IndivisibleGroups`] when `m` does not divide `cols`.
    pub fn validate(&self, cols: usize) -> Result<()> {
        match *self {
            SparsityTarget::Unstructured(s) if !(s > 0.0 && s < 1.0) => {
                Err(Error::InvalidSparsity { sparsity: s })
            }
            SparsityTarget::NM { n, m } => check_pattern(n, m, cols),
            _ => Ok(()),
        }
    }

    /// The fraction of entries the target removes (`None` for
    /// [`KeepZeros`](Self::KeepZeros), which depends on the weight).
    pub fn sparsity(&self) -> Option<f64> {
        match *self {
            SparsityTarget::Unstructured(s) => Some(s),
            SparsityTarget::NM { n, m } => Some(1.0 - n as f64 / m as f64),
            SparsityTarget::KeepZeros => None,
        }
    }
}

impl std::fmt::Display for SparsityTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SparsityTarget::Unstructured(s) => write!(f, "{}%", s * 100.0),
            SparsityTarget::NM { n, m } => write!(f, "{n}:{m}"),
            SparsityTarget::KeepZeros => f.write_str("existing zeros"),
        }
    }
}

/// SparseGPT's configuration.
///
/// ```
/// use tensorpress_sparsity::{magnitude_prune, PruneScope, SparseGpt, SparsityTarget};
/// use tensorpress_tensor::{Hessian, SeededRng};
///
/// let mut rng = SeededRng::new(0);
/// // Correlated inputs: 512 tokens whose 64 features mix 8 latent factors.
/// let x = rng.array_normal((512, 8)).dot(&rng.array_normal((8, 64)));
/// let w = rng.array_normal((32, 64));
/// let mut h = Hessian::new(64);
/// h.update(x.view())?;
/// let h = h.finalize(0.0)?;
///
/// let out = SparseGpt::new(SparsityTarget::Unstructured(0.5)).prune(w.view(), &h)?;
/// assert_eq!(out.mask.sparsity(), 0.5);
/// let magnitude = magnitude_prune(w.view(), 0.5, PruneScope::PerTensor)?.applied(w.view())?;
/// let out_err = |p: &ndarray::Array2<f32>| x.dot(&(p - &w).t()).mapv(|e| e * e).sum();
/// // The OBS updates keep the outputs on the calibration inputs much closer.
/// assert!(out_err(&out.weight) < 0.5 * out_err(&magnitude));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SparseGpt {
    /// What to prune.
    pub target: SparsityTarget,
    /// Columns per lazy update block and per unstructured mask selection
    /// (reference: 128). N:M rounds it down to a multiple of `m`.
    pub block_size: usize,
    /// Dampening schedule (reference: 0.01 of the mean diagonal).
    pub damp: DampSchedule,
    /// Quantize the kept weights in the same sweep (joint mode). Groups run
    /// along the input columns in their natural order (no act-order).
    pub quant: Option<QuantSpec>,
}

/// What [`SparseGpt::prune`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseGptOutput {
    /// The pruned (and, in the joint mode, quantized-then-dequantized)
    /// weight, `[out, in]`, exactly zero where the mask prunes.
    pub weight: Array2<f32>,
    /// Which entries were kept.
    pub mask: SparsityMask,
    /// The codes, scales and zero points in the joint mode; pruned entries
    /// hold the code of zero.
    pub quantized: Option<QuantizedTensor>,
    /// The reference's loss estimate `Σ (w − q)² / (2 U_ii²)`.
    pub loss: f64,
    /// The relative damp that made the Hessian factorizable.
    pub damp: f64,
}

impl SparseGpt {
    /// SparseGPT to `target` with the reference defaults: blocks of 128,
    /// damp 0.01, no quantization.
    pub fn new(target: SparsityTarget) -> Self {
        SparseGpt {
            target,
            block_size: 128,
            damp: DampSchedule::default(),
            quant: None,
        }
    }

    /// Quantizes the kept weights to `spec` in the same sweep.
    pub fn with_quant(mut self, spec: QuantSpec) -> Self {
        self.quant = Some(spec);
        self
    }

    /// Uses blocks of `size` columns.
    pub fn block_size(mut self, size: usize) -> Self {
        self.block_size = size;
        self
    }

    /// Prunes `w` (`[out, in]`) with the layer Hessian `h` (`[in, in]`).
    ///
    /// # Errors
    /// An invalid target ([`SparsityTarget::validate`]), a block size of 0,
    /// a Hessian of the wrong shape ([`Error::ShapeMismatch`]), a NaN or
    /// infinite weight ([`Error::NonFinite`]), a Hessian that no damp makes
    /// factorizable, an invalid quantization spec.
    pub fn prune(&self, w: ArrayView2<'_, f32>, h: &FinalizedHessian) -> Result<SparseGptOutput> {
        let (rows, cols) = w.dim();
        self.target.validate(cols)?;
        crate::magnitude::check_finite(&w)?;
        if h.h.dim() != (cols, cols) {
            return Err(Error::ShapeMismatch {
                op: "SparseGPT Hessian",
                lhs: vec![cols, cols],
                rhs: h.h.shape().to_vec(),
            });
        }
        let block = match self.target {
            SparsityTarget::NM { m, .. } => self.block_size / m * m,
            _ => self.block_size,
        };
        if block == 0 {
            return Err(Error::InvalidBlockSize {
                block: self.block_size,
            });
        }
        let quant = match &self.quant {
            Some(spec) => Some(Quant::new(spec, w)?),
            None => None,
        };

        let factor = cholesky_inverse_upper_damped(h.h.view(), &self.damp)?;
        let u: Array2<f32> = factor.factor.mapv(|v| v as f32);

        // W transposed (`[cols, rows]`): every column of W a contiguous row.
        let mut wt = w.t().to_owned();
        for &d in &h.dead {
            wt.row_mut(d).fill(0.0);
        }
        // Pruned entries, transposed like `wt`.
        let mut pruned = match self.target {
            SparsityTarget::KeepZeros => w.t().mapv(|v| v == 0.0),
            _ => Array2::from_elem((cols, rows), false),
        };
        let mut quant = quant;
        let mut loss = 0.0f64;
        let mut i1 = 0;
        while i1 < cols {
            let i2 = (i1 + block).min(cols);
            let count = i2 - i1;
            if let SparsityTarget::Unstructured(s) = self.target {
                select_block(
                    wt.slice(s![i1..i2, ..]),
                    &u,
                    i1,
                    s,
                    pruned.slice_mut(s![i1..i2, ..]),
                );
            }
            let mut err = Array2::<f32>::zeros((count, rows));
            for i in i1..i2 {
                if let SparsityTarget::NM { n, m } = self.target {
                    if (i - i1).is_multiple_of(m) {
                        select_nm(wt.slice(s![i..i + m, ..]), &u, i, n, &mut pruned);
                    }
                }
                if let Some(q) = quant.as_mut() {
                    q.start_group(i, &wt, &pruned);
                }
                let d = u[[i, i]];
                let (mut head, mut tail) = wt.view_mut().split_at(Axis(0), i + 1);
                let mut col = head.row_mut(i);
                let mut e_row = err.row_mut(i - i1);
                for r in 0..rows {
                    let x = col[r];
                    let value = if pruned[[i, r]] {
                        if let Some(q) = quant.as_mut() {
                            q.set_zero(i, r);
                        }
                        0.0
                    } else if let Some(q) = quant.as_mut() {
                        q.round(i, r, x)
                    } else {
                        x
                    };
                    let diff = x - value;
                    col[r] = value;
                    loss += f64::from(diff * diff) / (2.0 * f64::from(d * d));
                    e_row[r] = diff / d;
                }
                // Feed the error forward to the rest of the block.
                for j in i + 1..i2 {
                    let coef = u[[i, j]];
                    if coef != 0.0 {
                        tail.row_mut(j - i - 1).scaled_add(-coef, &e_row);
                    }
                }
            }
            // Lazy batch update of every column after the block.
            if i2 < cols {
                let ut = u.slice(s![i1..i2, i2..]).t().to_owned();
                let update = matmul(ut.view(), err.view())?;
                let mut rest = wt.slice_mut(s![i2.., ..]);
                rest -= &update;
            }
            i1 = i2;
        }
        for &d in &h.dead {
            pruned.row_mut(d).fill(true);
        }
        let weight = wt.t().as_standard_layout().to_owned();
        let mask = SparsityMask::new(pruned.t().mapv(|p| !p));
        let quantized = match quant {
            Some(q) => Some(q.finish(rows, cols)?),
            None => None,
        };
        Ok(SparseGptOutput {
            weight,
            mask,
            quantized,
            loss,
            damp: factor.damp,
        })
    }
}

/// The OBS saliency `w² / U_ii²` of entry `(col, row)` of the transposed weight.
fn saliency(wt: &ArrayView2<'_, f32>, u: &Array2<f32>, offset: usize, k: usize, r: usize) -> f32 {
    let d = u[[offset + k, offset + k]];
    let w = wt[[k, r]];
    w * w / (d * d)
}

/// Unstructured: prune the `floor(s · count · rows)` lowest saliencies of the
/// block (ties by position).
fn select_block(
    wt: ArrayView2<'_, f32>,
    u: &Array2<f32>,
    offset: usize,
    s: f64,
    mut pruned: ndarray::ArrayViewMut2<'_, bool>,
) {
    let (count, rows) = wt.dim();
    let k = (s * (count * rows) as f64).floor() as usize;
    if k == 0 {
        return;
    }
    let mut order: Vec<(f32, usize)> = (0..count * rows)
        .map(|idx| (saliency(&wt, u, offset, idx / rows, idx % rows), idx))
        .collect();
    let by_score = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_score);
    }
    for &(_, idx) in &order[..k.min(order.len())] {
        pruned[[idx / rows, idx % rows]] = true;
    }
}

/// N:M: in each row, prune the `m − n` lowest saliencies of the `m` columns
/// starting at `offset` (ties by position).
fn select_nm(
    wt: ArrayView2<'_, f32>,
    u: &Array2<f32>,
    offset: usize,
    n: usize,
    pruned: &mut Array2<bool>,
) {
    let (m, rows) = wt.dim();
    let mut order: Vec<usize> = Vec::with_capacity(m);
    for r in 0..rows {
        order.clear();
        order.extend(0..m);
        order.sort_by(|&a, &b| {
            saliency(&wt, u, offset, a, r)
                .total_cmp(&saliency(&wt, u, offset, b, r))
                .then(a.cmp(&b))
        });
        for &k in &order[..m - n] {
            pruned[[offset + k, r]] = true;
        }
    }
}

/// The joint mode's quantization state: the grid, the parameters chosen so
/// far and the codes (transposed).
struct Quant {
    spec: QuantSpec,
    grid: Grid,
    group: usize,
    per_group: bool,
    scales: Array2<f32>,
    zeros: Array2<f32>,
    codes_t: Array2<u8>,
}

impl Quant {
    fn new(spec: &QuantSpec, w: ArrayView2<'_, f32>) -> Result<Self> {
        let (rows, cols) = w.dim();
        let grid = Grid::for_weight(spec, w)?;
        let n_groups = spec.n_groups(cols)?;
        let mut q = Quant {
            spec: *spec,
            grid,
            group: spec.group_size(cols),
            per_group: matches!(spec.granularity, Granularity::Group(_)),
            scales: Array2::zeros((rows, n_groups)),
            zeros: Array2::zeros((rows, n_groups)),
            codes_t: Array2::zeros((cols, rows)),
        };
        // Per channel or per tensor: parameters from the dense weight, as the
        // reference's `find_params` before the sweep.
        match spec.granularity {
            Granularity::Tensor => {
                let all: Vec<f32> = w.iter().copied().collect();
                let p = q.grid.params(&all);
                for r in 0..rows {
                    q.set(r, 0, p);
                }
            }
            Granularity::Channel => {
                for r in 0..rows {
                    let p = q.grid.params(&w.row(r).to_vec());
                    q.set(r, 0, p);
                }
            }
            Granularity::Group(_) => {}
        }
        Ok(q)
    }

    fn set(&mut self, r: usize, g: usize, p: GroupParams) {
        self.scales[[r, g]] = p.scale;
        self.zeros[[r, g]] = p.zero;
    }

    fn params(&self, i: usize, r: usize) -> GroupParams {
        let g = if self.per_group { i / self.group } else { 0 };
        GroupParams {
            scale: self.scales[[r, g]],
            zero: self.zeros[[r, g]],
        }
    }

    /// At the first column of a group: its parameters from the weights as
    /// updated so far, the entries already known to be pruned counted as 0.
    fn start_group(&mut self, i: usize, wt: &Array2<f32>, pruned: &Array2<bool>) {
        if !self.per_group || !i.is_multiple_of(self.group) {
            return;
        }
        let end = (i + self.group).min(wt.nrows());
        let mut values = vec![0.0f32; end - i];
        for r in 0..wt.ncols() {
            for (k, v) in values.iter_mut().enumerate() {
                *v = if pruned[[i + k, r]] {
                    0.0
                } else {
                    wt[[i + k, r]]
                };
            }
            let p = self.grid.params(&values);
            self.set(r, i / self.group, p);
        }
    }

    fn round(&mut self, i: usize, r: usize, x: f32) -> f32 {
        let p = self.params(i, r);
        let code = self.grid.quantize(x, p);
        self.codes_t[[i, r]] = code;
        self.grid.dequantize(code, p)
    }

    fn set_zero(&mut self, i: usize, r: usize) {
        let p = self.params(i, r);
        self.codes_t[[i, r]] = self.grid.quantize(0.0, p);
    }

    fn finish(self, rows: usize, cols: usize) -> Result<QuantizedTensor> {
        let codes: Vec<u8> = self.codes_t.t().iter().copied().collect();
        let mut q =
            QuantizedTensor::new(self.spec, rows, cols, codes, self.scales, self.zeros, None)?;
        if let Some(g) = self.grid.global_scale() {
            q = q.with_global_scale(g)?;
        }
        Ok(q)
    }
}

impl tensorpress_quant_core::WeightQuantizer for SparseGpt {
    /// Joint pruning and quantization; needs the layer Hessian and a
    /// quantization spec ([`SparseGpt::with_quant`]).
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> tensorpress_quant_core::Result<QuantizedTensor> {
        let to_quant = |e: Error| match e {
            Error::Quant(q) => *q,
            e => tensorpress_quant_core::Error::Method {
                method: "SparseGPT",
                reason: e.to_string(),
            },
        };
        let h = cal.and_then(|c| c.hessian.as_ref()).ok_or(
            tensorpress_quant_core::Error::MissingCalibration {
                method: "SparseGPT",
                what: "the layer Hessian",
            },
        )?;
        if self.quant.is_none() {
            return Err(to_quant(Error::NoQuantization));
        }
        let out = self.prune(w, h).map_err(to_quant)?;
        out.quantized.ok_or_else(|| to_quant(Error::NoQuantization))
    }

    fn prunes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{magnitude_prune, nm_magnitude, PruneScope};
    use tensorpress_quant_core::{Rtn, WeightQuantizer};
    use tensorpress_tensor::{Hessian, SeededRng};

    struct Case {
        x: Array2<f32>,
        w: Array2<f32>,
        h: FinalizedHessian,
    }

    /// Correlated inputs with uneven channel scales, as real activations have.
    fn case(rows: usize, cols: usize, tokens: usize, seed: u64) -> Case {
        let mut rng = SeededRng::new(seed);
        let basis = rng.array_normal((cols / 4, cols));
        let mut x = rng.array_normal((tokens, cols / 4)).dot(&basis);
        for (j, mut c) in x.columns_mut().into_iter().enumerate() {
            c *= 0.2 + (j % 7) as f32;
        }
        let w = rng.array_normal((rows, cols));
        let mut h = Hessian::new(cols);
        h.update(x.view()).unwrap();
        Case {
            x,
            w,
            h: h.finalize(0.0).unwrap(),
        }
    }

    fn output_error(c: &Case, p: &Array2<f32>) -> f32 {
        c.x.dot(&(p - &c.w).t()).mapv(|e| e * e).sum()
    }

    #[test]
    fn unstructured_hits_the_ratio_and_beats_magnitude() {
        let c = case(48, 256, 1024, 1);
        for s in [0.25, 0.5, 0.7] {
            let out = SparseGpt::new(SparsityTarget::Unstructured(s))
                .prune(c.w.view(), &c.h)
                .unwrap();
            // floor(s · 128 · 48) in each of the two blocks of 128 columns.
            let expected = 2 * (s * 128.0 * 48.0).floor() as usize;
            assert_eq!(256 * 48 - out.mask.nnz(), expected);
            // Pruned entries are exactly zero, kept ones generally are not.
            for ((r, col), &v) in out.weight.indexed_iter() {
                assert_eq!(v == 0.0, !out.mask.is_kept(r, col), "({r}, {col})");
            }
            let mag = magnitude_prune(c.w.view(), s, PruneScope::PerTensor)
                .unwrap()
                .applied(c.w.view())
                .unwrap();
            let (e, em) = (output_error(&c, &out.weight), output_error(&c, &mag));
            assert!(e < 0.5 * em, "sparsity {s}: sparsegpt {e} magnitude {em}");
            assert!(out.loss > 0.0 && out.damp > 0.0);
        }
    }

    #[test]
    fn n_m_patterns_hold_and_beat_magnitude() {
        let c = case(32, 128, 512, 2);
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let out = SparseGpt::new(SparsityTarget::NM { n, m })
                .prune(c.w.view(), &c.h)
                .unwrap();
            out.mask.validate_n_m(n, m).unwrap();
            assert_eq!(out.mask.density(), n as f64 / m as f64);
            let mag = nm_magnitude(c.w.view(), n, m)
                .unwrap()
                .applied(c.w.view())
                .unwrap();
            let (e, em) = (output_error(&c, &out.weight), output_error(&c, &mag));
            assert!(e < 0.6 * em, "{n}:{m}: sparsegpt {e} magnitude {em}");
        }
    }

    #[test]
    fn joint_quantization_is_sparse_and_on_the_grid() {
        let c = case(24, 256, 1024, 3);
        for spec in [
            QuantSpec::int(4),
            QuantSpec::int(4).group(64).asymmetric(),
            QuantSpec::int(3).group(128),
        ] {
            let sg = SparseGpt::new(SparsityTarget::Unstructured(0.5)).with_quant(spec);
            let out = sg.prune(c.w.view(), &c.h).unwrap();
            let q = out.quantized.as_ref().unwrap();
            // The codes decode to the returned weight, zeros included.
            assert_eq!(q.dequantize(), out.weight, "{spec}");
            assert_eq!(out.mask.sparsity(), 0.5);
            // Through the quantizer trait: the same codes.
            let cal = Calibration {
                hessian: Some(c.h.clone()),
                ..Default::default()
            };
            assert_eq!(
                &WeightQuantizer::quantize(&sg, c.w.view(), Some(&cal)).unwrap(),
                q
            );
            // Joint beats pruning then rounding to nearest.
            let pruned = SparseGpt::new(SparsityTarget::Unstructured(0.5))
                .prune(c.w.view(), &c.h)
                .unwrap();
            let rtn = Rtn::new(spec).quantize(pruned.weight.view(), None).unwrap();
            let (ej, er) = (
                output_error(&c, &out.weight),
                output_error(&c, &rtn.dequantize()),
            );
            assert!(ej < er, "{spec}: joint {ej} prune-then-RTN {er}");
        }
    }

    #[test]
    fn keep_zeros_quantizes_without_filling_in() {
        let c = case(16, 128, 512, 4);
        let pruned = SparseGpt::new(SparsityTarget::NM { n: 2, m: 4 })
            .prune(c.w.view(), &c.h)
            .unwrap();
        let out = SparseGpt::new(SparsityTarget::KeepZeros)
            .with_quant(QuantSpec::int(4).group(32))
            .prune(pruned.weight.view(), &c.h)
            .unwrap();
        assert_eq!(out.mask, pruned.mask);
        out.mask.validate_n_m(2, 4).unwrap();
        assert_eq!(out.quantized.unwrap().dequantize(), out.weight);
    }

    #[test]
    fn block_size_changes_little() {
        // Lazy updates are exact algebra; only the unstructured mask's block changes.
        let c = case(16, 128, 512, 5);
        let a = SparseGpt::new(SparsityTarget::NM { n: 2, m: 4 })
            .prune(c.w.view(), &c.h)
            .unwrap();
        let b = SparseGpt::new(SparsityTarget::NM { n: 2, m: 4 })
            .block_size(32)
            .prune(c.w.view(), &c.h)
            .unwrap();
        let diff = (&a.weight - &b.weight).mapv(f32::abs).sum() / a.weight.mapv(f32::abs).sum();
        assert!(diff < 1e-3, "relative difference {diff}");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let c = case(8, 64, 256, 6);
        let run = |t: SparsityTarget| SparseGpt::new(t).prune(c.w.view(), &c.h);
        for s in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(
                run(SparsityTarget::Unstructured(s)),
                Err(Error::InvalidSparsity { .. })
            ));
        }
        assert!(matches!(
            run(SparsityTarget::NM { n: 5, m: 4 }),
            Err(Error::InvalidPattern { n: 5, m: 4 })
        ));
        assert!(matches!(
            run(SparsityTarget::NM { n: 2, m: 3 }),
            Err(Error::IndivisibleGroups { cols: 64, m: 3 })
        ));
        assert!(matches!(
            SparseGpt::new(SparsityTarget::NM { n: 2, m: 4 })
                .block_size(2)
                .prune(c.w.view(), &c.h),
            Err(Error::InvalidBlockSize { block: 2 })
        ));
        let mut w = c.w.clone();
        w[[3, 5]] = f32::NAN;
        assert!(matches!(
            SparseGpt::new(SparsityTarget::Unstructured(0.5)).prune(w.view(), &c.h),
            Err(Error::NonFinite { row: 3, col: 5 })
        ));
        let small = case(8, 32, 64, 7);
        assert!(matches!(
            SparseGpt::new(SparsityTarget::Unstructured(0.5)).prune(c.w.view(), &small.h),
            Err(Error::ShapeMismatch { .. })
        ));
        // The quantizer trait needs a spec and a Hessian.
        let sg = SparseGpt::new(SparsityTarget::Unstructured(0.5));
        assert!(WeightQuantizer::quantize(&sg, c.w.view(), None).is_err());
        let cal = Calibration {
            hessian: Some(c.h.clone()),
            ..Default::default()
        };
        let e = WeightQuantizer::quantize(&sg, c.w.view(), Some(&cal)).unwrap_err();
        assert!(e.to_string().contains("quantization spec"), "{e}");
    }
}
