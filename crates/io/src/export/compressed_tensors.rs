//! [`CompressedTensorsWriter`]: compressed-tensors folders, in the
//! compression format compressed-tensors itself picks for each layer.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ndarray::{ArrayView1, ArrayViewD};
use serde_json::{json, Map, Value};
use tensorpress_quant_core::pack::compressed_tensors::{self as ct, CtPacking};
use tensorpress_quant_core::{Format, Granularity, QuantSpec, QuantizedTensor};
use tensorpress_tensor::{DType, TensorView};

use super::ct_layouts::{stage_fp8, stage_mx, stage_naive_int, stage_nvfp4};
use super::ct_scheme::{weights_json, ActivationDynamic, ActivationScheme, CtFormat};
use super::ct_sparse::{stage_sparse, SparseLayout};
use super::{
    add_staged, check_bias, i32_tensor, integer_zeros, pack_error, write_config, FloatDType,
    QuantFormatError, Staged,
};
use crate::safetensors::{SafetensorsWriter, StoreElement};
use crate::Result;

const FORMAT: &str = "compressed-tensors";

/// The last compressed-tensors release with the sparse-bitmask compressor
/// (0.20 keeps only its config class), declared by folders with sparse modules.
const SPARSE_VERSION: &str = "0.12.2";

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
    format: CtFormat,
    spec: QuantSpec,
    act_order: bool,
}

