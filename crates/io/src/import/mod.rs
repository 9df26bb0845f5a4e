//! Readers of quantized checkpoints: compressed-tensors folders
//! (`pack-quantized`, `int-quantized`, `float-quantized`, `naive-quantized`,
//! `nvfp4-pack-quantized`, `mxfp4-pack-quantized`, `mxfp6-pack-quantized`,
//! `mxfp8-quantized`, and `mixed-precision` combinations of them) and GPTQ
//! (v1 and v2) folders back into [`QuantizedTensor`]s.
//!
//! [`QuantizedCheckpoint::open`] maps the safetensors files, parses the
//! quantization config (`quantization_config` in `config.json`, or GPTQ's
//! `quantize_config.json`) and indexes the quantized modules; each layer is
//! unpacked when asked for ([`QuantizedCheckpoint::layer`]), so a model can be
//! streamed layer by layer. Reading what [`export`](crate::export) wrote gives
//! back the same tensors: codes, scales, zero points and act-order `g_idx`
//! (GPTQ stores scales in f16, and per-tensor scales per channel). A
//! compressed-tensors group's declared input-activation quantization is
//! available per module ([`QuantizedCheckpoint::input_activations`]).
//!
//! compressed-tensors keeps NVFP4's global scale as the reciprocal of
//! tensorpress' tensor scale and dequantizes with `block / global`; the
//! reader sets the tensor scale to `1 / global` (f32), so a weight decodes to
//! what compressed-tensors computes, or within one f32 ulp of it.
//!
//! Files are untrusted: dtypes and shapes are checked against the config and
//! against each other before anything is unpacked, and problems are typed
//! [`QuantFormatError`]s (or [`Error::Quant`] from the unpacking) naming the tensor.

mod compressed_tensors;
mod ct_float;
mod ct_sparse;
mod gptq;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ndarray::{Array1, Array2, ArrayD};
use serde_json::Value;
use tensorpress_quant_core::pack::compressed_tensors::CtPacking;
use tensorpress_quant_core::pack::gptq::ZeroFormat;
use tensorpress_quant_core::{QuantSpec, QuantizedTensor};
use tensorpress_tensor::{DType, Tensor};

pub use crate::export::{
    ActivationDynamic, ActivationScheme, ActivationStrategy, ActivationType, CtFormat,
    QuantFormatError, SparseLayout,
};
use crate::safetensors::SafetensorsModel;
use crate::{Error, Result};

/// Which format a checkpoint is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantizedFormat {
    /// compressed-tensors, with the `pack-quantized` word filling its
    /// `version` implies (each tensor's own shape decides where it can);
    /// each module's layout is [`QuantizedCheckpoint::ct_format`].
    CompressedTensors(CtPacking),
    /// GPTQ, with its zero-point storage.
    Gptq(ZeroFormat),
}

/// A quantized Hugging Face folder, opened for reading.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_io::export::GptqWriter;
/// use tensorpress_io::import::{QuantizedCheckpoint, QuantizedFormat};
/// use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
///
/// let w = Array2::from_shape_fn((32, 64), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
/// let q = Rtn::new(QuantSpec::int(4).group(32)).quantize(w.view(), None)?;
/// let dir = tempfile::tempdir()?;
/// let mut gw = GptqWriter::new();
/// gw.add_quantized("model.layers.0.mlp.down_proj", &q, None)?;
/// gw.add_array("model.norm.weight", ndarray::Array1::<f32>::ones(8).into_dyn().view())?;
/// gw.write_dir(dir.path(), &serde_json::json!({"model_type": "llama"}))?;
///
/// let ckpt = QuantizedCheckpoint::open(dir.path())?;
/// assert!(matches!(ckpt.format(), QuantizedFormat::Gptq(_)));
/// assert_eq!(ckpt.modules(), ["model.layers.0.mlp.down_proj"]);
/// assert_eq!(ckpt.passthrough(), ["model.norm.weight"]);
/// let back = ckpt.layer("model.layers.0.mlp.down_proj")?;
/// // GPTQ stores scales in f16: the codes and zero points come back exactly.
/// assert_eq!(back.codes(), q.codes());
/// assert_eq!(back.zeros(), q.zeros());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct QuantizedCheckpoint {
    model: SafetensorsModel,
    config: Value,
    format: QuantizedFormat,
    layers: BTreeMap<String, QuantSpec>,
    ct_layers: BTreeMap<String, compressed_tensors::CtLayer>,
    storage: BTreeSet<String>,
    /// Static FP8 KV-cache scales by attention module.
    kv_scales: BTreeMap<String, (f32, f32)>,
    /// Weights that were stored in a sparse layout, by dense name.
    sparse: BTreeMap<String, SparseLayout>,
}

