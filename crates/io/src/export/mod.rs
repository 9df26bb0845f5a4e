//! Writers of quantized checkpoints that runtimes load: compressed-tensors
//! `pack-quantized` ([`CompressedTensorsWriter`], for vLLM and transformers),
//! GPTQ v1 ([`GptqWriter`], for transformers/optimum/GPTQModel, AutoGPTQ and
//! vLLM), and plain dequantized weights ([`DequantizedWriter`]). The
//! [`import`](crate::import) module reads the first two back.
//!
//! Every writer takes layers as `(module name, &QuantizedTensor, bias)`, where
//! the module name is the checkpoint name without `.weight` (for example
//! `model.layers.0.self_attn.q_proj`), plus the tensors that stay as they are
//! (embeddings, norms, `lm_head`), and writes a Hugging Face folder: the
//! safetensors file(s), then `config.json` with the format's
//! `quantization_config` added to the model config it is given. Each file is
//! written atomically and `config.json` comes last, so an interrupted export
//! never leaves a folder that loads.
//!
//! Layers are validated and packed when added (so the caller can drop each
//! [`QuantizedTensor`] as it goes); layout problems are typed errors naming the
//! module: [`QuantFormatError`] for what a format cannot express, and
//! [`Error::Quant`] wrapping a [`PackError`](tensorpress_quant_core::pack::PackError)
//! for packing constraints (GPTQ wants 32 | `in_features` and 32 | `out_features`).
//!
//! ```
//! use ndarray::Array2;
//! use tensorpress_io::export::CompressedTensorsWriter;
//! use tensorpress_io::import::QuantizedCheckpoint;
//! use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
//!
//! let w = Array2::from_shape_fn((64, 128), |(i, j)| ((i * 128 + j) as f32 * 0.37).sin());
//! let q = Rtn::new(QuantSpec::int(4).group(32).asymmetric()).quantize(w.view(), None)?;
//!
//! let dir = tempfile::tempdir()?;
//! let mut ct = CompressedTensorsWriter::new();
//! ct.add_quantized("model.layers.0.mlp.up_proj", &q, None)?;
//! ct.write_dir(dir.path(), &serde_json::json!({"model_type": "llama"}))?;
//!
//! let back = QuantizedCheckpoint::open(dir.path())?;
//! assert_eq!(back.layer("model.layers.0.mlp.up_proj")?, q);
//! let config: serde_json::Value =
//!     serde_json::from_slice(&std::fs::read(dir.path().join("config.json"))?)?;
//! assert_eq!(config["quantization_config"]["format"], "pack-quantized");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compressed_tensors;
pub(crate) mod ct_layouts;
mod ct_scheme;
mod ct_sparse;
mod dequantized;
mod error;
mod gptq;

pub use compressed_tensors::{CompressedTensorsWriter, Targets};
pub use ct_scheme::{
    ActivationDynamic, ActivationScheme, ActivationStrategy, ActivationType, CtFormat,
};
pub use ct_sparse::SparseLayout;
pub use dequantized::DequantizedWriter;
pub use error::QuantFormatError;
pub use gptq::{GptqOptions, GptqWriter};
pub use tensorpress_quant_core::pack::compressed_tensors::CtPacking;
pub use tensorpress_quant_core::pack::gptq::ZeroFormat;

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{Array2, ArrayView1};
use tensorpress_quant_core::{Format, QuantizedTensor};
use tensorpress_tensor::DType;

use crate::safetensors::SafetensorsWriter;
use crate::{Error, Result};

/// A floating-point storage type for scales, biases and dequantized weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FloatDType {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Single precision (exact for every value a quantizer computes).
    #[default]
    F32,
}

impl FloatDType {
    /// The tensor dtype.
    pub fn dtype(self) -> DType {
        match self {
            FloatDType::F16 => DType::F16,
            FloatDType::BF16 => DType::BF16,
            FloatDType::F32 => DType::F32,
        }
    }

