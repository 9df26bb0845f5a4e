//! Decode-style evaluation: every window runs through a [`DecodeCache`] in
//! chunks, so each token attends to the (possibly compressed) keys and values
//! of the tokens before it, as in incremental decoding with that cache.

use std::cell::Cell;

use candle_core::Tensor;

use super::CausalLm;
use crate::llama::{DecodeCache, LlamaModel};
use crate::{Error, Result};

/// A [`CausalLm`] that computes a window's logits by chunked decoding into a
/// fresh cache from `new_cache` (prefill `chunk` tokens at a time), for
/// [`perplexity`](super::perplexity) with a compressed KV cache.
///
/// ```no_run
/// use std::sync::Arc;
/// use tensorpress_kvcache::{KiviCache, KiviConfig, KvCache};
/// use tensorpress_models::eval::{perplexity, DecodeStyle, PerplexityConfig};
/// use tensorpress_models::llama::{DecodeCache, LlamaModel};
///
/// # fn run(model: &LlamaModel, tokens: &[u32]) -> tensorpress_models::Result<()> {
/// let kivi = || DecodeCache::compressed(Arc::new(|_, heads, head_dim| {
///     Ok(Box::new(KiviCache::new(heads, head_dim, KiviConfig::new(2))?) as Box<dyn KvCache>)
/// }));
/// let lm = DecodeStyle::new(model, 64, &kivi)?;
/// let report = perplexity(&lm, tokens, &PerplexityConfig::with_ctx(2048), &mut |_, _| {})?;
/// println!("{:.4}, {:.0} bytes per token", report.perplexity, lm.bytes_per_token());
/// # Ok(())
/// # }
/// ```
pub struct DecodeStyle<'a> {
    model: &'a LlamaModel,
    chunk: usize,
    new_cache: &'a dyn Fn() -> DecodeCache,
    bytes_per_token: Cell<f64>,
}

impl<'a> DecodeStyle<'a> {
    /// `model` decoding `chunk` tokens per step into caches from `new_cache`.
    ///
    /// # Errors
    /// [`Error::Config`] for a chunk of 0.
    pub fn new(
        model: &'a LlamaModel,
        chunk: usize,
        new_cache: &'a dyn Fn() -> DecodeCache,
    ) -> Result<Self> {
        if chunk == 0 {
            return Err(Error::Config {
                field: "chunk",
                reason: "decode-style evaluation needs chunks of at least one token".into(),
            });
        }
        Ok(DecodeStyle {
            model,
            chunk,
            new_cache,
            bytes_per_token: Cell::new(0.0),
        })
    }

    /// Cache bytes per cached token (all blocks, keys and values) at the end
    /// of the last window evaluated.
    pub fn bytes_per_token(&self) -> f64 {
        self.bytes_per_token.get()
    }
}

impl CausalLm for DecodeStyle<'_> {
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn bos_token_id(&self) -> Option<u32> {
        self.model.bos_token_id()
    }

    fn add_bos(&self) -> bool {
        self.model.add_bos()
    }

    fn logits(&self, tokens: &[u32], from: usize) -> Result<Tensor> {
        let mut cache = (self.new_cache)();
        let mut rows = Vec::new();
        let mut start = 0;
        while start < tokens.len() {
            let end = (start + self.chunk).min(tokens.len());
            if end > from {
                let first = from.saturating_sub(start);
                rows.push(
                    self.model
                        .decode_rows(&mut cache, &tokens[start..end], first)?,
                );
            } else {
                // Rows before `from` are not needed: decode the chunk for its
                // keys and values and drop its last row.
                self.model
                    .decode_rows(&mut cache, &tokens[start..end], end - start - 1)?;
            }
            start = end;
        }
        self.bytes_per_token
            .set(cache.memory_bytes() as f64 / cache.len().max(1) as f64);
        Ok(Tensor::cat(&rows, 0)?)
    }
}

