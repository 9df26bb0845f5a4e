//! Training-side helpers for activation sparsity: the extra loss terms and
//! schedules a training loop adds to its objective to make activations
//! sparse, each with its forward value and its gradient with respect to the
//! activations (a subgradient where the function has a kink), so an autodiff
//! graph or a hand-written backward pass can take them as a leaf.
//!
//! - [`DensityLoss`]: DEFT's differentiable activation density,
//!   `(1/N) Σ a²/(a² + ε)`, and [`activation_density`], the exact density
//!   (fraction of nonzero entries) it approximates.
//!
//! Activations are `[tokens, features]` in f32; sums are taken in f64.
//! Every function that takes a mean or a fraction refuses empty inputs
//! ([`Error::EmptyInput`]), and every one refuses NaN or infinite
//! activations ([`Error::NonFinite`]).
//!
//! ```
//! use ndarray::array;
//! use tensorpress_sparsity::training::{
//!     activation_density, DensityLoss,
//! };
//!
//! // FFN intermediate activations of two tokens.
//! let acts = array![[0.0f32, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 0.0]];
//! assert_eq!(activation_density(acts.view())?, 0.375);
//!
//! // DEFT: the surrogate lies just below the exact density, and its gradient
//! // pulls every nonzero activation toward zero.
//! let (density, grad) = DensityLoss::new(1e-4)?.value_and_grad(acts.view())?;
//! assert!(density > 0.374 && density < 0.375);
//! assert!(grad[[1, 0]] > 0.0 && grad[[0, 3]] < 0.0 && grad[[0, 0]] == 0.0);
//! # Ok::<(), tensorpress_sparsity::Error>(())
//! ```

use ndarray::{Array2, ArrayView2};

use crate::magnitude::check_finite;
use crate::{Error, Result};

/// Refuses an empty or non-finite activation matrix.
fn check_acts(op: &'static str, acts: &ArrayView2<'_, f32>) -> Result<()> {
    if acts.is_empty() {
        return Err(Error::EmptyInput {
            op,
            shape: acts.shape().to_vec(),
        });
    }
    check_finite(acts)
}

// ---------------------------------------------------------------------------
// DEFT
// ---------------------------------------------------------------------------

/// The fraction of nonzero entries of `acts`, the activation density that
/// DEFT reports and [`DensityLoss`] approximates (one minus the activation
/// sparsity). Not differentiable: its gradient is zero almost everywhere.
///
/// # Errors
/// [`Error::EmptyInput`], [`Error::NonFinite`].
pub fn activation_density(acts: ArrayView2<'_, f32>) -> Result<f64> {
    check_acts("activation_density", &acts)?;
    let nonzero = acts.iter().filter(|&&a| a != 0.0).count();
    Ok(nonzero as f64 / acts.len() as f64)
}

/// DEFT's density loss (Runwal, Pedapati & Chen, "From PEFT to DEFT:
/// Parameter Efficient Finetuning for Reducing Activation Density in
/// Transformers", AAAI 2024, arXiv:2402.01911): the activation density of
/// the MLP intermediate outputs with the count of nonzeros `‖a‖₀` replaced by
/// the smooth `Σ a²/(a² + ε)`,
///
/// `L(a) = (1/N) Σᵢ aᵢ² / (aᵢ² + ε)`,  `∂L/∂aᵢ = (1/N) · 2 aᵢ ε / (aᵢ² + ε)²`,
///
/// over the `N` entries of one layer's `[tokens, d_ff]` activations. This is
/// the form of the authors' code (`compute_l0_penalty` in IBM/DEFT, with
/// `ε = 1e-7` by default): each entry counts `a²/(a² + ε)`, which is 0 at
/// `a = 0` and tends to 1 for `|a| ≫ √ε`, so the loss lies below the exact
/// density [`activation_density`] and tends to it as `ε → 0`. DEFT averages
/// it over the layers and adds it to the task loss with a weight (1.0 in
/// their GLUE runs); the weight is the caller's.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::training::{activation_density, DensityLoss};
///
/// let acts = array![[0.0f32, 3.0], [0.0, -0.5]];
/// let deft = DensityLoss::default(); // ε = 1e-7, as DEFT
/// assert!((deft.value(acts.view())? - 0.5).abs() < 1e-6);
/// assert_eq!(activation_density(acts.view())?, 0.5);
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DensityLoss {
    eps: f64,
}

