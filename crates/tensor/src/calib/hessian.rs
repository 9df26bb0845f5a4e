//! The layer Hessian `H = (2/n) Σ x xᵀ` of GPTQ, SparseGPT and OBS-style methods.

use ndarray::{s, Array2, ArrayView2};

use super::check_activations;
use crate::linalg::{gram_accumulate, mirror_lower};
use crate::{Error, Result};

/// Tokens summed in f32 before the partial sum is added to the f64 total.
///
/// A partial sum of at most this many products of f32 activations carries a
/// relative rounding error of order `F32_CHUNK · 2⁻²⁴ ≈ 1.5e-5` in the worst
/// case (typically far less, `√F32_CHUNK · 2⁻²⁴`), below the damping GPTQ adds,
/// and the f64 total keeps long calibration runs from drifting. The f32 GEMM is
/// about twice as fast as an f64 one on the same vector units.
const F32_CHUNK: usize = 256;

/// Accumulates `Σ x xᵀ` over calibration activations `x` (one row per token) in
/// f64, for the layer Hessian `H = (2/n) Σ x xᵀ` (`[n_in, n_in]`).
///
/// `n` counts tokens (rows). The GPTQ reference divides by the number of
/// sequences instead; the two differ by a constant factor, which changes neither
/// the GPTQ/SparseGPT solutions nor the relative damping applied by
/// [`finalize`](Hessian::finalize).
///
/// Updates run through faer's parallel GEMM on one triangle (`n·n_in²` flops per
/// `n × n_in` batch), in f32 over chunks of 256 tokens that are added to the f64
/// total, and accumulators from different shards or ranks combine
/// with [`merge`](Hessian::merge).
///
/// ```
/// use ndarray::array;
/// use tensorpress_tensor::Hessian;
///
/// let mut h = Hessian::new(2);
/// h.update(array![[1.0f32, 2.0], [3.0, 0.0]].view())?;
/// let f = h.finalize(0.0)?;
/// // (2/2) · (x₁x₁ᵀ + x₂x₂ᵀ)
/// assert_eq!(f.h, array![[10.0, 2.0], [2.0, 4.0]]);
/// assert!(f.dead.is_empty());
/// # Ok::<(), tensorpress_tensor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Hessian {
    /// `Σ x xᵀ`; only the lower triangle is kept up to date.
    lower: Array2<f64>,
    n_samples: u64,
}

/// A finalized Hessian, ready for a Cholesky factorization.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FinalizedHessian {
    /// `(2/n) Σ x xᵀ`, dead diagonal entries set to 1, plus `shift` on the
    /// diagonal. Symmetric.
    pub h: Array2<f64>,
    /// Input channels whose activations were all zero (zero diagonal). GPTQ sets
    /// their diagonal to 1 and zeroes the matching weight columns.
    pub dead: Vec<usize>,
    /// The amount added to every diagonal entry: `damp × mean(diag)`, where the
    /// mean is taken after the dead entries were set to 1 (as GPTQ does).
    pub shift: f64,
}

impl Hessian {
    /// An empty accumulator for a layer with `n_in` input features.
    pub fn new(n_in: usize) -> Self {
        Hessian {
            lower: Array2::zeros((n_in, n_in)),
            n_samples: 0,
        }
    }

    /// Rebuilds an accumulator from a saved `Σ x xᵀ` (symmetric; its lower
    /// triangle is read) and sample count, e.g. after deserializing or an MPI
    /// reduction.
    ///
    /// # Errors
    /// [`Error::NotSquare`]; [`Error::NonFinite`] for NaN/infinite entries;
    /// [`Error::InvalidParts`] for a negative diagonal entry (a Gram matrix has none).
    pub fn from_parts(sum: Array2<f64>, n_samples: u64) -> Result<Self> {
        let (rows, cols) = sum.dim();
        if rows != cols {
            return Err(Error::NotSquare {
                op: "Hessian::from_parts",
                rows,
                cols,
            });
        }
        crate::linalg::check_finite("Hessian::from_parts", &sum.view(), true)?;
        if sum.diag().iter().any(|&d| d < 0.0) {
            return Err(Error::InvalidParts {
                what: "Hessian",
                detail: "negative diagonal entry in Σ x xᵀ",
            });
        }
        Ok(Hessian {
            lower: sum,
            n_samples,
        })
    }

    /// The raw sum `Σ x xᵀ` (full, symmetric), as [`from_parts`](Hessian::from_parts) takes it.
    pub fn raw(&self) -> Array2<f64> {
        let mut full = self.lower.clone();
        mirror_lower(&mut full);
        full
    }

