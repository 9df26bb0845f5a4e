//! KVQuant's calibration pass (Hooper et al., 2024, arXiv:2401.18079): the
//! keys before RoPE and the values of every block on calibration windows,
//! with the loss gradients with respect to them (their squares are the
//! Fisher weights of the sensitivity-weighted k-means), turned into one
//! [`KvQuantLayer`] per block.
//!
//! The keys and values are read at the outputs of `k_proj` and `v_proj`
//! (before RoPE: the runner rotates after the projection). For gradients a
//! zero variable is added to each output, so `∂loss/∂output` is that
//! variable's gradient (candle keeps gradients of variables only).

use std::sync::{Arc, Mutex};

use candle_core::{Tensor, Var};
use ndarray::Array2;
use tensorpress_kvcache::{KvQuantConfig, KvQuantLayer, KvQuantSamples, Rotary, RotaryLayout};

use super::curvature::lm_loss;
use crate::linear::LinearOp;
use crate::llama::{LlamaModel, RopeLayout};
use crate::{Error, Result};

/// A projection whose outputs (and, with `grads`, a zero variable added to
/// each) are recorded.
#[derive(Debug)]
struct Tap {
    inner: Arc<dyn LinearOp>,
    grads: bool,
    seen: Mutex<Vec<(Tensor, Option<Var>)>>,
}

impl LinearOp for Tap {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.inner.forward(x)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if self.grads {
            let z = Var::zeros(y.shape(), y.dtype(), y.device())?;
            let out = (&y + z.as_tensor())?;
            seen.push((y.detach(), Some(z)));
            Ok(out)
        } else {
            seen.push((y.clone(), None));
            Ok(y)
        }
    }

    fn in_features(&self) -> usize {
        self.inner.in_features()
    }

    fn out_features(&self) -> usize {
        self.inner.out_features()
    }

    fn dense_weight(&self) -> Result<Tensor> {
        self.inner.dense_weight()
    }

    fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

/// A `[.., features]` tensor as `[rows, features]`.
fn rows(t: &Tensor) -> Result<Array2<f32>> {
    let features = t.dim(candle_core::D::Minus1)?;
    let data = t.flatten_all()?.to_vec1::<f32>()?;
    let n = data.len() / features.max(1);
    Array2::from_shape_vec((n, features), data).map_err(|e| Error::Config {
        field: "kv calibration",
        reason: e.to_string(),
    })
}

/// The rotary embedding `model` applies to its keys.
pub fn model_rotary(model: &LlamaModel) -> Rotary {
    let p = model.params();
    let layout = match p.rope_layout {
        RopeLayout::Interleaved => RotaryLayout::Interleaved,
        RopeLayout::Halves => RotaryLayout::Halves,
    };
    Rotary::new(p.rope_theta, layout)
}

