//! Writing a compressed Llama model as a Hugging Face checkpoint:
//! compressed-tensors (`pack-quantized`, what vLLM and transformers load),
//! GPTQ v1 (`quantize_config.json`), or plain dequantized safetensors.
//!
//! The layers come from a [`CompressReport`]; every other tensor (embeddings,
//! norms, layers left unquantized) is copied from the source checkpoint, a
//! GGUF file or a Hugging Face folder. From a GGUF source, the query and key
//! projections are moved back from GGUF's permuted row order to Hugging Face's
//! (their codes, scales and zero points move with the rows, so nothing is
//! requantized), and `config.json` and the tokenizer files are generated from
//! the GGUF metadata. Each file is written under a temporary name and renamed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{Array2, ArrayD, ArrayView1, Ix2};
use serde_json::{json, Value};
use tensorpress_io::export::{
    ActivationScheme, CompressedTensorsWriter, DequantizedWriter, FloatDType, GptqWriter,
    SparseLayout,
};
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::safetensors::SafetensorsModel;
use tensorpress_io::write_bytes_atomic;
use tensorpress_models::llama::{gguf_tensor_to_hf, permute_qk, LlamaParams, QkPermutation};
use tensorpress_models::tokenizer::TextTokenizer;
use tensorpress_quant_core::{Format, QuantizedTensor};

use super::{CompressReport, CompressedWeight};
use crate::convert::{llama_config_json, write_gguf_tokenizer_files};
use crate::{Error, Result};

/// The checkpoint layouts [`write_hf_checkpoint`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// compressed-tensors `pack-quantized` (int4 codes packed in int32 words,
    /// `quantization_config` in `config.json`). Groups must tile the input
    /// width (576 columns take g64 or g32, not g128).
    CompressedTensors,
    /// GPTQ v1 (`qweight`/`qzeros`/`scales`/`g_idx`, `quantize_config.json`);
    /// a last partial group is allowed.
    Gptq,
    /// Every weight dequantized and stored as a float.
    Dequantized,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "compressed-tensors" | "ct" => Ok(ExportFormat::CompressedTensors),
            "gptq" => Ok(ExportFormat::Gptq),
            "dequantized" | "dense" => Ok(ExportFormat::Dequantized),
            other => Err(format!(
                "unknown format `{other}`: compressed-tensors, gptq, dequantized (or gguf)"
            )),
        }
    }
}

/// How to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// The layout.
    pub format: ExportFormat,
    /// The float type of scales, unquantized tensors and dequantized weights
    /// (`torch_dtype` in `config.json`).
    pub dtype: FloatDType,
}

impl ExportOptions {
    /// `format` with f16 floats (what GPTQ kernels expect for scales).
    pub fn new(format: ExportFormat) -> Self {
        ExportOptions {
            format,
            dtype: FloatDType::F16,
        }
    }
}

/// What [`write_hf_checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Bytes of the safetensors files.
    pub tensor_bytes: u64,
    /// Parameters of the model (every tensor element of the source).
    pub parameters: u64,
}

impl ExportReport {
    /// Safetensors bytes × 8 per parameter.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.parameters.max(1) as f64
    }
}

/// The three writers behind one interface.
enum Writer<'a> {
    Ct(CompressedTensorsWriter<'a>),
    Gptq(GptqWriter<'a>),
    Dense(DequantizedWriter<'a>),
}

impl Writer<'_> {
    fn add_quantized(&mut self, module: &str, q: &QuantizedTensor) -> Result<()> {
        let bias: Option<ArrayView1<'_, f32>> = None;
        match self {
            Writer::Ct(w) => w.add_quantized(module, q, bias)?,
            Writer::Gptq(w) => w.add_quantized(module, q, bias)?,
            Writer::Dense(w) => w.add_quantized(module, q, bias)?,
        }
        Ok(())
    }

    fn add_float(&mut self, name: &str, value: &ArrayD<f32>, dtype: FloatDType) -> Result<()> {
        macro_rules! add {
            ($a:expr) => {
                match self {
                    Writer::Ct(w) => w.add_array(name, $a.view())?,
                    Writer::Gptq(w) => w.add_array(name, $a.view())?,
                    Writer::Dense(w) => w.add_array(name, $a.view())?,
                }
            };
        }
        match dtype {
            FloatDType::F32 => add!(value),
            FloatDType::F16 => add!(value.mapv(f16::from_f32)),
            FloatDType::BF16 => add!(value.mapv(bf16::from_f32)),
        }
        Ok(())
    }

    fn write_dir(&self, dir: &Path, config: &Value) -> Result<Vec<PathBuf>> {
        Ok(match self {
            Writer::Ct(w) => w.write_dir(dir, config)?,
            Writer::Gptq(w) => w.write_dir(dir, config)?,
            Writer::Dense(w) => w.write_dir(dir, config)?,
        })
    }
}

/// The N:M pattern every pruned layer follows (`"2:4"`, `"4:8"`), or
/// `"unstructured"`; `None` without pruned layers.
fn sparsity_structure(report: &CompressReport) -> Option<&'static str> {
    if report.masks.is_empty() {
        return None;
    }
    for (n, m, name) in [(2, 4, "2:4"), (4, 8, "4:8")] {
        if report
            .masks
            .values()
            .all(|mask| mask.validate_n_m(n, m).is_ok())
        {
            return Some(name);
        }
    }
    Some("unstructured")
}

