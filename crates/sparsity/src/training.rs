//! Training-side helpers for activation sparsity: the extra loss terms and
//! schedules a training loop adds to its objective to make activations
//! sparse, each with its forward value and its gradient with respect to the
//! activations (a subgradient where the function has a kink), so an autodiff
//! graph or a hand-written backward pass can take them as a leaf.
//!
//! - [`DensityLoss`]: DEFT's differentiable activation density,
//!   `(1/N) Σ a²/(a² + ε)`, and [`activation_density`], the exact density
//!   (fraction of nonzero entries) it approximates;
//! - [`ProSparseSchedule`], [`l1_penalty`] and [`FatRelu`]: ProSparse's L1
//!   penalty on the FFN intermediate activations with a factor that rises
//!   along half sine waves, stage by stage, and its shifted-threshold ReLU;
//! - [`DeltaEncoder`], [`DeltaDecoder`], [`temporal_sparsity`] and
//!   [`delta_l1`]: temporal sparsity, activations sent as their changes
//!   between time steps, and the L1 penalty on those changes.
//!
//! Activations are `[tokens, features]` (`[time, features]` for the delta
//! helpers) in f32; sums are taken in f64. Every function that takes a mean
//! or a fraction refuses empty inputs ([`Error::EmptyInput`]), and every one
//! refuses NaN or infinite activations ([`Error::NonFinite`]).
//!
//! ```
//! use ndarray::array;
//! use tensorpress_sparsity::training::{
//!     activation_density, l1_penalty, temporal_sparsity, DeltaDecoder, DeltaEncoder,
//!     DensityLoss, L1Reduction, ProSparseSchedule,
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
//!
//! // ProSparse: a constant warmup at 5e-3 for 1,000 steps, then a half sine
//! // wave up to 5e-2 over 4,000 steps (halfway up at step 3,000).
//! let schedule = ProSparseSchedule::new(&[(1000, 5e-3), (4000, 5e-2)])?;
//! assert_eq!(schedule.lambda_at(500), 5e-3);
//! assert!((schedule.lambda_at(3000) - 0.0275).abs() < 1e-12);
//! assert_eq!(schedule.lambda_at(5000), 5e-2);
//! // λ·‖a‖₁ per token, averaged over the two tokens: 0.05 · (3 + 0.5) / 2.
//! let (penalty, grad) = l1_penalty(acts.view(), 5e-2, L1Reduction::RowSum)?;
//! assert!((penalty - 0.0875).abs() < 1e-7);
//! assert_eq!(grad[[0, 3]], -0.025);
//!
//! // Deltas of three time steps; changes of at most 0.1 are not sent.
//! let x = array![[1.0f32, 0.0], [1.05, 0.0], [1.5, -2.0]];
//! let deltas = DeltaEncoder::new(2, 0.1)?.encode(x.view())?;
//! assert_eq!(deltas, array![[1.0, 0.0], [0.0, 0.0], [0.5, -2.0]]);
//! assert_eq!(temporal_sparsity(deltas.view())?, 0.5);
//! // The receiver holds 1.0 at step 1 (the 0.05 change was not sent).
//! let decoded = DeltaDecoder::new(2).decode(deltas.view())?;
//! assert_eq!(decoded, array![[1.0, 0.0], [1.0, 0.0], [1.5, -2.0]]);
//! # Ok::<(), tensorpress_sparsity::Error>(())
//! ```

use std::f64::consts::{FRAC_PI_2, PI};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};

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

/// Refuses a regularization factor (or threshold) that is not finite and `>= 0`.
fn check_non_negative(name: &'static str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            name,
            value,
            expected: "finite and >= 0",
        })
    }
}

