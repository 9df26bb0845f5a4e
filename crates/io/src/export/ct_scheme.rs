//! The vocabulary of a compressed-tensors `quantization_config`: its
//! compression formats ([`CtFormat`]) and the activation quantization a config
//! group can declare ([`ActivationScheme`]).

use serde_json::{json, Value};
use tensorpress_quant_core::formats::{FloatFormat, MxFormat};
use tensorpress_quant_core::{Format, Granularity, QuantSpec};

use super::QuantFormatError;
use crate::Result;

/// A compressed-tensors compression format: how a config group's weights are
/// stored (`quantization_config.format`, or a group's own `format`).
///
/// [`CtFormat::for_spec`] picks the one compressed-tensors 0.20 itself infers
/// for a layer (its `infer_module_format`, which llm-compressor uses when it
/// saves), so our folders name what compressed-tensors would have written:
///
/// | weights | activations declared | format |
/// |---|---|---|
/// | `Int { bits }` | no | [`PackQuantized`](Self::PackQuantized) |
/// | `Int { bits }` | yes | [`IntQuantized`](Self::IntQuantized) |
/// | `Float(E4M3)` | no | [`NaiveQuantized`](Self::NaiveQuantized) |
/// | `Float(E4M3)` | yes | [`FloatQuantized`](Self::FloatQuantized) |
/// | `Nvfp4` | either | [`Nvfp4PackQuantized`](Self::Nvfp4PackQuantized) |
/// | `Mx(Fp4)` | either | [`Mxfp4PackQuantized`](Self::Mxfp4PackQuantized) |
/// | `Mx(Fp6E2M3)` | either | [`Mxfp6PackQuantized`](Self::Mxfp6PackQuantized) |
/// | `Mx(Fp8E4M3)` | either | [`Mxfp8Quantized`](Self::Mxfp8Quantized) |
///
/// compressed-tensors registers `int-quantized` and `float-quantized` as
/// aliases of `naive-quantized` (the same tensors: one `weight` of the
/// format's torch dtype, `weight_scale`, and `weight_zero_point` when
/// asymmetric) that it only picks when the group also quantizes input
/// activations; a weight-only int layer is packed into int32 words instead.
/// Other float element formats (E5M2, FP6 E3M2, FP4 with f32 scales), NF4
/// and MXFP6 E3M2 / MXFP8 E5M2 have no compressed-tensors layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CtFormat {
    /// `pack-quantized`: integer codes in int32 words.
    PackQuantized,
    /// `int-quantized`: integer codes as int8 (`code − 2^(bits−1)`), for
    /// groups that quantize activations too (W8A8).
    IntQuantized,
    /// `float-quantized`: FP8 E4M3 weights, for groups that quantize
    /// activations too (FP8 dynamic).
    FloatQuantized,
    /// `naive-quantized`: the same tensors as the two above, for
    /// weight-only FP8 (and how int8 codes read when a config says so).
    NaiveQuantized,
    /// `nvfp4-pack-quantized`: FP4 pairs in bytes, E4M3 block scales of 16,
    /// and a global scale.
    Nvfp4PackQuantized,
    /// `mxfp4-pack-quantized`: FP4 pairs in bytes, E8M0 scales of 32.
    Mxfp4PackQuantized,
    /// `mxfp6-pack-quantized`: FP6 E2M3 quadruples in three bytes, E8M0
    /// scales of 32.
    Mxfp6PackQuantized,
    /// `mxfp8-quantized`: FP8 E4M3 weights, E8M0 scales of 32.
    Mxfp8Quantized,
}

impl CtFormat {
    /// Every format, in compressed-tensors' inference priority order.
    pub const ALL: [CtFormat; 8] = [
        CtFormat::Mxfp4PackQuantized,
        CtFormat::Mxfp6PackQuantized,
        CtFormat::Mxfp8Quantized,
        CtFormat::Nvfp4PackQuantized,
        CtFormat::IntQuantized,
        CtFormat::PackQuantized,
        CtFormat::FloatQuantized,
        CtFormat::NaiveQuantized,
    ];