/// The source checkpoint, read tensor by tensor in Hugging Face naming and layout.
enum Source {
    Gguf(Box<GgufFile>),
    Hf(SafetensorsModel, PathBuf),
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Ok(Source::Hf(
                SafetensorsModel::open(path)?,
                path.to_path_buf(),
            ))
        } else {
            Ok(Source::Gguf(Box::new(GgufFile::open(path)?)))
        }
    }

    /// `(hf_name, source_name)` of every tensor.
    fn names(&self) -> Result<Vec<(String, String)>> {
        match self {
            Source::Gguf(g) => g
                .tensors()
                .iter()
                .map(|info| {
                    let hf =
                        gguf_tensor_to_hf(info.name()).ok_or_else(|| Error::UnmappedTensor {
                            name: info.name().to_string(),
                            target: "Hugging Face Llama",
                        })?;
                    Ok((hf, info.name().to_string()))
                })
                .collect(),
            Source::Hf(m, _) => Ok(m
                .names()
                .into_iter()
                .map(|n| (n.to_string(), n.to_string()))
                .collect()),
        }
    }

    /// A tensor as f32, query/key rows in Hugging Face order.
    fn load(&self, hf: &str, source: &str, params: &LlamaParams) -> Result<ArrayD<f32>> {
        match self {
            Source::Hf(m, _) => Ok(m.to_f32(source)?),
            Source::Gguf(g) => {
                let value = g.dequantize(source)?;
                match qk_heads(hf, value.shape().first().copied().unwrap_or(0), params) {
                    None => Ok(value),
                    Some(heads) => {
                        let shape = value.shape().to_vec();
                        let w =
                            value
                                .into_dimensionality::<Ix2>()
                                .map_err(|_| Error::NotAMatrix {
                                    name: hf.to_string(),
                                    shape,
                                })?;
                        Ok(permute_qk(w.view(), heads, QkPermutation::GgufToHf)?.into_dyn())
                    }
                }
            }
        }
    }
}

/// A tensor of the model's layout in Hugging Face layout: query/key rows of a
/// GGUF-loaded model go back to Hugging Face order.
fn model_to_hf_layout(
    src: &Source,
    hf: &str,
    value: &ArrayD<f32>,
    params: &LlamaParams,
) -> Result<ArrayD<f32>> {
    match (
        src,
        qk_heads(hf, value.shape().first().copied().unwrap_or(0), params),
    ) {
        (Source::Gguf(_), Some(heads)) => {
            let w = value
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|_| Error::NotAMatrix {
                    name: hf.to_string(),
                    shape: value.shape().to_vec(),
                })?;
            Ok(permute_qk(w, heads, QkPermutation::GgufToHf)?.into_dyn())
        }
        _ => Ok(value.clone()),
    }
}

/// Heads of a query/key projection weight or module of `rows` rows (`None`
/// for other tensors): `rows / head_dim`, so a query projection whose heads
/// were pruned is unpermuted head by head too.
pub(super) fn qk_heads(name: &str, rows: usize, p: &LlamaParams) -> Option<usize> {
    let module = name.strip_suffix(".weight").unwrap_or(name);
    (module.ends_with("self_attn.q_proj") || module.ends_with("self_attn.k_proj"))
        .then(|| rows / p.head_dim.max(1))
}

