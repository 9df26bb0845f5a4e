//! Reading compressed-tensors' unpacked and float layouts: `int-quantized`
//! / `naive-quantized` integers, `float-quantized` / `naive-quantized` FP8,
//! `nvfp4-pack-quantized`, and the MX formats (see
//! [`CompressedTensorsWriter`](crate::export::CompressedTensorsWriter) for
//! the tensors of each).

use ndarray::Array2;
use tensorpress_quant_core::formats::{mx, FloatFormat};
use tensorpress_quant_core::{Format, Granularity, QuantSpec, QuantizedTensor};
use tensorpress_tensor::{DType, Tensor};

use super::{quant_error, read_float, read_float_matrix, read_ints, QuantFormatError};
use crate::export::ct_layouts::{unpack_fp6, unpack_nibbles};
use crate::export::CtFormat;
use crate::safetensors::SafetensorsModel;
use crate::{Error, Result};

/// A 2-D tensor of one-byte elements of `dtype`: its rows, columns and bytes.
fn byte_matrix<'m>(
    model: &'m SafetensorsModel,
    name: &str,
    dtype: DType,
    expected: &'static str,
) -> Result<(usize, usize, &'m [u8])> {
    let view = model.view(name)?;
    if view.dtype() != dtype {
        return Err(QuantFormatError::TensorDType {
            tensor: name.to_owned(),
            expected,
            found: view.dtype().to_string(),
        }
        .into());
    }
    match *view.shape() {
        [rows, cols] => Ok((rows, cols, view.data())),
        _ => Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: vec![0, 0],
            actual: view.shape().to_vec(),
        }
        .into()),
    }
}

/// Float scales for `[rows, groups]`: one value per tensor, `[rows, 1]` per
/// channel, exactly `[rows, groups]` per group.
fn float_scales(
    model: &SafetensorsModel,
    name: &str,
    spec: &QuantSpec,
    rows: usize,
    groups: usize,
) -> Result<Array2<f32>> {
    Ok(match spec.granularity {
        Granularity::Tensor => {
            let one = read_float_matrix(model, name, [1, 1], true)?;
            Array2::from_elem((rows, 1), one[[0, 0]])
        }
        Granularity::Channel => read_float_matrix(model, name, [rows, 1], true)?,
        Granularity::Group(_) => read_float_matrix(model, name, [rows, groups], false)?,
    })
}

/// The `[rows, groups]` matrix of one-byte scale codes `name` (exact shape).
fn scale_codes(
    model: &SafetensorsModel,
    name: &str,
    dtype: DType,
    expected: &'static str,
    rows: usize,
    groups: usize,
) -> Result<Array2<u8>> {
    let (r, c, bytes) = byte_matrix(model, name, dtype, expected)?;
    if (r, c) != (rows, groups) {
        return Err(QuantFormatError::TensorShape {
            tensor: name.to_owned(),
            expected: vec![rows, groups],
            actual: vec![r, c],
        }
        .into());
    }
    Array2::from_shape_vec((rows, groups), bytes.to_vec()).map_err(|source| Error::Shape {
        tensor: name.to_owned(),
        source,
    })
}

/// Decodes one module stored in `format` (not `pack-quantized`).
pub(super) fn decode(
    model: &SafetensorsModel,
    module: &str,
    spec: QuantSpec,
    format: CtFormat,
) -> Result<QuantizedTensor> {
    match spec.format {
        Format::Int { bits } => decode_int(model, module, spec, bits),
        Format::Float(_) => {
            let name = format!("{module}.weight");
            let (rows, cols, bytes) = byte_matrix(model, &name, DType::F8E4M3, "F8_E4M3")?;
            let groups = spec.n_groups(cols).map_err(quant_error(module))?;
            let scales = float_scales(
                model,
                &format!("{module}.weight_scale"),
                &spec,
                rows,
                groups,
            )?;
            let zeros = Array2::zeros((rows, groups));
            QuantizedTensor::new(spec, rows, cols, bytes.to_vec(), scales, zeros, None)
                .map_err(quant_error(module))
        }
        Format::Nvfp4 => decode_nvfp4(model, module, spec),
        Format::Mx(m) => {
            let (rows, cols, codes) = match format {
                CtFormat::Mxfp8Quantized => {
                    let name = format!("{module}.weight");
                    let (r, c, b) = byte_matrix(model, &name, DType::F8E4M3, "F8_E4M3")?;
                    (r, c, b.to_vec())
                }
                _ => {
                    let name = format!("{module}.weight_packed");
                    let (r, c, b) = byte_matrix(model, &name, DType::U8, "U8")?;
                    if m.bits() == 6 {
                        if !c.is_multiple_of(3) {
                            return Err(QuantFormatError::TensorShape {
                                tensor: name,
                                expected: vec![r, c.div_ceil(3) * 3],
                                actual: vec![r, c],
                            }
                            .into());
                        }
                        (r, c / 3 * 4, unpack_fp6(b))
                    } else {
                        (r, c * 2, unpack_nibbles(b))
                    }
                }
            };
            let groups = spec.n_groups(cols).map_err(quant_error(module))?;
            let name = format!("{module}.weight_scale");
            let e = scale_codes(model, &name, DType::U8, "U8 (E8M0)", rows, groups)?;
            let scales = e.mapv(mx::e8m0_to_scale);
            let zeros = Array2::zeros((rows, groups));
            QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, None)
                .map_err(quant_error(module))
        }
        _ => Err(QuantFormatError::UnsupportedFormat {
            tensor: module.to_owned(),
            format: "compressed-tensors",
            found: spec.format.to_string(),
        }
        .into()),
    }
}