/// `sign(a)` with `sign(0) = 0`: the subgradient of `|a|` that leaves exact
/// zeros where they are.
fn sign0(a: f32) -> f64 {
    if a > 0.0 {
        1.0
    } else if a < 0.0 {
        -1.0
    } else {
        0.0
    }
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

// ---------------------------------------------------------------------------
// ProSparse
// ---------------------------------------------------------------------------

/// ProSparse's progressive schedule of the L1 factor λ (Song et al.,
/// "ProSparse: Introducing and Enhancing Intrinsic Activation Sparsity within
/// Large Language Models", 2024, arXiv:2402.13516, Algorithm 1 of Appendix B).
///
/// Stages `(steps, λᵢ)` with accumulated ends `T₁ < T₂ < … < T_S`:
/// the first is the warmup stage, with the constant factor `λ₁` for
/// `t ≤ T₁`; each later stage `i` raises the factor from `λᵢ₋₁` to `λᵢ`
/// along half a sine wave, trough to peak,
///
/// `η = ½ [sin(−π/2 + π (t − Tᵢ₋₁)/(Tᵢ − Tᵢ₋₁)) + 1]`,  `λ(t) = λᵢ₋₁ + η (λᵢ − λᵢ₋₁)`,
///
/// for `Tᵢ₋₁ < t ≤ Tᵢ`, so the factor starts and ends every stage with zero
/// slope. Two stages with the same target make a constant stage (the paper
/// uses them for stability). After `T_S` the factor stays at `λ_S` (ProSparse
/// trains its decay and SFT stages with constant factors). Steps `t` count
/// from 1, as in Algorithm 1; `t = 0` is read as `t = 1`.
///
/// The paper precedes the warmup with the activation-substitution stage
/// (ReLU in place of SiLU, λ = 0): [`with_substitution_steps`](Self::with_substitution_steps).
/// ProSparse-7B (Table 6), counted from its warmup:
///
/// ```
/// use tensorpress_sparsity::training::ProSparseSchedule;
///
/// let s = ProSparseSchedule::new(&[(1000, 5e-3), (4000, 5e-2), (2000, 5e-2), (4000, 2e-1), (500, 2e-1)])?
///     .with_substitution_steps(5000);
/// assert_eq!(s.lambda_at(5000), 0.0); // still the ReLU substitution
/// assert_eq!(s.lambda_at(5001), 5e-3); // warmup
/// assert_eq!(s.lambda_at(10_000), 5e-2); // T₂ in the paper's accumulated steps
/// assert_eq!(s.lambda_at(11_000), 5e-2); // a constant stage
/// assert_eq!(s.total_steps(), 16_500);
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProSparseSchedule {
    /// Accumulated end step `Tᵢ` of every stage (strictly increasing).
    ends: Vec<u64>,
    /// Target factor `λᵢ` of every stage (non-decreasing).
    lambdas: Vec<f64>,
    /// Steps with λ = 0 before the warmup stage.
    substitution: u64,
}

impl ProSparseSchedule {
    /// A schedule from its stages `(steps, target λ)`, the first one the
    /// constant warmup.
    ///
    /// # Errors
    /// [`Error::EmptySchedule`] for no stages; [`Error::InvalidStage`] for a
    /// stage of 0 steps or a factor that is negative, NaN or infinite;
    /// [`Error::DecreasingSchedule`] when a target is below the one before.
    pub fn new(stages: &[(u64, f64)]) -> Result<Self> {
        if stages.is_empty() {
            return Err(Error::EmptySchedule);
        }
        let mut ends = Vec::with_capacity(stages.len());
        let mut lambdas = Vec::with_capacity(stages.len());
        let mut end = 0u64;
        for (stage, &(steps, lambda)) in stages.iter().enumerate() {
            if steps == 0 || !lambda.is_finite() || lambda < 0.0 {
                return Err(Error::InvalidStage {
                    stage,
                    steps,
                    lambda,
                });
            }
            if let Some(&previous) = lambdas.last() {
                if lambda < previous {
                    return Err(Error::DecreasingSchedule {
                        stage,
                        previous,
                        lambda,
                    });
                }
            }
            end = end.saturating_add(steps);
            ends.push(end);
            lambdas.push(lambda);
        }
        Ok(ProSparseSchedule {
            ends,
            lambdas,
            substitution: 0,
        })
    }

    /// The same schedule after `steps` steps of activation substitution with
    /// λ = 0 (ProSparse's first step; stage 0 of its Tables 6 and 7).
    pub fn with_substitution_steps(mut self, steps: u64) -> Self {
        self.substitution = steps;
        self
    }

    /// The factor λ at training step `step` (counted from 1).
    pub fn lambda_at(&self, step: u64) -> f64 {
        let t = step.max(1);
        if t <= self.substitution {
            return 0.0;
        }
        let t = t - self.substitution;
        let i = self.ends.partition_point(|&end| end < t);
        if i == 0 {
            return self.lambdas[0];
        }
        if i == self.ends.len() {
            return self.lambdas[i - 1];
        }
        let (lo, hi) = (self.lambdas[i - 1], self.lambdas[i]);
        if t == self.ends[i] {
            return hi;
        }
        let (start, end) = (self.ends[i - 1], self.ends[i]);
        let u = (t - start) as f64 / (end - start) as f64;
        let eta = 0.5 * ((-FRAC_PI_2 + PI * u).sin() + 1.0);
        (lo + eta * (hi - lo)).clamp(lo, hi)
    }

    /// The step at which the last stage ends (substitution steps included);
    /// the factor is constant from there on.
    pub fn total_steps(&self) -> u64 {
        self.substitution
            .saturating_add(*self.ends.last().expect("a schedule has stages"))
    }
}

/// How [`l1_penalty`] normalizes `Σ|a|` over a `[tokens, d_ff]` matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum L1Reduction {
    /// `‖a‖₁` of every token (row), averaged over the tokens: ProSparse's
    /// Eq. 2, `λ‖x₁‖₁` for the intermediate output `x₁` of one token,
    /// averaged over the batch as the language-modeling loss is. The
    /// factors of the paper's tables (5e-3 to 0.2) are for this scale; the
    /// paper does not spell out the batch reduction.
    #[default]
    RowSum,
    /// The mean of `|a|` over all entries: [`RowSum`](Self::RowSum) divided
    /// by `d_ff`.
    Mean,
}