/// The row order that takes a GGUF-permuted query/key weight of `rows` rows
/// to Hugging Face's: row `i` of the result is row `order[i]` of the input.
pub(super) fn gguf_to_hf_row_order(rows: usize, heads: usize) -> Result<Vec<usize>> {
    let index = Array2::from_shape_fn((rows, 1), |(r, _)| r as f32);
    let permuted = permute_qk(index.view(), heads, QkPermutation::GgufToHf)?;
    Ok(permuted.iter().map(|&r| r as usize).collect())
}

/// Runs `write` on a sibling staging folder of `out` and renames it into
/// place, so an interrupted run leaves no partial folder at `out` (which
/// must be missing or empty). Returns the written paths under `out`.
pub(super) fn write_staged(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<Vec<PathBuf>>,
) -> Result<Vec<PathBuf>> {
    let staging = staging_dir(out)?;
    let mut files = match write(&staging) {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        // Only an empty folder may be replaced (checked before writing).
        std::fs::remove_dir(out).map_err(|source| Error::File {
            path: out.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(&staging, out).map_err(|source| Error::File {
        path: out.to_path_buf(),
        source,
    })?;
    for f in &mut files {
        if let Ok(rel) = f.strip_prefix(&staging) {
            *f = out.join(rel);
        }
    }
    Ok(files)
}

/// Writes the tensors, `config.json` and the tokenizer files into `dir`.
fn write_all(
    writer: &Writer<'_>,
    config: &Value,
    src: &Source,
    params: &LlamaParams,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut files = writer.write_dir(dir, config)?;
    match src {
        Source::Gguf(g) => {
            let tokenizer = TextTokenizer::from_gguf(g)?;
            write_gguf_tokenizer_files(&tokenizer, params, dir)?;
            for name in [
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
            ] {
                files.push(dir.join(name));
            }
        }
        Source::Hf(_, src_dir) => {
            for name in [
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
                "special_tokens_map.json",
            ] {
                let from = src_dir.join(name);
                if from.is_file() {
                    let bytes = std::fs::read(&from).map_err(|source| Error::File {
                        path: from.clone(),
                        source,
                    })?;
                    write_bytes_atomic(&dir.join(name), &bytes)?;
                    files.push(dir.join(name));
                }
            }
        }
    }
    Ok(files)
}

/// A fresh staging folder next to `out`; fails when `out` is a file or a
/// folder that is not empty (nothing is overwritten).
fn staging_dir(out: &Path) -> Result<PathBuf> {
    if out.is_file()
        || (out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|source| Error::File {
                    path: out.to_path_buf(),
                    source,
                })?
                .next()
                .is_some())
    {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
        });
    }
    let name = out
        .file_name()
        .map_or("checkpoint".into(), |n| n.to_string_lossy().into_owned());
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|source| Error::File {
        path: parent.clone(),
        source,
    })?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    std::fs::create_dir(&staging).map_err(|source| Error::File {
        path: staging.clone(),
        source,
    })?;
    Ok(staging)
}

