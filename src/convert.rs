//! Checkpoint conversion: a GGUF Llama model to a Hugging Face folder, and
//! dtype changes of Hugging Face folders.
//!
//! GGUF stores the query/key rows of Llama models permuted for interleaved
//! rotary embeddings; conversion undoes the permutation so the folder loads in
//! transformers (and in [`LlamaModel::from_hf_dir`]) with identical outputs.
//! Every file is written to a temporary name in the output folder and renamed
//! into place, so an interrupted conversion never leaves a half-written file
//! under its final name.

use std::path::Path;

use ndarray::{ArrayD, Ix2};
use serde_json::json;
use tensorpress_io::config::LlamaConfig;
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_models::llama::{
    gguf_tensor_to_hf, permute_qk, LlamaModel, LlamaParams, QkPermutation,
};
use tensorpress_models::tokenizer::TextTokenizer;
use tensorpress_tensor::DType;

use tensorpress_io::write_atomic;

use crate::{Error, Result};

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
    /// Files written, relative to the output folder.
    pub files: Vec<String>,
}

/// The dtypes a converted checkpoint may store its float tensors in.
pub const CONVERT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn check_dtype(dtype: DType) -> Result<()> {
    if CONVERT_DTYPES.contains(&dtype) {
        Ok(())
    } else {
        Err(Error::ConvertDType { dtype })
    }
}

