//! [`GptqWriter`]: GPTQ checkpoints as AutoGPTQ writes them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView1, ArrayViewD};
use serde_json::{json, Map, Value};
use tensorpress_quant_core::pack::gptq::{self, ZeroFormat};
use tensorpress_quant_core::{Granularity, QuantizedTensor};
use tensorpress_tensor::{DType, TensorView};

use super::{
    add_staged, check_bias, i32_tensor, int_bits, integer_zeros, pack_error, write_config,
    write_json, FloatDType, QuantFormatError, Staged,
};
use crate::safetensors::{SafetensorsWriter, StoreElement};
use crate::Result;

const FORMAT: &str = "GPTQ";

/// The informational fields of a GPTQ config, and where zero points go.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqOptions {
    /// Dampening used, as a fraction of the mean Hessian diagonal (`damp_percent`).
    pub damp_percent: f64,
    /// Whether sub-layers were quantized in sequence (`true_sequential`).
    pub true_sequential: bool,
    /// Whether group scales were fixed before the act-order sweep (`static_groups`).
    pub static_groups: bool,
    /// `zero − 1` (v1, `checkpoint_format: "gptq"`, the default) or `zero` (v2).
    pub zero_format: ZeroFormat,
    /// Extra keys for `quantization_config` and `quantize_config.json`, e.g.
    /// `modules_in_block_to_quantize` when only some linear layers of each
    /// block are quantized.
    pub extra: Map<String, Value>,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp_percent: 0.01,
            true_sequential: true,
            static_groups: false,
            zero_format: ZeroFormat::V1,
            extra: Map::new(),
        }
    }
}

/// Writes GPTQ checkpoints (v1 by default), the layout AutoGPTQ writes and
/// transformers (through optimum and GPTQModel), AutoGPTQ and vLLM load.
///
/// Per quantized module `M` with `[N, K]` weight and `G` groups:
///
/// | tensor | dtype | shape |
/// |---|---|---|
/// | `M.qweight` | int32 | `[K·b/32, N]`, codes packed along `K` |
/// | `M.qzeros` | int32 | `[G, N·b/32]`, `zero − 1` packed along `N` |
/// | `M.scales` | f16 | `[G, N]` (transposed with respect to ours) |
/// | `M.g_idx` | int32 | `[K]`, `k / group_size` or the act-order groups |
/// | `M.bias` | f16 | `[N]`, when given |
///
/// plus `quantize_config.json` and `quantization_config` in `config.json`
/// (`quant_method: "gptq"`, `bits`, `group_size` (−1 per channel), `sym`,
/// `desc_act` (true when some layer has an act-order `g_idx`),
/// `damp_percent`, `true_sequential`, `static_groups`, `checkpoint_format`).
///
/// GPTQ describes the whole checkpoint with one quantization: every layer must
/// share bits, group size and symmetry ([`QuantFormatError::MixedSpecs`]).
/// Bits are 2, 3, 4 or 8, and 32 must divide `K` and `N`. Per-tensor layers are
/// written per channel (the scale repeated), and read back as per-channel.
/// Scales are stored in f16, so they round; to export exactly what was
/// measured, quantize with f16-representable scales.
///
/// A last partial group (`K` not a multiple of the group size, e.g. 576
/// inputs in groups of 128) is written as GPTQ does it: `⌈K/G⌉` scale rows
/// and `g_idx = k / G`. AutoGPTQ's and GPTQModel's torch kernels follow
/// `g_idx` and load it; vLLM's `gptq`/`gptq_marlin` kernels and AutoGPTQ's
/// fast paths require `K % G == 0` and refuse it.
#[derive(Default)]
pub struct GptqWriter<'a> {
    tensors: SafetensorsWriter<'a>,
    options: GptqOptions,
    /// Bits, symmetric, group size (−1 per channel) of the first layer.
    spec: Option<(u8, bool, i64)>,
    desc_act: bool,
    modules: HashSet<String>,
}

impl<'a> GptqWriter<'a> {
    /// A writer with default [`GptqOptions`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The config fields and zero-point format.
    pub fn options(mut self, options: GptqOptions) -> Self {
        self.options = options;
        self
    }

    /// Splits the safetensors output into shards of at most `bytes` bytes.
    pub fn max_shard_size(&mut self, bytes: u64) -> &mut Self {
        self.tensors.max_shard_size(bytes);
        self
    }