/// KVQuant's per-block datatypes for `model` from `windows` (each scored
/// from its first token; a window's first `config.sinks` tokens are left
/// out as the cache keeps them in f16). With a model loaded
/// [`trainable`](crate::weights::LoadOptions::trainable) and
/// [`KvQuantConfig::fisher`], the k-means weighs each entry by its squared
/// loss gradient (the paper's Fisher information); otherwise every entry
/// weighs the same.
/// `progress(done, total)` after each window.
///
/// # Errors
/// [`Error::Config`] for no window of at least two tokens, or a model
/// without `k_proj` / `v_proj` layers; errors of the forward and backward
/// passes and of [`KvQuantLayer::calibrate`].
pub fn calibrate_kvquant(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    config: &KvQuantConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<KvQuantLayer>> {
    let windows: Vec<&Vec<u32>> = windows.iter().filter(|w| w.len() >= 2).collect();
    if windows.is_empty() {
        return Err(Error::Config {
            field: "kv calibration",
            reason: "give at least one window of two or more tokens".into(),
        });
    }
    let grads = config.fisher && !model.vars().is_empty();
    let blocks = model.params().num_layers;
    let head_dim = model.params().head_dim;
    let mut tapped = model.clone();
    let mut taps: Vec<[Arc<Tap>; 2]> = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let mut pair = Vec::with_capacity(2);
        for proj in ["k_proj", "v_proj"] {
            let name = format!("model.layers.{b}.self_attn.{proj}");
            let linear = tapped.linear_mut(&name).ok_or_else(|| Error::Config {
                field: "kv calibration",
                reason: format!("the model has no layer `{name}`"),
            })?;
            let tap = Arc::new(Tap {
                inner: linear.op().clone(),
                grads,
                seen: Mutex::new(Vec::new()),
            });
            linear.set_op(tap.clone())?;
            pair.push(tap);
        }
        let [k, v]: [Arc<Tap>; 2] = pair.try_into().expect("two projections");
        taps.push([k, v]);
    }

    // Per block: keys, values, their gradients; positions shared.
    let mut acc: Vec<[Vec<Array2<f32>>; 4]> = (0..blocks).map(|_| Default::default()).collect();
    let mut positions = Vec::new();
    for (i, window) in windows.iter().enumerate() {
        let n = window.len() - 1;
        let store = if grads {
            let loss = lm_loss(&tapped, window)?;
            Some(loss.backward()?)
        } else {
            tapped.logits(&window[..n], 0)?;
            None
        };
        positions.extend(0..n);
        for (b, pair) in taps.iter().enumerate() {
            for (j, tap) in pair.iter().enumerate() {
                let mut seen = tap.seen.lock().unwrap_or_else(|e| e.into_inner());
                let (y, z) = seen.pop().ok_or_else(|| Error::Config {
                    field: "kv calibration",
                    reason: format!("block {b} was not run"),
                })?;
                seen.clear();
                acc[b][j].push(rows(&y)?);
                if let (Some(store), Some(z)) = (&store, z) {
                    let g = store.get(z.as_tensor()).ok_or_else(|| Error::Config {
                        field: "kv calibration",
                        reason: format!("no gradient reached block {b}'s cache"),
                    })?;
                    acc[b][2 + j].push(rows(g)?);
                }
            }
        }
        progress(i + 1, windows.len());
    }

    let rotary = model_rotary(model);
    let stack = |parts: &[Array2<f32>]| -> Result<Array2<f32>> {
        let views: Vec<_> = parts.iter().map(|a| a.view()).collect();
        ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| Error::Config {
            field: "kv calibration",
            reason: e.to_string(),
        })
    };
    let mut layers = Vec::with_capacity(blocks);
    for (b, parts) in acc.iter().enumerate() {
        let keys = stack(&parts[0])?;
        let values = stack(&parts[1])?;
        let mut samples = KvQuantSamples::new(keys.view(), values.view(), &positions);
        let (kg, vg);
        if grads {
            kg = stack(&parts[2])?;
            vg = stack(&parts[3])?;
            samples = samples.with_grads(kg.view(), vg.view());
        }
        let layer = KvQuantLayer::calibrate(config, rotary, head_dim, &samples).map_err(|e| {
            Error::Config {
                field: "kv calibration",
                reason: format!("block {b}: {e}"),
            }
        })?;
        layers.push(layer);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{perplexity, DecodeStyle, PerplexityConfig};
    use crate::llama::generate_tests::tiny_model;
    use crate::llama::DecodeCache;
    use tensorpress_kvcache::{KvCache, KvQuantCache};

    fn windows() -> Vec<Vec<u32>> {
        (0..4)
            .map(|w| {
                (0..40)
                    .map(|i| ((i * 7 + w * 3 + i / 5) % 38 + 2) as u32)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn calibrated_kvquant_tracks_the_full_cache_and_bits_matter() {
        let model = tiny_model();
        let tokens: Vec<u32> = (0..192).map(|i| (i * 7 + i / 5) % 40).collect();
        let config = PerplexityConfig::with_ctx(48);
        let full = perplexity(&model, &tokens, &config, &mut |_, _| {})
            .unwrap()
            .perplexity;
        let rotary = model_rotary(&model);
        let mut gaps = Vec::new();
        for bits in [2u8, 4] {
            let kvq = KvQuantConfig::new(bits);
            let layers: Arc<Vec<Arc<KvQuantLayer>>> = Arc::new(
                calibrate_kvquant(&model, &windows(), &kvq, &mut |_, _| {})
                    .unwrap()
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            );
            assert_eq!(layers.len(), 2);
            let new_cache = move || {
                let layers = layers.clone();
                DecodeCache::compressed(Arc::new(move |block, h, d| {
                    Ok(
                        Box::new(KvQuantCache::new(h, d, kvq, rotary, layers[block].clone())?)
                            as Box<dyn KvCache>,
                    )
                }))
            };
            let lm = DecodeStyle::new(&model, 8, &new_cache).unwrap();
            let p = perplexity(&lm, &tokens, &config, &mut |_, _| {})
                .unwrap()
                .perplexity;
            gaps.push((p / full - 1.0).abs());
        }
        // A random two-block model calibrated on other token patterns: 4
        // bits within 5 % (2.3 % when written), 2 bits several times worse.
        assert!(gaps[1] < 0.05, "{gaps:?}");
        assert!(gaps[1] < gaps[0] / 4.0, "{gaps:?}");
    }

    #[test]
    fn fisher_weights_come_from_a_trainable_model() {
        use crate::llama::generate_tests::tiny_model_with;
        use crate::weights::LoadOptions;
        let plain = tiny_model_with(LoadOptions::default());
        let trainable = tiny_model_with(LoadOptions::trainable());
        let kvq = KvQuantConfig::new(3);
        let mut calls = 0;
        let a = calibrate_kvquant(&plain, &windows(), &kvq, &mut |_, _| calls += 1).unwrap();
        let b = calibrate_kvquant(&trainable, &windows(), &kvq, &mut |_, _| {}).unwrap();
        assert_eq!(calls, 4);
        // Same activations, so the same key ranges; Fisher weights move
        // the levels.
        assert_eq!(a[0].key_center, b[0].key_center);
        assert_ne!(a[0].key_levels, b[0].key_levels);
        assert!(calibrate_kvquant(&plain, &[vec![1]], &kvq, &mut |_, _| {}).is_err());
    }
}