    /// The raw sum and the sample count, without copying.
    pub fn into_parts(self) -> (Array2<f64>, u64) {
        let mut full = self.lower;
        mirror_lower(&mut full);
        (full, self.n_samples)
    }

    /// Number of input features.
    pub fn n_in(&self) -> usize {
        self.lower.nrows()
    }

    /// Number of rows (tokens) accumulated.
    pub fn n_samples(&self) -> u64 {
        self.n_samples
    }

    /// Adds the rows of `x` (`[tokens, n_in]`, any layout).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x` has the wrong width; [`Error::NonFinite`]
    /// naming the (token, channel) of the first NaN or infinity. On error the
    /// accumulator is unchanged.
    pub fn update(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let n = self.n_in();
        if x.ncols() != n {
            return Err(Error::ShapeMismatch {
                op: "Hessian::update",
                lhs: vec![x.nrows(), x.ncols()],
                rhs: vec![x.nrows(), n],
            });
        }
        check_activations("Hessian::update", &x)?;
        let tokens = x.nrows();
        let mut partial = Array2::<f32>::zeros((n, n));
        let mut start = 0;
        while start < tokens {
            let end = (start + F32_CHUNK).min(tokens);
            partial.fill(0.0);
            gram_accumulate(&mut partial, x.slice(s![start..end, ..]), 1.0);
            ndarray::Zip::from(&mut self.lower)
                .and(&partial)
                .for_each(|t, &p| *t += f64::from(p));
            start = end;
        }
        self.n_samples += tokens as u64;
        Ok(())
    }

    /// Adds another accumulator's sums and counts (e.g. from another shard).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the input widths differ.
    pub fn merge(&mut self, other: &Hessian) -> Result<()> {
        if other.n_in() != self.n_in() {
            return Err(Error::ShapeMismatch {
                op: "Hessian::merge",
                lhs: vec![self.n_in(); 2],
                rhs: vec![other.n_in(); 2],
            });
        }
        self.lower += &other.lower;
        self.n_samples += other.n_samples;
        Ok(())
    }

