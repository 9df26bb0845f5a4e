//! Reading compressed-tensors' sparse layouts (`sparse-bitmask`,
//! `sparse-24-bitmask`) back into dense tensors.
//!
//! compressed-tensors stores a pruned weight as its kept elements, a bitmask
//! of their positions (`[rows, ⌈cols/8⌉]` bytes, bit `c % 8` of byte
//! `c / 8` for column `c`) and the dense shape; `sparse-bitmask` adds row
//! offsets into the kept values. The sparse compressor runs after the
//! quantization compressor, so the kept elements are whatever the
//! `.weight` tensor held: floats, or int8 / FP8 codes whose scales sit
//! beside them. [`densify`] rebuilds every such `.weight` as a dense tensor
//! of its stored element type, so the quantized readers and passthrough
//! reads work on it unchanged.
//!
//! Files are untrusted: the shape, the bitmask's size, the number of set
//! bits against the number of stored values, and the row offsets are all
//! checked before anything is written, and no size is trusted before it has
//! been checked against the bytes actually present.

use std::collections::BTreeMap;

use serde_json::Value;
use tensorpress_tensor::{DType, Tensor};

use super::{config_error, dtype_error, read_ints, QuantFormatError};
use crate::export::SparseLayout;
use crate::safetensors::{SafetensorsModel, SafetensorsWriter};
use crate::{Error, Result};

/// The sparse layout a `sparsity_config` declares: `None` when the config
/// has none (absent, `null`, `{}` or format `dense`).
///
/// # Errors
/// [`QuantFormatError::Config`] for a format this crate does not read
/// (compressed-tensors' `marlin-24` among them).
pub(super) fn declared_layout(quant: &Value) -> Result<Option<SparseLayout>> {
    let config = match quant.get("sparsity_config") {
        None | Some(Value::Null) => return Ok(None),
        Some(c) => c,
    };
    let object = config
        .as_object()
        .ok_or_else(|| config_error("sparsity_config", "not an object"))?;
    if object.is_empty() {
        return Ok(None);
    }
    match object.get("format").and_then(Value::as_str) {
        Some("dense") => Ok(None),
        Some("sparse-bitmask") => Ok(Some(SparseLayout::Bitmask)),
        Some("sparse-24-bitmask") => Ok(Some(SparseLayout::TwoFour)),
        Some(other) => Err(config_error(
            "sparsity_config.format",
            format!("{other:?} is not read (sparse-bitmask, sparse-24-bitmask or dense)"),
        )),
        None => Err(config_error("sparsity_config.format", "missing")),
    }
}

/// The tensors of one sparse weight.
struct SparseParts<'a> {
    /// The dense tensor's name (`{module}.weight`).
    weight: String,
    /// The prefix of the storage tensors (`{module}.weight` for
    /// `sparse-bitmask`, `{module}` for `sparse-24-bitmask`).
    prefix: &'a str,
}

/// Finds the sparse weights in `model`: every `{prefix}.bitmask` with a
/// `{prefix}.compressed` beside it.
fn sparse_weights(model: &SafetensorsModel) -> Vec<SparseParts<'_>> {
    model
        .names()
        .into_iter()
        .filter_map(|name| {
            let prefix = name.strip_suffix(".bitmask")?;
            if !model.contains(&format!("{prefix}.compressed")) {
                return None;
            }
            let weight = if prefix.ends_with(".weight") {
                prefix.to_owned()
            } else {
                format!("{prefix}.weight")
            };
            Some(SparseParts { weight, prefix })
        })
        .collect()
}

/// `model` with every sparse weight of `layout` rebuilt dense, and the
/// dense weights' names with their layout. A model without sparse weights
/// comes back as it was.
///
/// # Errors
/// [`QuantFormatError::TensorShape`], [`QuantFormatError::TensorDType`],
/// [`QuantFormatError::TensorValue`] and [`QuantFormatError::SparseMask`]
/// for storage tensors that disagree with each other; the dense weight's
/// name already taken by another tensor is [`QuantFormatError::Config`].
pub(super) fn densify(
    model: SafetensorsModel,
    layout: SparseLayout,
) -> Result<(SafetensorsModel, BTreeMap<String, SparseLayout>)> {
    let parts = sparse_weights(&model);
    if parts.is_empty() {
        return Ok((model, BTreeMap::new()));
    }
    let mut dense = Vec::with_capacity(parts.len());
    let mut storage = std::collections::BTreeSet::new();
    for p in &parts {
        if model.contains(&p.weight) {
            return Err(config_error(
                "sparsity_config",
                format!("{} is stored both dense and sparse", p.weight),
            ));
        }
        let (dtype, shape, bytes) = decode(&model, p.prefix, layout)?;
        for suffix in ["compressed", "bitmask", "shape", "row_offsets"] {
            storage.insert(format!("{}.{suffix}", p.prefix));
        }
        dense.push((p.weight.clone(), dtype, shape, bytes));
    }
    let mut writer = SafetensorsWriter::new();
    for (k, v) in model.metadata() {
        writer.add_metadata(k.clone(), v.clone())?;
    }
    for name in model.names() {
        if !storage.contains(name) {
            writer.add_view(name, &model.view(name)?)?;
        }
    }
    let mut layouts = BTreeMap::new();
    for (name, dtype, shape, bytes) in dense {
        writer.add(name.clone(), dtype, &shape, bytes)?;
        layouts.insert(name, layout);
    }
    let bytes = writer.to_bytes()?;
    drop(writer);
    Ok((SafetensorsModel::from_bytes(bytes)?, layouts))
}