    /// The name in `config.json`.
    pub fn name(self) -> &'static str {
        match self {
            CtFormat::PackQuantized => "pack-quantized",
            CtFormat::IntQuantized => "int-quantized",
            CtFormat::FloatQuantized => "float-quantized",
            CtFormat::NaiveQuantized => "naive-quantized",
            CtFormat::Nvfp4PackQuantized => "nvfp4-pack-quantized",
            CtFormat::Mxfp4PackQuantized => "mxfp4-pack-quantized",
            CtFormat::Mxfp6PackQuantized => "mxfp6-pack-quantized",
            CtFormat::Mxfp8Quantized => "mxfp8-quantized",
        }
    }

    /// The format named `name` (as [`name`](Self::name) writes it).
    pub fn from_name(name: &str) -> Option<CtFormat> {
        CtFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The format compressed-tensors 0.20 stores a layer of `spec` in, when
    /// the config group does (`activations`) or does not declare input
    /// activation quantization; `None` when it has no layout for the spec.
    pub fn for_spec(spec: &QuantSpec, activations: bool) -> Option<CtFormat> {
        Some(match spec.format {
            Format::Int { .. } if activations => CtFormat::IntQuantized,
            Format::Int { .. } => CtFormat::PackQuantized,
            Format::Float(f) if f == FloatFormat::E4M3 => {
                if activations {
                    CtFormat::FloatQuantized
                } else {
                    CtFormat::NaiveQuantized
                }
            }
            Format::Nvfp4 => CtFormat::Nvfp4PackQuantized,
            Format::Mx(MxFormat::Fp4) => CtFormat::Mxfp4PackQuantized,
            Format::Mx(MxFormat::Fp6E2M3) => CtFormat::Mxfp6PackQuantized,
            Format::Mx(MxFormat::Fp8E4M3) => CtFormat::Mxfp8Quantized,
            _ => return None,
        })
    }

    /// Whether the weight codes are stored unpacked, one per element, as
    /// `weight` (the naive family and MXFP8) rather than `weight_packed`.
    pub fn stores_weight(self) -> bool {
        matches!(
            self,
            CtFormat::IntQuantized
                | CtFormat::FloatQuantized
                | CtFormat::NaiveQuantized
                | CtFormat::Mxfp8Quantized
        )
    }
}

impl std::fmt::Display for CtFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The number type of quantized activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationType {
    /// Signed integers (`type: "int"`).
    Int,
    /// Floats (`type: "float"`): FP8 E4M3 for 8 bits, FP4 E2M1 for 4.
    Float,
}

/// Which activations share a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationStrategy {
    /// One scale for the whole input (`"tensor"`).
    Tensor,
    /// One scale per token, i.e. per row of the input (`"token"`).
    Token,
    /// One scale per run of this many channels of a token (`"group"`).
    Group(usize),
    /// Groups with a global scale on top (`"tensor_group"`, NVFP4).
    TensorGroup(usize),
}

/// When activation scales are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationDynamic {
    /// Calibrated scales stored in the checkpoint (`input_scale`), `false`.
    Static,
    /// Computed from each input at run time, `true`.
    Dynamic,
    /// Group scales at run time under a stored global scale, `"local"` (NVFP4).
    Local,
}

/// The input-activation quantization a compressed-tensors config group
/// declares (`input_activations`): what a runtime applies to a layer's input
/// before the matrix product. A runner can fake-quantize inputs with it.
///
/// ```
/// use tensorpress_io::export::{ActivationScheme, ActivationStrategy};
///
/// let a = ActivationScheme::int8_per_token();
/// assert_eq!(a.strategy, ActivationStrategy::Token);
/// let json = a.to_json();
/// assert_eq!(json["type"], "int");
/// assert_eq!(json["dynamic"], true);
/// assert_eq!(ActivationScheme::from_json("input_activations", &json)?, a);
/// # Ok::<(), tensorpress_io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActivationScheme {
    /// Bits per activation.
    pub num_bits: u8,
    /// Integers or floats.
    pub kind: ActivationType,
    /// Scale sharing.
    pub strategy: ActivationStrategy,
    /// When scales are computed.
    pub dynamic: ActivationDynamic,
    /// Symmetric (no zero point).
    pub symmetric: bool,
}