/// ProSparse's sparsity regularization of one FFN layer (Song et al., 2024,
/// Eq. 2): the value `λ · Σ|a| / D` and its subgradient `λ · sign(a) / D`
/// (0 at `a = 0`, so exact zeros of a ReLU output get no push), with
/// `D` the number of rows ([`L1Reduction::RowSum`]) or of entries
/// ([`L1Reduction::Mean`]). The model's total is the sum over its FFN
/// layers; `λ` comes from a [`ProSparseSchedule`].
///
/// # Errors
/// [`Error::InvalidParameter`] for a negative or non-finite `lambda`;
/// [`Error::EmptyInput`], [`Error::NonFinite`].
pub fn l1_penalty(
    acts: ArrayView2<'_, f32>,
    lambda: f64,
    reduction: L1Reduction,
) -> Result<(f32, Array2<f32>)> {
    check_non_negative("ProSparse λ", lambda)?;
    check_acts("l1_penalty", &acts)?;
    let scale = lambda / l1_denominator(&acts, reduction);
    let grad = acts.mapv(|a| (scale * sign0(a)) as f32);
    Ok((l1_value(acts, lambda, reduction) as f32, grad))
}

fn l1_denominator(acts: &ArrayView2<'_, f32>, reduction: L1Reduction) -> f64 {
    match reduction {
        L1Reduction::RowSum => acts.nrows() as f64,
        L1Reduction::Mean => acts.len() as f64,
    }
}

fn l1_value(acts: ArrayView2<'_, f32>, lambda: f64, reduction: L1Reduction) -> f64 {
    let sum: f64 = acts.iter().map(|&a| f64::from(a).abs()).sum();
    lambda * sum / l1_denominator(&acts, reduction)
}

/// FATReLU, ProSparse's activation threshold shifting (Song et al., 2024,
/// Eq. 3, after Kurtz et al., 2020): `σ(x) = x` for `x ≥ t`, else 0. It zeroes
/// the small positive activations a ReLU keeps; ProSparse uses `t = 0.01`
/// ([`FatRelu::PROSPARSE_THRESHOLD`]) after the regularization stages. With
/// `t = 0` it is ReLU.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sparsity::training::FatRelu;
///
/// let act = FatRelu::new(0.5)?;
/// let x = array![[-1.0f32, 0.2, 0.5, 2.0]];
/// assert_eq!(act.forward(x.view())?, array![[0.0, 0.0, 0.5, 2.0]]);
/// let g = act.backward(x.view(), array![[1.0f32, 1.0, 1.0, 3.0]].view())?;
/// assert_eq!(g, array![[0.0, 0.0, 1.0, 3.0]]);
/// # Ok::<(), tensorpress_sparsity::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FatRelu {
    threshold: f32,
}

impl FatRelu {
    /// The threshold of ProSparse's released models (Appendix O).
    pub const PROSPARSE_THRESHOLD: f32 = 0.01;

    /// FATReLU with threshold `threshold`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless the threshold is finite and `>= 0`.
    pub fn new(threshold: f32) -> Result<Self> {
        check_non_negative("FATReLU threshold", f64::from(threshold))?;
        Ok(FatRelu { threshold })
    }

    /// The threshold `t`.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// `x` where `x ≥ t`, else 0.
    ///
    /// # Errors
    /// [`Error::NonFinite`].
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_finite(&x)?;
        Ok(x.mapv(|v| if v >= self.threshold { v } else { 0.0 }))
    }

    /// The gradient with respect to `x` given the gradient `grad_out` with
    /// respect to the output: `grad_out` where `x ≥ t`, else 0 (the function
    /// jumps at `x = t` for `t > 0`; the kept side's slope is taken there, as
    /// the forward keeps `x = t`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::NonFinite`].
    pub fn backward(
        &self,
        x: ArrayView2<'_, f32>,
        grad_out: ArrayView2<'_, f32>,
    ) -> Result<Array2<f32>> {
        if x.dim() != grad_out.dim() {
            return Err(Error::ShapeMismatch {
                op: "FatRelu::backward",
                lhs: x.shape().to_vec(),
                rhs: grad_out.shape().to_vec(),
            });
        }
        check_finite(&x)?;
        check_finite(&grad_out)?;
        Ok(Zip::from(&x)
            .and(&grad_out)
            .map_collect(|&v, &g| if v >= self.threshold { g } else { 0.0 }))
    }
}

// ---------------------------------------------------------------------------
// Delta (temporal) sparsity
// ---------------------------------------------------------------------------