impl QuantizedCheckpoint {
    /// Opens the folder `dir`: its safetensors checkpoint (single or sharded)
    /// and `config.json` (and `quantize_config.json` for GPTQ when present).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let gptq_path = dir.join("quantize_config.json");
        let gptq_file = if gptq_path.is_file() {
            Some(read_json(&gptq_path)?)
        } else {
            None
        };
        let model = SafetensorsModel::open(dir)?;
        Self::from_parts(model, config, gptq_file)
    }

    /// A checkpoint from an opened model, its `config.json` and (GPTQ) its
    /// `quantize_config.json`, which wins over `config.json` when given.
    pub fn from_parts(
        model: SafetensorsModel,
        config: Value,
        quantize_config: Option<Value>,
    ) -> Result<Self> {
        let quant = match (&quantize_config, config.get("quantization_config")) {
            (Some(q), _) => q.clone(),
            (None, Some(q)) => q.clone(),
            (None, None) => {
                return Err(QuantFormatError::Config {
                    field: "quantization_config".into(),
                    problem: "missing: the model is not quantized".into(),
                }
                .into())
            }
        };
        let method = quant
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or(if quantize_config.is_some() {
                "gptq"
            } else {
                ""
            })
            .to_owned();
        let mut model = model;
        let mut sparse = BTreeMap::new();
        let (format, layers, ct_layers, mut storage) = match method.as_str() {
            "compressed-tensors" => {
                let layout = ct_sparse::declared_layout(&quant)?;
                if let Some(layout) = layout {
                    (model, sparse) = ct_sparse::densify(model, layout)?;
                }
                let (packing, layers, ct_layers, storage) =
                    if layout.is_some() && quant.get("config_groups").is_none() {
                        // Sparse only: every weight is a plain tensor again.
                        let packing = compressed_tensors::declared_packing(&quant);
                        (packing, BTreeMap::new(), BTreeMap::new(), BTreeSet::new())
                    } else {
                        compressed_tensors::index(&model, &quant)?
                    };
                let format = QuantizedFormat::CompressedTensors(packing);
                (format, layers, ct_layers, storage)
            }
            "gptq" => {
                let (zf, layers, storage) = gptq::index(&model, &quant)?;
                (QuantizedFormat::Gptq(zf), layers, BTreeMap::new(), storage)
            }
            _ => return Err(QuantFormatError::QuantMethod { found: method }.into()),
        };
        let kv_scales = kv_cache_scales(&model, &quant, &mut storage)?;
        Ok(QuantizedCheckpoint {
            model,
            config,
            format,
            layers,
            ct_layers,
            storage,
            kv_scales,
            sparse,
        })
    }

    /// The checkpoint format.
    pub fn format(&self) -> QuantizedFormat {
        self.format
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The safetensors tensors, for passthrough reads.
    pub fn model(&self) -> &SafetensorsModel {
        &self.model
    }

    /// Names of the quantized modules, sorted.
    pub fn modules(&self) -> Vec<&str> {
        self.layers.keys().map(String::as_str).collect()
    }

    /// The quantization of `module`, from the config.
    pub fn spec(&self, module: &str) -> Option<&QuantSpec> {
        self.layers.get(module)
    }

    /// The compressed-tensors layout `module` is stored in (`None` for GPTQ
    /// checkpoints and unknown modules).
    pub fn ct_format(&self, module: &str) -> Option<CtFormat> {
        self.ct_layers.get(module).map(|l| l.format)
    }

    /// The input-activation quantization the config group of `module`
    /// declares (compressed-tensors' `input_activations`), which a runner
    /// applies to the layer's inputs (for example dynamic int8 per token for
    /// W8A8); `None` for weight-only layers, GPTQ and unknown modules.
    pub fn input_activations(&self, module: &str) -> Option<&ActivationScheme> {
        self.ct_layers.get(module)?.activations.as_ref()
    }

    /// The static FP8 KV-cache scales `(k_scale, v_scale)` by attention
    /// module (`model.layers.N.self_attn`), when the config declares
    /// compressed-tensors' `kv_cache_scheme`; empty otherwise.
    pub fn kv_cache_scales(&self) -> &BTreeMap<String, (f32, f32)> {
        &self.kv_scales
    }

    /// The weights (`{module}.weight`) that the folder stores in a
    /// compressed-tensors sparse layout, with that layout. They are read
    /// back dense: a float weight as a passthrough tensor, int8 / FP8 codes
    /// through their module's quantization ([`layer`](Self::layer)).
    pub fn sparse_weights(&self) -> &BTreeMap<String, SparseLayout> {
        &self.sparse
    }

    /// Tensors that are not part of a quantized weight (embeddings, norms,
    /// biases, unquantized layers, KV-cache scales), sorted.
    pub fn passthrough(&self) -> Vec<&str> {
        self.model
            .names()
            .into_iter()
            .filter(|n| !self.storage.contains(*n))
            .collect()
    }

    /// Unpacks the quantized weight of `module`.
    pub fn layer(&self, module: &str) -> Result<QuantizedTensor> {
        let spec = self
            .layers
            .get(module)
            .ok_or_else(|| Error::TensorNotFound {
                name: module.to_owned(),
            })?;
        match self.format {
            QuantizedFormat::CompressedTensors(packing) => match self.ct_format(module) {
                None | Some(CtFormat::PackQuantized) => {
                    compressed_tensors::decode(&self.model, module, *spec, packing)
                }
                Some(format) => ct_float::decode(&self.model, module, *spec, format),
            },
            QuantizedFormat::Gptq(zf) => gptq::decode(&self.model, module, *spec, zf),
        }
    }

    /// The bias of `module` (`module.bias`), if it has one.
    pub fn bias(&self, module: &str) -> Result<Option<Array1<f32>>> {
        let name = format!("{module}.bias");
        if !self.model.contains(&name) {
            return Ok(None);
        }
        let b = read_float(&self.model, &name)?;
        let n = b.len();
        Ok(Some(b.into_shape_with_order(n).map_err(|source| {
            Error::Shape {
                tensor: name,
                source,
            }
        })?))
    }
}

