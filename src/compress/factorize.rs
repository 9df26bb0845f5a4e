//! Low-rank factorization of a model's linear layers (issue 7): every block
//! projection `W` (`[out, in]`) becomes `A·B` (`[out, r]·[r, in]`), run as
//! two thin matmuls ([`FactorizedLinear`]), with the ranks chosen so that the
//! factorized layers lose a fraction `reduction` of their parameters.
//!
//! Three ways to pick the factors ([`FactorMethod`]):
//!
//! - [`FactorMethod::Svd`]: the truncated SVD of `W`, the best rank-`r`
//!   approximation of the weight (no data);
//! - [`FactorMethod::Asvd`]: ASVD (Yuan et al., 2023, arXiv:2312.05821),
//!   the SVD of `W·diag(mean|x|^½)` on the calibration inputs, so input
//!   channels with large activations weigh more ([`Asvd`]);
//! - [`FactorMethod::SvdLlm`]: SVD-LLM's truncation-aware whitening (Wang
//!   et al., ICLR 2025, arXiv:2403.07378), the SVD of `W·L` with
//!   `L Lᵀ = Σ x xᵀ` the Cholesky factor of the layer's calibration Gram
//!   matrix, so every dropped singular value costs exactly its square in
//!   output error on the calibration data ([`Whitening`]).
//!
//! All three whiten (or not) with statistics of the *original* model's
//! inputs, gathered in one calibration pass, as SVD-LLM's reference code
//! does; the second stage of SVD-LLM (LoRA fine-tuning of the factors) is a
//! training loop and not part of this stage.
//!
//! Ranks ([`RankAllocation`]): by default every layer keeps the same share
//! `1 − reduction` of its parameters (`r = ⌊(1 − reduction)·out·in /
//! (out + in)⌋`, the allocation of the SVD-LLM and ASVD papers' main
//! tables); [`RankAllocation::Spectrum`] instead spends the same parameter
//! budget greedily across layers on the components that keep the most of
//! their layer's (transformed) spectral energy per parameter.
//!
//! The factors land in [`CompressReport::factors`]; the model's layers are
//! replaced by [`FactorizedLinear`]s, and
//! [`write_hf_checkpoint`](super::write_hf_checkpoint) (dequantized format)
//! writes `{module}.u.weight` (`[out, r]`) and `{module}.v.weight`
//! (`[r, in]`) in place of `{module}.weight`, which
//! [`LlamaModel::from_hf_dir`] loads back as factorized layers.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use ndarray::{Array2, ArrayView2};
use tensorpress_lowrank::{
    activation_error, factorize, reconstruction_error, Asvd, LowRank, RankSelection, Whitening,
};
use tensorpress_models::linear::{to_matrix, FactorizedLinear, LinearOp};
use tensorpress_models::llama::LlamaModel;

use super::{CompressReport, HessianCollector, LayerReport, Progress};
use crate::{Error, Result};

/// How the factors of a layer are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FactorMethod {
    /// Truncated SVD of the weight (no calibration data).
    Svd,
    /// ASVD: SVD of the weight scaled by the input channels' mean `|x|^½`.
    Asvd,
    /// SVD-LLM: SVD of the weight whitened by the Cholesky factor of the
    /// inputs' Gram matrix.
    SvdLlm,
}

impl FactorMethod {
    /// Whether the method reads calibration inputs.
    pub fn calibrates(self) -> bool {
        self != FactorMethod::Svd
    }

    /// The name the CLI takes (`svd`, `asvd`, `svd-llm`).
    pub fn name(self) -> &'static str {
        match self {
            FactorMethod::Svd => "svd",
            FactorMethod::Asvd => "asvd",
            FactorMethod::SvdLlm => "svd-llm",
        }
    }
}

impl FromStr for FactorMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "svd" => Ok(FactorMethod::Svd),
            "asvd" => Ok(FactorMethod::Asvd),
            "svd-llm" | "svdllm" | "svd_llm" => Ok(FactorMethod::SvdLlm),
            _ => Err(format!(
                "unknown factorization `{s}`: expected svd, asvd or svd-llm"
            )),
        }
    }
}

/// How the parameter budget is split across layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RankAllocation {
    /// Every layer keeps the same share of its parameters.
    #[default]
    Uniform,
    /// One budget for all layers, spent greedily on the components that keep
    /// the largest fraction of their layer's (transformed) spectral energy
    /// per parameter (`σ_i² / Σσ²` over `out + in`); at least rank 1 each.
    Spectrum,
}

/// A factorization stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factorization {
    /// How the factors are computed.
    pub method: FactorMethod,
    /// Fraction of the factorized layers' parameters to remove, in `(0, 1)`.
    pub reduction: f64,
    /// How the budget is split across layers.
    pub allocation: RankAllocation,
}

