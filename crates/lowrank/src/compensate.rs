//! Low-rank compensation of a compressed weight: LoRC and EoRA.
//!
//! A quantized or pruned weight `W'` leaves an error `E = W − W'`. A rank-`r`
//! adapter `A B ≈ E` added back gives `W' + A B`, at `r · (out + in)` extra
//! parameters and one skinny GEMM pair per token:
//!
//! - **LoRC** (Yao, Wu, Li, Youn, He, *ZeroQuant-V2: Exploring Post-training
//!   Quantization in LLMs from Comprehensive Study to Low Rank Compensation*,
//!   2023, arXiv:2303.08302): the truncated SVD of `E`,
//!   `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ` — the best rank-`r` fit to the *weight*
//!   error. (The paper also quantizes the two factors to 8 bits; quantize
//!   [`Adapter::a`] / [`Adapter::b`] with quant-core to do the same.)
//! - **EoRA** (Liu et al., *EoRA: Training-free Compensation for Compressed LLM
//!   with Eigenspace Low-Rank Approximation*, 2024, arXiv:2410.21271): the best
//!   fit to the *output* error `‖(E − A B) X‖_F` on calibration inputs. With
//!   `H = X Xᵀ = Q Λ Qᵀ`, project `E' = E Q √Λ`, truncate `E' ≈ U_r Σ_r V_rᵀ`,
//!   map back `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ (√Λ)⁻¹ Qᵀ`. Since
//!   `‖(E − A B) X‖_F = ‖(E − A B) Q √Λ‖_F`, the dropped singular values of `E'`
//!   are exactly the remaining output error, and no rank-`r` adapter does better
//!   on the calibration data (it is SVD-LLM's whitening applied to `E`, with the
//!   symmetric square root of `H` instead of its Cholesky factor).
//!
//! Eigenvalues below `floor × λ_max` (rank-deficient `H`: fewer tokens than
//! channels, dead channels, rounding) are raised to that floor, so `(√Λ)⁻¹`
//! stays bounded; directions the calibration data never excites then get a
//! small but nonzero weight, and a full-rank adapter still reproduces `E`.
//!
//! `H` is the pipeline's `[in, in]` f64 Gram/Hessian matrix (any positive
//! multiple of `Σ x xᵀ`; see [`crate::Whitening`]). The compressed weight is
//! passed dequantized, as an `[out, in]` f32 array.
//!
//! ```
//! use tensorpress_lowrank::{activation_error, eora, lorc};
//! use tensorpress_tensor::SeededRng;
//!
//! let mut rng = SeededRng::new(1);
//! let x = rng.array_normal((400, 5)).dot(&rng.array_normal((5, 24)))
//!     + rng.array_normal((400, 24)) * 0.05;
//! let h = x.t().dot(&x).mapv(f64::from);
//! let w = rng.array_normal((16, 24));
//! // A crude 2-bit-like rounding stands in for the quantizer.
//! let w_q = w.mapv(|v| (v * 1.5).round() / 1.5);
//!
//! let plain = activation_error(w.view(), w_q.view(), h.view())?.relative;
//! let with_lorc = lorc(w.view(), w_q.view(), 4)?.apply(w_q.view())?;
//! let with_eora = eora(w.view(), w_q.view(), h.view(), 4)?.apply(w_q.view())?;
//! let e_lorc = activation_error(w.view(), with_lorc.view(), h.view())?.relative;
//! let e_eora = activation_error(w.view(), with_eora.view(), h.view())?.relative;
//! assert!(e_eora < e_lorc && e_lorc < plain);
//! assert!(e_eora < 0.5 * plain);
//! # Ok::<(), tensorpress_lowrank::Error>(())
//! ```

use ndarray::{Array1, Array2, ArrayView2};
use tensorpress_tensor::linalg;

use crate::activation::{check_finite, check_square, whitened_truncation, Root};
use crate::svd::{factorize, RankSelection};
use crate::{Error, Result};

/// Default relative floor on EoRA's eigenvalues (`λ ≥ 1e-8 · λ_max`).
pub const DEFAULT_EIGEN_FLOOR: f64 = 1e-8;

