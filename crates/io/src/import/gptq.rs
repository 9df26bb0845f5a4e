//! Reading GPTQ checkpoints (v1 and GPTQModel's v2).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use tensorpress_quant_core::pack::gptq::{self, ZeroFormat};
use tensorpress_quant_core::{Granularity, QuantSpec, QuantizedTensor};

use super::{
    config_error, field, quant_error, read_float_matrix, read_g_idx, read_i32_matrix,
    QuantFormatError,
};
use crate::export::pack_error;
use crate::safetensors::SafetensorsModel;
use crate::Result;

/// Suffixes of the tensors that make up a packed weight.
const STORAGE: [&str; 4] = ["qweight", "qzeros", "scales", "g_idx"];

/// The zero-point format, the quantized modules with their (shared) spec, and
/// the names of their storage tensors.
pub(super) fn index(
    model: &SafetensorsModel,
    quant: &Value,
) -> Result<(ZeroFormat, BTreeMap<String, QuantSpec>, BTreeSet<String>)> {
    let bits = field(quant, "", "bits")?
        .as_u64()
        .filter(|b| [2, 3, 4, 8].contains(b))
        .ok_or_else(|| config_error("bits", "not 2, 3, 4 or 8"))? as u8;
    let group_size = field(quant, "", "group_size")?
        .as_i64()
        .filter(|&g| g == -1 || g > 0)
        .ok_or_else(|| config_error("group_size", "not −1 or a positive integer"))?;
    let symmetric = quant.get("sym").and_then(Value::as_bool).unwrap_or(true);
    let format = quant
        .get("checkpoint_format")
        .or_else(|| quant.get("format"))
        .and_then(Value::as_str)
        .unwrap_or("gptq");
    let zero_format = match format {
        "gptq" => ZeroFormat::V1,
        "gptq_v2" => ZeroFormat::V2,
        other => {
            return Err(config_error(
                "checkpoint_format",
                format!("{other:?} is not read (gptq or gptq_v2)"),
            ))
        }
    };
    let mut spec = QuantSpec::int(bits);
    spec.symmetric = symmetric;
    spec.granularity = if group_size > 0 {
        Granularity::Group(group_size as usize)
    } else {
        Granularity::Channel
    };

    let mut layers = BTreeMap::new();
    let mut storage = BTreeSet::new();
    for name in model.names() {
        let Some(module) = name.strip_suffix(".qweight") else {
            continue;
        };
        layers.insert(module.to_owned(), spec);
        for suffix in STORAGE {
            storage.insert(format!("{module}.{suffix}"));
        }
    }
    Ok((zero_format, layers, storage))
}

/// Unpacks one module.
pub(super) fn decode(
    model: &SafetensorsModel,
    module: &str,
    spec: QuantSpec,
    zero_format: ZeroFormat,
) -> Result<QuantizedTensor> {
    let bits = spec.bits();
    let qweight_name = format!("{module}.qweight");
    let qweight = read_i32_matrix(model, &qweight_name)?;
    let (words, n) = qweight.dim();
    if !(words * 32).is_multiple_of(bits as usize) {
        return Err(QuantFormatError::TensorShape {
            tensor: qweight_name,
            expected: vec![words.next_multiple_of(bits as usize), n],
            actual: vec![words, n],
        }
        .into());
    }
    let k = words * 32 / bits as usize;
    let codes = gptq::unpack_qweight(qweight.view(), bits, k).map_err(pack_error(module))?;

    let groups = spec.n_groups(k).map_err(quant_error(module))?;
    let qzeros = read_i32_matrix(model, &format!("{module}.qzeros"))?;
    if qzeros.nrows() != groups {
        return Err(QuantFormatError::TensorShape {
            tensor: format!("{module}.qzeros"),
            expected: vec![groups, n / 32 * bits as usize],
            actual: qzeros.shape().to_vec(),
        }
        .into());
    }
    let zeros = gptq::unpack_qzeros(qzeros.view(), bits, n, zero_format)
        .map_err(pack_error(module))?
        .mapv(f32::from);
    let scales = read_float_matrix(model, &format!("{module}.scales"), [groups, n], false)?;
    let scales = scales.t().as_standard_layout().into_owned();
    let gs = spec.group_size(k);
    let g_idx = read_g_idx(
        model,
        &format!("{module}.g_idx"),
        k,
        groups,
        Some(gs.max(1)),
    )?;
    let codes = codes.into_raw_vec_and_offset().0;
    QuantizedTensor::new(spec, n, k, codes, scales, zeros, g_idx).map_err(quant_error(module))
}