    /// `H = (2/n) Σ x xᵀ` with dead inputs' diagonal set to 1, then
    /// `damp × mean(diag H)` added to the diagonal (GPTQ's `percdamp`; 0.01 is usual).
    ///
    /// # Errors
    /// [`Error::NoSamples`] before any update; [`Error::InvalidDamp`] for a
    /// negative or non-finite `damp`.
    pub fn finalize(&self, damp: f64) -> Result<FinalizedHessian> {
        if !(damp.is_finite() && damp >= 0.0) {
            return Err(Error::InvalidDamp { damp });
        }
        if self.n_samples == 0 {
            return Err(Error::NoSamples {
                op: "Hessian::finalize",
            });
        }
        let n = self.n_in();
        let mut h = self.raw();
        h *= 2.0 / self.n_samples as f64;
        let mut dead = Vec::new();
        for i in 0..n {
            if h[[i, i]] == 0.0 {
                h[[i, i]] = 1.0;
                dead.push(i);
            }
        }
        let mean = if n == 0 {
            0.0
        } else {
            h.diag().sum() / n as f64
        };
        let shift = damp * mean;
        h.diag_mut().mapv_inplace(|d| d + shift);
        Ok(FinalizedHessian { h, dead, shift })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::testutil::max_abs_diff;
    use crate::SeededRng;
    use ndarray::{array, Axis};

    fn naive(x: &Array2<f32>) -> Array2<f64> {
        let x = x.mapv(f64::from);
        x.t().dot(&x)
    }

    #[test]
    fn matches_naive_sum_and_scaling() {
        let mut rng = SeededRng::new(1);
        let x = rng.array_normal((300, 37));
        let mut h = Hessian::new(37);
        h.update(x.view()).unwrap();
        assert_eq!(h.n_samples(), 300);
        // f32 partial sums: relative error within F32_CHUNK · 2⁻²⁴ of the diagonal scale.
        let scale = naive(&x).diag().fold(0.0f64, |m, &d| m.max(d));
        let bound = F32_CHUNK as f64 * f64::from(f32::EPSILON) / 2.0 * scale;
        assert!(max_abs_diff(h.raw().view(), naive(&x).view()) < bound);
        let f = h.finalize(0.0).unwrap();
        let expect = naive(&x) * (2.0 / 300.0);
        assert!(max_abs_diff(f.h.view(), expect.view()) < bound * 2.0 / 300.0);
        assert_eq!(f.h, f.h.t());
    }

    #[test]
    fn split_updates_and_merges_equal_one_update() {
        let mut rng = SeededRng::new(2);
        let x = rng.array_normal((257, 19));
        let mut whole = Hessian::new(19);
        whole.update(x.view()).unwrap();
        let mut a = Hessian::new(19);
        let mut b = Hessian::new(19);
        for (i, part) in x.axis_chunks_iter(Axis(0), 50).enumerate() {
            if i % 2 == 0 {
                a.update(part)
            } else {
                b.update(part)
            }
            .unwrap();
        }
        a.merge(&b).unwrap();
        assert_eq!(a.n_samples(), 257);
        // Partial sums are rounded to f32 at different points: agreement to f32 precision.
        assert!(max_abs_diff(a.raw().view(), whole.raw().view()) < 1e-3);
        // Non-standard layouts are read in place.
        let xf = x.t().to_owned();
        let mut t = Hessian::new(19);
        t.update(xf.t()).unwrap();
        assert!(max_abs_diff(t.raw().view(), whole.raw().view()) < 1e-3);
    }

    #[test]
    fn dead_inputs_and_damping_follow_gptq() {
        let x = array![[1.0f32, 0.0, 2.0], [1.0, 0.0, 0.0]];
        let mut h = Hessian::new(3);
        h.update(x.view()).unwrap();
        let f = h.finalize(0.1).unwrap();
        assert_eq!(f.dead, vec![1]);
        // diag before damping: [2, 1 (dead), 4], mean 7/3.
        let shift = 0.1 * 7.0 / 3.0;
        assert!((f.shift - shift).abs() < 1e-15);
        assert!((f.h[[0, 0]] - (2.0 + shift)).abs() < 1e-12);
        assert!((f.h[[1, 1]] - (1.0 + shift)).abs() < 1e-12);
        assert!((f.h[[2, 0]] - 2.0).abs() < 1e-12);
        assert_eq!(f.h[[1, 0]], 0.0);
    }

    #[test]
    fn errors_are_typed_and_leave_state_alone() {
        let mut h = Hessian::new(3);
        assert!(matches!(h.finalize(0.01), Err(Error::NoSamples { .. })));
        let bad = array![[1.0f32, 2.0, 3.0], [0.0, f32::NEG_INFINITY, 1.0]];
        let err = h.update(bad.view()).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { row: 1, col: 1, value, .. } if value == f64::NEG_INFINITY)
        );
        assert_eq!(h.n_samples(), 0);
        assert!(h.raw().iter().all(|&v| v == 0.0));
        let wide = Array2::<f32>::zeros((2, 4));
        assert!(matches!(
            h.update(wide.view()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            h.merge(&Hessian::new(4)),
            Err(Error::ShapeMismatch { .. })
        ));
        h.update(array![[1.0f32, 1.0, 1.0]].view()).unwrap();
        assert!(matches!(h.finalize(-0.1), Err(Error::InvalidDamp { .. })));
        assert!(matches!(
            h.finalize(f64::NAN),
            Err(Error::InvalidDamp { .. })
        ));
    }

    #[test]
    fn parts_round_trip() {
        let mut rng = SeededRng::new(3);
        let mut h = Hessian::new(8);
        h.update(rng.array_normal((20, 8)).view()).unwrap();
        let (sum, n) = h.clone().into_parts();
        let back = Hessian::from_parts(sum.clone(), n).unwrap();
        assert_eq!(back.raw(), h.raw());
        assert_eq!(back.n_samples(), 20);
        let mut neg = sum.clone();
        neg[[2, 2]] = -1.0;
        assert!(matches!(
            Hessian::from_parts(neg, n),
            Err(Error::InvalidParts { .. })
        ));
        assert!(matches!(
            Hessian::from_parts(Array2::zeros((2, 3)), 1),
            Err(Error::NotSquare { .. })
        ));
    }

    #[test]
    fn finalized_hessian_factors() {
        let mut rng = SeededRng::new(4);
        let mut h = Hessian::new(64);
        // Fewer tokens than inputs: singular without damping.
        h.update(rng.array_normal((32, 64)).view()).unwrap();
        let f = h.finalize(0.01).unwrap();
        let u = crate::linalg::cholesky_inverse_upper(f.h.view()).unwrap();
        let eye = Array2::<f64>::eye(64);
        assert!(max_abs_diff(f.h.dot(&u.t().dot(&u)).view(), eye.view()) < 1e-6);
    }
}