/// A low-rank correction `A B` (`A`: `[out, r]`, `B`: `[r, in]`) added to a
/// compressed weight: `W ≈ W' + A B`.
///
/// # LoRA convention
/// In PEFT's LoRA layout the adapter is `lora_B.weight = A` (`[out, r]`) and
/// `lora_A.weight = B` (`[r, in]`), with `lora_alpha = r` so that the scaling
/// `lora_alpha / r` is 1: the layer computes `W' x + lora_B (lora_A x)`.
/// [`lora_a`](Adapter::lora_a) and [`lora_b`](Adapter::lora_b) return them
/// under those names.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::Adapter;
///
/// let ad = Adapter::new(array![[1.0f32], [2.0]], array![[0.5f32, -1.0, 0.0]])?;
/// assert_eq!((ad.rank(), ad.dim()), (1, (2, 3)));
/// assert_eq!(ad.lora_b(), ad.a()); // [out, r]
/// assert_eq!(ad.lora_a(), ad.b()); // [r, in]
/// let w = ad.apply(ndarray::Array2::zeros((2, 3)).view())?;
/// assert_eq!(w, array![[0.5, -1.0, 0.0], [1.0, -2.0, 0.0]]);
/// assert_eq!(ad.added_params(), 5);
/// // 5 fp16 values over 6 weights.
/// assert!((ad.added_bits_per_weight(16.0) - 80.0 / 6.0).abs() < 1e-12);
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    a: Array2<f32>,
    b: Array2<f32>,
}

impl Adapter {
    /// An adapter from its factors.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `a.ncols() == b.nrows()`;
    /// [`Error::NonFinite`] for a NaN or infinity in either.
    pub fn new(a: Array2<f32>, b: Array2<f32>) -> Result<Self> {
        if a.ncols() != b.nrows() {
            return Err(Error::ShapeMismatch {
                op: "Adapter factors",
                lhs: a.shape().to_vec(),
                rhs: b.shape().to_vec(),
            });
        }
        check_finite("adapter factor A", a.view())?;
        check_finite("adapter factor B", b.view())?;
        Ok(Adapter { a, b })
    }

    /// The adapter's first `rank` components (the leading singular
    /// directions: LoRC's and EoRA's factors are ordered by singular value,
    /// so this is the rank-`rank` solution itself).
    ///
    /// # Errors
    /// [`Error::RankOutOfRange`] unless `1 ≤ rank ≤` [`rank`](Self::rank).
    pub fn truncate(&self, rank: usize) -> Result<Adapter> {
        if rank == 0 || rank > self.rank() {
            return Err(Error::RankOutOfRange {
                op: "Adapter::truncate",
                rank,
                max: self.rank(),
            });
        }
        Ok(Adapter {
            a: self.a.slice(ndarray::s![.., ..rank]).to_owned(),
            b: self.b.slice(ndarray::s![..rank, ..]).to_owned(),
        })
    }

    /// The left factor `A`, `[out, r]` (PEFT's `lora_B`).
    pub fn a(&self) -> ArrayView2<'_, f32> {
        self.a.view()
    }

    /// The right factor `B`, `[r, in]` (PEFT's `lora_A`).
    pub fn b(&self) -> ArrayView2<'_, f32> {
        self.b.view()
    }

    /// PEFT's `lora_A.weight`, `[r, in]`: the right factor [`b`](Adapter::b).
    pub fn lora_a(&self) -> ArrayView2<'_, f32> {
        self.b.view()
    }

    /// PEFT's `lora_B.weight`, `[out, r]`: the left factor [`a`](Adapter::a).
    pub fn lora_b(&self) -> ArrayView2<'_, f32> {
        self.a.view()
    }

    /// Both factors `(A, B)`, consuming `self`.
    pub fn into_factors(self) -> (Array2<f32>, Array2<f32>) {
        (self.a, self.b)
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.ncols()
    }

    /// `(out, in)` of the weight it corrects.
    pub fn dim(&self) -> (usize, usize) {
        (self.a.nrows(), self.b.ncols())
    }

    /// The correction `A B`, `[out, in]`.
    pub fn delta(&self) -> Array2<f32> {
        // Inner dimensions agree by construction.
        linalg::matmul(self.a.view(), self.b.view()).unwrap_or_else(|_| self.a.dot(&self.b))
    }

    /// `W' + A B`: the compensated weight.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless `w_compressed` is `[out, in]`.
    pub fn apply(&self, w_compressed: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        if w_compressed.dim() != self.dim() {
            return Err(Error::ShapeMismatch {
                op: "Adapter::apply",
                lhs: vec![self.dim().0, self.dim().1],
                rhs: w_compressed.shape().to_vec(),
            });
        }
        Ok(&w_compressed + &self.delta())
    }

    /// Parameters the adapter adds: `r · (out + in)`.
    pub fn added_params(&self) -> usize {
        self.a.len() + self.b.len()
    }

    /// Bits the adapter adds per weight of the layer when each of its values
    /// is stored in `bits_per_value` bits (16 for fp16/bf16):
    /// `r · (out + in) · bits / (out · in)`.
    pub fn added_bits_per_weight(&self, bits_per_value: f64) -> f64 {
        let (out, inp) = self.dim();
        self.added_params() as f64 * bits_per_value / (out * inp) as f64
    }
}