impl Factorization {
    /// `method` removing `reduction` of the parameters, uniform allocation.
    pub fn new(method: FactorMethod, reduction: f64) -> Self {
        Factorization {
            method,
            reduction,
            allocation: RankAllocation::Uniform,
        }
    }

    /// Sets the allocation.
    pub fn allocation(mut self, allocation: RankAllocation) -> Self {
        self.allocation = allocation;
        self
    }

    /// A short label (`SVD-LLM −20 %`).
    pub fn label(&self) -> String {
        let name = match self.method {
            FactorMethod::Svd => "SVD",
            FactorMethod::Asvd => "ASVD",
            FactorMethod::SvdLlm => "SVD-LLM",
        };
        let alloc = match self.allocation {
            RankAllocation::Uniform => "",
            RankAllocation::Spectrum => ", spectrum ranks",
        };
        format!("{name} −{:.0} %{alloc}", self.reduction * 100.0)
    }
}

/// The largest rank at which an `[out, in]` layer keeps at most a share
/// `keep` of its parameters (at least 1).
pub fn uniform_rank(out: usize, inp: usize, keep: f64) -> usize {
    let r = (keep * (out * inp) as f64 / (out + inp) as f64).floor() as usize;
    r.clamp(1, out.min(inp))
}

/// Factorizes every block projection of `model` in place (each becomes a
/// [`FactorizedLinear`]) and returns a report whose
/// [`factors`](CompressReport::factors) hold the factors and whose
/// [`layers`](CompressReport::layers) give each layer's errors and its
/// bits per weight as f16 factors (`16·r·(out + in) / (out·in)`).
/// `calibration` holds token windows (one forward pass over them when the
/// method calibrates).
///
/// # Errors
/// [`Error::InvalidReduction`] outside `(0, 1)`; [`Error::NoCalibration`]
/// when ASVD or SVD-LLM get no windows; [`Error::Factorize`] when a layer
/// does not factor (non-finite weights, a Gram matrix that stays singular
/// under damping); forward errors.
pub fn factorize_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    options: &Factorization,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    let reduction = options.reduction;
    if !(reduction.is_finite() && reduction > 0.0 && reduction < 1.0) {
        return Err(Error::InvalidReduction { reduction });
    }
    let names: Vec<String> = model
        .linear_names()
        .into_iter()
        .filter(|n| n.starts_with("model.layers."))
        .collect();
    let mut report = CompressReport::new();

    // One pass over the calibration windows on the original model.
    // (Plain SVD uses the pass only to report output errors.)
    if calibration.is_empty() && options.method.calibrates() {
        return Err(Error::NoCalibration);
    }
    let collector = if !calibration.is_empty() {
        let start = Instant::now();
        let collector = Arc::new(HessianCollector::new(names.iter().cloned()));
        model.set_observer(Some(collector.clone()));
        let pass = calibration.iter().enumerate().try_for_each(|(i, w)| {
            progress(Progress::Calibrating {
                block: i,
                blocks: calibration.len(),
            });
            model.hidden_states(w).map(|_| ())
        });
        model.set_observer(None);
        pass?;
        if let Some(e) = collector.error() {
            return Err(Error::Export {
                layer: "calibration".into(),
                reason: e,
            });
        }
        report.timings.hessian += collector.seconds();
        report.timings.forward += start.elapsed().as_secs_f64() - collector.seconds();
        Some(collector)
    } else {
        None
    };

    // Full-rank factorizations (the spectrum decides the ranks), then cut.
    let start = Instant::now();
    let wrap = |layer: &str| {
        let layer = layer.to_string();
        move |source| Error::Factorize { layer, source }
    };
    let mut full = Vec::with_capacity(names.len());
    let mut grams: BTreeMap<String, Array2<f64>> = BTreeMap::new();
    for name in &names {
        let w = weight(model, name)?;
        let (out, inp) = w.dim();
        let max = RankSelection::Rank(out.min(inp));
        let collected = collector.as_ref().map(|c| {
            c.get(name).ok_or_else(|| Error::NotObserved {
                layer: name.clone(),
            })
        });
        let collected = collected.transpose()?;
        let h = match &collected {
            Some(c) => Some(c.hessian.finalize(0.0)?.h),
            None => None,
        };
        let f = match (options.method, &collected) {
            (FactorMethod::Svd, _) => factorize(w.view(), max).map_err(wrap(name))?,
            (FactorMethod::Asvd, Some(c)) => {
                let m = c.stats.abs_mean()?;
                Asvd::default()
                    .factorize(w.view(), m.view(), max)
                    .map_err(wrap(name))?
            }
            (FactorMethod::SvdLlm, Some(_)) => {
                let h = h.as_ref().ok_or(Error::NoCalibration)?;
                Whitening::from_hessian(h.view())
                    .and_then(|white| white.factorize(w.view(), max))
                    .map_err(wrap(name))?
            }
            (_, None) => return Err(Error::NoCalibration),
        };
        if let Some(h) = h {
            grams.insert(name.clone(), h);
        }
        full.push((name.clone(), w, f));
    }
    let ranks = allocate(&full, 1.0 - reduction, options.allocation);

    for ((name, w, f), rank) in full.into_iter().zip(ranks) {
        let t0 = Instant::now();
        let f = f.truncate(rank).map_err(wrap(&name))?;
        let approx = f.reconstruct();
        let weight_error = reconstruction_error(w.view(), approx.view())
            .map_err(wrap(&name))?
            .relative
            .powi(2);
        let output_error = grams
            .get(&name)
            .map(|h| activation_error(w.view(), approx.view(), h.view()))
            .transpose()
            .map_err(wrap(&name))?
            .map(|e| e.relative.powi(2));
        set_factorized(model, &name, &f)?;
        let (out, inp) = w.dim();
        let layer = LayerReport {
            name: name.clone(),
            shape: [out, inp],
            output_error,
            weight_error,
            bits_per_weight: 16.0 * (rank * (out + inp)) as f64 / (out * inp) as f64,
            sparsity: 0.0,
            seconds: t0.elapsed().as_secs_f64(),
        };
        progress(Progress::Layer(layer.clone()));
        report.layers.push(layer);
        report.factors.insert(name, f);
    }
    report.timings.solve += start.elapsed().as_secs_f64();
    Ok(report)
}