/// Sends activations as their changes between time steps, the delta
/// inference of Yousefzadeh & Sifalakis ("Training for temporal sparsity in
/// deep neural networks, application in video processing", 2021,
/// arXiv:2107.07305: the Delta Activation Layer) with the threshold and
/// reference state of delta networks (Neil et al., "Delta Networks for
/// Optimized Recurrent Network Computation", ICML 2017).
///
/// The encoder keeps the reference `r` the receiver holds (zeros at first).
/// For each feature at step `t`, `d = x_t − r`; when `|d| > threshold` it
/// sends `d` and updates `r ← r + d`, else it sends 0 and keeps `r`. So
/// small changes accumulate until they cross the threshold, `|x_t − r_t|`
/// never exceeds the threshold (plus f32 rounding), and a [`DeltaDecoder`]
/// that adds up the deltas holds exactly (bit for bit) the encoder's `r`.
/// With threshold 0 it reconstructs `x` up to f32 rounding. The first step
/// sends the whole activation (the change from zeros); the Delta Activation
/// Layer's loss leaves it out, as [`delta_l1`] does.
///
/// The paper's layer, in training, first quantizes activations to a grid
/// (with a learned step) and sends the exact changes of the quantized
/// values; this encoder thresholds instead and has no quantizer.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaEncoder {
    threshold: f32,
    reference: Array1<f32>,
}

impl DeltaEncoder {
    /// An encoder of `features` activations per step, with all-zero
    /// reference.
    ///
    /// # Errors
    /// [`Error::EmptyInput`] for `features == 0`; [`Error::InvalidParameter`]
    /// unless the threshold is finite and `>= 0`.
    pub fn new(features: usize, threshold: f32) -> Result<Self> {
        if features == 0 {
            return Err(Error::EmptyInput {
                op: "DeltaEncoder::new",
                shape: vec![0],
            });
        }
        check_non_negative("delta threshold", f64::from(threshold))?;
        Ok(DeltaEncoder {
            threshold,
            reference: Array1::zeros(features),
        })
    }

    /// The threshold: changes of at most this size are not sent.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The reference the receiver holds after the steps encoded so far.
    pub fn reference(&self) -> ArrayView1<'_, f32> {
        self.reference.view()
    }

    /// Back to the all-zero reference (a new sequence).
    pub fn reset(&mut self) {
        self.reference.fill(0.0);
    }

    /// Encodes one time step `x` (`[features]`), updating the reference.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::NonFinite`] (row 0); the state is
    /// unchanged on error.
    pub fn step(&mut self, x: ArrayView1<'_, f32>) -> Result<Array1<f32>> {
        self.encode(x.insert_axis(Axis(0)))
            .map(|d| d.index_axis_move(Axis(0), 0))
    }

    /// Encodes the steps `xs` (`[time, features]`) after those encoded so
    /// far, returning the deltas (`[time, features]`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::NonFinite`]; the state is
    /// unchanged on error.
    pub fn encode(&mut self, xs: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_features("DeltaEncoder::encode", self.reference.len(), &xs)?;
        check_finite(&xs)?;
        let mut deltas = Array2::zeros(xs.dim());
        for (x, mut d) in xs.outer_iter().zip(deltas.outer_iter_mut()) {
            Zip::from(&mut self.reference)
                .and(&x)
                .and(&mut d)
                .for_each(|r, &x, d| {
                    let change = x - *r;
                    if change.abs() > self.threshold {
                        *r += change;
                        *d = change;
                    }
                });
        }
        Ok(deltas)
    }
}

/// Adds up deltas from a [`DeltaEncoder`]: its state after each step is the
/// encoder's reference, bit for bit (both compute `r + d` in f32).
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaDecoder {
    state: Array1<f32>,
}

impl DeltaDecoder {
    /// A decoder of `features` activations per step, starting from zeros.
    pub fn new(features: usize) -> Self {
        DeltaDecoder {
            state: Array1::zeros(features),
        }
    }

    /// The activations reconstructed so far.
    pub fn state(&self) -> ArrayView1<'_, f32> {
        self.state.view()
    }

    /// Back to zeros (a new sequence).
    pub fn reset(&mut self) {
        self.state.fill(0.0);
    }

    /// Adds the deltas `deltas` (`[time, features]`) step by step, returning
    /// the state after each (`[time, features]`).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::NonFinite`]; the state is
    /// unchanged on error.
    pub fn decode(&mut self, deltas: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        check_features("DeltaDecoder::decode", self.state.len(), &deltas)?;
        check_finite(&deltas)?;
        let mut out = Array2::zeros(deltas.dim());
        for (d, mut o) in deltas.outer_iter().zip(out.outer_iter_mut()) {
            self.state += &d;
            o.assign(&self.state);
        }
        Ok(out)
    }
}

fn check_features(op: &'static str, features: usize, xs: &ArrayView2<'_, f32>) -> Result<()> {
    if xs.ncols() == features {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            lhs: vec![xs.nrows(), features],
            rhs: xs.shape().to_vec(),
        })
    }
}