/// Converts a GGUF Llama model to a Hugging Face folder at `out`: `config.json`,
/// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and
/// `model.safetensors` with every tensor dequantized and stored as `dtype`.
/// `progress(done, total)` is called after each tensor.
pub fn gguf_to_hf(
    gguf: &GgufFile,
    out: &Path,
    dtype: DType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertReport> {
    check_dtype(dtype)?;
    let params = LlamaParams::from_gguf(gguf)?;
    let tokenizer = TextTokenizer::from_gguf(gguf)?;
    std::fs::create_dir_all(out).map_err(|source| Error::File {
        path: out.to_path_buf(),
        source,
    })?;

    let mut writer = SafetensorsWriter::new();
    writer.metadata("format", "pt");
    let infos = gguf.tensors();
    let total = infos.len();
    let mut tensor_bytes = 0u64;
    for (i, info) in infos.iter().enumerate() {
        let name = gguf_tensor_to_hf(info.name()).ok_or_else(|| Error::UnmappedTensor {
            name: info.name().to_string(),
            target: "Hugging Face Llama",
        })?;
        let mut value: ArrayD<f32> = gguf.dequantize(info.name())?;
        let heads = if name.ends_with("self_attn.q_proj.weight") {
            Some(params.num_heads)
        } else if name.ends_with("self_attn.k_proj.weight") {
            Some(params.num_kv_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            let shape = value.shape().to_vec();
            let w = value
                .into_dimensionality::<Ix2>()
                .map_err(|_| Error::NotAMatrix {
                    name: name.clone(),
                    shape,
                })?;
            value = permute_qk(w.view(), heads, QkPermutation::GgufToHf)?.into_dyn();
        }
        tensor_bytes += (value.len() * dtype.size_in_bytes()) as u64;
        writer.add_f32(&name, value.view(), dtype)?;
        progress(i + 1, total);
    }
    writer.write(&out.join("model.safetensors"))?;

    let config = llama_config_json(gguf, &params)?;
    write_atomic(&out.join("config.json"), config.as_bytes())?;
    write_atomic(&out.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.inner().id_to_token(i));
    let tok_config = json!({
        "add_bos_token": params.add_bos,
        "add_eos_token": false,
        "bos_token": token(params.bos_token_id),
        "eos_token": token(params.eos_token_id),
        "model_max_length": params.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
    });
    write_atomic(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tok_config)?.as_bytes(),
    )?;
    let gen_config = json!({
        "bos_token_id": params.bos_token_id,
        "eos_token_id": params.eos_token_id,
    });
    write_atomic(
        &out.join("generation_config.json"),
        serde_json::to_string_pretty(&gen_config)?.as_bytes(),
    )?;
    Ok(ConvertReport {
        tensors: total,
        tensor_bytes,
        files: [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ]
        .map(String::from)
        .to_vec(),
    })
}

/// The HF `config.json` text of a GGUF Llama model.
fn llama_config_json(gguf: &GgufFile, p: &LlamaParams) -> Result<String> {
    let config = LlamaConfig {
        architectures: Some(vec!["LlamaForCausalLM".into()]),
        model_type: Some("llama".into()),
        hidden_size: p.hidden_size,
        intermediate_size: p.intermediate_size,
        num_hidden_layers: p.num_layers,
        num_attention_heads: p.num_heads,
        num_key_value_heads: Some(p.num_kv_heads),
        head_dim: Some(p.head_dim),
        rms_norm_eps: p.rms_norm_eps,
        rope_theta: Some(p.rope_theta),
        vocab_size: p.vocab_size,
        max_position_embeddings: p.max_position_embeddings,
        tie_word_embeddings: Some(p.tie_word_embeddings),
        bos_token_id: p.bos_token_id,
        eos_token_id: p.eos_token_id,
        torch_dtype: None,
        ..LlamaConfig::default()
    };
    let mut value = serde_json::to_value(&config)?;
    if let Some(name) = gguf.get("general.name").and_then(|_| gguf.get_str("general.name").ok()) {
        value["_name_or_path"] = json!(name);
    }
    value["hidden_act"] = json!("silu");
    value["attention_bias"] = json!(false);
    value["mlp_bias"] = json!(false);
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Rewrites a Hugging Face folder's safetensors with every float tensor stored
/// as `dtype` (integer tensors are copied unchanged), copying the JSON files.
pub fn hf_change_dtype(
    input: &Path,
    out: &Path,
    dtype: DType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertReport> {
    check_dtype(dtype)?;
    if input == out {
        return Err(Error::SamePath {
            path: out.to_path_buf(),
        });
    }
    let model = SafetensorsModel::open(input)?;
    std::fs::create_dir_all(out).map_err(|source| Error::File {
        path: out.to_path_buf(),
        source,
    })?;
    let mut writer = SafetensorsWriter::new();
    for (k, v) in model.metadata() {
        writer.metadata(k, v);
    }
    let names: Vec<String> = model.names().map(str::to_string).collect();
    let mut tensor_bytes = 0u64;
    for (i, name) in names.iter().enumerate() {
        let view = model.view(name)?;
        if view_is_float(&view) {
            let value = model.to_f32(name)?;
            tensor_bytes += (value.len() * dtype.size_in_bytes()) as u64;
            writer.add_f32(name, value.view(), dtype)?;
        } else {
            tensor_bytes += view.data().len() as u64;
            writer.add_view(name, view)?;
        }
        progress(i + 1, names.len());
    }
    writer.write(&out.join("model.safetensors"))?;
    let mut files = vec!["model.safetensors".to_string()];
    for entry in std::fs::read_dir(input).map_err(|source| Error::File {
        path: input.to_path_buf(),
        source,
    })? {
        let entry = entry.map_err(|source| Error::File {
            path: input.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.ends_with(".json") && file_name != "model.safetensors.index.json" {
            let bytes = std::fs::read(entry.path()).map_err(|source| Error::File {
                path: entry.path(),
                source,
            })?;
            let bytes = if file_name == "config.json" {
                set_torch_dtype(&bytes, dtype)?
            } else {
                bytes
            };
            write_atomic(&out.join(&file_name), &bytes)?;
            files.push(file_name);
        }
    }
    Ok(ConvertReport {
        tensors: names.len(),
        tensor_bytes,
        files,
    })
}

fn view_is_float(view: &tensorpress_tensor::TensorView<'_>) -> bool {
    use tensorpress_tensor::Tensor;
    view.dtype().is_float()
}

fn set_torch_dtype(config: &[u8], dtype: DType) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(config)?;
    let name = match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("torch_dtype".into(), json!(name));
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// Loads whichever Llama checkpoint `path` is: a `.gguf` file or an HF folder.
pub fn load_llama(path: &Path, options: tensorpress_models::weights::LoadOptions) -> Result<LlamaModel> {
    if path.is_dir() {
        Ok(LlamaModel::from_hf_dir(path, options)?)
    } else {
        let gguf = GgufFile::open(path)?;
        Ok(LlamaModel::from_gguf(&gguf, options)?)
    }
}
