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
use tensorpress_tensor::Tensor as _;

use tensorpress_io::write_bytes_atomic;

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
    writer.add_metadata("format", "pt")?;
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
        add_as(&mut writer, &name, value, dtype)?;
        progress(i + 1, total);
    }
    writer.write_file(out.join("model.safetensors"))?;

    let config = llama_config_json(gguf, &params, dtype)?;
    write_bytes_atomic(&out.join("config.json"), config.as_bytes())?;
    write_gguf_tokenizer_files(&tokenizer, &params, out)?;
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

/// Writes `tokenizer.json`, `tokenizer_config.json` and
/// `generation_config.json` of a GGUF model into `out`.
pub(crate) fn write_gguf_tokenizer_files(
    tokenizer: &TextTokenizer,
    params: &LlamaParams,
    out: &Path,
) -> Result<()> {
    write_bytes_atomic(&out.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
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
    write_bytes_atomic(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tok_config)?.as_bytes(),
    )?;
    let gen_config = json!({
        "bos_token_id": params.bos_token_id,
        "eos_token_id": params.eos_token_id,
    });
    write_bytes_atomic(
        &out.join("generation_config.json"),
        serde_json::to_string_pretty(&gen_config)?.as_bytes(),
    )?;
    Ok(())
}

/// The HF `config.json` text of a GGUF Llama model, checked by parsing it back.
pub(crate) fn llama_config_json(gguf: &GgufFile, p: &LlamaParams, dtype: DType) -> Result<String> {
    let mut value = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_layers,
        "num_attention_heads": p.num_heads,
        "num_key_value_heads": p.num_kv_heads,
        "head_dim": p.head_dim,
        "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta,
        "vocab_size": p.vocab_size,
        "max_position_embeddings": p.max_position_embeddings,
        "tie_word_embeddings": p.tie_word_embeddings,
        "bos_token_id": p.bos_token_id,
        "eos_token_id": p.eos_token_id,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": torch_dtype_name(dtype),
    });
    if let Ok(name) = gguf.get_str("general.name") {
        value["_name_or_path"] = json!(name);
    }
    let text = serde_json::to_string_pretty(&value)?;
    LlamaConfig::from_json_str(&text)?.validate()?;
    Ok(text)
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
        writer.add_metadata(k.clone(), v.clone())?;
    }
    let names: Vec<String> = model.names().into_iter().map(str::to_string).collect();
    let mut tensor_bytes = 0u64;
    for (i, name) in names.iter().enumerate() {
        let view = model.view(name)?;
        if view.dtype().is_float() {
            let value = model.to_f32(name)?;
            tensor_bytes += (value.len() * dtype.size_in_bytes()) as u64;
            add_as(&mut writer, name, value, dtype)?;
        } else {
            tensor_bytes += view.data().len() as u64;
            writer.add_view(name.clone(), &view)?;
        }
        progress(i + 1, names.len());
    }
    writer.write_file(out.join("model.safetensors"))?;
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
            write_bytes_atomic(&out.join(&file_name), &bytes)?;
            files.push(file_name);
        }
    }
    Ok(ConvertReport {
        tensors: names.len(),
        tensor_bytes,
        files,
    })
}

/// Adds an f32 array to `writer`, stored as `dtype` (f32, f16 or bf16).
fn add_as(
    writer: &mut SafetensorsWriter<'_>,
    name: &str,
    value: ArrayD<f32>,
    dtype: DType,
) -> Result<()> {
    match dtype {
        DType::F16 => writer.add_array(name, value.mapv(half::f16::from_f32).view())?,
        DType::BF16 => writer.add_array(name, value.mapv(half::bf16::from_f32).view())?,
        _ => writer.add_array(name, value.view())?,
    }
    Ok(())
}

/// transformers' name of a float dtype.
fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        _ => "float32",
    }
}

fn set_torch_dtype(config: &[u8], dtype: DType) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(config)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("torch_dtype".into(), json!(torch_dtype_name(dtype)));
    }
    Ok(serde_json::to_vec_pretty(&v)?)
}

/// Loads whichever Llama checkpoint `path` is: a `.gguf` file or an HF folder.
pub fn load_llama(
    path: &Path,
    options: tensorpress_models::weights::LoadOptions,
) -> Result<LlamaModel> {
    if path.is_dir() {
        Ok(LlamaModel::from_hf_dir(path, options)?)
    } else {
        let gguf = GgufFile::open(path)?;
        Ok(LlamaModel::from_gguf(&gguf, options)?)
    }
}
