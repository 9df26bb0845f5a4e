//! Reading compressed-tensors checkpoints: the config groups, which modules
//! they cover, and `pack-quantized` weights (the other layouts are in
//! [`ct_float`](super::ct_float)).

use std::collections::{BTreeMap, BTreeSet};

use ndarray::Array2;
use serde_json::Value;
use tensorpress_quant_core::formats::{FloatFormat, MxFormat};
use tensorpress_quant_core::pack::compressed_tensors::{self as ct, CtPacking};
use tensorpress_quant_core::{Format, Granularity, QuantSpec, QuantizedTensor};
use tensorpress_tensor::DType;

use super::{
    config_error, detect_packing, field, quant_error, read_float_matrix, read_g_idx,
    read_i32_matrix, read_ints, QuantFormatError,
};
use crate::export::{pack_error, ActivationScheme, CtFormat};
use crate::safetensors::SafetensorsModel;
use crate::Result;

/// Suffixes of the tensors that make up a quantized weight.
const STORAGE: [&str; 7] = [
    "weight",
    "weight_packed",
    "weight_scale",
    "weight_zero_point",
    "weight_shape",
    "weight_g_idx",
    "weight_global_scale",
];

/// The weight quantization of one config group, with its targets.
struct Scheme {
    targets: Vec<String>,
    spec: QuantSpec,
    format: Option<CtFormat>,
    activations: Option<ActivationScheme>,
}

/// How one compressed-tensors module is stored, and what its config group
/// says about its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CtLayer {
    /// The layout of its tensors.
    pub(super) format: CtFormat,
    /// The group's `input_activations`.
    pub(super) activations: Option<ActivationScheme>,
}

fn parse_scheme(name: &str, scheme: &Value) -> Result<Scheme> {
    let path = format!("config_groups.{name}.");
    let format =
        match scheme.get("format").and_then(Value::as_str) {
            None => None,
            Some(f) => Some(CtFormat::from_name(f).ok_or_else(|| {
                config_error(format!("{path}format"), format!("{f:?} is not read"))
            })?),
        };
    let targets: Vec<String> = field(scheme, &path, "targets")?
        .as_array()
        .ok_or_else(|| config_error(format!("{path}targets"), "not a list"))?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let activations = match scheme.get("input_activations") {
        None | Some(Value::Null) => None,
        Some(a) => Some(ActivationScheme::from_json(
            &format!("{path}input_activations"),
            a,
        )?),
    };
    let w = field(scheme, &path, "weights")?;
    let wpath = format!("{path}weights.");
    let ty = w.get("type").and_then(Value::as_str).unwrap_or("int");
    let bits = field(w, &wpath, "num_bits")?
        .as_u64()
        .filter(|&b| b <= 64)
        .ok_or_else(|| config_error(format!("{wpath}num_bits"), "not a small integer"))?;
    let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
    let group_size = w.get("group_size").and_then(Value::as_i64);
    let strategy = w.get("strategy").and_then(Value::as_str);
    let granularity = match (strategy, group_size) {
        (Some("tensor"), _) | (None, None) => Granularity::Tensor,
        (Some("channel"), _) | (None, Some(-1)) => Granularity::Channel,
        (Some("group" | "tensor_group") | None, Some(g)) if g > 0 => Granularity::Group(g as usize),
        (Some("group" | "tensor_group") | None, g) => {
            return Err(config_error(
                format!("{wpath}group_size"),
                format!("{g:?} is not a positive group size"),
            ))
        }
        (Some(other), _) => {
            return Err(config_error(
                format!("{wpath}strategy"),
                format!("{other:?} is not read (tensor, channel, group or tensor_group)"),
            ))
        }
    };
    let spec = match ty {
        "int" => {
            let mut spec = QuantSpec::int(bits as u8);
            spec.granularity = granularity;
            spec.symmetric = symmetric;
            spec.format
                .validate()
                .map_err(|e| config_error(format!("{wpath}num_bits"), e.to_string()))?;
            spec
        }
        "float" => {
            if !symmetric {
                return Err(config_error(
                    format!("{wpath}symmetric"),
                    "asymmetric float weights are not read",
                ));
            }
            let uint8_scales = w
                .get("scale_dtype")
                .and_then(Value::as_str)
                .is_some_and(|d| d.trim_start_matches("torch.") == "uint8");
            match (bits, granularity) {
                (4, Granularity::Group(16)) => QuantSpec::nvfp4(),
                (4, Granularity::Group(32)) => QuantSpec::mxfp4(),
                (6, Granularity::Group(32)) => QuantSpec::mx(MxFormat::Fp6E2M3),
                (8, Granularity::Group(32)) if uint8_scales => QuantSpec::mx(MxFormat::Fp8E4M3),
                (8, _) => {
                    let mut spec = QuantSpec::float(FloatFormat::E4M3);
                    spec.granularity = granularity;
                    spec
                }
                _ => {
                    return Err(config_error(
                        format!("{wpath}num_bits"),
                        format!(
                            "float weights of {bits} bits with {granularity:?} are not read \
                             (FP8, NVFP4 groups of 16, MXFP4/MXFP6 groups of 32)"
                        ),
                    ))
                }
            }
        }
        other => {
            return Err(config_error(
                format!("{wpath}type"),
                format!("{other:?} weights are not read (int or float)"),
            ))
        }
    };
    Ok(Scheme {
        targets,
        spec,
        format,
        activations,
    })
}