/// Ranks for every layer under the budget `keep × Σ out·in`.
fn allocate(
    layers: &[(String, Array2<f32>, LowRank)],
    keep: f64,
    how: RankAllocation,
) -> Vec<usize> {
    let uniform: Vec<usize> = layers
        .iter()
        .map(|(_, w, _)| uniform_rank(w.nrows(), w.ncols(), keep))
        .collect();
    if how == RankAllocation::Uniform {
        return uniform;
    }
    let cost = |w: &Array2<f32>| w.nrows() + w.ncols();
    let budget: usize = layers
        .iter()
        .zip(&uniform)
        .map(|((_, w, _), r)| r * cost(w))
        .sum();
    // Every layer keeps one component; the rest go by value per parameter.
    let mut ranks = vec![1usize; layers.len()];
    let mut spent: usize = layers.iter().map(|(_, w, _)| cost(w)).sum();
    let mut candidates: Vec<(f64, usize)> = Vec::new();
    for (l, (_, w, f)) in layers.iter().enumerate() {
        let total = f.total_energy().max(f64::MIN_POSITIVE);
        for s in f.singular_values().iter().skip(1).take(f.rank() - 1) {
            let v = f64::from(*s).powi(2) / total / cost(w) as f64;
            candidates.push((v, l));
        }
    }
    // Components of a layer come in descending order, so a stable sort by
    // value keeps each layer's picks a prefix.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, l) in candidates {
        let c = cost(&layers[l].1);
        if spent + c <= budget {
            ranks[l] += 1;
            spent += c;
        }
    }
    ranks
}

fn weight(model: &LlamaModel, layer: &str) -> Result<Array2<f32>> {
    let linear = model
        .linears()
        .into_iter()
        .find(|l| l.name() == layer)
        .ok_or_else(|| Error::NotObserved {
            layer: layer.to_string(),
        })?;
    Ok(to_matrix(&linear.op().dense_weight()?)?)
}

fn set_factorized(model: &mut LlamaModel, name: &str, f: &LowRank) -> Result<()> {
    let linear = model.linear_mut(name).ok_or_else(|| Error::NotObserved {
        layer: name.to_string(),
    })?;
    let device = linear.op().dense_weight()?.device().clone();
    let bias = linear.op().bias().cloned();
    let tensor = |m: ArrayView2<'_, f32>| -> Result<Tensor> {
        Ok(Tensor::from_iter(m.iter().copied(), &device)?.reshape(m.dim())?)
    };
    let op: Arc<dyn LinearOp> =
        Arc::new(FactorizedLinear::new(tensor(f.a())?, tensor(f.b())?, bias)?);
    linear.set_op(op)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_rank_keeps_at_most_the_share() {
        // 576×576 at 80 %: r·1152 ≤ 0.8·576² → r = 230.
        assert_eq!(uniform_rank(576, 576, 0.8), 230);
        assert!(230 * 1152 <= (0.8 * 576.0 * 576.0) as usize);
        assert!(231 * 1152 > (0.8 * 576.0 * 576.0) as usize);
        assert_eq!(uniform_rank(4, 4, 1e-6), 1);
        assert_eq!(uniform_rank(4, 8, 10.0), 4);
    }

    #[test]
    fn method_names_round_trip() {
        for m in [FactorMethod::Svd, FactorMethod::Asvd, FactorMethod::SvdLlm] {
            assert_eq!(m.name().parse::<FactorMethod>(), Ok(m));
        }
        assert!("pca"
            .parse::<FactorMethod>()
            .unwrap_err()
            .contains("svd-llm"));
    }
}
