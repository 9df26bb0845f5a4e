//! GGUF export of a compressed Llama model: [`write_gguf`].
//!
//! The written file is the source GGUF with the compressed linear layers
//! swapped in: every metadata key is carried over (architecture, rope,
//! tokenizer, chat template, …) except `general.file_type`, which is set to the
//! llama.cpp file type of the dominant block type; tensors keep the source's
//! order. A model loaded from a GGUF (`LlamaModel::from_gguf`) keeps GGUF's
//! permuted Q/K rows, so its compressed weights are already in the layout the
//! file stores and go in byte for byte.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::ArrayD;

use tensorpress_io::gguf::{GgufFile, GgufValue, GgufWriter};
use tensorpress_models::llama::hf_module_to_gguf;
use tensorpress_quant_core::ggml::{quantize_rows_par, GgmlTensor, GgmlType};

use super::{CompressReport, CompressedWeight};
use crate::{Error, Result};

/// The token embedding's tensor name in a Llama GGUF.
const TOKEN_EMBD: &str = "token_embd.weight";
/// The output head's tensor name (absent when tied to the embedding).
const OUTPUT: &str = "output.weight";
/// llama.cpp's metadata key for the file type.
const FILE_TYPE: &str = "general.file_type";
/// llama.cpp's metadata key for the quantization format version.
const QUANT_VERSION: &str = "general.quantization_version";

/// How [`write_gguf`] writes the tensors that compression left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufExportOptions {
    /// Re-encode `token_embd.weight` as this type (llama-quantize's
    /// `--token-embedding-type`), with the reference encoder and no
    /// importance (an embedding row is looked up, not multiplied with
    /// activations); `None` copies it as stored. With tied embeddings this
    /// tensor is also the output head, so its type weighs on both the size
    /// and the accuracy.
    pub token_embedding_type: Option<GgmlType>,
    /// Re-encode an untied, uncompressed `output.weight` as this type
    /// (llama-quantize's `--output-tensor-type`); `None` copies it.
    pub output_type: Option<GgmlType>,
    /// Overrides `general.file_type` (a `LLAMA_FTYPE` value); `None` derives
    /// it from the block type holding the most compressed weights
    /// ([`llama_file_type`]).
    pub file_type: Option<u32>,
}

impl GgufExportOptions {
    /// Re-encodes the token embedding as `ty`.
    pub fn token_embedding_type(mut self, ty: GgmlType) -> Self {
        self.token_embedding_type = Some(ty);
        self
    }

    /// Re-encodes an untied output head as `ty`.
    pub fn output_type(mut self, ty: GgmlType) -> Self {
        self.output_type = Some(ty);
        self
    }
}

/// What [`write_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufExportSummary {
    /// File size in bytes (header, metadata, tensors, padding).
    pub file_bytes: u64,
    /// Elements over all tensors.
    pub parameters: u64,
    /// Tensors written from the compression report.
    pub compressed: usize,
    /// Tensors re-encoded from the source (embedding, output head).
    pub reencoded: usize,
    /// Tensors copied as stored.
    pub copied: usize,
    /// The `general.file_type` written.
    pub file_type: u32,
}

impl GgufExportSummary {
    /// File bits per parameter (`file_bytes · 8 / parameters`), everything
    /// counted, as the llama.cpp anchors measure it.
    pub fn bits_per_weight(&self) -> f64 {
        self.file_bytes as f64 * 8.0 / self.parameters.max(1) as f64
    }
}

/// llama.cpp's `LLAMA_FTYPE` for a file whose weights are mostly `ty`
/// (`_M` variants for the k-quants, as llama-quantize names its presets);
/// `None` for types without one.
pub fn llama_file_type(ty: GgmlType) -> Option<u32> {
    Some(match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q5_0 => 8,
        GgmlType::Q5_1 => 9,
        GgmlType::Q2K => 10,
        GgmlType::Q3K => 12,
        GgmlType::Q4K => 15,
        GgmlType::Q5K => 17,
        GgmlType::Q6K => 18,
        GgmlType::IQ4NL => 25,
        GgmlType::IQ4XS => 30,
        GgmlType::BF16 => 32,
        _ => return None,
    })
}

