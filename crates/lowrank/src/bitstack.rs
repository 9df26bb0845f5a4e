//! BitStack: any-size weight compression from stacked ~1-bit residual blocks.
//!
//! Wang, Wang, Wang, Zhang, Zhou, Qiu, *BitStack: Any-Size Compression of Large
//! Language Models in Variable Memory Environments*, ICLR 2025,
//! arXiv:2410.23918.
//!
//! A weight is decomposed iteratively. With the input channels scaled by their
//! activation magnitude (`W S`, `S = diag(s)`, as the paper does before
//! decomposing), each iteration splits the residual `R` into its signs and
//! magnitudes and approximates the magnitudes at low rank ("absolute value
//! decomposition"):
//!
//! ```text
//! R ≈ sign(R) ⊙ (U_k √Σ_k)(√Σ_k V_kᵀ),    |R| ≈ U_k Σ_k V_kᵀ (top-k SVD),
//! R ← R − sign(R) ⊙ (u vᵀ)
//! ```
//!
//! One block stores the sign plane (1 bit per weight, packed in `u64` words) and
//! `k (out + in)` fp16 values, about 1 bit per weight for `k ≪ out, in`
//! (the paper uses `k = 16`). With `M` the block's magnitudes in the scaled
//! space, the new scaled residual is `R_new S = sign(R) ⊙ (|R S| − M)`, so its norm is
//! `‖|R S| − M‖_F`; `M` is the projection of `|R S|` onto its top-`k` singular
//! subspace, hence `‖R_new S‖_F ≤ ‖R S‖_F`: loading more blocks never increases
//! the error in the scaled norm (up to the fp16 rounding of the factors).
//!
//! The channel scaling is undone inside the stored factor (`v ← v S⁻¹`, which
//! commutes with the sign mask), so a block reconstructs `W`'s units directly
//! and the scales are not stored. The factors are rounded to fp16 *before* the
//! residual is updated, so later blocks correct the rounding of earlier ones.
//!
//! Blocks of all layers are then ranked by importance and loaded as a prefix
//! per layer until a memory budget is met ([`allocate_blocks`]); the paper
//! sorts one universal stack the same way.
//!
//! # Scales
//! The reference implementation scales channel `j` by the mean over sequences
//! of `‖x_j‖₂` (plus 1e-3), i.e. the activation RMS up to a constant factor:
//! pass [`channel_rms`](crate::channel_rms)`(h)` or `√mean x²` from
//! [`ChannelStats::mean_square`](tensorpress_tensor::ChannelStats::mean_square)
//! (the overall constant does not matter). `None` decomposes `W` unscaled.
//!
//! ```
//! use tensorpress_lowrank::{BitStack, BitStackConfig, ErrorMetric};
//! use tensorpress_tensor::SeededRng;
//!
//! let w = SeededRng::new(0).array_normal((64, 96));
//! let stack = BitStack::decompose(w.view(), None, &BitStackConfig::new(6).magnitude_rank(1))?;
//! assert_eq!(stack.len(), 6);
//! // Each block: 64·96 sign bits + (64 + 96) fp16 values.
//! assert_eq!(stack.block_bits(), 64 * 96 + 16 * 160);
//! assert!((stack.bits_per_weight(1) - 8704.0 / 6144.0).abs() < 1e-12); // ≈ 1.42
//! let err = |n| {
//!     let r = stack.reconstruct(n).unwrap();
//!     (&w - &r).mapv(|e| e * e).sum().sqrt() / w.mapv(|e| e * e).sum().sqrt()
//! };
//! assert!(err(1) < 0.65 && err(6) < err(3) && err(3) < err(1));
//! let gains = stack.error_reductions(w.view(), ErrorMetric::Frobenius)?;
//! assert!(gains.iter().all(|&g| g >= 0.0));
//! # Ok::<(), tensorpress_lowrank::Error>(())
//! ```