/// The dense `(dtype, [rows, cols], bytes)` of the sparse weight stored
/// under `prefix`.
pub(super) fn decode(
    model: &SafetensorsModel,
    prefix: &str,
    layout: SparseLayout,
) -> Result<(DType, Vec<usize>, Vec<u8>)> {
    let name = |suffix: &str| format!("{prefix}.{suffix}");
    let shape_name = name("shape");
    let (shape_dims, dims) = read_ints(model, &shape_name, &[DType::I32, DType::I64], "I64")?;
    if dims.len() != 2 || shape_dims.iter().product::<usize>() != 2 {
        return Err(QuantFormatError::TensorShape {
            tensor: shape_name,
            expected: vec![2],
            actual: shape_dims,
        }
        .into());
    }
    let dim = |i: usize| -> Result<usize> {
        usize::try_from(dims[i])
            .ok()
            .filter(|&d| d > 0 && d <= u32::MAX as usize)
            .ok_or_else(|| {
                QuantFormatError::TensorValue {
                    tensor: name("shape"),
                    index: i,
                    value: dims[i],
                    range: format!("1..={}", u32::MAX),
                }
                .into()
            })
    };
    let (rows, cols) = (dim(0)?, dim(1)?);
    let row_bytes = cols.div_ceil(8);

    let mask_name = name("bitmask");
    let mask = model.view(&mask_name)?;
    if mask.dtype() != DType::U8 && mask.dtype() != DType::Bool {
        return Err(dtype_error(&mask_name, "U8", mask.dtype()));
    }
    if mask.shape() != [rows, row_bytes] {
        return Err(QuantFormatError::TensorShape {
            tensor: mask_name,
            expected: vec![rows, row_bytes],
            actual: mask.shape().to_vec(),
        }
        .into());
    }
    let mask = mask.data();
    // Set bits per row, ignoring any past the last column.
    let tail = cols % 8;
    let row_counts: Vec<u64> = mask
        .chunks_exact(row_bytes)
        .map(|row| {
            let (last, body) = row.split_last().expect("cols > 0");
            let last = if tail == 0 {
                *last
            } else {
                last & ((1u8 << tail) - 1)
            };
            body.iter().map(|b| u64::from(b.count_ones())).sum::<u64>()
                + u64::from(last.count_ones())
        })
        .collect();
    let kept: u64 = row_counts.iter().sum();

    let values_name = name("compressed");
    let values = model.view(&values_name)?;
    let dtype = values.dtype();
    let size = dtype.size_in_bytes();
    let count = values.data().len() / size;
    let expected_shape = match layout {
        SparseLayout::Bitmask => vec![count],
        SparseLayout::TwoFour => vec![rows, cols / 2],
    };
    if layout == SparseLayout::TwoFour && !cols.is_multiple_of(4)
        || values.shape() != expected_shape
    {
        return Err(QuantFormatError::TensorShape {
            tensor: values_name,
            expected: match layout {
                SparseLayout::Bitmask => vec![kept as usize],
                SparseLayout::TwoFour => vec![rows, cols.next_multiple_of(4) / 2],
            },
            actual: values.shape().to_vec(),
        }
        .into());
    }
    if kept != count as u64 {
        return Err(QuantFormatError::SparseMask {
            tensor: mask_name,
            kept,
            stored: count as u64,
        }
        .into());
    }
    if layout == SparseLayout::TwoFour {
        check_two_of_four(&mask_name, mask, row_bytes, cols)?;
    }
    if layout == SparseLayout::Bitmask && model.contains(&name("row_offsets")) {
        check_row_offsets(model, &name("row_offsets"), &row_counts)?;
    }

    let values = values.data();
    let total = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| Error::ShapeOverflow {
            tensor: prefix.to_owned(),
            dims: vec![rows as u64, cols as u64],
        })?;
    let mut dense = vec![0u8; total];
    let mut next = 0usize;
    for (r, row) in mask.chunks_exact(row_bytes).enumerate() {
        let out = &mut dense[r * cols * size..(r + 1) * cols * size];
        for c in 0..cols {
            if row[c / 8] >> (c % 8) & 1 == 1 {
                out[c * size..(c + 1) * size].copy_from_slice(&values[next..next + size]);
                next += size;
            }
        }
    }
    debug_assert_eq!(next, values.len());
    Ok((dtype, vec![rows, cols], dense))
}

/// Every group of four columns of a `sparse-24-bitmask` keeps exactly two.
fn check_two_of_four(tensor: &str, mask: &[u8], row_bytes: usize, cols: usize) -> Result<()> {
    for (r, row) in mask.chunks_exact(row_bytes).enumerate() {
        for g in 0..cols / 4 {
            let nibble = (row[g / 2] >> (4 * (g % 2))) & 0xf;
            if nibble.count_ones() != 2 {
                return Err(QuantFormatError::TensorValue {
                    tensor: tensor.to_owned(),
                    index: r * row_bytes + g / 2,
                    value: i64::from(row[g / 2]),
                    range: format!("bytes keeping two of every four columns (group {g})"),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// `row_offsets` holds the running count of kept values at each row start.
fn check_row_offsets(model: &SafetensorsModel, tensor: &str, row_counts: &[u64]) -> Result<()> {
    let (shape, offsets) = read_ints(model, tensor, &[DType::I32, DType::I64], "I64")?;
    if shape != [row_counts.len()] {
        return Err(QuantFormatError::TensorShape {
            tensor: tensor.to_owned(),
            expected: vec![row_counts.len()],
            actual: shape,
        }
        .into());
    }
    let mut start = 0u64;
    for (index, (&offset, &count)) in offsets.iter().zip(row_counts).enumerate() {
        if offset != start as i64 {
            return Err(QuantFormatError::TensorValue {
                tensor: tensor.to_owned(),
                index,
                value: offset,
                range: format!("{start}..={start} (the bitmask's count before row {index})"),
            }
            .into());
        }
        start += count;
    }
    Ok(())
}