impl ActivationScheme {
    /// Dynamic symmetric int8 per token: the activations of llm-compressor's
    /// `W8A8` (`INT8`) preset.
    pub fn int8_per_token() -> Self {
        ActivationScheme {
            num_bits: 8,
            kind: ActivationType::Int,
            strategy: ActivationStrategy::Token,
            dynamic: ActivationDynamic::Dynamic,
            symmetric: true,
        }
    }

    /// Dynamic FP8 E4M3 per token: the activations of llm-compressor's
    /// `FP8_DYNAMIC` preset.
    pub fn fp8_per_token() -> Self {
        ActivationScheme {
            kind: ActivationType::Float,
            ..Self::int8_per_token()
        }
    }

    /// The `input_activations` object, in the fields and order
    /// compressed-tensors serializes its presets with.
    pub fn to_json(&self) -> Value {
        let (strategy, group_size) = match self.strategy {
            ActivationStrategy::Tensor => ("tensor", Value::Null),
            ActivationStrategy::Token => ("token", Value::Null),
            ActivationStrategy::Group(g) => ("group", json!(g)),
            ActivationStrategy::TensorGroup(g) => ("tensor_group", json!(g)),
        };
        json!({
            "num_bits": self.num_bits,
            "type": match self.kind {
                ActivationType::Int => "int",
                ActivationType::Float => "float",
            },
            "symmetric": self.symmetric,
            "group_size": group_size,
            "strategy": strategy,
            "dynamic": match self.dynamic {
                ActivationDynamic::Static => json!(false),
                ActivationDynamic::Dynamic => json!(true),
                ActivationDynamic::Local => json!("local"),
            },
        })
    }

    /// Parses an `input_activations` object; `path` names it in errors.
    pub fn from_json(path: &str, v: &Value) -> Result<Self> {
        let err = |field: &str, problem: String| -> crate::Error {
            QuantFormatError::Config {
                field: format!("{path}.{field}"),
                problem,
            }
            .into()
        };
        let num_bits = v
            .get("num_bits")
            .and_then(Value::as_u64)
            .filter(|b| (1..=64).contains(b))
            .ok_or_else(|| err("num_bits", "missing or not a small integer".into()))?
            as u8;
        let kind = match v.get("type").and_then(Value::as_str).unwrap_or("int") {
            "int" => ActivationType::Int,
            "float" => ActivationType::Float,
            other => return Err(err("type", format!("{other:?} is not int or float"))),
        };
        let group = v.get("group_size").and_then(Value::as_i64);
        let positive_group = |name: &str| -> Result<usize> {
            group
                .filter(|&g| g > 0)
                .map(|g| g as usize)
                .ok_or_else(|| err("group_size", format!("{name} needs a positive group size")))
        };
        let strategy = match v.get("strategy").and_then(Value::as_str) {
            Some("tensor") => ActivationStrategy::Tensor,
            None if group.is_none() => ActivationStrategy::Tensor,
            Some("token") => ActivationStrategy::Token,
            Some("group") | None => ActivationStrategy::Group(positive_group("group")?),
            Some("tensor_group") => {
                ActivationStrategy::TensorGroup(positive_group("tensor_group")?)
            }
            Some(other) => {
                return Err(err(
                    "strategy",
                    format!("{other:?} is not tensor, token, group or tensor_group"),
                ))
            }
        };
        let dynamic = match v.get("dynamic") {
            None | Some(Value::Bool(false)) => ActivationDynamic::Static,
            Some(Value::Bool(true)) => ActivationDynamic::Dynamic,
            Some(Value::String(s)) if s == "local" => ActivationDynamic::Local,
            Some(other) => {
                return Err(err(
                    "dynamic",
                    format!("{other} is not a bool or \"local\""),
                ))
            }
        };
        let symmetric = v.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
        Ok(ActivationScheme {
            num_bits,
            kind,
            strategy,
            dynamic,
            symmetric,
        })
    }
}