/// The layout of `module`, stored as `packed` (a `weight_packed`) or not,
/// under a group of `scheme` (the group's format, else the checkpoint's).
fn layout(
    module: &str,
    scheme: &Scheme,
    declared: Option<CtFormat>,
    packed: bool,
) -> Result<CtFormat> {
    let declared = scheme.format.or(declared);
    let acts = scheme.activations.is_some();
    let found = match (scheme.spec.format, packed) {
        (Format::Int { .. }, true) => Some(CtFormat::PackQuantized),
        (Format::Int { .. }, false) => Some(match declared {
            Some(f @ (CtFormat::IntQuantized | CtFormat::NaiveQuantized)) => f,
            _ if acts => CtFormat::IntQuantized,
            _ => CtFormat::NaiveQuantized,
        }),
        (Format::Float(_), false) => Some(match declared {
            Some(f @ (CtFormat::FloatQuantized | CtFormat::NaiveQuantized)) => f,
            _ if acts => CtFormat::FloatQuantized,
            _ => CtFormat::NaiveQuantized,
        }),
        (Format::Nvfp4, true) => Some(CtFormat::Nvfp4PackQuantized),
        (Format::Mx(MxFormat::Fp4), true) => Some(CtFormat::Mxfp4PackQuantized),
        (Format::Mx(MxFormat::Fp6E2M3), true) => Some(CtFormat::Mxfp6PackQuantized),
        (Format::Mx(MxFormat::Fp8E4M3), false) => Some(CtFormat::Mxfp8Quantized),
        _ => None,
    };
    found.ok_or_else(|| {
        let stored = if packed { "weight_packed" } else { "weight" };
        config_error(
            module.to_owned(),
            format!(
                "{} weights cannot be stored as {stored}",
                scheme.spec.format
            ),
        )
    })
}

