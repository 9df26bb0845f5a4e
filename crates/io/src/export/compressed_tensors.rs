//! [`CompressedTensorsWriter`]: compressed-tensors `pack-quantized` folders.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView1, ArrayViewD};
use serde_json::{json, Map, Value};
use tensorpress_quant_core::pack::compressed_tensors::{self as ct, CtPacking};
use tensorpress_quant_core::{Granularity, QuantizedTensor};
use tensorpress_tensor::{DType, TensorView};

use super::{
    add_staged, check_bias, i32_tensor, int_bits, integer_zeros, pack_error, write_config,
    FloatDType, QuantFormatError, Staged,
};
use crate::safetensors::{SafetensorsWriter, StoreElement};
use crate::Result;

const FORMAT: &str = "compressed-tensors";

/// How `config_groups` name the modules each scheme applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Targets {
    /// Each group lists its modules by exact name: always right, whatever
    /// else the model holds, and the only form for several schemes.
    #[default]
    Names,
    /// One group with `targets: ["Linear"]` (llm-compressor's form): every
    /// linear layer is quantized except those in `ignore` (for example
    /// `lm_head`), which must name every linear layer left unquantized.
    Linear {
        /// Modules (or `re:` patterns) left unquantized.
        ignore: Vec<String>,
    },
}

/// The weight quantization of a config group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SchemeKey {
    bits: u8,
    symmetric: bool,
    granularity: Granularity,
    act_order: bool,
}

impl SchemeKey {
    fn weights_json(&self, observer: &str) -> Value {
        let (strategy, group_size) = match self.granularity {
            Granularity::Tensor => ("tensor", Value::Null),
            Granularity::Channel => ("channel", Value::Null),
            Granularity::Group(g) => ("group", json!(g)),
        };
        json!({
            "num_bits": self.bits,
            "type": "int",
            "symmetric": self.symmetric,
            "strategy": strategy,
            "group_size": group_size,
            "block_structure": null,
            "dynamic": false,
            "actorder": if self.act_order { json!("group") } else { Value::Null },
            "observer": observer,
            "observer_kwargs": {},
        })
    }
}

/// Writes compressed-tensors `pack-quantized` checkpoints, the format vLLM
/// and transformers (through the `compressed-tensors` package) load.
///
/// Per quantized module `M`:
///
/// | tensor | dtype | shape |
/// |---|---|---|
/// | `M.weight_packed` | int32 | `[N, ⌈K·b/32⌉]` (dense packing; see [`CtPacking`]) |
/// | `M.weight_scale` | f32 / f16 / bf16 | `[N, K/G]` group, `[N, 1]` channel, `[1]` tensor |
/// | `M.weight_zero_point` | int32 | `[⌈N·b/32⌉, groups]`, asymmetric group/channel only |
/// | | int8 | `[1]`, asymmetric per-tensor (signed: `zero − 2^(b−1)`) |
/// | `M.weight_shape` | int64 | `[2]` = `[N, K]` |
/// | `M.weight_g_idx` | int32 | `[K]`, act-order layers only |
/// | `M.bias` | as the scales | `[N]`, when given |
///
/// and `config.json` gains `quantization_config` with `quant_method:
/// "compressed-tensors"`, `format: "pack-quantized"`, `quantization_status:
/// "compressed"`, and one config group per distinct weight quantization
/// (`num_bits`, `type: "int"`, `symmetric`, `strategy`, `group_size`,
/// `actorder`, `observer`, `dynamic: false`).
///
/// compressed-tensors needs groups that tile the input columns
/// ([`QuantFormatError::PartialGroup`] otherwise) and integer zero points.
/// Act-order layers (a `g_idx`) are written with `actorder: "group"` and
/// `weight_g_idx`, which vLLM and compressed-tensors before 0.20 load;
/// compressed-tensors 0.20 removed that ordering and refuses such configs, so
/// prefer GPTQ's static groups (or the GPTQ format) for act-order models.
#[derive(Default)]
pub struct CompressedTensorsWriter<'a> {
    tensors: SafetensorsWriter<'a>,
    float_dtype: FloatDType,
    packing: CtPacking,
    targets: Targets,
    observer: Option<String>,
    schemes: Vec<(SchemeKey, Vec<String>)>,
    modules: HashSet<String>,
}

impl<'a> CompressedTensorsWriter<'a> {
    /// A writer with f32 scales, dense packing and [`Targets::Names`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The dtype of scales and biases: use the model's `torch_dtype`, as
    /// runtimes cast scales to it on load (f32, the default, keeps the
    /// quantizer's scales exactly). Set before adding layers.
    pub fn float_dtype(mut self, dtype: FloatDType) -> Self {
        self.float_dtype = dtype;
        self
    }

    /// The word filling ([`CtPacking::Dense`] by default, as
    /// compressed-tensors ≥ 0.20 writes; they differ for 3, 5, 6 and 7 bits).
    /// Set before adding layers.
    pub fn packing(mut self, packing: CtPacking) -> Self {
        self.packing = packing;
        self
    }

    /// How the config names the quantized modules.
    pub fn targets(mut self, targets: Targets) -> Self {
        self.targets = targets;
        self
    }

