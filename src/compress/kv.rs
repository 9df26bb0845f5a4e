//! Static FP8 KV-cache scales for an exported checkpoint.

use std::collections::BTreeMap;

use tensorpress_kvcache::Fp8Scales;
use tensorpress_models::eval::calibrate_kv_amax;
use tensorpress_models::llama::LlamaModel;

use crate::Result;

/// Per-layer static FP8 (E4M3) KV-cache scales of `model`: the largest key
/// (after RoPE) and value magnitudes each block produces while decoding
/// `windows` (`chunk` tokens per step), over 448, by attention module
/// (`model.layers.N.self_attn`). Set them as
/// [`CompressReport::kv_cache_scales`](super::CompressReport::kv_cache_scales)
/// so a compressed-tensors export declares `kv_cache_scheme` and vLLM stores
/// its cache in FP8 with them. Calibrate the compressed model, as it is the
/// one that will run.
///
/// # Errors
/// A chunk of 0 or no windows; errors of the forward pass.
pub fn calibrate_kv_cache_scales(
    model: &LlamaModel,
    windows: &[Vec<u32>],
    chunk: usize,
) -> Result<BTreeMap<String, (f32, f32)>> {
    let amax = calibrate_kv_amax(model, windows, chunk)?;
    Ok(amax
        .iter()
        .enumerate()
        .filter_map(|(block, a)| {
            let scales = Fp8Scales::from_amax(a.key, a.value).as_static()?;
            Some((format!("model.layers.{block}.self_attn"), scales))
        })
        .collect())
}