use half::f16;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use tensorpress_tensor::linalg;

use crate::activation::{check_finite, floored_scales, quadratic_form};
use crate::{Error, Result, DEFAULT_SCALE_FLOOR};

mod allocate;
mod signs;

pub use allocate::{allocate_blocks, BlockAllocation, StackProfile};
pub use signs::SignPlane;

/// The paper's rank of each block's magnitude approximation.
pub const DEFAULT_MAGNITUDE_RANK: usize = 16;

/// How [`BitStack::decompose`] runs.
///
/// ```
/// use tensorpress_lowrank::BitStackConfig;
///
/// let c = BitStackConfig::new(12).magnitude_rank(4);
/// assert_eq!((c.blocks, c.magnitude_rank), (12, 4));
/// assert_eq!(BitStackConfig::default().magnitude_rank, 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BitStackConfig {
    /// Residual blocks to produce.
    pub blocks: usize,
    /// Rank `k` of each block's magnitude factor (≥ 1; clamped to
    /// `min(out, in)` for small weights).
    pub magnitude_rank: usize,
    /// Relative floor on channel scales (see [`DEFAULT_SCALE_FLOOR`]), in `(0, 1]`.
    pub scale_floor: f64,
}

impl Default for BitStackConfig {
    /// Eight blocks of rank [`DEFAULT_MAGNITUDE_RANK`].
    fn default() -> Self {
        BitStackConfig {
            blocks: 8,
            magnitude_rank: DEFAULT_MAGNITUDE_RANK,
            scale_floor: DEFAULT_SCALE_FLOOR,
        }
    }
}

impl BitStackConfig {
    /// `blocks` blocks with the defaults otherwise.
    pub fn new(blocks: usize) -> Self {
        BitStackConfig {
            blocks,
            ..BitStackConfig::default()
        }
    }

    /// Sets the rank `k` of each block's magnitude factor.
    pub fn magnitude_rank(mut self, k: usize) -> Self {
        self.magnitude_rank = k;
        self
    }

    /// Sets the relative floor on channel scales.
    pub fn scale_floor(mut self, floor: f64) -> Self {
        self.scale_floor = floor;
        self
    }
}

/// One residual block: `sign ⊙ (u v)` with `u` `[out, k]` and `v` `[k, in]` in fp16.
#[derive(Debug, Clone, PartialEq)]
pub struct StackBlock {
    signs: SignPlane,
    u: Array2<f16>,
    v: Array2<f16>,
}

impl StackBlock {
    /// A block from stored parts (a BitStack file): `signs` of `[out, in]`,
    /// `u: [out, k]`, `v: [k, in]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the shapes disagree or `k` is 0,
    /// [`Error::NonFinite`] for a NaN or infinite factor.
    pub fn from_parts(signs: SignPlane, u: Array2<f16>, v: Array2<f16>) -> Result<Self> {
        let (out, inp) = signs.dim();
        let k = u.ncols();
        if k == 0 || u.nrows() != out || v.dim() != (k, inp) {
            return Err(Error::ShapeMismatch {
                op: "BitStack block factors",
                lhs: vec![out, k, inp],
                rhs: [u.shape(), v.shape()].concat(),
            });
        }
        for (op, m) in [("BitStack block u", &u), ("BitStack block v", &v)] {
            if let Some(((row, col), value)) = m.indexed_iter().find(|(_, x)| !x.is_finite()) {
                return Err(Error::NonFinite {
                    op,
                    row,
                    col,
                    value: f64::from(value.to_f32()),
                });
            }
        }
        Ok(StackBlock { signs, u, v })
    }

    /// The sign plane.
    pub fn signs(&self) -> &SignPlane {
        &self.signs
    }

