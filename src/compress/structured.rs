//! Structured FFN pruning of a Llama-family model: whole neurons leave every
//! block (rows of the gate and up projections, columns of the down
//! projection), so the written checkpoint is smaller and declares the new
//! `intermediate_size`.

use std::sync::Arc;

use candle_core::Tensor;
use ndarray::Array2;
use tensorpress_models::linear::to_matrix;
use tensorpress_models::llama::LlamaModel;
use tensorpress_sparsity::{channel_scores, keep_highest, refit_kept_channels};

use super::{CompressReport, HessianCollector, LayerReport, Progress};
use crate::{Error, Result};

/// Removes a fraction `ratio` (in `(0, 1)`, rounded up per block) of every
/// block's FFN neurons, block by block on `calibration` (the inputs of block
/// `b` come from the already pruned blocks before it): neurons are scored by
/// the down-projection output energy they carry, `‖W_down[:, i]‖² · H_ii`,
/// and the kept columns of the down projection are refit by least squares on
/// the calibration inputs ([`refit_kept_channels`], damp 1 %). The new
/// gate/up/down weights land in [`CompressReport::replaced`], so
/// [`write_hf_checkpoint`](super::write_hf_checkpoint) writes a smaller model
/// whose `config.json` has the new `intermediate_size`.
///
/// # Errors
/// A ratio outside `(0, 1)` or one that would remove every neuron
/// ([`Error::Prune`]), no calibration windows, a forward error.
pub fn prune_ffn_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    ratio: f64,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let prune_error = |layer: &str, source| Error::Prune {
        layer: layer.to_string(),
        source,
    };
    // Check the ratio before any work.
    keep_highest(
        &vec![0.0; model.params().intermediate_size],
        ratio,
        "FFN neurons",
    )
    .map_err(|e| prune_error("mlp", e))?;
    let mut report = CompressReport::new();
    let blocks = model.params().num_layers;
    let mut xs: Vec<Tensor> = calibration
        .iter()
        .map(|w| model.embed(w))
        .collect::<tensorpress_models::Result<_>>()?;
    for b in 0..blocks {
        progress(Progress::Calibrating { block: b, blocks });
        let prefix = format!("model.layers.{b}.mlp");
        let down_name = format!("{prefix}.down_proj");
        let collector = Arc::new(HessianCollector::new([down_name.clone()]));
        model.set_observer(Some(collector.clone()));
        let pass = xs
            .iter()
            .try_for_each(|x| model.forward_block(b, x).map(|_| ()));
        model.set_observer(None);
        pass?;
        let h = collector
            .get(&down_name)
            .ok_or_else(|| Error::NotObserved {
                layer: down_name.clone(),
            })?
            .hessian
            .finalize(0.0)?
            .h;
        let linear = model
            .linear_mut(&down_name)
            .ok_or_else(|| Error::NotObserved {
                layer: down_name.clone(),
            })?;
        let device = linear.op().dense_weight()?.device().clone();
        let w = to_matrix(&linear.op().dense_weight()?)?;
        let t = std::time::Instant::now();
        let scores = channel_scores(w.view(), h.view()).map_err(|e| prune_error(&down_name, e))?;
        let keep =
            keep_highest(&scores, ratio, "FFN neurons").map_err(|e| prune_error(&down_name, e))?;
        let refit = refit_kept_channels(w.view(), h.view(), &keep, 0.01)
            .map_err(|e| prune_error(&down_name, e))?;
        // The relative output error of the down projection on its inputs.
        let mut full = Array2::<f32>::zeros(w.dim());
        for (k, &i) in keep.iter().enumerate() {
            full.column_mut(i).assign(&refit.column(k));
        }
        let delta = &full - &w;
        let output_error = tensorpress_sensitivity::hessian_weighted_error(delta.view(), h.view())?
            / tensorpress_sensitivity::hessian_weighted_error(w.view(), h.view())?
                .max(f64::MIN_POSITIVE);
        let (rows, cols) = refit.dim();
        let down = Tensor::from_vec(refit.into_raw_vec_and_offset().0, (rows, cols), &device)?;
        model.shrink_ffn(b, &keep, down)?;
        let seconds = t.elapsed().as_secs_f64();
        report.timings.solve += seconds;
        for module in ["gate_proj", "up_proj", "down_proj"] {
            let name = format!("{prefix}.{module}");
            let weight = model
                .linear_mut(&name)
                .ok_or_else(|| Error::NotObserved {
                    layer: name.clone(),
                })?
                .op()
                .dense_weight()?;
            let (r, c) = weight.dims2()?;
            let layer = LayerReport {
                name: name.clone(),
                shape: [r, c],
                output_error: (module == "down_proj").then_some(output_error),
                weight_error: 0.0,
                bits_per_weight: 16.0,
                sparsity: 0.0,
                seconds: if module == "down_proj" { seconds } else { 0.0 },
            };
            progress(Progress::Layer(layer.clone()));
            report.layers.push(layer);
            report.replace(format!("{name}.weight"), &weight)?;
        }
        xs = xs
            .iter()
            .map(|x| model.forward_block(b, x))
            .collect::<tensorpress_models::Result<_>>()?;
    }
    Ok(report)
}