/// `int-quantized` / `naive-quantized` integers: int8 `code − 2^(bits−1)`.
fn decode_int(
    model: &SafetensorsModel,
    module: &str,
    spec: QuantSpec,
    bits: u8,
) -> Result<QuantizedTensor> {
    let name = format!("{module}.weight");
    let (rows, cols, bytes) = byte_matrix(model, &name, DType::I8, "I8")?;
    let mid = 1i16 << (bits - 1);
    let range = format!("{}..={}", -mid, mid - 1);
    let to_code = |index: usize, b: u8, tensor: &str| -> Result<u8> {
        let v = i16::from(b as i8);
        if v < -mid || v >= mid {
            return Err(QuantFormatError::TensorValue {
                tensor: tensor.to_owned(),
                index,
                value: i64::from(v),
                range: range.clone(),
            }
            .into());
        }
        Ok((v + mid) as u8)
    };
    let codes = bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| to_code(i, b, &name))
        .collect::<Result<Vec<u8>>>()?;
    let groups = spec.n_groups(cols).map_err(quant_error(module))?;
    let scales = float_scales(
        model,
        &format!("{module}.weight_scale"),
        &spec,
        rows,
        groups,
    )?;
    let zeros = if spec.symmetric {
        Array2::from_elem((rows, groups), f32::from(mid))
    } else {
        let zp_name = format!("{module}.weight_zero_point");
        let (shape, values) = read_ints(model, &zp_name, &[DType::I8], "I8")?;
        let per_row = match spec.granularity {
            Granularity::Tensor => 1,
            _ => groups,
        };
        let expect = if spec.granularity == Granularity::Tensor {
            1
        } else {
            rows * groups
        };
        if values.len() != expect {
            return Err(QuantFormatError::TensorShape {
                tensor: zp_name,
                expected: vec![rows, per_row],
                actual: shape,
            }
            .into());
        }
        let mut z = Vec::with_capacity(rows * groups);
        for (i, &v) in values.iter().enumerate() {
            z.push(f32::from(to_code(i, v as i8 as u8, &zp_name)?));
        }
        if spec.granularity == Granularity::Tensor {
            z = vec![z[0]; rows];
        }
        Array2::from_shape_vec((rows, groups), z).map_err(|source| Error::Shape {
            tensor: zp_name,
            source,
        })?
    };
    QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, None).map_err(quant_error(module))
}

/// `nvfp4-pack-quantized`: FP4 pairs, E4M3 block scales, and the reciprocal
/// of the tensor scale (1 when `weight_global_scale` is absent).
fn decode_nvfp4(
    model: &SafetensorsModel,
    module: &str,
    spec: QuantSpec,
) -> Result<QuantizedTensor> {
    let name = format!("{module}.weight_packed");
    let (rows, half, bytes) = byte_matrix(model, &name, DType::U8, "U8")?;
    let cols = half * 2;
    let groups = spec.n_groups(cols).map_err(quant_error(module))?;
    let scale_name = format!("{module}.weight_scale");
    let codes = scale_codes(model, &scale_name, DType::F8E4M3, "F8_E4M3", rows, groups)?;
    let scales = codes.mapv(|c| FloatFormat::E4M3.decode(c));
    let zeros = Array2::zeros((rows, groups));
    let q = QuantizedTensor::new(spec, rows, cols, unpack_nibbles(bytes), scales, zeros, None)
        .map_err(quant_error(module))?;
    let global_name = format!("{module}.weight_global_scale");
    if !model.contains(&global_name) {
        return Ok(q);
    }
    let global = read_float(model, &global_name)?;
    if global.len() != 1 {
        return Err(QuantFormatError::TensorShape {
            tensor: global_name,
            expected: vec![1],
            actual: global.shape().to_vec(),
        }
        .into());
    }
    let gs = global.iter().next().copied().unwrap_or(1.0);
    q.with_global_scale(1.0 / gs).map_err(quant_error(module))
}
