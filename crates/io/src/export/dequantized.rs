//! [`DequantizedWriter`]: quantized layers written back as plain float weights.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView1, ArrayViewD};
use serde_json::Value;
use tensorpress_quant_core::QuantizedTensor;
use tensorpress_tensor::{DType, TensorView};

use super::{add_staged, check_bias, write_config, FloatDType, QuantFormatError, Staged};
use crate::safetensors::{SafetensorsWriter, StoreElement};
use crate::Result;

/// Writes quantized layers as ordinary `M.weight` (and `M.bias`) tensors in
/// f16, bf16 or f32: the weights a runtime computes from the codes, loadable
/// by anything that reads the unquantized model. `config.json` is the model
/// config without `quantization_config`.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_io::export::{DequantizedWriter, FloatDType};
/// use tensorpress_io::safetensors::SafetensorsModel;
/// use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
///
/// let w = Array2::from_shape_fn((4, 32), |(i, j)| (i as f32 - j as f32) / 8.0);
/// let q = Rtn::new(QuantSpec::int(3).group(16)).quantize(w.view(), None)?;
/// let dir = tempfile::tempdir()?;
/// let mut out = DequantizedWriter::new(FloatDType::F32);
/// out.add_quantized("fc", &q, None)?;
/// out.write_dir(dir.path(), &serde_json::json!({}))?;
/// let m = SafetensorsModel::open(dir.path())?;
/// assert_eq!(m.to_f32("fc.weight")?, q.dequantize().into_dyn());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DequantizedWriter<'a> {
    tensors: SafetensorsWriter<'a>,
    dtype: FloatDType,
    modules: HashSet<String>,
}

impl<'a> DequantizedWriter<'a> {
    /// A writer storing weights and biases in `dtype`.
    pub fn new(dtype: FloatDType) -> Self {
        DequantizedWriter {
            tensors: SafetensorsWriter::new(),
            dtype,
            modules: HashSet::new(),
        }
    }

    /// Splits the safetensors output into shards of at most `bytes` bytes.
    pub fn max_shard_size(&mut self, bytes: u64) -> &mut Self {
        self.tensors.max_shard_size(bytes);
        self
    }

    /// Adds `module.weight` (the dequantized codes, rounded to the dtype) and
    /// `module.bias` if given.
    pub fn add_quantized(
        &mut self,
        module: &str,
        q: &QuantizedTensor,
        bias: Option<ArrayView1<'_, f32>>,
    ) -> Result<()> {
        if self.modules.contains(module) {
            return Err(QuantFormatError::DuplicateModule {
                module: module.to_owned(),
            }
            .into());
        }
        check_bias(module, q, bias)?;
        let [rows, cols] = q.shape();
        let dt = self.dtype;
        let w = q.dequantize();
        let mut staged: Vec<Staged> = vec![(
            format!("{module}.weight"),
            dt.dtype(),
            vec![rows, cols],
            dt.encode(w.iter().copied()),
        )];
        if let Some(b) = bias {
            staged.push((
                format!("{module}.bias"),
                dt.dtype(),
                vec![rows],
                dt.encode(b.iter().copied()),
            ));
        }
        add_staged(&mut self.tensors, staged)?;
        self.modules.insert(module.to_owned());
        Ok(())
    }

    /// Adds a tensor stored as it is, borrowing its bytes.
    pub fn add_tensor(&mut self, name: impl Into<String>, view: &TensorView<'a>) -> Result<()> {
        self.tensors.add_view(name, view)
    }

    /// Adds an array stored as it is, in its element type.
    pub fn add_array<T: StoreElement>(
        &mut self,
        name: impl Into<String>,
        array: ArrayViewD<'_, T>,
    ) -> Result<()> {
        self.tensors.add_array(name, array)
    }

    /// Adds a tensor from little-endian bytes, stored as it is.
    pub fn add_bytes(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[usize],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        self.tensors.add(name, dtype, shape, data)
    }

    /// Writes the safetensors file(s) and then `config.json` (`model_config`
    /// without `quantization_config`) into `dir`. Returns the paths written.
    pub fn write_dir(&self, dir: impl AsRef<Path>, model_config: &Value) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        if !model_config.is_object() {
            return Err(QuantFormatError::ConfigNotObject.into());
        }
        let mut written = self.tensors.write_dir(dir)?;
        written.push(write_config(dir, model_config, None)?);
        Ok(written)
    }
}