/// Checks `w` and `w_compressed` against each other and `rank` against their size.
fn check_pair(
    op: &'static str,
    w: ArrayView2<'_, f32>,
    w_compressed: ArrayView2<'_, f32>,
    rank: usize,
) -> Result<()> {
    if w.dim() != w_compressed.dim() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: w.shape().to_vec(),
            rhs: w_compressed.shape().to_vec(),
        });
    }
    let max = w.nrows().min(w.ncols());
    if rank == 0 || rank > max {
        return Err(Error::RankOutOfRange { op, rank, max });
    }
    check_finite("original weight", w)?;
    check_finite("compressed weight", w_compressed)
}

/// LoRC: the rank-`rank` truncated SVD of `E = W − W'`, with `√Σ` split
/// between the factors.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `w` and `w_compressed` differ in shape,
/// [`Error::RankOutOfRange`] unless `1 ≤ rank ≤ min(out, in)`,
/// [`Error::NonFinite`] for a NaN or infinity in either weight.
pub fn lorc(
    w: ArrayView2<'_, f32>,
    w_compressed: ArrayView2<'_, f32>,
    rank: usize,
) -> Result<Adapter> {
    check_pair("LoRC", w, w_compressed, rank)?;
    let err = &w - &w_compressed;
    let (a, b) = factorize(err.view(), RankSelection::Rank(rank))?.into_factors();
    Ok(Adapter { a, b })
}

/// EoRA's eigenspace of the calibration matrix: `H = Q Λ Qᵀ` with small
/// eigenvalues floored, computed once per input and reused for every weight
/// that reads it.
///
/// ```
/// use ndarray::array;
/// use tensorpress_lowrank::Eigenspace;
///
/// // Rank-1 H: one eigenvalue is zero and gets floored.
/// let space = Eigenspace::from_hessian(array![[1.0f64, 1.0], [1.0, 1.0]].view())?;
/// assert_eq!((space.dim(), space.floored()), (2, 1));
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Eigenspace {
    vectors: Array2<f64>,
    sqrt_values: Array1<f64>,
    floored: usize,
}

impl Eigenspace {
    /// Eigendecomposition of `h` (`[in, in]`, symmetric, lower triangle read),
    /// eigenvalues below `floor × λ_max` raised to it.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a non-square `h`, [`Error::NonFinite`],
    /// [`Error::InvalidParameter`] unless `0 < floor ≤ 1`,
    /// [`Error::HessianNotPositiveDefinite`] when no eigenvalue is positive.
    pub fn new(h: ArrayView2<'_, f64>, floor: f64) -> Result<Self> {
        check_square("EoRA calibration matrix", h)?;
        check_finite("EoRA calibration matrix", h)?;
        if !(floor.is_finite() && floor > 0.0 && floor <= 1.0) {
            return Err(Error::InvalidParameter {
                name: "EoRA eigenvalue floor",
                value: floor,
                expected: "in (0, 1]",
            });
        }
        let eig = linalg::eigh(h)?;
        let n = eig.values.len();
        let lambda_max = eig.values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        if n > 0 && lambda_max <= 0.0 {
            return Err(Error::HessianNotPositiveDefinite {
                pivot: 0,
                damp_tried: 0.0,
            });
        }
        let lo = floor * lambda_max;
        let floored = eig.values.iter().filter(|&&v| v < lo).count();
        let sqrt_values = eig.values.mapv(|v| v.max(lo).sqrt());
        Ok(Eigenspace {
            vectors: eig.vectors,
            sqrt_values,
            floored,
        })
    }