/// The compressed-tensors word filling that packs `n` codes into `words`
/// words (`prefer` when both do); otherwise a shape error for `tensor`, whose
/// words lie along `packed_axis` and whose other dimension is `other_len` long.
pub(crate) fn detect_packing(
    tensor: &str,
    n: usize,
    words: usize,
    bits: u8,
    prefer: CtPacking,
    (packed_axis, other_len): (usize, usize),
) -> Result<CtPacking> {
    CtPacking::detect(n, words, bits, prefer).ok_or_else(|| {
        let dense = CtPacking::Dense.words(n, bits).unwrap_or(0);
        let mut expected = vec![other_len, dense];
        let mut actual = vec![other_len, words];
        if packed_axis == 0 {
            expected.reverse();
            actual.reverse();
        }
        QuantFormatError::TensorShape {
            tensor: tensor.to_owned(),
            expected,
            actual,
        }
        .into()
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}

fn dtype_error(tensor: &str, expected: &'static str, found: DType) -> Error {
    QuantFormatError::TensorDType {
        tensor: tensor.to_owned(),
        expected,
        found: found.to_string(),
    }
    .into()
}

/// A tensor of integers (the dtypes in `allowed`) as `i64`, with its shape.
pub(crate) fn read_ints(
    model: &SafetensorsModel,
    name: &str,
    allowed: &[DType],
    expected: &'static str,
) -> Result<(Vec<usize>, Vec<i64>)> {
    let view = model.view(name)?;
    let dtype = view.dtype();
    if !allowed.contains(&dtype) {
        return Err(dtype_error(name, expected, dtype));
    }
    let bytes = view.data();
    let values: Vec<i64> = match dtype {
        DType::I8 => bytes.iter().map(|&b| i64::from(b as i8)).collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        _ => return Err(dtype_error(name, expected, dtype)),
    };
    Ok((view.shape().to_vec(), values))
}

/// An `int32` matrix.
pub(crate) fn read_i32_matrix(model: &SafetensorsModel, name: &str) -> Result<Array2<i32>> {
    let (shape, values) = read_ints(model, name, &[DType::I32], "I32")?;
    if shape.len() != 2 {
        return Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: vec![0, 0],
            actual: shape,
        }
        .into());
    }
    let values: Vec<i32> = values.into_iter().map(|v| v as i32).collect();
    Array2::from_shape_vec((shape[0], shape[1]), values).map_err(|source| Error::Shape {
        tensor: name.to_owned(),
        source,
    })
}

/// A float tensor (f16, bf16, f32 or f64) as f32.
pub(crate) fn read_float(model: &SafetensorsModel, name: &str) -> Result<ArrayD<f32>> {
    let view = model.view(name)?;
    match view.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(view.to_f32()?),
        other => Err(dtype_error(name, "F16, BF16, F32 or F64", other)),
    }
}

/// A float tensor of exactly `shape` (any shape with the same element count
/// when `loose`), as an `[rows, cols]` matrix.
pub(crate) fn read_float_matrix(
    model: &SafetensorsModel,
    name: &str,
    shape: [usize; 2],
    loose: bool,
) -> Result<Array2<f32>> {
    let a = read_float(model, name)?;
    let fits = if loose {
        a.len() == shape[0] * shape[1]
    } else {
        a.shape() == shape
    };
    if !fits {
        return Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: shape.to_vec(),
            actual: a.shape().to_vec(),
        }
        .into());
    }
    let (v, _) = a.into_raw_vec_and_offset();
    Array2::from_shape_vec(shape, v).map_err(|source| Error::Shape {
        tensor: name.to_owned(),
        source,
    })
}