/// Largest key and value magnitudes of each block when `model` decodes
/// `windows` (`chunk` tokens per step, a fresh cache per window): the
/// calibration of static FP8 cache scales
/// ([`Fp8Scales::from_amax`](tensorpress_kvcache::Fp8Scales::from_amax)).
///
/// # Errors
/// [`Error::Config`] for a chunk of 0 or no windows; errors of the forward
/// pass.
pub fn calibrate_kv_amax(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    chunk: usize,
) -> Result<Vec<tensorpress_kvcache::Amax>> {
    use std::sync::{Arc, Mutex};
    use tensorpress_kvcache::{Amax, AmaxRecorder, KvCache};
    if chunk == 0 || windows.iter().all(|w| w.is_empty()) {
        return Err(Error::Config {
            field: "calibration",
            reason: "give at least one non-empty window and a chunk of at least one token".into(),
        });
    }
    let records: Arc<Vec<Mutex<Amax>>> = Arc::new(
        (0..model.params().num_layers)
            .map(|_| Mutex::default())
            .collect(),
    );
    for window in windows.iter().filter(|w| !w.is_empty()) {
        let shared = Arc::new(
            (0..records.len())
                .map(|_| Arc::new(Mutex::new(Amax::default())))
                .collect::<Vec<_>>(),
        );
        let slots = shared.clone();
        let mut cache = DecodeCache::compressed(Arc::new(move |block, h, d| {
            let slot = slots.get(block).cloned().unwrap_or_default();
            Ok(Box::new(AmaxRecorder::new(h, d, slot)) as Box<dyn KvCache>)
        }));
        for part in window.chunks(chunk) {
            model.decode_rows(&mut cache, part, part.len() - 1)?;
        }
        for (total, one) in records.iter().zip(shared.iter()) {
            let one = *one.lock().unwrap_or_else(|e| e.into_inner());
            let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
            t.key = t.key.max(one.key);
            t.value = t.value.max(one.value);
        }
    }
    Ok(records
        .iter()
        .map(|r| *r.lock().unwrap_or_else(|e| e.into_inner()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tensorpress_kvcache::{F32Cache, KiviCache, KiviConfig, KvCache};

    use super::*;
    use crate::eval::{perplexity, PerplexityConfig};
    use crate::llama::generate_tests::tiny_model;

    fn kivi(bits: u8) -> impl Fn() -> DecodeCache {
        move || {
            DecodeCache::compressed(Arc::new(move |_, h, d| {
                let c = KiviCache::new(h, d, KiviConfig::new(bits).group(8).residual(8))?;
                Ok(Box::new(c) as Box<dyn KvCache>)
            }))
        }
    }

    #[test]
    fn decode_style_perplexity_matches_the_full_pass_and_orders_the_caches() {
        let model = tiny_model();
        let tokens: Vec<u32> = (0..192).map(|i| (i * 7 + i / 5) % 40).collect();
        let config = PerplexityConfig::with_ctx(48);
        let run = |lm: &dyn CausalLm| perplexity(lm, &tokens, &config, &mut |_, _| {}).unwrap();
        let full = run(&model).perplexity;
        let plain = DecodeCache::new;
        let f32_boxed = || {
            DecodeCache::compressed(Arc::new(|_, h, d| {
                Ok(Box::new(F32Cache::new(h, d)) as Box<dyn KvCache>)
            }))
        };
        for (chunk, new_cache) in [(5, &plain as &dyn Fn() -> DecodeCache), (16, &f32_boxed)] {
            let lm = DecodeStyle::new(&model, chunk, new_cache).unwrap();
            let p = run(&lm).perplexity;
            assert!(
                (p / full - 1.0).abs() < 1e-4,
                "chunk {chunk}: {p} vs {full}"
            );
            // 2 blocks × 2 KV heads × 8 dims × (keys + values) × 4 bytes.
            assert_eq!(lm.bytes_per_token(), 2.0 * 2.0 * 8.0 * 2.0 * 4.0);
        }
        let (k8, k2) = (kivi(8), kivi(2));
        let l8 = DecodeStyle::new(&model, 16, &k8).unwrap();
        let l2 = DecodeStyle::new(&model, 16, &k2).unwrap();
        let (p8, p2) = (run(&l8).perplexity, run(&l2).perplexity);
        assert!((p8 / full - 1.0).abs() < 0.01, "KIVI-8 {p8} vs {full}");
        assert!(
            (p2 / full - 1.0).abs() > (p8 / full - 1.0).abs(),
            "{p2} {p8} {full}"
        );
        assert!(l2.bytes_per_token() < l8.bytes_per_token());
        assert!(l8.bytes_per_token() < 128.0);
        assert!(DecodeStyle::new(&model, 0, &k8).is_err());
    }

    #[test]
    fn fp8_with_calibrated_scales_stays_close_to_the_full_pass() {
        use tensorpress_kvcache::{Fp8Cache, Fp8Scales};
        let model = tiny_model();
        let tokens: Vec<u32> = (0..192).map(|i| (i * 7 + i / 5) % 40).collect();
        let amax = calibrate_kv_amax(
            &model,
            &[tokens[..48].to_vec(), tokens[48..96].to_vec()],
            16,
        )
        .unwrap();
        assert_eq!(amax.len(), 2);
        assert!(amax.iter().all(|a| a.key > 0.0 && a.value > 0.0));
        let config = PerplexityConfig::with_ctx(48);
        let run = |lm: &dyn CausalLm| perplexity(lm, &tokens, &config, &mut |_, _| {}).unwrap();
        let full = run(&model).perplexity;
        let scales = amax.clone();
        let new_cache = move || {
            let scales = scales.clone();
            DecodeCache::compressed(Arc::new(move |block, h, d| {
                let a = scales[block];
                let c = Fp8Cache::new(h, d, Fp8Scales::from_amax(a.key, a.value))?;
                Ok(Box::new(c) as Box<dyn KvCache>)
            }))
        };
        let lm = DecodeStyle::new(&model, 16, &new_cache).unwrap();
        let p = run(&lm).perplexity;
        assert!((p / full - 1.0).abs() < 0.02, "{p} vs {full}");
        assert!(p != full);
        // One byte per element: 2 blocks × 2 heads × 8 dims × 2.
        assert_eq!(lm.bytes_per_token(), 64.0);
        assert!(calibrate_kv_amax(&model, &[], 16).is_err());
    }

    #[test]
    fn evicting_caches_keep_their_budget_and_match_the_full_cache_at_100_percent() {
        use tensorpress_kvcache::CacheSpec;
        let model = tiny_model();
        let tokens: Vec<u32> = (0..192).map(|i| (i * 7 + i / 5) % 40).collect();
        let config = PerplexityConfig::with_ctx(48);
        let run = |lm: &dyn CausalLm| perplexity(lm, &tokens, &config, &mut |_, _| {}).unwrap();
        let full = run(&model).perplexity;
        for spec in ["h2o-p100", "snapkv-p100-w4-k3", "streaming-n48"] {
            let spec: CacheSpec = spec.parse().unwrap();
            let new_cache =
                move || DecodeCache::compressed(Arc::new(move |_, h, d| spec.build(h, d)));
            let lm = DecodeStyle::new(&model, 8, &new_cache).unwrap();
            let p = run(&lm).perplexity;
            assert!((p / full - 1.0).abs() < 1e-4, "{spec}: {p} vs {full}");
        }
        for spec in ["h2o-p50", "snapkv-p50-w4-k3", "streaming-p50-s2", "h2o-n12"] {
            let spec: CacheSpec = spec.parse().unwrap();
            let new_cache =
                move || DecodeCache::compressed(Arc::new(move |_, h, d| spec.build(h, d)));
            let lm = DecodeStyle::new(&model, 8, &new_cache).unwrap();
            let p = run(&lm).perplexity;
            assert!(
                p.is_finite() && (p / full - 1.0).abs() > 1e-6,
                "{spec}: {p} vs {full}"
            );
            // Full cache: 256 bytes per token; half the tokens kept at the
            // end of a window (the n12 budget keeps 12 of 47).
            let kept = if spec.to_string().contains("n12") {
                12.0
            } else {
                24.0
            };
            let expect = kept * 256.0 / 47.0;
            assert!(
                (lm.bytes_per_token() / expect - 1.0).abs() < 1e-9,
                "{spec}: {}",
                lm.bytes_per_token()
            );
        }
    }

    #[test]
    fn progressive_decay_gives_each_block_its_own_budget() {
        use tensorpress_kvcache::CacheSpec;
        let model = tiny_model();
        let tokens: Vec<u32> = (0..192).map(|i| (i * 7 + i / 5) % 40).collect();
        let config = PerplexityConfig::with_ctx(48);
        let spec: CacheSpec = "h2o-d50".parse().unwrap();
        let layers = model.blocks().len();
        assert_eq!(layers, 2);
        let new_cache = move || {
            DecodeCache::compressed(Arc::new(move |block, h, d| {
                spec.build_layer(block, layers, h, d)
            }))
        };
        let lm = DecodeStyle::new(&model, 8, &new_cache).unwrap();
        let p = perplexity(&lm, &tokens, &config, &mut |_, _| {})
            .unwrap()
            .perplexity;
        assert!(p.is_finite());
        // Two blocks of 128 bytes per token: the first keeps all 47 tokens of
        // a window, the second its 5 % floor, ceil(0.05 · 47) = 3.
        let expect = (47.0 + 3.0) * 128.0 / 47.0;
        assert!(
            (lm.bytes_per_token() / expect - 1.0).abs() < 1e-9,
            "{}",
            lm.bytes_per_token()
        );
    }
}