    /// Validates, packs and adds the quantized weight of `module` (the
    /// checkpoint name without `.weight`), with its bias if it has one.
    ///
    /// Validation happens before anything is added; a name clash with a
    /// tensor added earlier can leave part of the layer behind, so discard the
    /// writer after an error.
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
        let bits = int_bits(module, q, FORMAT)?;
        let spec = q.spec();
        let [rows, cols] = q.shape();
        let group_size = match spec.granularity {
            Granularity::Group(g) => g as i64,
            Granularity::Channel | Granularity::Tensor => -1,
        };
        let key = (bits, spec.symmetric, group_size);
        if let Some(first) = self.spec {
            if first != key {
                let show = |(b, s, g): (u8, bool, i64)| {
                    format!("int{b} {} group_size {g}", if s { "sym" } else { "asym" })
                };
                return Err(QuantFormatError::MixedSpecs {
                    tensor: module.to_owned(),
                    expected: show(first),
                    found: show(key),
                }
                .into());
            }
        }
        check_bias(module, q, bias)?;
        let zeros = integer_zeros(module, q, bits)?;
        let qweight = gptq::pack_qweight(q.codes_2d(), bits).map_err(pack_error(module))?;
        let qzeros = gptq::pack_qzeros(zeros.view(), bits, self.options.zero_format)
            .map_err(pack_error(module))?;

        let groups = q.scales().ncols();
        let trivial = |k: usize| {
            if group_size > 0 {
                k / group_size as usize
            } else {
                0
            }
        };
        let g_idx: Vec<i32> = (0..cols)
            .map(|k| q.g_idx().map_or(trivial(k), |g| g[k] as usize) as i32)
            .collect();
        let act_order = g_idx
            .iter()
            .enumerate()
            .any(|(k, &g)| g as usize != trivial(k));

        let f16 = FloatDType::F16;
        let staged: Vec<Staged> = vec![
            i32_tensor(format!("{module}.qweight"), &qweight),
            i32_tensor(format!("{module}.qzeros"), &qzeros),
            (
                format!("{module}.scales"),
                DType::F16,
                vec![groups, rows],
                f16.encode(q.scales().t().iter().copied()),
            ),
            (
                format!("{module}.g_idx"),
                DType::I32,
                vec![cols],
                g_idx.iter().flat_map(|g| g.to_le_bytes()).collect(),
            ),
        ];
        let mut staged = staged;
        if let Some(b) = bias {
            staged.push((
                format!("{module}.bias"),
                DType::F16,
                vec![rows],
                f16.encode(b.iter().copied()),
            ));
        }
        add_staged(&mut self.tensors, staged)?;
        self.spec = Some(key);
        self.desc_act |= act_order;
        self.modules.insert(module.to_owned());
        Ok(())
    }

    /// Adds a tensor stored as it is (embeddings, norms, unquantized layers),
    /// borrowing its bytes.
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

    /// The config this writer puts in `quantize_config.json` and in
    /// `config.json`'s `quantization_config` (4-bit g128 symmetric when no
    /// layer was added).
    pub fn quantization_config(&self) -> Value {
        let (bits, sym, group_size) = self.spec.unwrap_or((4, true, 128));
        let o = &self.options;
        let mut config = json!({
            "bits": bits,
            "group_size": group_size,
            "damp_percent": o.damp_percent,
            "desc_act": self.desc_act,
            "static_groups": o.static_groups,
            "sym": sym,
            "true_sequential": o.true_sequential,
            "quant_method": "gptq",
            "checkpoint_format": match o.zero_format {
                ZeroFormat::V1 => "gptq",
                ZeroFormat::V2 => "gptq_v2",
            },
            "model_name_or_path": null,
            "model_file_base_name": null,
        });
        if let Some(map) = config.as_object_mut() {
            for (k, v) in &o.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        config
    }

    /// Writes the safetensors file(s), `quantize_config.json`, and then
    /// `config.json` (`model_config`, a JSON object, with
    /// `quantization_config` set) into `dir`, created if missing. Returns the
    /// paths written.
    pub fn write_dir(&self, dir: impl AsRef<Path>, model_config: &Value) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        if !model_config.is_object() {
            return Err(QuantFormatError::ConfigNotObject.into());
        }
        let quant = self.quantization_config();
        let mut written = self.tensors.write_dir(dir)?;
        let qc = dir.join("quantize_config.json");
        write_json(&qc, &quant)?;
        written.push(qc);
        written.push(write_config(dir, model_config, Some(quant))?);
        Ok(written)
    }
}