/// The `weights` object of a config group for layers of `spec` stored as
/// `format`.
pub(crate) fn weights_json(
    format: CtFormat,
    spec: &QuantSpec,
    act_order: bool,
    observer: &str,
) -> Value {
    let (strategy, group_size) = match (format, spec.granularity) {
        (CtFormat::Nvfp4PackQuantized, Granularity::Group(g)) => ("tensor_group", json!(g)),
        (_, Granularity::Tensor) => ("tensor", Value::Null),
        (_, Granularity::Channel) => ("channel", Value::Null),
        (_, Granularity::Group(g)) => ("group", json!(g)),
    };
    let ty = if matches!(spec.format, Format::Int { .. }) {
        "int"
    } else {
        "float"
    };
    let mut w = json!({
        "num_bits": spec.bits(),
        "type": ty,
        "symmetric": spec.symmetric,
        "strategy": strategy,
        "group_size": group_size,
        "block_structure": null,
        "dynamic": false,
        "actorder": if act_order { json!("group") } else { Value::Null },
        "observer": observer,
        "observer_kwargs": {},
    });
    let scale_dtype = match format {
        CtFormat::Nvfp4PackQuantized => Some("torch.float8_e4m3fn"),
        CtFormat::Mxfp4PackQuantized | CtFormat::Mxfp6PackQuantized | CtFormat::Mxfp8Quantized => {
            Some("torch.uint8")
        }
        _ => None,
    };
    if let (Some(d), Some(obj)) = (scale_dtype, w.as_object_mut()) {
        obj.insert("scale_dtype".into(), json!(d));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_compressed_tensors_inference() {
        let int8 = QuantSpec::int(8);
        assert_eq!(
            CtFormat::for_spec(&int8, false),
            Some(CtFormat::PackQuantized)
        );
        assert_eq!(
            CtFormat::for_spec(&int8, true),
            Some(CtFormat::IntQuantized)
        );
        let fp8 = QuantSpec::float(FloatFormat::E4M3);
        assert_eq!(
            CtFormat::for_spec(&fp8, true),
            Some(CtFormat::FloatQuantized)
        );
        assert_eq!(
            CtFormat::for_spec(&fp8, false),
            Some(CtFormat::NaiveQuantized)
        );
        assert_eq!(
            CtFormat::for_spec(&QuantSpec::nvfp4(), false),
            Some(CtFormat::Nvfp4PackQuantized)
        );
        assert_eq!(
            CtFormat::for_spec(&QuantSpec::mxfp4(), false),
            Some(CtFormat::Mxfp4PackQuantized)
        );
        assert_eq!(CtFormat::for_spec(&QuantSpec::nf4(), false), None);
        let e5m2 = QuantSpec::float(FloatFormat::E5M2);
        assert_eq!(CtFormat::for_spec(&e5m2, true), None);
        for f in CtFormat::ALL {
            assert_eq!(CtFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(CtFormat::from_name("mixed-precision"), None);
    }

    #[test]
    fn activation_schemes_round_trip_through_json() {
        let fp8 = ActivationScheme::fp8_per_token();
        assert_eq!(fp8.to_json()["type"], "float");
        let nvfp4 = ActivationScheme {
            num_bits: 4,
            kind: ActivationType::Float,
            strategy: ActivationStrategy::TensorGroup(16),
            dynamic: ActivationDynamic::Local,
            symmetric: true,
        };
        for a in [fp8, ActivationScheme::int8_per_token(), nvfp4] {
            assert_eq!(ActivationScheme::from_json("a", &a.to_json()).unwrap(), a);
        }
        let bad = json!({"num_bits": 8, "strategy": "group"});
        let e = ActivationScheme::from_json("x.input_activations", &bad).unwrap_err();
        assert!(
            e.to_string().contains("x.input_activations.group_size"),
            "{e}"
        );
    }
}