    /// The left magnitude factor `u`, `[out, k]`.
    pub fn u(&self) -> ArrayView2<'_, f16> {
        self.u.view()
    }

    /// The right magnitude factor `v`, `[k, in]` (channel scaling undone).
    pub fn v(&self) -> ArrayView2<'_, f16> {
        self.v.view()
    }

    /// The magnitude rank `k`.
    pub fn rank(&self) -> usize {
        self.u.ncols()
    }

    /// Storage: `out · in` sign bits plus `16 · k · (out + in)` for the factors.
    pub fn bits(&self) -> u64 {
        self.signs.bits() + 16 * (self.u.len() + self.v.len()) as u64
    }

    /// Bytes when the sign plane is stored in whole bytes:
    /// `⌈out · in / 8⌉ + 2 · k · (out + in)`.
    pub fn bytes(&self) -> u64 {
        self.signs.bits().div_ceil(8) + 2 * (self.u.len() + self.v.len()) as u64
    }

    /// Adds the block to `acc` (`[out, in]`).
    ///
    /// # Panics
    /// When `acc` is not `[out, in]`.
    #[track_caller]
    pub fn add_to(&self, acc: ArrayViewMut2<'_, f32>) {
        assert_eq!(acc.dim(), self.signs.dim(), "accumulator shape");
        let magnitude = self.magnitude();
        self.signs.add_signed(magnitude.view(), acc, 1.0);
    }

    /// The block as a dense `[out, in]` matrix.
    pub fn to_dense(&self) -> Array2<f32> {
        let mut out = Array2::zeros(self.signs.dim());
        self.add_to(out.view_mut());
        out
    }

    /// `u v` in f32.
    fn magnitude(&self) -> Array2<f32> {
        let u = self.u.mapv(f16::to_f32);
        let v = self.v.mapv(f16::to_f32);
        // Inner dimensions agree by construction.
        linalg::matmul(u.view(), v.view()).unwrap_or_else(|_| u.dot(&v))
    }
}

/// How [`BitStack::error_reductions`] measures the error of a partial stack.
#[derive(Debug, Clone, Copy)]
pub enum ErrorMetric<'a> {
    /// `‖W − Ŵ‖_F²`.
    Frobenius,
    /// `Σ_j c_j Σ_i (W − Ŵ)_ij²` with per-channel weights `c` (`[in]`, e.g.
    /// `mean x_j²` or `diag H`): the diagonal of the output error, `O(out · in)`
    /// per block.
    Diagonal(ArrayView1<'a, f64>),
    /// The output error `‖(W − Ŵ) X‖_F² = tr((W − Ŵ) H (W − Ŵ)ᵀ)` with the
    /// `[in, in]` Gram matrix `H`; `O(out · in²)` per block.
    Gram(ArrayView2<'a, f64>),
}

/// A weight decomposed into a stack of residual blocks, loadable as any prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct BitStack {
    dim: (usize, usize),
    blocks: Vec<StackBlock>,
}