/// Writes `source` with the compressed layers of `report` to `path`
/// atomically (temporary file, then rename).
///
/// Layers are matched by name: each report entry (Hugging Face module name,
/// e.g. `model.layers.0.mlp.up_proj`) replaces the source tensor
/// `hf_module_to_gguf(name) + ".weight"`, whose shape it must have. Other
/// tensors are copied as stored, except the token embedding and output head
/// when `options` gives them a type.
///
/// # Errors
/// [`Error::UnmappedTensor`] when a report layer is not a GGML tensor or has
/// no tensor in `source`; [`Error::Layer`] (with a shape error) when its shape
/// differs from the source tensor's; I/O and encoding errors otherwise.
pub fn write_gguf(
    source: &GgufFile,
    report: &CompressReport,
    options: &GgufExportOptions,
    path: impl AsRef<Path>,
) -> Result<GgufExportSummary> {
    let path = path.as_ref();
    let mut layers: BTreeMap<String, (&str, &GgmlTensor)> = BTreeMap::new();
    for (name, weight) in &report.quantized {
        let CompressedWeight::Ggml(t) = weight else {
            return Err(Error::UnmappedTensor {
                name: name.clone(),
                target: "GGUF (only GGML block weights can be written)",
            });
        };
        let tensor = format!("{}.weight", hf_module_to_gguf(name));
        if source.tensor(&tensor).is_none() {
            return Err(Error::UnmappedTensor {
                name: name.clone(),
                target: "source GGUF",
            });
        }
        layers.insert(tensor, (name.as_str(), t));
    }

    // The dominant block type among the compressed weights, by element count.
    let mut by_type: BTreeMap<u32, (u64, GgmlType)> = BTreeMap::new();
    for (_, t) in layers.values() {
        let [r, c] = t.shape();
        let e = by_type
            .entry(t.ggml_type().id())
            .or_insert((0, t.ggml_type()));
        e.0 += (r * c) as u64;
    }
    let dominant = by_type.values().max_by_key(|(n, _)| *n).map(|&(_, ty)| ty);
    let file_type = options
        .file_type
        .or_else(|| dominant.and_then(llama_file_type))
        .or_else(|| {
            source
                .get(FILE_TYPE)
                .and_then(|v| v.as_integer())
                .map(|v| v as u32)
        })
        .unwrap_or(0);

    // Float tensors compression changed, by GGUF name.
    let mut replaced: BTreeMap<String, (String, &ArrayD<f32>)> = report
        .replaced
        .iter()
        .map(|(hf, v)| {
            let module = hf.strip_suffix(".weight").unwrap_or(hf);
            (
                format!("{}.weight", hf_module_to_gguf(module)),
                (hf.clone(), v),
            )
        })
        .collect();

    let mut writer = GgufWriter::new();
    for (k, v) in source.metadata().iter() {
        if k != FILE_TYPE {
            writer.add_metadata(k, v.clone())?;
        }
    }
    writer.add_metadata(FILE_TYPE, GgufValue::U32(file_type))?;
    if source.get(QUANT_VERSION).is_none() && dominant.is_some() {
        writer.add_metadata(QUANT_VERSION, GgufValue::U32(2))?;
    }

    let mut summary = GgufExportSummary {
        file_bytes: 0,
        parameters: 0,
        compressed: 0,
        reencoded: 0,
        copied: 0,
        file_type,
    };
    for info in source.tensors() {
        let name = info.name();
        let shape = info.shape().to_vec();
        summary.parameters += info.numel() as u64;
        if let Some(&(layer, t)) = layers.get(name) {
            if t.shape()[..] != shape[..] {
                return Err(Error::Layer {
                    layer: layer.to_string(),
                    source: tensorpress_quant_core::Error::Shape {
                        what: "compressed weight against the GGUF tensor",
                        expected: shape,
                        actual: t.shape().to_vec(),
                    },
                });
            }
            writer.add_tensor(name, t.ggml_type(), &shape, t.bytes())?;
            summary.compressed += 1;
            continue;
        }
        if let Some((hf, value)) = replaced.remove(name) {
            let ty = match name {
                TOKEN_EMBD => options.token_embedding_type,
                OUTPUT => options.output_type,
                _ => None,
            }
            .unwrap_or(info.ggml_type());
            add_float(&mut writer, name, &hf, value, ty, &shape)?;
            summary.reencoded += 1;
            continue;
        }
        let retype = match name {
            TOKEN_EMBD => options.token_embedding_type,
            OUTPUT => options.output_type,
            _ => None,
        };
        match retype {
            Some(ty) if ty != info.ggml_type() => {
                let mut values = vec![0.0f32; info.numel()];
                source.dequantize_into(name, &mut values)?;
                let row = shape.last().copied().unwrap_or(1).max(1);
                let mut bytes = Vec::new();
                quantize_rows_par(ty, &values, row, None, &mut bytes)?;
                writer.add_tensor(name, ty, &shape, bytes)?;
                summary.reencoded += 1;
            }
            _ => {
                writer.add_tensor(name, info.ggml_type(), &shape, source.tensor_bytes(name)?)?;
                summary.copied += 1;
            }
        }
    }
    // An output head that compression untied from the embedding: stored as
    // `output_type`, else as the embedding is stored.
    if let Some((hf, value)) = replaced.remove(OUTPUT) {
        let ty = options
            .output_type
            .or_else(|| source.tensor(TOKEN_EMBD).map(|t| t.ggml_type()))
            .unwrap_or(GgmlType::F32);
        let shape = value.shape().to_vec();
        summary.parameters += value.len() as u64;
        add_float(&mut writer, OUTPUT, &hf, value, ty, &shape)?;
        summary.reencoded += 1;
    }
    if let Some((_, (hf, _))) = replaced.into_iter().next() {
        return Err(Error::UnmappedTensor {
            name: hf,
            target: "source GGUF",
        });
    }
    writer.write(path)?;
    summary.file_bytes = std::fs::metadata(path)
        .map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    Ok(summary)
}

/// Encodes a float tensor as `ty` (f32 and f16 stored as such) and adds it.
fn add_float(
    writer: &mut GgufWriter,
    name: &str,
    hf: &str,
    value: &ArrayD<f32>,
    ty: GgmlType,
    shape: &[usize],
) -> Result<()> {
    let numel: usize = shape.iter().product();
    if numel != value.len() {
        return Err(Error::Export {
            layer: hf.to_string(),
            reason: format!(
                "replacement has {} elements, the GGUF tensor {numel}",
                value.len()
            ),
        });
    }
    let values: Vec<f32> = value.iter().copied().collect();
    let row = shape.last().copied().unwrap_or(1).max(1);
    let mut bytes = Vec::new();
    quantize_rows_par(ty, &values, row, None, &mut bytes)?;
    writer.add_tensor(name, ty, shape, bytes)?;
    Ok(())
}
