//! Searches on the model: HAWQ's layer curvature of the loss and EvoPress
//! over a profile's database.

use std::cell::RefCell;

use candle_core::Tensor;
use ndarray::{Array1, Array2, ArrayView1};
use tensorpress_models::eval::curvature::{kl_divergence, log_probs};
use tensorpress_models::llama::LlamaModel;
use tensorpress_sensitivity::{
    evopress, hutchinson_trace, power_iteration, Budget, EvoOptions, EvoResult, LayerChoices,
    TraceEstimate,
};
use tensorpress_tensor::SeededRng;

use super::Profile;
use crate::{Error, Result};

/// HAWQ's layer curvature from the language-model loss: the top eigenvalue
/// of the Hessian of the loss with respect to `layer`'s weight (power
/// iteration, HAWQ, Dong et al. 2019) and its trace (Hutchinson's estimator,
/// HAWQ-V2, Dong et al. 2020), both on Hessian-vector products by central
/// differences of gradients
/// ([`hessian_vector_product`](tensorpress_models::eval::curvature::hessian_vector_product)).
/// `model` must be trainable. Each product costs two backward passes over
/// `windows`: use short windows on large models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerCurvature {
    /// The top eigenvalue (largest in magnitude) after the iterations.
    pub top_eigenvalue: f64,
    /// The Hutchinson estimate of `tr(H)`.
    pub trace: TraceEstimate,
}

/// Computes [`LayerCurvature`] for `layer`: `iterations` power iterations and
/// `probes` Rademacher probes, seeded by `seed`.
///
/// # Errors
/// Zero iterations or probes, a model that is not trainable, a forward error.
pub fn layer_curvature(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    layer: &str,
    iterations: usize,
    probes: usize,
    seed: u64,
) -> Result<LayerCurvature> {
    use tensorpress_models::eval::curvature::{hessian_vector_product, weight_var};
    let w = weight_var(model, layer)?.as_tensor().clone();
    let (r, c) = w.dims2()?;
    let rms = (w.sqr()?.mean_all()?.to_scalar::<f32>()?).sqrt().max(1e-6);
    let eps = 1e-3 * rms * ((r * c) as f32).sqrt();
    let mut rng = SeededRng::new(seed);
    // Both estimators take an infallible product: the first model error is
    // kept aside (the product returns zeros from then on) and returned after.
    let failure = RefCell::new(None);
    let matvec = |z: ArrayView1<'_, f64>| -> Array1<f64> {
        if failure.borrow().is_some() {
            return Array1::zeros(r * c);
        }
        let v = Array2::from_shape_vec((r, c), z.iter().map(|x| *x as f32).collect())
            .expect("r·c entries");
        match hessian_vector_product(model, windows, layer, v.view(), eps) {
            Ok(h) => h.iter().map(|x| f64::from(*x)).collect(),
            Err(e) => {
                *failure.borrow_mut() = Some(e);
                Array1::zeros(r * c)
            }
        }
    };
    let top_eigenvalue = power_iteration(r * c, iterations, &mut rng.fork(1), matvec)?;
    let trace = hutchinson_trace(r * c, probes, &mut rng, matvec)?;
    if let Some(e) = failure.into_inner() {
        return Err(e.into());
    }
    Ok(LayerCurvature {
        top_eigenvalue,
        trace,
    })
}

/// EvoPress (Sieberling et al., 2024) over the profile's database: starting
/// from `start` (e.g. the knapsack plan), search per-layer picks within
/// `budget` whose model has the lowest KL divergence from `model`'s
/// next-token distribution on `fitness_windows` (each stage of `options`
/// scores on its `tokens`, rounded up to whole windows). `model` is the base
/// model; it is not changed.
///
/// # Errors
/// As [`tensorpress_sensitivity::evopress`]; no fitness windows; a forward error.
#[allow(clippy::too_many_arguments)] // the search, its model and its data are separate inputs
pub fn evopress_llama(
    profile: &Profile,
    model: &LlamaModel,
    layers: &[LayerChoices],
    budget: Budget,
    start: &[usize],
    options: &EvoOptions,
    fitness_windows: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, f64),
) -> Result<EvoResult> {
    let window = fitness_windows.first().map_or(0, Vec::len);
    if window == 0 {
        return Err(Error::NoCalibration);
    }
    let reference: Vec<Tensor> = fitness_windows
        .iter()
        .map(|w| log_probs(model, w))
        .collect::<tensorpress_models::Result<_>>()?;
    let mut work = model.clone();
    let fitness_error = |e: &dyn std::fmt::Display| tensorpress_sensitivity::Error::Fitness {
        reason: e.to_string(),
    };
    let mut fitness = |picks: &[usize], tokens: usize| -> tensorpress_sensitivity::Result<f64> {
        profile
            .apply(&mut work, picks)
            .map_err(|e| fitness_error(&e))?;
        let n = tokens.div_ceil(window).clamp(1, fitness_windows.len());
        let mut kl = 0.0;
        for (w, r) in fitness_windows.iter().zip(&reference).take(n) {
            kl += kl_divergence(&work, w, r).map_err(|e| fitness_error(&e))?;
        }
        Ok(kl / n as f64)
    };
    Ok(evopress(
        layers,
        budget,
        start,
        options,
        &mut fitness,
        progress,
    )?)
}