impl BitStack {
    /// Decomposes `w` (`[out, in]`) into `config.blocks` blocks, scaling input
    /// channel `j` by `scales[j]` (floored at `scale_floor × max`) while
    /// decomposing.
    ///
    /// Each block costs one SVD of an `[out, in]` matrix (f32, by faer).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `scales` does not have `in` entries,
    /// [`Error::RankOutOfRange`] for `magnitude_rank == 0`,
    /// [`Error::NonFinite`] for a NaN or infinity in `w` or a factor that
    /// overflows fp16, [`Error::InvalidChannelScale`] and
    /// [`Error::InvalidParameter`] for bad scales or floor.
    pub fn decompose(
        w: ArrayView2<'_, f32>,
        scales: Option<ArrayView1<'_, f32>>,
        config: &BitStackConfig,
    ) -> Result<Self> {
        let (out, inp) = w.dim();
        let max = out.min(inp);
        if config.magnitude_rank == 0 {
            return Err(Error::RankOutOfRange {
                op: "BitStack magnitude rank",
                rank: 0,
                max,
            });
        }
        check_finite("BitStack weight", w)?;
        let scale = match scales {
            Some(s) if s.len() != inp => {
                return Err(Error::ShapeMismatch {
                    op: "BitStack scales",
                    lhs: w.shape().to_vec(),
                    rhs: s.shape().to_vec(),
                })
            }
            Some(s) => floored_scales(s, config.scale_floor, 1.0)?,
            None => Array1::ones(inp),
        };
        let k = config.magnitude_rank.min(max);
        let row_scale = scale.view().insert_axis(Axis(0));
        let mut residual = w.to_owned();
        let mut blocks = Vec::with_capacity(config.blocks);
        for _ in 0..config.blocks {
            let scaled = &residual * &row_scale;
            let signs = SignPlane::from_signs(scaled.view());
            let svd = linalg::svd(scaled.mapv(f32::abs).view())?;
            let mut u = Array2::<f16>::zeros((out, k));
            let mut v = Array2::<f16>::zeros((k, inp));
            for c in 0..k.min(svd.s.len()) {
                let root = svd.s[c].max(0.0).sqrt();
                Zip::from(u.column_mut(c))
                    .and(svd.u.column(c))
                    .for_each(|d, &x| *d = f16::from_f32(x * root));
                Zip::from(v.row_mut(c))
                    .and(svd.vt.row(c))
                    .and(&scale)
                    .for_each(|d, &x, &s| *d = f16::from_f32(x * root / s));
            }
            if let Some(value) = u.iter().chain(v.iter()).find(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    op: "BitStack fp16 factor",
                    row: blocks.len(),
                    col: 0,
                    value: f64::from(value.to_f32()),
                });
            }
            let block = StackBlock { signs, u, v };
            // Subtract the block as stored (rounded), so the next one corrects it.
            let magnitude = block.magnitude();
            block
                .signs
                .add_signed(magnitude.view(), residual.view_mut(), -1.0);
            blocks.push(block);
        }
        Ok(BitStack {
            dim: (out, inp),
            blocks,
        })
    }

    /// A stack of an `[out, in]` weight from its blocks in loading order (a
    /// prefix read from a file is a stack too).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a block is not `[out, in]` or the blocks'
    /// magnitude ranks differ.
    pub fn from_blocks(dim: (usize, usize), blocks: Vec<StackBlock>) -> Result<Self> {
        let k = blocks.first().map_or(0, StackBlock::rank);
        if let Some(b) = blocks
            .iter()
            .find(|b| b.signs.dim() != dim || b.rank() != k)
        {
            return Err(Error::ShapeMismatch {
                op: "BitStack blocks",
                lhs: vec![dim.0, dim.1, k],
                rhs: vec![b.signs.dim().0, b.signs.dim().1, b.rank()],
            });
        }
        Ok(BitStack { dim, blocks })
    }

    /// `(out, in)` of the weight.
    pub fn dim(&self) -> (usize, usize) {
        self.dim
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the stack has no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The blocks, in loading order.
    pub fn blocks(&self) -> &[StackBlock] {
        &self.blocks
    }

    /// The weight from the first `n_blocks` blocks (zeros for 0).
    ///
    /// # Errors
    /// [`Error::BlocksOutOfRange`] when `n_blocks > len()`.
    pub fn reconstruct(&self, n_blocks: usize) -> Result<Array2<f32>> {
        if n_blocks > self.len() {
            return Err(Error::BlocksOutOfRange {
                requested: n_blocks,
                available: self.len(),
            });
        }
        let mut w = Array2::zeros(self.dim);
        for b in &self.blocks[..n_blocks] {
            b.add_to(w.view_mut());
        }
        Ok(w)
    }

    /// Bits of one block (all blocks of a stack have the same size; 0 when empty).
    pub fn block_bits(&self) -> u64 {
        self.blocks.first().map_or(0, StackBlock::bits)
    }

    /// Bits of the first `n_blocks` blocks (`n_blocks` is capped at `len()`).
    pub fn bits(&self, n_blocks: usize) -> u64 {
        self.blocks[..n_blocks.min(self.len())]
            .iter()
            .map(StackBlock::bits)
            .sum()
    }

    /// Bytes of the first `n_blocks` blocks, each stored in whole bytes
    /// (`n_blocks` is capped at `len()`).
    pub fn bytes(&self, n_blocks: usize) -> u64 {
        self.blocks[..n_blocks.min(self.len())]
            .iter()
            .map(StackBlock::bytes)
            .sum()
    }

    /// [`bits`](BitStack::bits) per weight of the layer.
    pub fn bits_per_weight(&self, n_blocks: usize) -> f64 {
        self.bits(n_blocks) as f64 / (self.dim.0 * self.dim.1) as f64
    }

    /// How much each block lowers the error: entry `i` is `e_i − e_{i+1}`,
    /// where `e_n` is the squared error of the first `n` blocks under `metric`
    /// (`e_0` is that of the zero matrix). These are natural importances for
    /// [`allocate_blocks`]; they sum to `e_0 − e_len`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `w` or the metric's statistics do not
    /// match the stack's shape.
    pub fn error_reductions(
        &self,
        w: ArrayView2<'_, f32>,
        metric: ErrorMetric<'_>,
    ) -> Result<Vec<f64>> {
        if w.dim() != self.dim {
            return Err(Error::ShapeMismatch {
                op: "BitStack::error_reductions",
                lhs: vec![self.dim.0, self.dim.1],
                rhs: w.shape().to_vec(),
            });
        }
        let inp = self.dim.1;
        let ok = match metric {
            ErrorMetric::Frobenius => true,
            ErrorMetric::Diagonal(c) => c.len() == inp,
            ErrorMetric::Gram(h) => h.dim() == (inp, inp),
        };
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "BitStack::error_reductions metric",
                lhs: vec![self.dim.0, self.dim.1],
                rhs: match metric {
                    ErrorMetric::Diagonal(c) => c.shape().to_vec(),
                    ErrorMetric::Gram(h) => h.shape().to_vec(),
                    ErrorMetric::Frobenius => vec![],
                },
            });
        }
        let error = |r: &Array2<f64>| -> Result<f64> {
            Ok(match metric {
                ErrorMetric::Frobenius => r.iter().map(|x| x * x).sum(),
                ErrorMetric::Diagonal(c) => r
                    .outer_iter()
                    .map(|row| row.iter().zip(c).map(|(x, c)| c * x * x).sum::<f64>())
                    .sum(),
                ErrorMetric::Gram(h) => quadratic_form(r.view(), h)?,
            })
        };
        let mut residual = w.mapv(f64::from);
        let mut last = error(&residual)?;
        let mut gains = Vec::with_capacity(self.len());
        for b in &self.blocks {
            residual -= &b.to_dense().mapv(f64::from);
            let e = error(&residual)?;
            gains.push(last - e);
            last = e;
        }
        Ok(gains)
    }

    /// This stack's [`StackProfile`] with per-block `importance`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless there is one importance per block.
    pub fn profile<'a>(&self, importance: &'a [f64]) -> Result<StackProfile<'a>> {
        if importance.len() != self.len() {
            return Err(Error::ShapeMismatch {
                op: "BitStack::profile",
                lhs: vec![self.len()],
                rhs: vec![importance.len()],
            });
        }
        Ok(StackProfile {
            block_bits: self.block_bits(),
            importance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn a_block_reproduces_a_rank_one_magnitude_exactly() {
        // W = sign ⊙ (a bᵀ) with fp16-exact a, b: one rank-1 block recovers it.
        let a = array![1.0f32, 2.0, 0.5];
        let b = array![4.0f32, 1.0, 2.0, 0.25];
        let sign = array![
            [1.0f32, -1.0, 1.0, 1.0],
            [-1.0, -1.0, 1.0, -1.0],
            [1.0, 1.0, -1.0, 1.0]
        ];
        let w = &sign
            * &(a
                .view()
                .insert_axis(Axis(1))
                .dot(&b.view().insert_axis(Axis(0))));
        let stack =
            BitStack::decompose(w.view(), None, &BitStackConfig::new(2).magnitude_rank(1)).unwrap();
        let r = stack.reconstruct(1).unwrap();
        let err = (&w - &r).mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
        assert!(err < 1e-2, "{err}");
        assert_eq!(stack.reconstruct(0).unwrap(), Array2::<f32>::zeros((3, 4)));
        assert!(matches!(
            stack.reconstruct(3),
            Err(Error::BlocksOutOfRange {
                requested: 3,
                available: 2
            })
        ));
        assert_eq!(stack.block_bits(), 12 + 16 * 7);
        assert_eq!(stack.bits(5), 2 * (12 + 16 * 7));
        assert_eq!(stack.bytes(1), 2 + 14);
    }

    #[test]
    fn typed_errors() {
        let w = Array2::<f32>::ones((3, 4));
        assert!(matches!(
            BitStack::decompose(w.view(), None, &BitStackConfig::new(1).magnitude_rank(0)),
            Err(Error::RankOutOfRange { rank: 0, .. })
        ));
        assert!(matches!(
            BitStack::decompose(
                w.view(),
                Some(Array1::ones(3).view()),
                &BitStackConfig::new(1)
            ),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            BitStack::decompose(
                w.view(),
                Some(array![1.0f32, f32::NAN, 1.0, 1.0].view()),
                &BitStackConfig::new(1)
            ),
            Err(Error::InvalidChannelScale { index: 1, .. })
        ));
        let mut bad = w.clone();
        bad[[0, 3]] = f32::NEG_INFINITY;
        assert!(matches!(
            BitStack::decompose(bad.view(), None, &BitStackConfig::new(1)),
            Err(Error::NonFinite { row: 0, col: 3, .. })
        ));
        let huge = Array2::<f32>::from_elem((2, 2), 1e10);
        assert!(matches!(
            BitStack::decompose(huge.view(), None, &BitStackConfig::new(1)),
            Err(Error::NonFinite {
                op: "BitStack fp16 factor",
                ..
            })
        ));
        let stack = BitStack::decompose(w.view(), None, &BitStackConfig::new(2)).unwrap();
        assert!(matches!(
            stack.profile(&[1.0]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            stack.error_reductions(w.view(), ErrorMetric::Diagonal(Array1::ones(3).view())),
            Err(Error::ShapeMismatch { .. })
        ));
        let p = StackProfile {
            block_bits: 1,
            importance: &[f64::NAN],
        };
        assert!(matches!(
            allocate_blocks(&[p], 10),
            Err(Error::InvalidParameter { .. })
        ));
    }

    #[test]
    fn activation_scaling_favours_loud_channels() {
        let mut rng = SeededRng::new(11);
        let w = rng.array_normal((32, 24));
        let mut s = Array1::<f32>::ones(24);
        for j in 0..4 {
            s[j] = 20.0;
        }
        let cfg = BitStackConfig::new(2).magnitude_rank(2);
        let scaled = BitStack::decompose(w.view(), Some(s.view()), &cfg).unwrap();
        let plain = BitStack::decompose(w.view(), None, &cfg).unwrap();
        let loud = |st: &BitStack| {
            let r = st.reconstruct(2).unwrap();
            (0..32)
                .flat_map(|i| (0..4).map(move |j| (i, j)))
                .map(|(i, j)| f64::from(w[[i, j]] - r[[i, j]]).powi(2))
                .sum::<f64>()
        };
        assert!(
            loud(&scaled) < 0.5 * loud(&plain),
            "{} vs {}",
            loud(&scaled),
            loud(&plain)
        );
    }
}
