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
mod tests;