    /// [`new`](Eigenspace::new) with [`DEFAULT_EIGEN_FLOOR`].
    ///
    /// # Errors
    /// As [`new`](Eigenspace::new).
    pub fn from_hessian(h: ArrayView2<'_, f64>) -> Result<Self> {
        Eigenspace::new(h, DEFAULT_EIGEN_FLOOR)
    }

    /// Number of input channels.
    pub fn dim(&self) -> usize {
        self.vectors.nrows()
    }

    /// How many eigenvalues were raised to the floor.
    pub fn floored(&self) -> usize {
        self.floored
    }

    /// EoRA adapter of rank `rank` for the error `W − W'`.
    ///
    /// # Errors
    /// As [`lorc`], and [`Error::ShapeMismatch`] unless the weights have
    /// [`dim`](Eigenspace::dim) columns.
    pub fn compensate(
        &self,
        w: ArrayView2<'_, f32>,
        w_compressed: ArrayView2<'_, f32>,
        rank: usize,
    ) -> Result<Adapter> {
        check_pair("EoRA", w, w_compressed, rank)?;
        if w.ncols() != self.dim() {
            return Err(Error::ShapeMismatch {
                op: "EoRA weight vs calibration matrix",
                lhs: w.shape().to_vec(),
                rhs: self.vectors.shape().to_vec(),
            });
        }
        let err = &w - &w_compressed;
        let root = Root::Eigen {
            vectors: &self.vectors,
            sqrt_values: &self.sqrt_values,
        };
        let t = whitened_truncation(err.view(), root, RankSelection::Rank(rank))?;
        Ok(Adapter { a: t.a, b: t.b })
    }
}

