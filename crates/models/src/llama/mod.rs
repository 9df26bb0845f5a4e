//! The Llama family (Llama 2/3, SmolLM, Mistral-style GQA models without
//! sliding windows): loading from GGUF or Hugging Face folders, and the forward pass.

mod cache;
mod config;
mod generate;
#[cfg(test)]
pub(crate) use generate::tests as generate_tests;
mod hook;
mod model;
mod names;
mod permute;

use std::path::Path;
use std::sync::Arc;

pub use cache::{CacheFactory, DecodeCache};
pub use config::{LlamaParams, RopeLayout};
pub use generate::{generate, generate_with, Generation, Sampler, Sampling};
pub use hook::FfnHook;
pub use model::{BlockNorm, LlamaBlock, LlamaModel};
pub use names::{gguf_tensor_to_hf, hf_module_to_gguf, Naming};
pub use permute::{permute_qk, QkPermutation};

use tensorpress_io::config::LlamaConfig;
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::import::{
    ActivationDynamic, ActivationStrategy, ActivationType, QuantizedCheckpoint,
};

use crate::linear::InputQuantLinear;
use crate::weights::LoadOptions;
use crate::{Error, Result};

impl LlamaModel {
    /// Loads a GGUF file (weights dequantized to f32).
    pub fn from_gguf(gguf: &GgufFile, options: LoadOptions) -> Result<Self> {
        let params = LlamaParams::from_gguf(gguf)?;
        LlamaModel::load(gguf, params, Naming::Gguf, options)
    }

    /// Loads a Hugging Face folder (`config.json` plus safetensors, sharded or not).
    /// BOS is added when `tokenizer_config.json` says `add_bos_token: true`.
    /// A quantized folder (compressed-tensors or GPTQ: a `quantization_config`
    /// in `config.json` or a `quantize_config.json`) is dequantized as it loads.
    pub fn from_hf_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        let config = LlamaConfig::from_file(dir.join("config.json"))?;
        let add_bos = read_add_bos(dir)?;
        let params = LlamaParams::from_hf_config(&config, add_bos)?;
        if is_quantized_checkpoint(dir)? {
            let weights = QuantizedCheckpoint::open(dir)?;
            let mut model = LlamaModel::load(&weights, params, Naming::HuggingFace, options)?;
            apply_input_activations(&mut model, &weights)?;
            return Ok(model);
        }
        let weights = crate::lossless::open_weights(dir)?;
        LlamaModel::load(&weights, params, Naming::HuggingFace, options)
    }
}

/// Wraps every layer whose checkpoint declares dynamic per-token symmetric
/// integer input activations (W8A8) in an [`InputQuantLinear`], so the model
/// computes what the runtime's integer kernels do.
///
/// # Errors
/// [`Error::Config`] for an activation scheme the runner cannot simulate
/// (static scales, floats, groups): evaluating without it would overstate the
/// checkpoint's accuracy.
fn apply_input_activations(model: &mut LlamaModel, weights: &QuantizedCheckpoint) -> Result<()> {
    let names = model.linear_names();
    for name in names {
        let Some(a) = weights.input_activations(&name) else {
            continue;
        };
        let supported = a.kind == ActivationType::Int
            && a.strategy == ActivationStrategy::Token
            && a.dynamic == ActivationDynamic::Dynamic
            && a.symmetric;
        if !supported {
            return Err(Error::Config {
                field: "quantization_config.input_activations",
                reason: format!(
                    "{name}: {a:?} is not simulated (only dynamic symmetric integer per-token \
                     activations are)"
                ),
            });
        }
        let linear = model.linear_mut(&name).ok_or_else(|| Error::Config {
            field: "quantization_config",
            reason: format!("no layer {name}"),
        })?;
        let op = InputQuantLinear::new(linear.op().clone(), a.num_bits)?;
        linear.set_op(Arc::new(op))?;
    }
    Ok(())
}

/// Whether `dir` holds a quantized checkpoint.
/// Whether the Hugging Face folder `dir` holds a quantized checkpoint
/// (compressed-tensors or GPTQ: a `quantization_config` in `config.json`, or
/// a `quantize_config.json`), which [`LlamaModel::from_hf_dir`] dequantizes
/// as it loads.
///
/// # Errors
/// [`Error::File`] when `config.json` cannot be read, [`Error::Config`] when
/// it is not JSON.
pub fn is_quantized_checkpoint(dir: &Path) -> Result<bool> {
    if dir.join("quantize_config.json").is_file() {
        return Ok(true);
    }
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::File { path, source })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        field: "config.json",
        reason: e.to_string(),
    })?;
    Ok(value.get("quantization_config").is_some())
}

/// `add_bos_token` from `tokenizer_config.json`, false when absent.
fn read_add_bos(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::File {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        field: "tokenizer_config.json",
        reason: e.to_string(),
    })?;
    Ok(value
        .get("add_bos_token")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false))
}
