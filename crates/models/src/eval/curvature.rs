//! The language-model loss seen from one weight: gradients, empirical Fisher
//! diagonals, Hessian-vector products, and the divergence of a compressed
//! model's next-token distribution from its base model's.
//!
//! These are the model hooks of the sensitivity measures in
//! `tensorpress-sensitivity`: HAWQ (Dong et al., 2019) ranks layers by the top
//! eigenvalue of the loss Hessian of their weights (power iteration on
//! Hessian-vector products), HAWQ-V2 (Dong et al., 2020) by its average trace
//! (Hutchinson's estimator), and Fisher-based measures (SqueezeLLM, Kim et al.,
//! 2023) weight each element's squared error by the mean squared gradient.
//! Candle's autograd gives first derivatives only, so a Hessian-vector product
//! is the central difference of two gradients,
//! `H v ≈ (∇L(w + εv) − ∇L(w − εv)) / 2ε`, which is exact for a quadratic loss
//! and has an `O(ε²)` error otherwise.
//!
//! The model must be loaded with
//! [`LoadOptions::trainable`](crate::weights::LoadOptions::trainable); a layer
//! is named as its [`Linear`](crate::linear::Linear) is
//! (`model.layers.0.self_attn.q_proj`).

use std::collections::BTreeMap;

use candle_core::{Tensor, Var, D};
use ndarray::{Array2, ArrayView2};

use crate::llama::LlamaModel;
use crate::{Error, Result};

/// The mean next-token cross-entropy of `tokens` (every position but the
/// last predicts its successor), differentiable when the model is trainable.
///
/// # Errors
/// Fewer than two tokens, or a forward-pass error.
pub fn lm_loss(model: &LlamaModel, tokens: &[u32]) -> Result<Tensor> {
    if tokens.len() < 2 {
        return Err(Error::Config {
            field: "tokens",
            reason: "the loss needs at least two tokens".into(),
        });
    }
    let n = tokens.len() - 1;
    let logits = model.logits(&tokens[..n], 0)?;
    let targets = Tensor::from_slice(&tokens[1..], n, logits.device())?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = logp.gather(&targets.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// The mean over positions of the logit of the true next token (every
/// position but the last predicts its successor), differentiable when the
/// model is trainable. Relevance by gradient × activation is taken with
/// respect to this output, the class score that "pruning by explaining"
/// (Yeom et al., 2021) explains, rather than the loss, whose gradient
/// vanishes on average at a trained optimum.
///
/// # Errors
/// Fewer than two tokens, or a forward-pass error.
pub fn target_logit(model: &LlamaModel, tokens: &[u32]) -> Result<Tensor> {
    if tokens.len() < 2 {
        return Err(Error::Config {
            field: "tokens",
            reason: "the target logit needs at least two tokens".into(),
        });
    }
    let n = tokens.len() - 1;
    let logits = model.logits(&tokens[..n], 0)?;
    let targets = Tensor::from_slice(&tokens[1..], n, logits.device())?;
    Ok(logits.gather(&targets.unsqueeze(1)?, 1)?.mean_all()?)
}

/// The variable behind linear layer `layer`'s weight.
///
/// # Errors
/// [`Error::Config`] when the model is not trainable or has no such layer, or
/// when the layer's op no longer holds the loaded variable (it was swapped).
pub fn weight_var<'a>(model: &'a LlamaModel, layer: &str) -> Result<&'a Var> {
    if model.vars().is_empty() {
        return Err(Error::Config {
            field: "model",
            reason: "curvature needs a model loaded with LoadOptions::trainable()".into(),
        });
    }
    let linear = model
        .linears()
        .into_iter()
        .find(|l| l.name() == layer)
        .ok_or_else(|| Error::Config {
            field: "layer",
            reason: format!("the model has no linear layer `{layer}`"),
        })?;
    let id = linear.op().dense_weight()?.id();
    model
        .vars()
        .iter()
        .find(|(_, v)| v.as_tensor().id() == id)
        .map(|(_, v)| v)
        .ok_or_else(|| Error::Config {
            field: "layer",
            reason: format!(
                "`{layer}` does not run its loaded weight any more (its op was replaced)"
            ),
        })
}

fn to_array2(t: &Tensor) -> Result<Array2<f32>> {
    let (r, c) = t.dims2()?;
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Array2::from_shape_vec((r, c), data).expect("a [r, c] tensor has r·c elements"))
}

fn check_windows(windows: &[Vec<u32>]) -> Result<()> {
    if windows.is_empty() || windows.iter().any(|w| w.len() < 2) {
        return Err(Error::Config {
            field: "windows",
            reason: "give at least one window of two or more tokens".into(),
        });
    }
    Ok(())
}

/// The mean over `windows` of each window's `objective` (the loss, in
/// general) and of `of(gradient)` for each layer in `layers`;
/// `progress(done, total)` after each window.
fn mean_over_windows(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layers: &[String],
    objective: fn(&LlamaModel, &[u32]) -> Result<Tensor>,
    of: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f64, BTreeMap<String, Array2<f32>>)> {
    check_windows(windows)?;
    let vars: Vec<&Var> = layers
        .iter()
        .map(|l| weight_var(model, l))
        .collect::<Result<_>>()?;
    let mut out: BTreeMap<String, Array2<f32>> = BTreeMap::new();
    let mut total = 0.0;
    let scale = 1.0 / windows.len() as f32;
    for (i, window) in windows.iter().enumerate() {
        let loss = objective(model, window)?;
        total += f64::from(loss.to_scalar::<f32>()?);
        let grads = loss.backward()?;
        for (name, var) in layers.iter().zip(&vars) {
            let g = grads.get(var.as_tensor()).ok_or_else(|| Error::Config {
                field: "layer",
                reason: format!("no gradient reached `{name}`"),
            })?;
            let g = to_array2(&of(g)?)?;
            match out.get_mut(name) {
                Some(acc) => acc.scaled_add(scale, &g),
                None => {
                    out.insert(name.clone(), g * scale);
                }
            }
        }
        progress(i + 1, windows.len());
    }
    Ok((total / windows.len() as f64, out))
}