/// EoRA in one call: [`Eigenspace::from_hessian`]`(h)?.compensate(w, w_compressed, rank)`.
///
/// # Errors
/// As [`Eigenspace::new`] and [`Eigenspace::compensate`].
pub fn eora(
    w: ArrayView2<'_, f32>,
    w_compressed: ArrayView2<'_, f32>,
    h: ArrayView2<'_, f64>,
    rank: usize,
) -> Result<Adapter> {
    if h.dim() != (w.ncols(), w.ncols()) {
        return Err(Error::ShapeMismatch {
            op: "EoRA weight vs calibration matrix",
            lhs: w.shape().to_vec(),
            rhs: h.shape().to_vec(),
        });
    }
    Eigenspace::from_hessian(h)?.compensate(w, w_compressed, rank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::activation_error;
    use crate::reconstruction_error;
    use ndarray::array;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    /// Correlated activations `[tokens, in]`: `latent` factors mixed into `inp`
    /// channels, a few channels scaled up as outliers, plus a little noise.
    fn correlated_gram(
        rng: &mut SeededRng,
        tokens: usize,
        inp: usize,
        latent: usize,
    ) -> Array2<f64> {
        let mut x = rng
            .array_normal((tokens, latent))
            .dot(&rng.array_normal((latent, inp)))
            + rng.array_normal((tokens, inp)) * 0.1;
        for j in (0..inp).step_by(5) {
            x.column_mut(j).mapv_inplace(|v| v * 8.0);
        }
        x.t().dot(&x).mapv(f64::from)
    }

    #[test]
    fn lorc_is_the_truncated_svd_of_the_error() {
        let mut rng = SeededRng::new(7);
        let w = rng.array_normal((12, 10));
        let w_c = w.mapv(|v| v.round());
        let err = &w - &w_c;
        let f = factorize(err.view(), RankSelection::Rank(3)).unwrap();
        let ad = lorc(w.view(), w_c.view(), 3).unwrap();
        assert_eq!(ad.rank(), 3);
        let e = reconstruction_error(w.view(), ad.apply(w_c.view()).unwrap().view()).unwrap();
        let expect = f.predicted_relative_error()
            * reconstruction_error(w.view(), w_c.view())
                .unwrap()
                .frobenius;
        assert!(
            (e.frobenius - expect).abs() < 1e-4,
            "{} vs {expect}",
            e.frobenius
        );
    }

    #[test]
    fn typed_errors() {
        let w = Array2::<f32>::ones((3, 4));
        let h = Array2::<f64>::eye(4);
        assert!(matches!(
            lorc(w.view(), w.view(), 0),
            Err(Error::RankOutOfRange {
                rank: 0,
                max: 3,
                ..
            })
        ));
        assert!(matches!(
            eora(w.view(), w.view(), h.view(), 4),
            Err(Error::RankOutOfRange {
                rank: 4,
                max: 3,
                ..
            })
        ));
        assert!(matches!(
            lorc(w.view(), w.t(), 1),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            eora(w.view(), w.view(), Array2::<f64>::eye(3).view(), 1),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut bad = w.clone();
        bad[[1, 2]] = f32::NAN;
        assert!(matches!(
            lorc(w.view(), bad.view(), 1),
            Err(Error::NonFinite {
                op: "compressed weight",
                row: 1,
                col: 2,
                ..
            })
        ));
        assert!(matches!(
            eora(w.view(), w.view(), (-h.clone()).view(), 1),
            Err(Error::HessianNotPositiveDefinite { .. })
        ));
        assert!(matches!(
            Eigenspace::new(h.view(), 0.0),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            Adapter::new(Array2::zeros((3, 2)), Array2::zeros((1, 4))),
            Err(Error::ShapeMismatch { .. })
        ));
        let ad = Adapter::new(Array2::zeros((3, 1)), Array2::zeros((1, 4))).unwrap();
        assert!(matches!(ad.apply(w.t()), Err(Error::ShapeMismatch { .. })));
    }

    #[test]
    fn eora_floors_a_rank_deficient_gram_and_still_reconstructs_at_full_rank() {
        let mut rng = SeededRng::new(8);
        // 6 tokens, 10 channels: H has rank 6.
        let h = correlated_gram(&mut rng, 6, 10, 3);
        let space = Eigenspace::from_hessian(h.view()).unwrap();
        assert!(space.floored() >= 4, "{}", space.floored());
        let w = rng.array_normal((8, 10));
        let w_c = w.mapv(|v| (v * 2.0).round() / 2.0);
        let ad = space.compensate(w.view(), w_c.view(), 8).unwrap();
        let e = reconstruction_error(w.view(), ad.apply(w_c.view()).unwrap().view()).unwrap();
        assert!(e.relative < 1e-4, "{}", e.relative);
    }

    #[test]
    fn lora_mapping_keeps_delta() {
        let ad = Adapter::new(array![[1.0f32, 0.0], [0.0, 2.0]], array![[1.0f32], [3.0]]).unwrap();
        assert_eq!(ad.delta(), ad.lora_b().dot(&ad.lora_a()));
        assert_eq!(ad.added_params(), 6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn eora_beats_lorc_on_the_output_error(
            out in 4usize..20,
            inp in 4usize..20,
            rank_frac in 0.0f64..1.0,
            seed in any::<u64>(),
        ) {
            let mut rng = SeededRng::new(seed);
            let h = correlated_gram(&mut rng, 3 * inp, inp, (inp / 3).max(1));
            let w = rng.array_normal((out, inp));
            let w_c = w.mapv(|v| (v * 2.0).round() / 2.0);
            let max = out.min(inp);
            let rank = 1 + ((max - 1) as f64 * rank_frac) as usize;
            let e = |ad: &Adapter| {
                activation_error(w.view(), ad.apply(w_c.view()).unwrap().view(), h.view())
                    .unwrap()
                    .frobenius
            };
            let e_lorc = e(&lorc(w.view(), w_c.view(), rank).unwrap());
            let e_eora = e(&eora(w.view(), w_c.view(), h.view(), rank).unwrap());
            let base = activation_error(w.view(), w_c.view(), h.view()).unwrap().frobenius;
            prop_assert!(e_eora <= e_lorc * (1.0 + 1e-5) + 1e-6 * base, "EoRA {} > LoRC {}", e_eora, e_lorc);
            prop_assert!(e_lorc <= base * (1.0 + 1e-5));
            // Full rank: both reproduce W exactly (up to f32 rounding).
            let full_l = e(&lorc(w.view(), w_c.view(), max).unwrap());
            let full_e = e(&eora(w.view(), w_c.view(), h.view(), max).unwrap());
            prop_assert!(full_l <= 1e-4 * base + 1e-6, "LoRC full rank {}", full_l);
            prop_assert!(full_e <= 1e-4 * base + 1e-6, "EoRA full rank {}", full_e);
        }
    }
}