    /// The name `torch_dtype` uses in `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            FloatDType::F16 => "float16",
            FloatDType::BF16 => "bfloat16",
            FloatDType::F32 => "float32",
        }
    }

    /// `x` rounded to this type (to nearest, ties to even) and back.
    pub fn round(self, x: f32) -> f32 {
        match self {
            FloatDType::F16 => f16::from_f32(x).to_f32(),
            FloatDType::BF16 => bf16::from_f32(x).to_f32(),
            FloatDType::F32 => x,
        }
    }

    /// Little-endian bytes of `values` in this type.
    pub(crate) fn encode(self, values: impl IntoIterator<Item = f32>) -> Vec<u8> {
        let mut out = Vec::new();
        for x in values {
            match self {
                FloatDType::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                FloatDType::BF16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
                FloatDType::F32 => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        out
    }
}

/// The bits of an integer layer, or [`QuantFormatError::UnsupportedFormat`].
pub(crate) fn int_bits(tensor: &str, q: &QuantizedTensor, format: &'static str) -> Result<u8> {
    match q.spec().format {
        Format::Int { bits } => Ok(bits),
        other => Err(QuantFormatError::UnsupportedFormat {
            tensor: tensor.to_owned(),
            format,
            found: format!("{other:?}"),
        }
        .into()),
    }
}

/// The zero points as integer codes, checking that each is an integer in
/// `0..=2^bits − 1` and, for symmetric layers, that it is `2^(bits−1)`.
pub(crate) fn integer_zeros(tensor: &str, q: &QuantizedTensor, bits: u8) -> Result<Array2<u8>> {
    let max = (1u32 << bits) - 1;
    let mid = 1u32 << (bits - 1);
    let zeros = q.zeros();
    let mut out = Array2::<u8>::zeros(zeros.dim());
    for ((row, group), &zero) in zeros.indexed_iter() {
        if !(zero.fract() == 0.0 && (0.0..=max as f32).contains(&zero)) {
            return Err(QuantFormatError::ZeroPoint {
                tensor: tensor.to_owned(),
                row,
                group,
                zero,
                max,
            }
            .into());
        }
        if q.spec().symmetric && zero != mid as f32 {
            return Err(QuantFormatError::SymmetricZero {
                tensor: tensor.to_owned(),
                row,
                group,
                zero,
                expected: mid,
            }
            .into());
        }
        out[[row, group]] = zero as u8;
    }
    Ok(out)
}

/// Checks a bias against the layer's output features.
pub(crate) fn check_bias(
    tensor: &str,
    q: &QuantizedTensor,
    bias: Option<ArrayView1<'_, f32>>,
) -> Result<()> {
    if let Some(b) = bias {
        let rows = q.shape()[0];
        if b.len() != rows {
            return Err(QuantFormatError::BiasLength {
                tensor: tensor.to_owned(),
                expected: rows,
                actual: b.len(),
            }
            .into());
        }
    }
    Ok(())
}

/// Wraps a packing error with the tensor it happened on.
pub(crate) fn pack_error(
    tensor: &str,
) -> impl FnOnce(tensorpress_quant_core::pack::PackError) -> Error + '_ {
    move |e| Error::Quant {
        tensor: tensor.to_owned(),
        source: e.into(),
    }
}

/// A tensor ready to add: name, dtype, shape, little-endian bytes.
pub(crate) type Staged = (String, DType, Vec<usize>, Vec<u8>);

/// An `i32` matrix as a [`Staged`] tensor.
pub(crate) fn i32_tensor(name: String, a: &Array2<i32>) -> Staged {
    let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    (name, DType::I32, vec![a.nrows(), a.ncols()], bytes)
}

/// Adds staged tensors to `w` in order.
pub(crate) fn add_staged(w: &mut SafetensorsWriter<'_>, staged: Vec<Staged>) -> Result<()> {
    for (name, dtype, shape, bytes) in staged {
        w.add(name, dtype, &shape, bytes)?;
    }
    Ok(())
}

/// Writes `config.json` in `dir`: `model_config` (a JSON object) with
/// `quantization_config` set to `quant` (or removed when `None`).
pub(crate) fn write_config(
    dir: &Path,
    model_config: &serde_json::Value,
    quant: Option<serde_json::Value>,
) -> Result<PathBuf> {
    let mut config = model_config
        .as_object()
        .cloned()
        .ok_or(QuantFormatError::ConfigNotObject)?;
    match quant {
        Some(q) => {
            config.insert("quantization_config".into(), q);
        }
        None => {
            config.remove("quantization_config");
        }
    }
    let path = dir.join("config.json");
    write_json(&path, &serde_json::Value::Object(config))?;
    Ok(path)
}

/// Writes `value` as indented JSON with a final newline, atomically.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    text.push('\n');
    crate::fs::write_atomic(path, |w| crate::fs::write_all(w, text.as_bytes(), path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_quant_core::QuantSpec;

    fn layer(sym: bool, zero: f32) -> QuantizedTensor {
        let mut spec = QuantSpec::int(4).group(2);
        if !sym {
            spec = spec.asymmetric();
        }
        QuantizedTensor::new(
            spec,
            2,
            4,
            vec![0; 8],
            Array2::ones((2, 2)),
            Array2::from_elem((2, 2), zero),
            None,
        )
        .unwrap()
    }

    #[test]
    fn zero_points_must_be_grid_integers() {
        assert_eq!(integer_zeros("l", &layer(true, 8.0), 4).unwrap()[[1, 1]], 8);
        assert_eq!(
            integer_zeros("l", &layer(false, 0.0), 4).unwrap()[[0, 0]],
            0
        );
        let e = integer_zeros("l", &layer(false, 2.5), 4).unwrap_err();
        assert!(
            matches!(
                e,
                Error::QuantFormat(QuantFormatError::ZeroPoint {
                    row: 0,
                    group: 0,
                    max: 15,
                    ..
                })
            ),
            "{e}"
        );
        let e = integer_zeros("l", &layer(false, 16.0), 4).unwrap_err();
        assert!(matches!(
            e,
            Error::QuantFormat(QuantFormatError::ZeroPoint { .. })
        ));
        let e = integer_zeros("l", &layer(true, 7.0), 4).unwrap_err();
        assert!(matches!(
            e,
            Error::QuantFormat(QuantFormatError::SymmetricZero { expected: 8, .. })
        ));
        assert!(e.to_string().starts_with("l: "), "{e}");
    }

    #[test]
    fn float_dtypes_round_and_encode() {
        assert_eq!(
            FloatDType::F16.round(1.0 / 3.0),
            f16::from_f32(1.0 / 3.0).to_f32()
        );
        assert_eq!(
            FloatDType::BF16.encode([1.0]),
            bf16::from_f32(1.0).to_le_bytes()
        );
        assert_eq!(FloatDType::F32.encode([0.5, 2.0]).len(), 8);
        assert_eq!(FloatDType::BF16.torch_name(), "bfloat16");
    }
}