/// Writes the model `source` (a `.gguf` file or a Hugging Face folder) with
/// the layers of `report` quantized, as `options` says, into the folder `out`.
///
/// The checkpoint is staged in a hidden sibling folder and renamed to `out`
/// when complete; `out` must not exist or be an empty folder.
///
/// # Errors
/// [`Error::OutputExists`] when `out` holds files; [`Error::SamePath`] when
/// `out` is the source folder; a typed
/// [`tensorpress_io::Error`] when a layer does not fit the format (e.g.
/// compressed-tensors with groups that do not tile the row, or a GGML layer,
/// which only a GGUF file can hold).
pub fn write_hf_checkpoint(
    source: &Path,
    report: &CompressReport,
    options: &ExportOptions,
    out: &Path,
) -> Result<ExportReport> {
    if source == out {
        return Err(Error::SamePath {
            path: out.to_path_buf(),
        });
    }
    let src = Source::open(source)?;
    let (params, mut config) = match &src {
        Source::Gguf(g) => {
            let params = LlamaParams::from_gguf(g)?;
            let text = llama_config_json(g, &params, options.dtype.dtype())?;
            (params, serde_json::from_str::<Value>(&text)?)
        }
        Source::Hf(_, dir) => {
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            let config: Value = serde_json::from_str(&text)?;
            let llama = tensorpress_io::config::LlamaConfig::from_json_str(&text)?;
            (LlamaParams::from_hf_config(&llama, false)?, config)
        }
    };
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), json!(options.dtype.torch_name()));
        obj.remove("quantization_config");
    }
    // Structured FFN pruning: the new width, the same in every block.
    let widths: std::collections::BTreeSet<usize> = report
        .replaced
        .iter()
        .filter(|(name, _)| name.ends_with(".mlp.gate_proj.weight"))
        .map(|(_, v)| v.shape()[0])
        .collect();
    if let Some(&width) = widths.first() {
        let pruned = report
            .replaced
            .keys()
            .filter(|n| n.ends_with(".mlp.gate_proj.weight"))
            .count();
        if widths.len() > 1 || (width != params.intermediate_size && pruned != params.num_layers) {
            return Err(Error::Export {
                layer: "mlp".into(),
                reason: format!(
                    "the FFN widths differ across blocks ({widths:?}): Hugging Face Llama \
                     configs hold one intermediate_size"
                ),
            });
        }
        if let Some(obj) = config.as_object_mut() {
            obj.insert("intermediate_size".into(), json!(width));
        }
    }

    // Structured head pruning: the new query-head count, the same in every
    // block (head_dim is written explicitly, as it no longer follows from
    // hidden_size / num_attention_heads).
    let heads: std::collections::BTreeSet<usize> = report
        .replaced
        .iter()
        .filter(|(name, _)| name.ends_with(".self_attn.q_proj.weight"))
        .map(|(_, v)| v.shape()[0] / params.head_dim.max(1))
        .collect();
    if let Some(&count) = heads.first() {
        let pruned = report
            .replaced
            .keys()
            .filter(|n| n.ends_with(".self_attn.q_proj.weight"))
            .count();
        if heads.len() > 1 || (count != params.num_heads && pruned != params.num_layers) {
            return Err(Error::Export {
                layer: "self_attn".into(),
                reason: format!(
                    "the attention head counts differ across blocks ({heads:?}): Hugging Face \
                     Llama configs hold one num_attention_heads"
                ),
            });
        }
        if let Some(obj) = config.as_object_mut() {
            obj.insert("num_attention_heads".into(), json!(count));
            obj.insert("head_dim".into(), json!(params.head_dim));
        }
    }

    let structure = sparsity_structure(report);
    let mut writer = match options.format {
        ExportFormat::CompressedTensors => {
            let mut w = CompressedTensorsWriter::new().float_dtype(options.dtype);
            if let Some(a) = report.activations {
                if a.bits != 8 {
                    return Err(Error::Export {
                        layer: "input activations".into(),
                        reason: format!(
                            "compressed-tensors runtimes take 8-bit activations, not {}",
                            a.bits
                        ),
                    });
                }
                w = w.input_activations(ActivationScheme::int8_per_token());
            }
            if let Some(structure) = structure {
                w = w.sparsity_structure(structure);
            }
            Writer::Ct(w)
        }
        _ if report.activations.is_some() => {
            return Err(Error::Export {
                layer: "input activations".into(),
                reason: format!(
                    "a {:?} checkpoint cannot declare activation quantization: \
                     use --format compressed-tensors",
                    options.format
                ),
            })
        }
        ExportFormat::Gptq => Writer::Gptq(GptqWriter::new()),
        ExportFormat::Dequantized => Writer::Dense(DequantizedWriter::new(options.dtype)),
    };
    if !report.kv_cache_scales.is_empty() {
        match &mut writer {
            Writer::Ct(w) => {
                for (attention, &(key, value)) in &report.kv_cache_scales {
                    w.add_kv_cache_scales(attention, key, value)?;
                }
            }
            _ => {
                return Err(Error::Export {
                    layer: "kv cache".into(),
                    reason: format!(
                        "a {:?} checkpoint cannot declare FP8 KV-cache scales: \
                         use --format compressed-tensors",
                        options.format
                    ),
                })
            }
        }
    }
    let mut parameters = 0u64;
    let mut written = std::collections::BTreeSet::new();
    let mut factored = BTreeMap::new();
    for (hf, source_name) in src.names()? {
        let module = hf.strip_suffix(".weight");
        // A factorized layer: `{module}.u.weight` [out, r] and
        // `{module}.v.weight` [r, in] instead of `{module}.weight`.
        if let Some((module, f)) = module.and_then(|m| report.factors.get_key_value(m)) {
            if !matches!(writer, Writer::Dense(_)) {
                return Err(Error::Export {
                    layer: module.clone(),
                    reason: "factorized layers are written as float u/v factor pairs: \
                             use --format dequantized"
                        .into(),
                });
            }
            let a = model_to_hf_layout(&src, &hf, &f.a().to_owned().into_dyn(), &params)?;
            writer.add_float(&format!("{module}.u.weight"), &a, options.dtype)?;
            writer.add_float(
                &format!("{module}.v.weight"),
                &f.b().to_owned().into_dyn(),
                options.dtype,
            )?;
            parameters += f.params() as u64;
            factored.insert(module.clone(), f.rank());
            written.insert(hf);
            continue;
        }
        let compressed = module.and_then(|m| report.quantized.get(m));
        match (module, compressed) {
            (Some(module), Some(CompressedWeight::Quantized(q))) => {
                let [rows, cols] = q.shape();
                parameters += (rows * cols) as u64;
                let q = match (&src, qk_heads(module, rows, &params)) {
                    (Source::Gguf(_), Some(heads)) => {
                        q.permute_rows(&gguf_to_hf_row_order(rows, heads)?)?
                    }
                    _ => q.clone(),
                };
                let sparse_codes = match &writer {
                    // compressed-tensors sparsifies unpacked symmetric codes
                    // (int8 W8A8, FP8); packed words stay dense.
                    Writer::Ct(w) if report.masks.contains_key(module) => {
                        let spec = q.spec();
                        w.format_for(spec).is_some_and(|f| f.stores_weight())
                            && (spec.symmetric || !matches!(spec.format, Format::Int { .. }))
                    }
                    _ => false,
                };
                match &mut writer {
                    Writer::Ct(w) if sparse_codes => {
                        let layout = if structure == Some("2:4") {
                            SparseLayout::TwoFour
                        } else {
                            SparseLayout::Bitmask
                        };
                        w.add_sparse_quantized(module, &q, None, layout)?;
                    }
                    _ => writer.add_quantized(module, &q)?,
                }
            }
            (Some(module), Some(CompressedWeight::Ggml(g))) => {
                return Err(Error::Export {
                    layer: module.to_string(),
                    reason: format!(
                        "{} blocks are a GGML type: write a GGUF file instead",
                        g.ggml_type().name()
                    ),
                })
            }
            _ => {
                let value = match report.replaced.get(&hf) {
                    Some(v) => model_to_hf_layout(&src, &hf, v, &params)?,
                    None => src.load(&hf, &source_name, &params)?,
                };
                parameters += value.len() as u64;
                // A pruned layer: compressed-tensors' sparse bitmask.
                match (
                    &mut writer,
                    module.filter(|m| report.masks.contains_key(*m)),
                ) {
                    (Writer::Ct(w), Some(module)) => {
                        let matrix = value.view().into_dimensionality::<Ix2>().map_err(|_| {
                            Error::NotAMatrix {
                                name: hf.clone(),
                                shape: value.shape().to_vec(),
                            }
                        })?;
                        if structure == Some("2:4") {
                            w.add_sparse_24_bitmask(module, matrix)?;
                        } else {
                            w.add_sparse_bitmask(module, matrix)?;
                        }
                    }
                    _ => writer.add_float(&hf, &value, options.dtype)?,
                }
                written.insert(hf);
            }
        }
    }
    // Tensors the source lacks: an output head that compression untied.
    for (hf, value) in &report.replaced {
        if written.contains(hf) {
            continue;
        }
        if hf != "lm_head.weight" {
            return Err(Error::UnmappedTensor {
                name: hf.clone(),
                target: "the source checkpoint",
            });
        }
        parameters += value.len() as u64;
        writer.add_float(hf, value, options.dtype)?;
        if let Some(obj) = config.as_object_mut() {
            obj.insert("tie_word_embeddings".into(), json!(false));
        }
    }
    if let Some(obj) = config.as_object_mut().filter(|_| !factored.is_empty()) {
        obj.insert(
            "tensorpress_factorized".into(),
            json!({
                "format": "low-rank u·v: {module}.weight ≈ {module}.u.weight [out, r] × {module}.v.weight [r, in]",
                "ranks": factored,
            }),
        );
    }
    // Everything goes to a sibling staging folder that is renamed into place
    // at the end, so an interrupted run leaves no partial checkpoint at `out`.
    let files = write_staged(out, |staging| {
        write_all(&writer, &config, &src, &params, staging)
    })?;
    let mut tensor_bytes = 0u64;
    for f in &files {
        if f.extension().is_some_and(|e| e == "safetensors") {
            tensor_bytes += std::fs::metadata(f)
                .map_err(|source| Error::File {
                    path: f.clone(),
                    source,
                })?
                .len();
        }
    }
    Ok(ExportReport {
        files,
        tensor_bytes,
        parameters,
    })
}