/// Writes compressed-tensors checkpoints, the format vLLM and transformers
/// (through the `compressed-tensors` package) load.
///
/// Each layer is stored in the compression format compressed-tensors 0.20
/// infers for its spec ([`CtFormat::for_spec`]): integer layers as
/// `pack-quantized` (or `int-quantized` when the writer declares
/// [`input_activations`](Self::input_activations)), FP8 E4M3 as
/// `naive-quantized` (`float-quantized` with activations), NVFP4 as
/// `nvfp4-pack-quantized`, MXFP4/MXFP6 (E2M3)/MXFP8 (E4M3) as
/// `mxfp4-pack-quantized`/`mxfp6-pack-quantized`/`mxfp8-quantized`. Layers of
/// one format and quantization share a config group, whose `format` names its
/// layout; the top-level `format` is that of the only group's, or
/// `mixed-precision` when groups differ (as compressed-tensors writes it).
///
/// Per quantized module `M`, `pack-quantized`:
///
/// | tensor | dtype | shape |
/// |---|---|---|
/// | `M.weight_packed` | int32 | `[N, ⌈K·b/32⌉]` (dense packing; see [`CtPacking`]) |
/// | `M.weight_scale` | f32 / f16 / bf16 | `[N, K/G]` group, `[N, 1]` channel, `[1]` tensor |
/// | `M.weight_zero_point` | int32 | `[⌈N·b/32⌉, groups]`, asymmetric group/channel only |
/// | | int8 | `[1]`, asymmetric per-tensor (signed: `zero − 2^(b−1)`) |
/// | `M.weight_shape` | int64 | `[2]` = `[N, K]` |
/// | `M.weight_g_idx` | int32 | `[K]`, act-order layers only |
///
/// the other formats:
///
/// | format | weight | `M.weight_scale` | more |
/// |---|---|---|---|
/// | `int-quantized` | `M.weight` int8 `[N, K]`, `code − 2^(b−1)` | float, shaped as above | `M.weight_zero_point` int8 shaped as the scales (`zero − 2^(b−1)`), asymmetric only |
/// | `float-`/`naive-quantized` | `M.weight` F8_E4M3 `[N, K]` | float, shaped as above | |
/// | `nvfp4-pack-quantized` | `M.weight_packed` uint8 `[N, K/2]` | F8_E4M3 `[N, K/16]` | `M.weight_global_scale` f32 `[1]` = 1 / tensor scale |
/// | `mxfp4-pack-quantized` | `M.weight_packed` uint8 `[N, K/2]` | uint8 E8M0 `[N, K/32]` | |
/// | `mxfp6-pack-quantized` | `M.weight_packed` uint8 `[N, 3K/4]` | uint8 E8M0 `[N, K/32]` | |
/// | `mxfp8-quantized` | `M.weight` F8_E4M3 `[N, K]` | uint8 E8M0 `[N, K/32]` | |
///
/// plus `M.bias` in the float dtype when given. FP4 pairs hold column `2j` in
/// the low nibble; FP6 quadruples fill a little-endian 24-bit word from bit 0.
/// compressed-tensors stores NVFP4's global scale as the reciprocal of
/// tensorpress' tensor scale (`6 · 448 / amax`); the value written is the f32
/// whose reciprocal is exactly the tensor scale where one exists (about five
/// tensors in six), so reading the folder back gives the same tensor.
///
/// `config.json` gains `quantization_config` with `quant_method:
/// "compressed-tensors"`, `format`, `quantization_status: "compressed"`, and
/// one config group per distinct format and weight quantization (`num_bits`,
/// `type`, `symmetric`, `strategy`, `group_size`, `actorder`, `observer`,
/// `dynamic: false`, and `scale_dtype` for NVFP4 and MX), with
/// `input_activations` when declared.
///
/// compressed-tensors needs groups that tile the input columns
/// ([`QuantFormatError::PartialGroup`] otherwise) and integer zero points.
/// Act-order layers (a `g_idx`) are written with `actorder: "group"` and
/// `weight_g_idx` (`pack-quantized` only; the other formats have no group
/// index: [`QuantFormatError::UnsupportedLayout`]), which vLLM and
/// compressed-tensors before 0.20 load; compressed-tensors 0.20 removed that
/// ordering and refuses such configs, so prefer GPTQ's static groups (or the
/// GPTQ format) for act-order models. Number formats without a
/// compressed-tensors layout (NF4, FP8 E5M2, FP6/FP4 with f32 scales, MXFP6
/// E3M2, MXFP8 E5M2) are [`QuantFormatError::UnsupportedFormat`].
#[derive(Default)]
pub struct CompressedTensorsWriter<'a> {
    tensors: SafetensorsWriter<'a>,
    float_dtype: FloatDType,
    packing: CtPacking,
    targets: Targets,
    observer: Option<String>,
    activations: Option<ActivationScheme>,
    schemes: Vec<(SchemeKey, Vec<String>)>,
    modules: HashSet<String>,
    /// Modules written as `sparse-bitmask`.
    sparse: Vec<String>,
    /// Attention modules given FP8 KV-cache scales.
    kv_cache: Vec<String>,
    /// Zeros and entries over the sparse modules.
    sparse_counts: (u64, u64),
    sparsity_structure: Option<String>,
    /// The sparse layout of the folder, once a sparse module is added.
    sparse_layout: Option<SparseLayout>,
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

    /// Declares the input-activation quantization every config group
    /// carries (`input_activations`), which runtimes apply at inference:
    /// [`ActivationScheme::int8_per_token`] for W8A8-int8,
    /// [`ActivationScheme::fp8_per_token`] for FP8-dynamic. Only dynamic
    /// schemes can be declared (static ones need calibrated `input_scale`
    /// tensors: [`QuantFormatError::StaticActivations`] when writing the
    /// config). Integer layers are then stored `int-quantized` and FP8 ones
    /// `float-quantized`, as compressed-tensors does. Set before adding layers.
    pub fn input_activations(mut self, scheme: ActivationScheme) -> Self {
        self.activations = Some(scheme);
        self
    }

    /// The compression format a layer of `spec` gets from this writer, or
    /// `None` when compressed-tensors cannot store it.
    pub fn format_for(&self, spec: &QuantSpec) -> Option<CtFormat> {
        CtFormat::for_spec(spec, self.activations.is_some())
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
        let (staged, key) = self.stage_quantized(module, q, bias)?;
        add_staged(&mut self.tensors, staged)?;
        self.register(module, key);
        Ok(())
    }

    /// Adds a pruned quantized layer as compressed-tensors composes the two:
    /// the quantization compressor's tensors, with the `weight` codes tensor
    /// then stored in the sparse `layout` (`{module}.compressed`, `.bitmask`,
    /// … over int8 / FP8 codes; `weight_scale` and the rest stay as they
    /// are). This is what vLLM's 2:4 FP8 / INT8 kernels load
    /// (`float-quantized` or `int-quantized` with `sparse-24-bitmask`).
    ///
    /// # Errors
    /// Everything [`add_quantized`](Self::add_quantized) rejects; a format
    /// that packs its codes (`pack-quantized` — weight-only integers — and
    /// the FP4/FP6 formats: compressed-tensors does not sparsify those, use
    /// `int-quantized` through [`input_activations`](Self::input_activations)
    /// or FP8); asymmetric integers (a pruned weight's code is its zero
    /// point, not 0); a layout other than the folder's; for
    /// [`SparseLayout::TwoFour`], a group of four with more than two nonzero
    /// codes.
    pub fn add_sparse_quantized(
        &mut self,
        module: &str,
        q: &QuantizedTensor,
        bias: Option<ArrayView1<'_, f32>>,
        layout: SparseLayout,
    ) -> Result<()> {
        let (mut staged, key) = self.stage_quantized(module, q, bias)?;
        let layout_error = |reason: String| QuantFormatError::UnsupportedLayout {
            tensor: module.to_owned(),
            format: layout.name(),
            reason,
        };
        if !key.format.stores_weight() {
            return Err(layout_error(format!(
                "{} keeps its codes packed, and compressed-tensors only sparsifies an \
                 unpacked `weight` (int-quantized, float-quantized, naive-quantized)",
                key.format
            ))
            .into());
        }
        if matches!(key.spec.format, Format::Int { .. }) && !key.spec.symmetric {
            return Err(layout_error(
                "asymmetric integer codes: a pruned weight is stored as its zero point, \
                 not as a zero code; quantize symmetrically"
                    .into(),
            )
            .into());
        }
        self.check_sparse_layout(module, layout)?;
        let weight = format!("{module}.weight");
        let at = staged
            .iter()
            .position(|t| t.0 == weight)
            .ok_or_else(|| layout_error("no weight tensor was staged".into()))?;
        let (_, dtype, _, bytes) = staged.remove(at);
        let [rows, cols] = q.shape();
        let (sparse, zeros) =
            stage_sparse(module, layout, dtype, (rows, cols), &bytes).map_err(layout_error)?;
        staged.extend(sparse);
        add_staged(&mut self.tensors, staged)?;
        self.register(module, key);
        self.add_sparse_counts(module, layout, zeros, rows * cols);
        Ok(())
    }

    /// Validates and stages the tensors of a quantized layer.
    fn stage_quantized(
        &self,
        module: &str,
        q: &QuantizedTensor,
        bias: Option<ArrayView1<'_, f32>>,
    ) -> Result<(Vec<Staged>, SchemeKey)> {
        if self.modules.contains(module) {
            return Err(QuantFormatError::DuplicateModule {
                module: module.to_owned(),
            }
            .into());
        }
        let spec = *q.spec();
        let format = self
            .format_for(&spec)
            .ok_or_else(|| QuantFormatError::UnsupportedFormat {
                tensor: module.to_owned(),
                format: FORMAT,
                found: spec.format.to_string(),
            })?;
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
        let act_order = q.g_idx().is_some() && format == CtFormat::PackQuantized;
        if format != CtFormat::PackQuantized && has_reordered_groups(q) {
            return Err(QuantFormatError::UnsupportedLayout {
                tensor: module.to_owned(),
                format: format.name(),
                reason: "an act-order group index (g_idx) has no place in it".into(),
            }
            .into());
        }
        let zeros = match spec.format {
            Format::Int { bits } => Some(integer_zeros(module, q, bits)?),
            _ => None,
        };
        if spec.granularity == Granularity::Tensor {
            let s0 = q.scales()[[0, 0]];
            let same = q.scales().iter().all(|&s| s.to_bits() == s0.to_bits())
                && zeros
                    .as_ref()
                    .is_none_or(|z| z.iter().all(|&x| x == z[[0, 0]]));
            if !same {
                return Err(QuantFormatError::NotPerTensor {
                    tensor: module.to_owned(),
                }
                .into());
            }
        }

        let dt = self.float_dtype;
        let mut staged = match (spec.format, &zeros) {
            (Format::Int { bits }, Some(zeros)) if format == CtFormat::PackQuantized => {
                self.stage_packed(module, q, bits, zeros)?
            }
            (Format::Int { bits }, Some(zeros)) => stage_naive_int(module, q, bits, zeros, dt),
            (Format::Nvfp4, _) => stage_nvfp4(module, q),
            (Format::Mx(_), _) => stage_mx(module, q),
            _ => stage_fp8(module, q, dt),
        };
        if let Some(b) = bias {
            staged.push((
                format!("{module}.bias"),
                dt.dtype(),
                vec![rows],
                dt.encode(b.iter().copied()),
            ));
        }
        let key = SchemeKey {
            format,
            spec,
            act_order,
        };
        Ok((staged, key))
    }

    /// Records `module` under its config group.
    fn register(&mut self, module: &str, key: SchemeKey) {
        match self.schemes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, names)) => names.push(module.to_owned()),
            None => self.schemes.push((key, vec![module.to_owned()])),
        }
        self.modules.insert(module.to_owned());
    }

    /// One sparse layout per folder.
    fn check_sparse_layout(&self, module: &str, layout: SparseLayout) -> Result<()> {
        match self.sparse_layout {
            Some(have) if have != layout => Err(QuantFormatError::UnsupportedLayout {
                tensor: module.to_owned(),
                format: layout.name(),
                reason: format!(
                    "the folder already holds {} modules: one sparse layout per folder",
                    have.name()
                ),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Counts a sparse module for `global_sparsity` and `targets`.
    fn add_sparse_counts(&mut self, module: &str, layout: SparseLayout, zeros: u64, n: usize) {
        self.sparse_counts.0 += zeros;
        self.sparse_counts.1 += n as u64;
        self.sparse.push(module.to_owned());
        self.sparse_layout = Some(layout);
    }

    /// The `pack-quantized` tensors of an integer layer (int32 words).
    fn stage_packed(
        &self,
        module: &str,
        q: &QuantizedTensor,
        bits: u8,
        zeros: &ndarray::Array2<u8>,
    ) -> Result<Vec<Staged>> {
        let spec = *q.spec();
        let [rows, cols] = q.shape();
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
        Ok(staged)
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

    /// Adds the static FP8 (E4M3) KV-cache scales of one attention module
    /// (`model.layers.N.self_attn`): `{attention}.k_scale` and
    /// `{attention}.v_scale`, one element each in the writer's float dtype,
    /// with `x ≈ e4m3(x / scale) · scale` (so `scale = amax / 448`). Once any
    /// is added the config declares `kv_cache_scheme` (8-bit float,
    /// per-tensor, static, symmetric), which vLLM reads to store its cache in
    /// FP8 with these scales (`--kv-cache-dtype fp8`) and transformers loads
    /// onto each attention module.
    ///
    /// # Errors
    /// [`QuantFormatError::KvCacheScale`] for a scale that is not positive
    /// and finite (or that the float dtype rounds to zero or infinity);
    /// [`QuantFormatError::DuplicateModule`] for a module given twice.
    pub fn add_kv_cache_scales(&mut self, attention: &str, key: f32, value: f32) -> Result<()> {
        let dt = self.float_dtype;
        for (what, scale) in [("k_scale", key), ("v_scale", value)] {
            let stored = dt.round(scale);
            if !(scale.is_finite() && scale > 0.0 && stored.is_finite() && stored > 0.0) {
                return Err(QuantFormatError::KvCacheScale {
                    module: format!("{attention}.{what}"),
                    scale,
                }
                .into());
            }
        }
        if self.kv_cache.iter().any(|m| m == attention) {
            return Err(QuantFormatError::DuplicateModule {
                module: attention.to_owned(),
            }
            .into());
        }
        for (what, scale) in [("k_scale", key), ("v_scale", value)] {
            self.tensors.add(
                format!("{attention}.{what}"),
                dt.dtype(),
                &[1],
                dt.encode(std::iter::once(scale)),
            )?;
        }
        self.kv_cache.push(attention.to_owned());
        Ok(())
    }

    /// The `sparsity_structure` the config declares for the sparse modules
    /// (`"unstructured"`, the default, or `"2:4"`, `"4:8"`, …).
    pub fn sparsity_structure(mut self, structure: impl Into<String>) -> Self {
        self.sparsity_structure = Some(structure.into());
        self
    }

    /// Adds the float weight of linear module `module` (`[out, in]`) in
    /// compressed-tensors' `sparse-bitmask` layout, with values in the
    /// writer's float dtype: `{module}.weight.shape` (int64 `[2]`),
    /// `.compressed` (the nonzero values, row by row), `.bitmask` (uint8
    /// `[rows, ceil(cols / 8)]`, bit `j % 8` of byte `j / 8` for column `j`)
    /// and `.row_offsets` (int64 `[rows]`, where each row's values start). An
    /// entry is kept when it is nonzero after the cast to the float dtype.
    ///
    /// # Errors
    /// A module added twice; a folder that already holds
    /// `sparse-24-bitmask` modules.
    pub fn add_sparse_bitmask(
        &mut self,
        module: &str,
        weight: ndarray::ArrayView2<'_, f32>,
    ) -> Result<()> {
        self.add_sparse_float(module, weight, SparseLayout::Bitmask)
    }

    /// Adds a 2:4-sparse float weight of linear module `module` (`[out, in]`)
    /// in compressed-tensors' `sparse-24-bitmask` layout (the one vLLM's 2:4
    /// kernels load): `{module}.shape` (int64 `[2, 1]`), `{module}.compressed`
    /// (`[rows, cols / 2]`, the two kept values of every group of 4, in
    /// column order) and `{module}.bitmask` (uint8 `[rows, ceil(cols / 8)]`,
    /// little-endian bits, exactly two set per group). A group with fewer
    /// than two nonzeros keeps explicit zeros at its first free positions.
    /// Every module of a folder takes the same sparse layout.
    ///
    /// # Errors
    /// A module added twice, columns not a multiple of 4, a group with more
    /// than two nonzeros (after the cast to the float dtype), a folder that
    /// already holds `sparse-bitmask` modules.
    pub fn add_sparse_24_bitmask(
        &mut self,
        module: &str,
        weight: ndarray::ArrayView2<'_, f32>,
    ) -> Result<()> {
        self.add_sparse_float(module, weight, SparseLayout::TwoFour)
    }

    /// A float weight, cast to the writer's dtype, in `layout`.
    fn add_sparse_float(
        &mut self,
        module: &str,
        weight: ndarray::ArrayView2<'_, f32>,
        layout: SparseLayout,
    ) -> Result<()> {
        self.check_sparse_layout(module, layout)?;
        if self.modules.contains(module) {
            return Err(QuantFormatError::DuplicateModule {
                module: module.to_owned(),
            }
            .into());
        }
        let dt = self.float_dtype;
        let bytes = dt.encode(weight.iter().copied());
        let (staged, zeros) = stage_sparse(module, layout, dt.dtype(), weight.dim(), &bytes)
            .map_err(|reason| QuantFormatError::UnsupportedLayout {
                tensor: module.to_owned(),
                format: layout.name(),
                reason,
            })?;
        add_staged(&mut self.tensors, staged)?;
        self.modules.insert(module.to_owned());
        self.add_sparse_counts(module, layout, zeros, weight.len());
        Ok(())
    }

    /// The `quantization_config` block this writer puts in `config.json`.
    pub fn quantization_config(&self) -> Result<Value> {
        let sparsity = self.sparse_layout.map(|layout| {
            let (zeros, total) = self.sparse_counts;
            json!({
                "format": layout.name(),
                "global_sparsity": zeros as f64 / total.max(1) as f64,
                "sparsity_structure": match layout {
                    SparseLayout::TwoFour => "2:4",
                    SparseLayout::Bitmask => {
                        self.sparsity_structure.as_deref().unwrap_or("unstructured")
                    }
                },
                "targets": self.sparse,
                "ignore": [],
                "registry_requires_subclass": false,
            })
        });
        let packed = self
            .schemes
            .iter()
            .any(|(k, _)| k.format == CtFormat::PackQuantized);
        if sparsity.is_some() && packed && self.packing == CtPacking::Dense {
            return Err(QuantFormatError::UnsupportedLayout {
                tensor: self.sparse[0].clone(),
                format: FORMAT,
                reason: "sparse modules need compressed-tensors 0.12.2, whose pack-quantized \
                         words are CtPacking::Aligned: set .packing(CtPacking::Aligned)"
                    .into(),
            }
            .into());
        }
        if let (Some(sparsity), true) = (
            &sparsity,
            self.schemes.is_empty() && self.kv_cache.is_empty(),
        ) {
            return Ok(json!({
                "quant_method": "compressed-tensors",
                "sparsity_config": sparsity,
                "version": SPARSE_VERSION,
            }));
        }
        let observer = self.observer.as_deref().unwrap_or("minmax");
        if let Some(a) = self.activations {
            if a.dynamic == ActivationDynamic::Static {
                return Err(QuantFormatError::StaticActivations.into());
            }
        }
        let activations = self
            .activations
            .as_ref()
            .map_or(Value::Null, ActivationScheme::to_json);
        let group = |key: &SchemeKey, targets: Value| {
            json!({
                "targets": targets,
                "weights": weights_json(key.format, &key.spec, key.act_order, observer),
                "input_activations": activations,
                "output_activations": null,
                "format": key.format.name(),
            })
        };
        let mut groups = Map::new();
        let ignore: Vec<String> = match &self.targets {
            Targets::Names => {
                for (i, (key, names)) in self.schemes.iter().enumerate() {
                    groups.insert(format!("group_{i}"), group(key, json!(names)));
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
                    groups.insert("group_0".into(), group(key, json!(["Linear"])));
                }
                ignore.clone()
            }
        };
        let mut formats: Vec<CtFormat> = self.schemes.iter().map(|(k, _)| k.format).collect();
        formats.sort();
        formats.dedup();
        let format = match formats.as_slice() {
            [] => CtFormat::PackQuantized.name(),
            [one] => one.name(),
            _ => "mixed-precision",
        };
        Ok(json!({
            "config_groups": groups,
            "format": format,
            "global_compression_ratio": null,
            "ignore": ignore,
            "kv_cache_scheme": if self.kv_cache.is_empty() {
                Value::Null
            } else {
                kv_cache_scheme_json(observer)
            },
            "quant_method": "compressed-tensors",
            "quantization_status": "compressed",
            "sparsity_config": sparsity.unwrap_or_else(|| json!({})),
            // The compressed-tensors release whose packing these files follow.
            "version": match (self.packing, self.sparse_layout) {
                (_, Some(_)) => SPARSE_VERSION,
                (CtPacking::Dense, None) => "0.20.0",
                (CtPacking::Aligned, None) => "0.12.2",
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

/// compressed-tensors' `kv_cache_scheme` for static per-tensor FP8 E4M3
/// keys and values (its `QuantizationArgs` fields).
fn kv_cache_scheme_json(observer: &str) -> Value {
    json!({
        "num_bits": 8,
        "type": "float",
        "symmetric": true,
        "group_size": null,
        "strategy": "tensor",
        "block_structure": null,
        "dynamic": false,
        "actorder": null,
        "observer": observer,
        "observer_kwargs": {},
    })
}

/// Whether `q` has a group index that is not the plain `col / group_size`.
fn has_reordered_groups(q: &QuantizedTensor) -> bool {
    let gs = q.group_size();
    q.g_idx()
        .is_some_and(|g| g.iter().enumerate().any(|(c, &i)| i as usize != c / gs))
}