/// The mean loss over `windows` and its gradient with respect to each layer
/// in `layers` (`[out, in]`, averaged over the windows).
///
/// # Errors
/// As [`weight_var`] and [`lm_loss`]; [`Error::Config`] for no windows.
pub fn loss_gradients(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layers: &[String],
) -> Result<(f64, BTreeMap<String, Array2<f32>>)> {
    mean_over_windows(
        model,
        windows,
        layers,
        lm_loss,
        |g| Ok(g.clone()),
        &mut |_, _| {},
    )
}

/// The mean [`target_logit`] over `windows` and its gradient with respect
/// to each layer in `layers` (`[out, in]`, averaged over the windows);
/// `progress(done, total)` after each window.
///
/// For a linear layer `y = W a`, `Σ_j W_ji ∂f/∂W_ji` is the sum over tokens
/// of `a_i ∂f/∂a_i`: the gradient × activation relevance of input channel
/// `i` (an FFN neuron, for the down projection).
///
/// # Errors
/// As [`loss_gradients`].
pub fn target_logit_gradients(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layers: &[String],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f64, BTreeMap<String, Array2<f32>>)> {
    mean_over_windows(
        model,
        windows,
        layers,
        target_logit,
        |g| Ok(g.clone()),
        progress,
    )
}

/// The empirical Fisher diagonal of each layer's weight: the mean over
/// `windows` of the squared gradient of the window's loss, elementwise.
/// `progress(done, total)` is called after each window.
///
/// # Errors
/// As [`loss_gradients`].
pub fn fisher_diagonal(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layers: &[String],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BTreeMap<String, Array2<f32>>> {
    Ok(mean_over_windows(model, windows, layers, lm_loss, Tensor::sqr, progress)?.1)
}

/// `H v` for the loss Hessian `H` of `layer`'s weight (mean loss over
/// `windows`), by central differences of gradients with step `eps` along
/// `v / ‖v‖` (the result is scaled back to `v`). The weight is restored
/// afterwards, also on error.
///
/// A step of `1e-3 · rms(w)` per element suits f32 models: small enough for
/// the `O(ε²)` term, large enough for f32 gradients.
///
/// # Errors
/// As [`loss_gradients`]; [`Error::Config`] when `v`'s shape is not the
/// weight's, `v` is zero or not finite, or `eps` is not positive.
pub fn hessian_vector_product(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layer: &str,
    v: ArrayView2<'_, f32>,
    eps: f32,
) -> Result<Array2<f32>> {
    let var = weight_var(model, layer)?;
    let w = var.as_tensor().copy()?;
    let (r, c) = w.dims2()?;
    if v.dim() != (r, c) {
        return Err(Error::WeightShape {
            name: layer.into(),
            expected: vec![r, c],
            actual: v.shape().to_vec(),
        });
    }
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if !(norm.is_finite() && norm > 0.0 && eps.is_finite() && eps > 0.0) {
        return Err(Error::Config {
            field: "hessian_vector_product",
            reason: format!(
                "need a finite, nonzero direction and eps > 0 (‖v‖ = {norm}, eps = {eps})"
            ),
        });
    }
    let unit: Vec<f32> = v.iter().map(|x| (f64::from(*x) / norm) as f32).collect();
    let dir = Tensor::from_vec(unit, (r, c), w.device())?;
    let names = [layer.to_string()];
    let grad_at = |sign: f64| -> Result<Array2<f32>> {
        var.set(&(&w + (&dir * (sign * f64::from(eps)))?)?)?;
        let (_, g) = loss_gradients(model, windows, &names)?;
        Ok(g.into_values()
            .next()
            .expect("one layer asked, one gradient"))
    };
    let result = grad_at(1.0).and_then(|plus| Ok((plus, grad_at(-1.0)?)));
    var.set(&w)?;
    let (plus, minus) = result?;
    let k = (norm / (2.0 * f64::from(eps))) as f32;
    Ok((plus - minus) * k)
}

/// Mean KL divergence `KL(p_ref ‖ p_model)` per position between reference
/// log-probabilities `reference` (`[positions, vocab]`, e.g. the base model's
/// [`log_probs`]) and `model`'s log-probabilities for the same `tokens`: the
/// fitness of EvoPress and a one-layer sensitivity.
///
/// # Errors
/// Shape mismatch between `reference` and the model's logits, or a forward error.
pub fn kl_divergence(model: &LlamaModel, tokens: &[u32], reference: &Tensor) -> Result<f64> {
    let logp = log_probs(model, tokens)?;
    if logp.dims() != reference.dims() {
        return Err(Error::Config {
            field: "reference",
            reason: format!(
                "reference log-probabilities are {:?}, the model gives {:?}",
                reference.dims(),
                logp.dims()
            ),
        });
    }
    let p = reference.exp()?;
    let kl = (p * (reference - logp)?)?.sum(D::Minus1)?.mean_all()?;
    Ok(f64::from(kl.to_scalar::<f32>()?))
}

/// Next-token log-probabilities `[tokens, vocab]` of every position of `tokens`.
///
/// # Errors
/// A forward-pass error.
pub fn log_probs(model: &LlamaModel, tokens: &[u32]) -> Result<Tensor> {
    let logits = model.logits(tokens, 0)?;
    Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
}