impl Default for DensityLoss {
    /// [`DensityLoss::DEFT_EPS`].
    fn default() -> Self {
        DensityLoss {
            eps: Self::DEFT_EPS,
        }
    }
}

impl DensityLoss {
    /// DEFT's default `ε` (`--eps 1e-07` in the authors' scripts).
    pub const DEFT_EPS: f64 = 1e-7;

    /// A density loss with smoothing `eps`: entries with `|a| ≫ √eps` count
    /// as (almost) 1, entries with `|a| ≪ √eps` as (almost) 0.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `eps` is finite and `> 0`.
    pub fn new(eps: f64) -> Result<Self> {
        if eps.is_finite() && eps > 0.0 {
            Ok(DensityLoss { eps })
        } else {
            Err(Error::InvalidParameter {
                name: "DEFT ε",
                value: eps,
                expected: "finite and > 0",
            })
        }
    }

    /// The smoothing `ε`.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `(1/N) Σ a²/(a² + ε)`.
    ///
    /// # Errors
    /// [`Error::EmptyInput`], [`Error::NonFinite`].
    pub fn value(&self, acts: ArrayView2<'_, f32>) -> Result<f32> {
        check_acts("DensityLoss::value", &acts)?;
        Ok(self.value_f64(acts) as f32)
    }

    /// `∂L/∂a = 2 a ε / (N (a² + ε)²)`, the shape of `acts`.
    ///
    /// # Errors
    /// [`Error::EmptyInput`], [`Error::NonFinite`].
    pub fn grad(&self, acts: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_acts("DensityLoss::grad", &acts)?;
        let (eps, n) = (self.eps, acts.len() as f64);
        Ok(acts.mapv(|a| {
            let a = f64::from(a);
            let s = a * a + eps;
            (2.0 * a * eps / (s * s * n)) as f32
        }))
    }

    /// [`value`](Self::value) and [`grad`](Self::grad) in one call.
    ///
    /// # Errors
    /// [`Error::EmptyInput`], [`Error::NonFinite`].
    pub fn value_and_grad(&self, acts: ArrayView2<'_, f32>) -> Result<(f32, Array2<f32>)> {
        let grad = self.grad(acts)?;
        Ok((self.value_f64(acts) as f32, grad))
    }