    /// The `observer` recorded in each scheme (informational; `"minmax"`
    /// by default, `"mse"` for a clipping search).
    pub fn observer(mut self, observer: impl Into<String>) -> Self {
        self.observer = Some(observer.into());
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
    /// tensor added earlier ([`Error::DuplicateTensor`](crate::Error::DuplicateTensor))
    /// can leave part of the layer behind, so discard the writer after an error.
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
        let spec = *q.spec();
        let [rows, cols] = q.shape();
        if let Granularity::Group(g) = spec.granularity {
            if !cols.is_multiple_of(g) {
                return Err(QuantFormatError::PartialGroup {
                    tensor: module.to_owned(),
                    cols,
                    group: g,
                }
                .into());
            }
        }
        check_bias(module, q, bias)?;
        let zeros = integer_zeros(module, q, bits)?;
        if spec.granularity == Granularity::Tensor {
            let (s0, z0) = (q.scales()[[0, 0]], zeros[[0, 0]]);
            let same = q.scales().iter().all(|&s| s.to_bits() == s0.to_bits())
                && zeros.iter().all(|&z| z == z0);
            if !same {
                return Err(QuantFormatError::NotPerTensor {
                    tensor: module.to_owned(),
                }
                .into());
            }
        }
        if let Some(g_idx) = q.g_idx() {
            let groups = q.scales().ncols();
            let mut seen = vec![false; groups];
            for &g in g_idx {
                seen[g as usize] = true;
            }
            if let Some(group) = seen.iter().position(|&s| !s) {
                return Err(QuantFormatError::EmptyGroup {
                    tensor: module.to_owned(),
                    group,
                }
                .into());
            }
        }

        let packed =
            ct::pack_weight(q.codes_2d(), bits, self.packing).map_err(pack_error(module))?;
        let mut staged: Vec<Staged> = Vec::new();
        staged.push(i32_tensor(format!("{module}.weight_packed"), &packed));
        let shape_bytes: Vec<u8> = [rows as i64, cols as i64]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        staged.push((
            format!("{module}.weight_shape"),
            DType::I64,
            vec![2],
            shape_bytes,
        ));
        let dt = self.float_dtype;
        let (scale_shape, scales) = if spec.granularity == Granularity::Tensor {
            (vec![1], dt.encode([q.scales()[[0, 0]]]))
        } else {
            (
                q.scales().shape().to_vec(),
                dt.encode(q.scales().iter().copied()),
            )
        };
        staged.push((
            format!("{module}.weight_scale"),
            dt.dtype(),
            scale_shape,
            scales,
        ));
        if !spec.symmetric {
            let name = format!("{module}.weight_zero_point");
            if spec.granularity == Granularity::Tensor {
                let signed = i16::from(zeros[[0, 0]]) - (1i16 << (bits - 1));
                staged.push((name, DType::I8, vec![1], vec![signed as i8 as u8]));
            } else {
                let zp = ct::pack_zero_points(zeros.view(), bits, self.packing)
                    .map_err(pack_error(module))?;
                staged.push(i32_tensor(name, &zp));
            }
        }
        if let Some(g_idx) = q.g_idx() {
            let bytes: Vec<u8> = g_idx
                .iter()
                .flat_map(|&g| (g as i32).to_le_bytes())
                .collect();
            staged.push((
                format!("{module}.weight_g_idx"),
                DType::I32,
                vec![cols],
                bytes,
            ));
        }
        if let Some(b) = bias {
            staged.push((
                format!("{module}.bias"),
                dt.dtype(),
                vec![rows],
                dt.encode(b.iter().copied()),
            ));
        }
        add_staged(&mut self.tensors, staged)?;

        let key = SchemeKey {
            bits,
            symmetric: spec.symmetric,
            granularity: spec.granularity,
            act_order: q.g_idx().is_some(),
        };
        match self.schemes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(module.to_owned()),
            None => self.schemes.push((key, vec![module.to_owned()])),
        }
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

    /// The `quantization_config` block this writer puts in `config.json`.
    pub fn quantization_config(&self) -> Result<Value> {
        let observer = self.observer.as_deref().unwrap_or("minmax");
        let mut groups = Map::new();
        let ignore: Vec<String> = match &self.targets {
            Targets::Names => {
                for (i, (key, names)) in self.schemes.iter().enumerate() {
                    groups.insert(
                        format!("group_{i}"),
                        json!({
                            "targets": names,
                            "weights": key.weights_json(observer),
                            "input_activations": null,
                            "output_activations": null,
                        }),
                    );
                }
                Vec::new()
            }
            Targets::Linear { ignore } => {
                if self.schemes.len() > 1 {
                    return Err(QuantFormatError::LinearTargetsNeedOneScheme {
                        schemes: self.schemes.len(),
                    }
                    .into());
                }
                if let Some((key, _)) = self.schemes.first() {
                    groups.insert(
                        "group_0".into(),
                        json!({
                            "targets": ["Linear"],
                            "weights": key.weights_json(observer),
                            "input_activations": null,
                            "output_activations": null,
                        }),
                    );
                }
                ignore.clone()
            }
        };
        Ok(json!({
            "config_groups": groups,
            "format": "pack-quantized",
            "global_compression_ratio": null,
            "ignore": ignore,
            "kv_cache_scheme": null,
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
            "sparsity_config": {},
            // The compressed-tensors release whose packing these files follow.
            "version": match self.packing {
                CtPacking::Dense => "0.20.0",
                CtPacking::Aligned => "0.12.2",
            },
        }))
    }

    /// Writes the safetensors file(s) and then `config.json` (`model_config`,
    /// a JSON object, with `quantization_config` set) into `dir`, created if
    /// missing. Returns the paths written.
    pub fn write_dir(&self, dir: impl AsRef<Path>, model_config: &Value) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        let quant = self.quantization_config()?;
        if !model_config.is_object() {
            return Err(QuantFormatError::ConfigNotObject.into());
        }
        let mut written = self.tensors.write_dir(dir)?;
        written.push(write_config(dir, model_config, Some(quant))?);
        Ok(written)
    }
}