/// The temporal sparsity of `deltas`: the fraction of entries that are
/// exactly zero (changes not sent). Pass `deltas.slice(s![1.., ..])` to leave
/// out the first step, as the Delta Activation Layer's statistics do.
///
/// # Errors
/// [`Error::EmptyInput`], [`Error::NonFinite`].
pub fn temporal_sparsity(deltas: ArrayView2<'_, f32>) -> Result<f64> {
    check_acts("temporal_sparsity", &deltas)?;
    let zeros = deltas.iter().filter(|&&d| d == 0.0).count();
    Ok(zeros as f64 / deltas.len() as f64)
}

/// The Delta Activation Layer's sparsity loss (Yousefzadeh & Sifalakis,
/// 2021): λ times the mean absolute change between consecutive steps of
/// `xs` (`[time, features]`),
///
/// `L = λ / ((T − 1) F) · Σ_{t ≥ 1} Σ_f |x[t, f] − x[t − 1, f]|`,
///
/// and its subgradient with respect to `xs`,
/// `∂L/∂x[t] = λ / ((T − 1) F) · (sign(x[t] − x[t − 1]) − sign(x[t + 1] − x[t]))`
/// (terms outside `0..T` dropped, `sign(0) = 0`). These are the deltas a
/// [`DeltaEncoder`] with threshold 0 sends after the first step; the layer's
/// authors normalize by the number of deltas the same way. (Their layer
/// takes the changes of quantized activations; a caller with a quantizer
/// passes its output here and its straight-through gradient on.)
///
/// # Errors
/// [`Error::InvalidParameter`] for a negative or non-finite `lambda`;
/// [`Error::TooFewSteps`] for fewer than 2 steps; [`Error::EmptyInput`] for
/// no features; [`Error::NonFinite`].
pub fn delta_l1(xs: ArrayView2<'_, f32>, lambda: f64) -> Result<(f32, Array2<f32>)> {
    check_non_negative("delta L1 λ", lambda)?;
    let (steps, features) = xs.dim();
    if steps < 2 {
        return Err(Error::TooFewSteps {
            op: "delta_l1",
            steps,
            needed: 2,
        });
    }
    check_acts("delta_l1", &xs)?;
    let scale = lambda / ((steps - 1) * features) as f64;
    let mut grad = Array2::zeros(xs.dim());
    for t in 1..steps {
        for f in 0..features {
            let s = scale * sign0(xs[[t, f]] - xs[[t - 1, f]]);
            grad[[t, f]] += s;
            grad[[t - 1, f]] -= s;
        }
    }
    Ok((
        delta_l1_value(xs, lambda) as f32,
        grad.mapv(|g: f64| g as f32),
    ))
}