/// Reads an optional `g_idx` of `cols` entries in `0..groups`; `None` when
/// absent, when compressed-tensors' "unset" marker −1 appears, or, given a
/// group size, when it is the plain `k / group_size` (GPTQ always stores one).
pub(crate) fn read_g_idx(
    model: &SafetensorsModel,
    name: &str,
    cols: usize,
    groups: usize,
    collapse_trivial: Option<usize>,
) -> Result<Option<Vec<u32>>> {
    if !model.contains(name) {
        return Ok(None);
    }
    let (shape, values) = read_ints(model, name, &[DType::I32, DType::I64], "I32")?;
    if shape != [cols] {
        return Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: vec![cols],
            actual: shape,
        }
        .into());
    }
    if values.contains(&-1) {
        return Ok(None);
    }
    if let Some((index, &value)) = values
        .iter()
        .enumerate()
        .find(|(_, &v)| v < 0 || v as u64 >= groups as u64)
    {
        return Err(QuantFormatError::TensorValue {
            tensor: name.to_owned(),
            index,
            value,
            range: format!("0..{groups}"),
        }
        .into());
    }
    if let Some(gs) = collapse_trivial {
        if values
            .iter()
            .enumerate()
            .all(|(k, &g)| g as usize == k / gs)
        {
            return Ok(None);
        }
    }
    Ok(Some(values.into_iter().map(|v| v as u32).collect()))
}

/// A config field as an object lookup, with a typed error when absent.
pub(crate) fn field<'v>(value: &'v Value, path: &str, key: &str) -> Result<&'v Value> {
    value.get(key).ok_or_else(|| {
        QuantFormatError::Config {
            field: format!("{path}{key}"),
            problem: "missing".into(),
        }
        .into()
    })
}

/// A config error for `field`.
pub(crate) fn config_error(field: impl Into<String>, problem: impl Into<String>) -> Error {
    QuantFormatError::Config {
        field: field.into(),
        problem: problem.into(),
    }
    .into()
}

/// Wraps a quant-core error with the module it happened on.
pub(crate) fn quant_error(
    module: &str,
) -> impl FnOnce(tensorpress_quant_core::Error) -> Error + '_ {
    move |source| Error::Quant {
        tensor: module.to_owned(),
        source,
    }
}

/// Reads the `k_scale` / `v_scale` pairs of a `kv_cache_scheme` (static
/// per-tensor FP8, the only KV scheme with stored scales that runtimes load)
/// and marks them as storage.
fn kv_cache_scales(
    model: &SafetensorsModel,
    quant: &Value,
    storage: &mut BTreeSet<String>,
) -> Result<BTreeMap<String, (f32, f32)>> {
    let scheme = match quant.get("kv_cache_scheme") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(s) => s,
    };
    let field = |name: &str| scheme.get(name).cloned().unwrap_or(Value::Null);
    let problem = |name: &str, what: String| QuantFormatError::Config {
        field: format!("kv_cache_scheme.{name}"),
        problem: what,
    };
    if field("num_bits") != 8 || field("type") != "float" {
        return Err(problem(
            "type",
            format!(
                "{} bits of {}: only 8-bit float (FP8 E4M3) KV caches are read",
                field("num_bits"),
                field("type")
            ),
        )
        .into());
    }
    if field("dynamic") == true {
        return Ok(BTreeMap::new());
    }
    if !matches!(field("strategy").as_str(), Some("tensor") | None) {
        return Err(problem(
            "strategy",
            format!("{}: only per-tensor scales are read", field("strategy")),
        )
        .into());
    }
    let mut scales = BTreeMap::new();
    for name in model.names() {
        let Some(module) = name.strip_suffix(".k_scale") else {
            continue;
        };
        let v_name = format!("{module}.v_scale");
        let scalar = |n: &str| -> Result<f32> {
            let a = model.to_f32(n)?;
            match a.iter().next() {
                Some(&x) if a.len() == 1 && x.is_finite() && x > 0.0 => Ok(x),
                _ => Err(problem(
                    "scales",
                    format!(
                        "{n} holds {} values; expected one positive finite scale",
                        a.len()
                    ),
                )
                .into()),
            }
        };
        if !model.contains(&v_name) {
            return Err(problem("scales", format!("{name} has no {v_name}")).into());
        }
        scales.insert(module.to_owned(), (scalar(name)?, scalar(&v_name)?));
        storage.insert(name.to_owned());
        storage.insert(v_name);
    }
    Ok(scales)
}