/// Whether a target names a module class (`Linear`) or a pattern rather than
/// one module.
fn is_class_or_pattern(target: &str) -> bool {
    target.starts_with("re:")
        || (!target.contains('.') && target.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// What [`index`] finds: the word filling, each quantized module's spec and
/// layout, and the names of their storage tensors.
pub(super) type Index = (
    CtPacking,
    BTreeMap<String, QuantSpec>,
    BTreeMap<String, CtLayer>,
    BTreeSet<String>,
);

/// The `pack-quantized` word filling the config's `version` implies.
pub(super) fn declared_packing(quant: &Value) -> CtPacking {
    quant
        .get("version")
        .and_then(Value::as_str)
        .map_or(CtPacking::Dense, CtPacking::for_version)
}

/// The quantized modules and their specs and layouts, and the names of their
/// storage tensors. A module is quantized when it has a `weight_packed`, or
/// a `weight` with a `weight_scale`.
pub(super) fn index(model: &SafetensorsModel, quant: &Value) -> Result<Index> {
    let packing = declared_packing(quant);
    let format = quant.get("format").and_then(Value::as_str).unwrap_or("");
    let declared = CtFormat::from_name(format);
    if declared.is_none() && format != "mixed-precision" {
        return Err(config_error(
            "format",
            format!("{format:?} is not read (a compressed-tensors quantized format)"),
        ));
    }
    let groups = field(quant, "", "config_groups")?
        .as_object()
        .ok_or_else(|| config_error("config_groups", "not an object"))?;
    let schemes = groups
        .iter()
        .map(|(name, s)| parse_scheme(name, s))
        .collect::<Result<Vec<_>>>()?;

    let mut layers = BTreeMap::new();
    let mut ct_layers = BTreeMap::new();
    let mut storage = BTreeSet::new();
    for name in model.names() {
        let (module, packed) = if let Some(m) = name.strip_suffix(".weight_packed") {
            (m, true)
        } else if let Some(m) = name.strip_suffix(".weight_scale") {
            if model.contains(&format!("{m}.weight_packed"))
                || !model.contains(&format!("{m}.weight"))
            {
                continue;
            }
            (m, false)
        } else {
            continue;
        };
        let exact: Vec<&Scheme> = schemes
            .iter()
            .filter(|s| s.targets.iter().any(|t| t == module))
            .collect();
        let chosen = if exact.len() == 1 {
            exact[0]
        } else if !exact.is_empty() {
            return Err(QuantFormatError::SchemeMatch {
                module: module.to_owned(),
                matches: exact.len(),
            }
            .into());
        } else {
            let broad: Vec<&Scheme> = schemes
                .iter()
                .filter(|s| s.targets.iter().any(|t| is_class_or_pattern(t)))
                .collect();
            match (broad.as_slice(), schemes.as_slice()) {
                ([one], _) => *one,
                ([], [one]) => one,
                (many, _) => {
                    return Err(QuantFormatError::SchemeMatch {
                        module: module.to_owned(),
                        matches: many.len(),
                    }
                    .into())
                }
            }
        };
        let format = layout(module, chosen, declared, packed)?;
        layers.insert(module.to_owned(), chosen.spec);
        ct_layers.insert(
            module.to_owned(),
            CtLayer {
                format,
                activations: chosen.activations,
            },
        );
        for suffix in STORAGE {
            storage.insert(format!("{module}.{suffix}"));
        }
    }
    Ok((packing, layers, ct_layers, storage))
}

/// Unpacks one module.
pub(super) fn decode(
    model: &SafetensorsModel,
    module: &str,
    spec: QuantSpec,
    prefer: CtPacking,
) -> Result<QuantizedTensor> {
    let bits = spec.bits();
    let shape_name = format!("{module}.weight_shape");
    let (shape, dims) = read_ints(model, &shape_name, &[DType::I64, DType::I32], "I64")?;
    let (rows, cols) = match dims.as_slice() {
        &[r, c] if shape == [2] && r >= 0 && c >= 0 => (r as usize, c as usize),
        _ => {
            return Err(QuantFormatError::TensorShape {
                tensor: shape_name,
                expected: vec![2],
                actual: shape,
            }
            .into())
        }
    };

    let packed_name = format!("{module}.weight_packed");
    let packed = read_i32_matrix(model, &packed_name)?;
    if packed.nrows() != rows {
        return Err(QuantFormatError::TensorShape {
            tensor: packed_name,
            expected: vec![rows, CtPacking::Dense.words(cols, bits).unwrap_or(0)],
            actual: packed.shape().to_vec(),
        }
        .into());
    }
    let packing = detect_packing(&packed_name, cols, packed.ncols(), bits, prefer, (1, rows))?;
    let codes =
        ct::unpack_weight(packed.view(), bits, cols, packing).map_err(pack_error(module))?;

    let groups = spec.n_groups(cols).map_err(quant_error(module))?;
    let scale_name = format!("{module}.weight_scale");
    let scales = match spec.granularity {
        Granularity::Tensor => {
            let one = read_float_matrix(model, &scale_name, [1, 1], true)?;
            Array2::from_elem((rows, 1), one[[0, 0]])
        }
        Granularity::Channel => read_float_matrix(model, &scale_name, [rows, 1], true)?,
        Granularity::Group(_) => read_float_matrix(model, &scale_name, [rows, groups], false)?,
    };

    let mid = (1i64 << (bits - 1)) as f32;
    let zp_name = format!("{module}.weight_zero_point");
    let zeros = if spec.symmetric {
        Array2::from_elem((rows, groups), mid)
    } else {
        read_zero_points(model, &zp_name, spec, rows, groups, prefer)?
    };

    let g_idx = read_g_idx(model, &format!("{module}.weight_g_idx"), cols, groups, None)?;
    let codes = codes.into_raw_vec_and_offset().0;
    QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, g_idx).map_err(quant_error(module))
}

/// Asymmetric zero points: packed int32 (per group or channel), or a signed
/// int8 (per tensor, and in checkpoints from before zero points were packed).
fn read_zero_points(
    model: &SafetensorsModel,
    name: &str,
    spec: QuantSpec,
    rows: usize,
    groups: usize,
    prefer: CtPacking,
) -> Result<Array2<f32>> {
    let bits = spec.bits();
    let mid = 1i64 << (bits - 1);
    let (shape, values) = read_ints(model, name, &[DType::I8, DType::I32], "I32 (packed) or I8")?;
    let is_i8 = model.info(name).is_some_and(|i| i.dtype == DType::I8);
    let numel: usize = shape.iter().product();
    if spec.granularity == Granularity::Tensor || is_i8 {
        let expect = if spec.granularity == Granularity::Tensor {
            1
        } else {
            rows * groups
        };
        if numel != expect {
            return Err(QuantFormatError::TensorShape {
                tensor: name.to_owned(),
                expected: vec![rows, groups],
                actual: shape,
            }
            .into());
        }
        let vals: Vec<f32> = if spec.granularity == Granularity::Tensor {
            vec![(values[0] + mid) as f32; rows]
        } else {
            values.iter().map(|&v| (v + mid) as f32).collect()
        };
        return Array2::from_shape_vec((rows, groups), vals).map_err(|source| {
            crate::Error::Shape {
                tensor: name.to_owned(),
                source,
            }
        });
    }
    let packed = read_i32_matrix(model, name)?;
    if packed.ncols() != groups {
        return Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: vec![CtPacking::Dense.words(rows, bits).unwrap_or(0), groups],
            actual: packed.shape().to_vec(),
        }
        .into());
    }
    let packing = detect_packing(name, rows, packed.nrows(), bits, prefer, (0, groups))?;
    let zeros =
        ct::unpack_zero_points(packed.view(), bits, rows, packing).map_err(pack_error(name))?;
    Ok(zeros.mapv(f32::from))
}