fn delta_l1_value(xs: ArrayView2<'_, f32>, lambda: f64) -> f64 {
    let (steps, features) = xs.dim();
    let mut sum = 0.0;
    for t in 1..steps {
        for f in 0..features {
            sum += (f64::from(xs[[t, f]]) - f64::from(xs[[t - 1, f]])).abs();
        }
    }
    lambda * sum / ((steps - 1) * features) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, s};
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

    /// ProSparse-7B's schedule (Table 6), counted from the warmup.
    fn prosparse_7b() -> ProSparseSchedule {
        ProSparseSchedule::new(&[
            (1000, 5e-3),
            (4000, 5e-2),
            (2000, 5e-2),
            (4000, 2e-1),
            (500, 2e-1),
        ])
        .unwrap()
    }

    #[test]
    fn prosparse_schedule_follows_algorithm_1() {
        let s = prosparse_7b();
        for t in [0, 1, 500, 1000] {
            assert_eq!(s.lambda_at(t), 5e-3, "warmup at {t}");
        }
        // Stage 2 runs over (1000, 5000]: η = ½(1 − cos(π u)).
        for (t, u) in [
            (1001u64, 1.0 / 4000.0),
            (2000, 0.25),
            (3000, 0.5),
            (4000, 0.75),
        ] {
            let eta = 0.5 * (1.0 - (PI * u).cos());
            let want = 5e-3 + eta * (5e-2 - 5e-3);
            assert!((s.lambda_at(t) - want).abs() < 1e-15, "t = {t}");
        }
        assert!((s.lambda_at(3000) - 0.0275).abs() < 1e-15);
        // Zero slope at both ends of a stage: the first and last steps move little.
        assert!(s.lambda_at(1001) - 5e-3 < 1e-8);
        assert!(5e-2 - s.lambda_at(4999) < 1e-8);
        for t in [5000, 5001, 6000, 7000] {
            assert_eq!(s.lambda_at(t), 5e-2, "constant stage at {t}");
        }
        assert!((s.lambda_at(9000) - 0.125).abs() < 1e-15);
        for t in [11_000, 11_500, 20_000, u64::MAX] {
            assert_eq!(s.lambda_at(t), 0.2, "after the schedule at {t}");
        }
        assert_eq!(s.total_steps(), 11_500);
        let with_sub = s.clone().with_substitution_steps(5000);
        assert_eq!(with_sub.total_steps(), 16_500);
        for t in 0..=5000 {
            assert_eq!(with_sub.lambda_at(t), 0.0);
        }
        for t in (5001..20_000).step_by(37) {
            assert_eq!(with_sub.lambda_at(t), s.lambda_at(t - 5000));
        }
    }

    #[test]
    fn prosparse_schedule_validation() {
        assert!(matches!(
            ProSparseSchedule::new(&[]),
            Err(Error::EmptySchedule)
        ));
        assert!(matches!(
            ProSparseSchedule::new(&[(10, 0.1), (0, 0.2)]),
            Err(Error::InvalidStage {
                stage: 1,
                steps: 0,
                ..
            })
        ));
        for bad in [-1e-3, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                ProSparseSchedule::new(&[(10, 0.1), (5, 0.2), (5, bad)]),
                Err(Error::InvalidStage { stage: 2, .. })
            ));
        }
        assert!(matches!(
            ProSparseSchedule::new(&[(10, 0.1), (5, 0.05)]),
            Err(Error::DecreasingSchedule { stage: 1, .. })
        ));
        // A zero factor (no regularization yet) and equal targets are allowed.
        let s = ProSparseSchedule::new(&[(10, 0.0), (10, 0.0), (10, 1.0)]).unwrap();
        assert_eq!(s.lambda_at(15), 0.0);
        assert_eq!(s.lambda_at(25), 0.5);
    }

    #[test]
    fn l1_penalty_gradient_matches_finite_differences() {
        let acts = relu_acts(5, (5, 8));
        assert!(acts.iter().any(|&a| a == 0.0));
        // Central differences of |a| are exactly 0 at a = 0, the subgradient
        // l1_penalty returns; elsewhere |a| > h, so the kink is not crossed.
        assert!(acts.iter().all(|&a| a == 0.0 || a.abs() > 1e-3));
        for reduction in [L1Reduction::RowSum, L1Reduction::Mean] {
            let (value, grad) = l1_penalty(acts.view(), 0.2, reduction).unwrap();
            let fd = central_diff(&acts, 1.0 / 1024.0, |a| l1_value(a, 0.2, reduction));
            assert_grad_close(&grad, &fd, 1e-6);
            let sum: f64 = acts.iter().map(|&a| f64::from(a)).sum();
            let d = if reduction == L1Reduction::RowSum {
                5.0
            } else {
                40.0
            };
            assert!((f64::from(value) - 0.2 * sum / d).abs() < 1e-6);
        }
        let (row, _) = l1_penalty(acts.view(), 0.2, L1Reduction::RowSum).unwrap();
        let (mean, _) = l1_penalty(acts.view(), 0.2, L1Reduction::Mean).unwrap();
        assert!((row / 8.0 - mean).abs() < 1e-6);
        // Signs, and exact zeros untouched.
        let (_, g) =
            l1_penalty(array![[-2.0f32, 0.0, 3.0]].view(), 1.0, L1Reduction::RowSum).unwrap();
        assert_eq!(g, array![[-1.0, 0.0, 1.0]]);
    }

    #[test]
    fn l1_penalty_validation() {
        let a = array![[1.0f32]];
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                l1_penalty(a.view(), bad, L1Reduction::Mean),
                Err(Error::InvalidParameter {
                    name: "ProSparse λ",
                    ..
                })
            ));
        }
        assert!(matches!(
            l1_penalty(array![[1.0f32, f32::NAN]].view(), 0.1, L1Reduction::Mean),
            Err(Error::NonFinite { row: 0, col: 1 })
        ));
        assert!(matches!(
            l1_penalty(
                Array2::<f32>::zeros((3, 0)).view(),
                0.1,
                L1Reduction::RowSum
            ),
            Err(Error::EmptyInput { .. })
        ));
    }

    #[test]
    fn fatrelu_forward_backward() {
        let act = FatRelu::new(FatRelu::PROSPARSE_THRESHOLD).unwrap();
        let x = array![[-1.0f32, 0.0, 0.005, 0.01, 0.02, 3.0]];
        assert_eq!(
            act.forward(x.view()).unwrap(),
            array![[0.0, 0.0, 0.0, 0.01, 0.02, 3.0]]
        );
        // t = 0 is ReLU.
        let relu = FatRelu::new(0.0).unwrap();
        assert_eq!(relu.forward(x.view()).unwrap(), x.mapv(|v| v.max(0.0)));
        // Backward of Σ w ⊙ FATReLU(x) against finite differences, away from t.
        let act = FatRelu::new(0.3).unwrap();
        let x = SeededRng::new(9).array_normal((4, 7));
        assert!(x.iter().all(|v| (v - 0.3).abs() > 1e-2));
        let w = SeededRng::new(10).array_normal((4, 7));
        let loss = |x: ArrayView2<'_, f32>| {
            let y = act.forward(x).unwrap();
            y.iter()
                .zip(&w)
                .map(|(&y, &w)| f64::from(y) * f64::from(w))
                .sum::<f64>()
        };
        let grad = act.backward(x.view(), w.view()).unwrap();
        assert_grad_close(&grad, &central_diff(&x, 1.0 / 1024.0, loss), 1e-6);
        assert!(grad.iter().any(|&g| g == 0.0) && grad.iter().any(|&g| g != 0.0));
    }

    #[test]
    fn fatrelu_validation() {
        for bad in [-0.01, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                FatRelu::new(bad),
                Err(Error::InvalidParameter {
                    name: "FATReLU threshold",
                    ..
                })
            ));
        }
        let act = FatRelu::new(0.1).unwrap();
        let x = array![[1.0f32, f32::NEG_INFINITY]];
        assert!(matches!(
            act.forward(x.view()),
            Err(Error::NonFinite { row: 0, col: 1 })
        ));
        assert!(matches!(
            act.backward(x.view(), array![[1.0f32]].view()),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// λ(t) never decreases, stays between the stage's endpoints and hits
        /// every target at the stage's last step.
        #[test]
        fn prosparse_schedule_is_monotone_and_hits_its_targets(
            stages in prop::collection::vec((1u64..50, 0.0f64..1.0), 1..6), probe in 0u64..300,
        ) {
            let mut lambdas: Vec<f64> = stages.iter().map(|s| s.1).collect();
            lambdas.sort_by(f64::total_cmp);
            let stages: Vec<(u64, f64)> = stages.iter().zip(&lambdas).map(|(s, &l)| (s.0, l)).collect();
            let s = ProSparseSchedule::new(&stages).unwrap();
            let mut end = 0;
            for (i, &(steps, lambda)) in stages.iter().enumerate() {
                let lo = if i == 0 { lambda } else { stages[i - 1].1 };
                for t in end + 1..=end + steps {
                    let l = s.lambda_at(t);
                    prop_assert!(lo <= l && l <= lambda, "stage {} step {}: {} not in [{}, {}]", i, t, l, lo, lambda);
                }
                end += steps;
                prop_assert_eq!(s.lambda_at(end), lambda);
            }
            prop_assert_eq!(s.lambda_at(end + probe), lambdas[lambdas.len() - 1]);
            for t in 0..=end {
                prop_assert!(s.lambda_at(t) <= s.lambda_at(t + 1), "decreases after step {}", t);
            }
        }
    }

    /// A sequence that mostly changes a little and sometimes stays put.
    fn slow_sequence(seed: u64, steps: usize, features: usize, scale: f32) -> Array2<f32> {
        let mut rng = SeededRng::new(seed);
        let mut x = Array2::zeros((steps, features));
        let mut row = rng.array_normal(features);
        for t in 0..steps {
            if t % 5 != 3 {
                row += &rng.array_normal(features).mapv(|v| v * scale);
            }
            x.row_mut(t).assign(&row);
        }
        x
    }

    #[test]
    fn delta_round_trip_is_exact_at_threshold_zero() {
        let x = slow_sequence(1, 40, 12, 0.1);
        let mut enc = DeltaEncoder::new(12, 0.0).unwrap();
        let deltas = enc.encode(x.view()).unwrap();
        let decoded = DeltaDecoder::new(12).decode(deltas.view()).unwrap();
        for (((t, f), &x), &y) in x.indexed_iter().zip(decoded.iter()) {
            assert!(
                (x - y).abs() <= 4.0 * f32::EPSILON * x.abs().max(1.0),
                "({t}, {f}): {x} vs {y}"
            );
        }
        assert_eq!(enc.reference(), decoded.row(39));
        // Every fifth step repeats the one before: its deltas are all zero.
        for t in (3..40).step_by(5) {
            assert!(deltas.row(t).iter().all(|&d| d == 0.0));
        }
        let sparsity = temporal_sparsity(deltas.slice(s![1.., ..])).unwrap();
        assert!((sparsity - 8.0 / 39.0).abs() < 1e-12, "{sparsity}");
    }

    #[test]
    fn thresholded_deltas_decode_to_the_encoder_reference() {
        let x = slow_sequence(2, 60, 9, 0.05);
        let threshold = 0.1;
        let mut enc = DeltaEncoder::new(9, threshold).unwrap();
        let mut dec = DeltaDecoder::new(9);
        let mut sent = 0;
        for t in 0..60 {
            let d = enc.step(x.row(t)).unwrap();
            sent += d.iter().filter(|&&v| v != 0.0).count();
            let y = dec.decode(d.insert_axis(Axis(0)).view()).unwrap();
            assert_eq!(y.row(0), enc.reference(), "step {t}");
            for (&xv, &r) in x.row(t).iter().zip(enc.reference()) {
                assert!((xv - r).abs() <= threshold + 1e-6, "step {t}: {xv} vs {r}");
            }
        }
        // Small steps (σ = 0.05) against a threshold of 0.1: most changes wait.
        assert!(sent < 60 * 9 / 2, "{sent} of {} sent", 60 * 9);
        // Streaming in chunks gives the same deltas as one call.
        let whole = DeltaEncoder::new(9, threshold)
            .unwrap()
            .encode(x.view())
            .unwrap();
        let mut chunked = DeltaEncoder::new(9, threshold).unwrap();
        let mut parts = chunked
            .encode(x.slice(s![..25, ..]))
            .unwrap()
            .into_raw_vec_and_offset()
            .0;
        parts.extend(chunked.encode(x.slice(s![25.., ..])).unwrap().iter());
        assert_eq!(whole.into_raw_vec_and_offset().0, parts);
        assert_eq!(chunked.reference(), enc.reference());
        chunked.reset();
        assert!(chunked.reference().iter().all(|&r| r == 0.0));
    }

    #[test]
    fn delta_l1_gradient_matches_finite_differences() {
        // Repeated steps give exact ties (zero deltas): central differences
        // there are 0, the subgradient delta_l1 uses.
        let x = slow_sequence(3, 12, 5, 0.5);
        for t in 1..12 {
            for (a, b) in x.row(t).iter().zip(x.row(t - 1)) {
                assert!(a == b || (a - b).abs() > 4e-3);
            }
        }
        let (value, grad) = delta_l1(x.view(), 0.7).unwrap();
        let fd = central_diff(&x, 1.0 / 1024.0, |x| delta_l1_value(x, 0.7));
        assert_grad_close(&grad, &fd, 1e-6);
        // The value is λ times the mean |delta| a threshold-0 encoder sends after step 0.
        let deltas = DeltaEncoder::new(5, 0.0).unwrap().encode(x.view()).unwrap();
        let mean = deltas.slice(s![1.., ..]).mapv(f32::abs).mean().unwrap();
        assert!(
            (value - 0.7 * mean).abs() < 1e-5 * value,
            "{value} vs {}",
            0.7 * mean
        );
        // A constant sequence costs nothing and has no gradient.
        let flat = Array2::from_elem((4, 3), 1.5f32);
        let (v, g) = delta_l1(flat.view(), 1.0).unwrap();
        assert_eq!(v, 0.0);
        assert!(g.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn delta_validation() {
        assert!(matches!(
            DeltaEncoder::new(0, 0.1),
            Err(Error::EmptyInput { .. })
        ));
        for bad in [-0.1, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                DeltaEncoder::new(3, bad),
                Err(Error::InvalidParameter {
                    name: "delta threshold",
                    ..
                })
            ));
        }
        let mut enc = DeltaEncoder::new(3, 0.0).unwrap();
        assert!(matches!(
            enc.encode(Array2::<f32>::zeros((2, 4)).view()),
            Err(Error::ShapeMismatch { .. })
        ));
        // A NaN at step 1 leaves the state as it was.
        let x = array![[1.0f32, 2.0, 3.0], [1.0, f32::NAN, 3.0]];
        assert!(matches!(
            enc.encode(x.view()),
            Err(Error::NonFinite { row: 1, col: 1 })
        ));
        assert!(enc.reference().iter().all(|&r| r == 0.0));
        assert!(matches!(
            enc.step(array![f32::INFINITY, 0.0, 0.0].view()),
            Err(Error::NonFinite { row: 0, col: 0 })
        ));
        let mut dec = DeltaDecoder::new(3);
        assert!(matches!(
            dec.decode(array![[1.0f32, 2.0]].view()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            dec.decode(array![[1.0f32, 2.0, f32::NAN]].view()),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            delta_l1(array![[1.0f32, 2.0]].view(), 1.0),
            Err(Error::TooFewSteps {
                steps: 1,
                needed: 2,
                ..
            })
        ));
        assert!(matches!(
            delta_l1(Array2::<f32>::zeros((3, 0)).view(), 1.0),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            delta_l1(Array2::<f32>::zeros((3, 2)).view(), -1.0),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(matches!(
            temporal_sparsity(Array2::<f32>::zeros((0, 2)).view()),
            Err(Error::EmptyInput { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The decoder holds the encoder's reference bit for bit, which is
        /// within the threshold (plus rounding) of the input at every step.
        #[test]
        fn delta_codec_round_trip(
            steps in 1usize..30, features in 1usize..10, threshold in prop_oneof![Just(0.0f32), 0.0f32..0.5],
            seed in any::<u64>(),
        ) {
            let x = slow_sequence(seed, steps, features, 0.2);
            let mut enc = DeltaEncoder::new(features, threshold).unwrap();
            let decoded = DeltaDecoder::new(features).decode(enc.encode(x.view()).unwrap().view()).unwrap();
            prop_assert_eq!(decoded.row(steps - 1), enc.reference());
            for (&a, &b) in x.iter().zip(&decoded) {
                prop_assert!((a - b).abs() <= threshold + 8.0 * f32::EPSILON * a.abs().max(1.0), "{} vs {}", a, b);
            }
        }
    }
}
