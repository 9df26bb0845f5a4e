//! What a checkpoint holds: every tensor's storage type, shape and bytes, and
//! the bits per weight of the whole file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tensorpress_io::gguf::{GgufArray, GgufFile, GgufValue};
use tensorpress_io::safetensors::SafetensorsModel;

use crate::{Error, Result};

/// One tensor of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRow {
    /// Name as stored.
    pub name: String,
    /// Storage type: a dtype (`f32`, `bf16`, …) or a GGML block type (`Q4_1`, …).
    pub storage: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Elements.
    pub params: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorRow {
    /// Bits per element of this tensor's data.
    pub fn bits_per_weight(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            self.bytes as f64 * 8.0 / self.params as f64
        }
    }
}

/// Per-storage-type totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeTotals {
    /// Tensors of this type.
    pub tensors: usize,
    /// Elements.
    pub params: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The contents of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// The files read.
    pub files: Vec<PathBuf>,
    /// Bytes of those files, headers and metadata included.
    pub file_bytes: u64,
    /// Every tensor, in storage order.
    pub tensors: Vec<TensorRow>,
    /// Metadata as `key = value` text (GGUF keys, or safetensors `__metadata__`).
    pub metadata: Vec<(String, String)>,
}

impl Summary {
    /// Elements over all tensors.
    pub fn params(&self) -> u64 {
        self.tensors.iter().map(|t| t.params).sum()
    }

    /// Bytes of tensor data.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// File bytes × 8 / all parameters: everything counted (headers,
    /// tokenizer metadata), as the project's bits-per-weight figures are.
    pub fn bits_per_weight(&self) -> f64 {
        self.file_bytes as f64 * 8.0 / self.params().max(1) as f64
    }

    /// Totals per storage type.
    pub fn by_type(&self) -> BTreeMap<String, TypeTotals> {
        let mut out: BTreeMap<String, TypeTotals> = BTreeMap::new();
        for t in &self.tensors {
            let e = out.entry(t.storage.clone()).or_default();
            e.tensors += 1;
            e.params += t.params;
            e.bytes += t.bytes;
        }
        out
    }
}

/// Reads the tensor table of a `.gguf` file, a `.safetensors` file, or a
/// Hugging Face folder (sharded or not). Tensor data is not touched.
pub fn inspect(path: &Path) -> Result<Summary> {
    let is_gguf = path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| {
                let mut magic = [0u8; 4];
                std::io::Read::read_exact(&mut f, &mut magic).map(|_| magic)
            })
            .is_ok_and(|m| &m == b"GGUF");
    if is_gguf {
        inspect_gguf(path)
    } else {
        inspect_safetensors(path)
    }
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })
}

fn inspect_gguf(path: &Path) -> Result<Summary> {
    let gguf = GgufFile::open(path)?;
    let tensors = gguf
        .tensors()
        .iter()
        .map(|t| TensorRow {
            name: t.name().to_string(),
            storage: t.ggml_type().to_string(),
            shape: t.shape().to_vec(),
            params: t.numel() as u64,
            bytes: t.n_bytes() as u64,
        })
        .collect();
    let metadata = gguf
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), render_value(v)))
        .collect();
    Ok(Summary {
        format: "gguf",
        files: vec![path.to_path_buf()],
        file_bytes: file_len(path)?,
        tensors,
        metadata,
    })
}

fn inspect_safetensors(path: &Path) -> Result<Summary> {
    let model = SafetensorsModel::open(path)?;
    let mut tensors = Vec::new();
    for name in model.names() {
        if let Some(info) = model.info(name) {
            let params: u64 = info.shape.iter().map(|&d| d as u64).product();
            tensors.push(TensorRow {
                name: name.to_string(),
                storage: info.dtype.to_string(),
                shape: info.shape.clone(),
                params,
                bytes: params * info.dtype.size_in_bytes() as u64,
            });
        }
    }
    let files: Vec<PathBuf> = model.files().into_iter().map(Path::to_path_buf).collect();
    let mut file_bytes = 0;
    for f in &files {
        file_bytes += file_len(f)?;
    }
    let metadata = model
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Summary {
        format: "safetensors",
        files,
        file_bytes,
        tensors,
        metadata,
    })
}

/// A metadata value as one line of text; long arrays show their first items.
pub fn render_value(v: &GgufValue) -> String {
    match v {
        GgufValue::U8(x) => x.to_string(),
        GgufValue::I8(x) => x.to_string(),
        GgufValue::U16(x) => x.to_string(),
        GgufValue::I16(x) => x.to_string(),
        GgufValue::U32(x) => x.to_string(),
        GgufValue::I32(x) => x.to_string(),
        GgufValue::U64(x) => x.to_string(),
        GgufValue::I64(x) => x.to_string(),
        GgufValue::F32(x) => x.to_string(),
        GgufValue::F64(x) => x.to_string(),
        GgufValue::Bool(x) => x.to_string(),
        GgufValue::String(s) => format!("{:?}", abbreviate(s, 80)),
        GgufValue::Array(a) => render_array(a),
        other => format!("{other:?}"),
    }
}

fn abbreviate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let head: String = s.chars().take(max_chars).collect();
        format!("{head}…")
    }
}

fn render_array(a: &GgufArray) -> String {
    const SHOW: usize = 5;
    fn list<T: std::fmt::Debug>(items: &[T]) -> String {
        let shown: Vec<String> = items.iter().take(SHOW).map(|x| format!("{x:?}")).collect();
        let more = if items.len() > SHOW { ", …" } else { "" };
        format!("[{}{more}] ({} items)", shown.join(", "), items.len())
    }
    match a {
        GgufArray::U8(v) => list(v),
        GgufArray::I8(v) => list(v),
        GgufArray::U16(v) => list(v),
        GgufArray::I16(v) => list(v),
        GgufArray::U32(v) => list(v),
        GgufArray::I32(v) => list(v),
        GgufArray::U64(v) => list(v),
        GgufArray::I64(v) => list(v),
        GgufArray::F32(v) => list(v),
        GgufArray::F64(v) => list(v),
        GgufArray::Bool(v) => list(v),
        GgufArray::String(v) => list(v),
        GgufArray::Array(v) => format!("[{} nested arrays]", v.len()),
        other => format!("{} items", other.len()),
    }
}