    fn value_f64(&self, acts: ArrayView2<'_, f32>) -> f64 {
        let sum: f64 = acts
            .iter()
            .map(|&a| {
                let a2 = f64::from(a) * f64::from(a);
                a2 / (a2 + self.eps)
            })
            .sum();
        sum / acts.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    /// Central differences of `f` at every entry of `x`: the step is taken in
    /// f32 and measured exactly (`x + h` and `x − h` as f64), `f` evaluated
    /// in f64.
    fn central_diff(
        x: &Array2<f32>,
        h: f32,
        f: impl Fn(ArrayView2<'_, f32>) -> f64,
    ) -> Array2<f64> {
        let mut xp = x.clone();
        Array2::from_shape_fn(x.dim(), |ij| {
            let v = x[ij];
            let (hi, lo) = (v + h, v - h);
            xp[ij] = hi;
            let fp = f(xp.view());
            xp[ij] = lo;
            let fm = f(xp.view());
            xp[ij] = v;
            (fp - fm) / (f64::from(hi) - f64::from(lo))
        })
    }

    #[track_caller]
    fn assert_grad_close(grad: &Array2<f32>, fd: &Array2<f64>, tol: f64) {
        for ((ij, &g), &n) in grad.indexed_iter().zip(fd.iter()) {
            let err = (f64::from(g) - n).abs();
            assert!(
                err <= tol * (1.0 + n.abs()),
                "at {ij:?}: analytic {g}, finite differences {n}"
            );
        }
    }

    /// ReLU'd normals: about half the entries exactly zero.
    fn relu_acts(seed: u64, shape: (usize, usize)) -> Array2<f32> {
        SeededRng::new(seed)
            .array_normal(shape)
            .mapv(|v| v.max(0.0))
    }

    #[test]
    fn deft_gradient_matches_finite_differences() {
        // ε = 0.05 so the surrogate's curvature (scale √ε ≈ 0.22) is resolved by h.
        let deft = DensityLoss::new(0.05).unwrap();
        let mut acts = SeededRng::new(7).array_normal((4, 6));
        acts[[1, 2]] = 0.0;
        acts[[3, 5]] = 0.0;
        let (value, grad) = deft.value_and_grad(acts.view()).unwrap();
        assert_eq!(value, deft.value(acts.view()).unwrap());
        assert_eq!(grad, deft.grad(acts.view()).unwrap());
        let fd = central_diff(&acts, 1.0 / 4096.0, |a| deft.value_f64(a));
        assert_grad_close(&grad, &fd, 1e-5);
        assert_eq!(grad[[1, 2]], 0.0);
        // The gradient pulls every nonzero entry toward zero.
        assert!(acts.iter().zip(&grad).all(|(&a, &g)| a * g >= 0.0));
    }

    #[test]
    fn deft_surrogate_approaches_the_exact_density_as_eps_shrinks() {
        let acts = relu_acts(11, (16, 64));
        let exact = activation_density(acts.view()).unwrap();
        assert!(exact > 0.3 && exact < 0.7, "{exact}");
        // This draw has a nonzero entry of 2.4e-6: it counts as (almost) 0
        // until ε falls well below its square, 5.7e-12.
        let min_sq = acts
            .iter()
            .filter(|&&a| a != 0.0)
            .map(|&a| f64::from(a).powi(2))
            .fold(f64::INFINITY, f64::min);
        let mut last_gap = f64::INFINITY;
        for eps in [1e-1, 1e-2, 1e-4, 1e-6, 1e-9, 1e-12, 1e-15] {
            let deft = DensityLoss::new(eps).unwrap();
            let surrogate = deft.value_f64(acts.view());
            assert_eq!(deft.value(acts.view()).unwrap(), surrogate as f32);
            let gap = exact - surrogate;
            assert!(
                gap > 0.0 && gap < last_gap,
                "ε = {eps}: gap {gap}, before {last_gap}"
            );
            assert!(gap <= exact * eps / min_sq, "ε = {eps}: gap {gap}");
            last_gap = gap;
        }
        assert!(last_gap < 1e-5, "{last_gap}");
        // At ε = 1e-1 the surrogate is far from the count.
        let coarse = DensityLoss::new(1e-1).unwrap().value_f64(acts.view());
        assert!(exact - coarse > 0.05);
    }

    #[test]
    fn deft_validation() {
        for eps in [0.0, -1e-7, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                DensityLoss::new(eps),
                Err(Error::InvalidParameter {
                    name: "DEFT ε", ..
                })
            ));
        }
        let deft = DensityLoss::default();
        assert_eq!(deft.eps(), 1e-7);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let a = array![[1.0f32, 0.0], [0.0, bad]];
            assert!(matches!(
                deft.value(a.view()),
                Err(Error::NonFinite { row: 1, col: 1 })
            ));
            assert!(matches!(
                deft.grad(a.view()),
                Err(Error::NonFinite { row: 1, col: 1 })
            ));
            assert!(matches!(
                activation_density(a.view()),
                Err(Error::NonFinite { .. })
            ));
        }
        let empty = Array2::<f32>::zeros((0, 4));
        assert!(matches!(
            deft.value_and_grad(empty.view()),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            activation_density(empty.view()),
            Err(Error::EmptyInput { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Each entry counts a²/(a²+ε) < 1 (0 at a = 0), so the surrogate is
        /// below the exact density by at most ε / min(a²) per nonzero entry.
        #[test]
        fn deft_surrogate_is_below_the_density_within_the_bound(
            rows in 1usize..6, cols in 1usize..20, eps_exp in -9i32..-1, seed in any::<u64>(),
        ) {
            let acts = relu_acts(seed, (rows, cols));
            let eps = 10f64.powi(eps_exp);
            let exact = activation_density(acts.view()).unwrap();
            let surrogate = DensityLoss::new(eps).unwrap().value_f64(acts.view());
            let min_sq = acts.iter().filter(|&&a| a != 0.0).map(|&a| f64::from(a).powi(2)).fold(f64::INFINITY, f64::min);
            prop_assert!(surrogate >= 0.0 && surrogate <= exact + 1e-12);
            if exact > 0.0 {
                prop_assert!(exact - surrogate <= exact * eps / min_sq + 1e-12);
            } else {
                prop_assert_eq!(surrogate, 0.0);
            }
        }
    }
}
