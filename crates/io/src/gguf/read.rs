//! The GGUF parser: header, metadata and tensor infos, validated against the
//! input length before anything is allocated.

use std::collections::HashMap;

use tensorpress_quant_core::ggml::GgmlType;

use super::header::{GgufHeader, GgufTensorInfo};
use super::value::{GgufArray, GgufMetadata, GgufValue, GgufValueType};
use super::{DEFAULT_ALIGNMENT, GGML_MAX_DIMS, GGUF_MAGIC, MAX_ARRAY_DEPTH};
use crate::{Error, Result};

/// Smallest tensor info: empty name, `n_dims`, no dims, type, offset.
const MIN_TENSOR_INFO: usize = 8 + 4 + 4 + 8;
/// Smallest key–value pair: empty key, type, one byte of value.
const MIN_KV: usize = 8 + 4 + 1;

/// A bounds-checked little-endian reader.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what,
                offset: self.pos as u64,
                needed: n as u64,
                available: self.remaining() as u64,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Reads a `u64` count of items that take at least `min_item` bytes each and
    /// checks that the rest of the input could hold them.
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        let available = self.remaining() as u64;
        let fits = len
            .checked_mul(min_item as u64)
            .is_some_and(|need| need <= available);
        if !fits {
            return Err(Error::LengthTooLarge {
                what,
                offset,
                len,
                min_item_size: min_item as u64,
                available,
            });
        }
        // Cannot fail: len ≤ available ≤ usize::MAX.
        usize::try_from(len).map_err(|_| Error::LengthTooLarge {
            what,
            offset,
            len,
            min_item_size: min_item as u64,
            available,
        })
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let n = self.count(what, 1)?;
        let offset = self.pos as u64;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Error::InvalidUtf8 { what, offset })
    }

    /// Reads `n` fixed-size elements (already checked by [`Cursor::count`]).
    fn elems<const N: usize, T>(
        &mut self,
        n: usize,
        what: &'static str,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bytes = self.take(n * N, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect())
    }
}

fn value_type(c: &mut Cursor<'_>, key: &str) -> Result<GgufValueType> {
    let offset = c.pos as u64;
    let type_id = c.u32("value type")?;
    GgufValueType::from_id(type_id).ok_or_else(|| Error::UnknownValueType {
        key: key.to_owned(),
        type_id,
        offset,
    })
}

fn bool_byte(key: &str, value: u8, offset: usize) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::InvalidBool {
            key: key.to_owned(),
            value,
            offset: offset as u64,
        }),
    }
}

fn read_value(c: &mut Cursor<'_>, ty: GgufValueType, key: &str) -> Result<GgufValue> {
    const W: &str = "metadata value";
    Ok(match ty {
        GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(c.array(W)?)),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(c.array(W)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(c.array(W)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(c.array(W)?)),
        GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(c.array(W)?)),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(c.array(W)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(c.array(W)?)),
        GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(c.array(W)?)),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(c.array(W)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(c.array(W)?)),
        GgufValueType::Bool => {
            let at = c.pos;
            let [b] = c.array(W)?;
            GgufValue::Bool(bool_byte(key, b, at)?)
        }
        GgufValueType::String => GgufValue::String(c.string("string value")?),
        GgufValueType::Array => GgufValue::Array(read_array(c, key, 1)?),
    })
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<GgufArray> {
    const W: &str = "array elements";
    if depth > MAX_ARRAY_DEPTH {
        return Err(Error::NestingTooDeep {
            key: key.to_owned(),
            max_depth: MAX_ARRAY_DEPTH,
        });
    }
    let elem = value_type(c, key)?;
    let n = c.count("array length", elem.min_encoded_size())?;
    Ok(match elem {
        GgufValueType::U8 => GgufArray::U8(c.take(n, W)?.to_vec()),
        GgufValueType::I8 => GgufArray::I8(c.elems(n, W, i8::from_le_bytes)?),
        GgufValueType::U16 => GgufArray::U16(c.elems(n, W, u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(c.elems(n, W, i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(c.elems(n, W, u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(c.elems(n, W, i32::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(c.elems(n, W, f32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(c.elems(n, W, u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(c.elems(n, W, i64::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(c.elems(n, W, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            let at = c.pos;
            let bytes = c.take(n, W)?;
            let mut out = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                out.push(bool_byte(key, b, at + i)?);
            }
            GgufArray::Bool(out)
        }
        GgufValueType::String => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(c.string("string element")?);
            }
            GgufArray::String(out)
        }
        GgufValueType::Array => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(c, key, depth + 1)?);
            }
            GgufArray::Array(out)
        }
    })
}

/// The file's alignment from `general.alignment` (a `u32` power of two), or 32.
fn alignment(metadata: &GgufMetadata) -> Result<u64> {
    const KEY: &str = "general.alignment";
    match metadata.get(KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(GgufValue::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(GgufValue::U32(a)) => Err(Error::InvalidAlignment {
            alignment: u64::from(*a),
        }),
        Some(other) => Err(Error::WrongType {
            key: KEY.to_owned(),
            expected: "u32",
            found: other.type_description(),
        }),
    }
}

/// Checks a tensor's dimensions and computes its row-major shape and byte size.
pub(crate) fn tensor_geometry(
    name: &str,
    ggml_type: GgmlType,
    ne: &[u64],
) -> Result<(Vec<usize>, u64)> {
    let overflow = || Error::ShapeOverflow {
        tensor: name.to_owned(),
        dims: ne.to_vec(),
    };
    if ne.len() > GGML_MAX_DIMS {
        return Err(Error::TooManyDims {
            tensor: name.to_owned(),
            n_dims: ne.len() as u64,
            max: GGML_MAX_DIMS as u64,
        });
    }
    // ggml keeps dimensions and element counts in int64_t; ndarray needs the
    // product of the non-zero dimensions to fit in isize even when one is zero.
    let limit = (isize::MAX as u64).min(i64::MAX as u64);
    let nonzero = ne
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= limit)
        .ok_or_else(overflow)?;
    let numel = if ne.contains(&0) { 0 } else { nonzero };
    let ne0 = ne.first().copied().unwrap_or(1);
    let block = ggml_type.block_size() as u64;
    if ne0 % block != 0 {
        return Err(Error::Quant {
            tensor: name.to_owned(),
            source: tensorpress_quant_core::Error::NotBlockMultiple {
                ty: ggml_type,
                n: usize::try_from(ne0).unwrap_or(usize::MAX),
                block_size: block as usize,
            },
        });
    }
    let n_bytes = (numel / block)
        .checked_mul(ggml_type.type_size() as u64)
        .ok_or_else(overflow)?;
    let shape = ne
        .iter()
        .rev()
        .map(|&d| usize::try_from(d).map_err(|_| overflow()))
        .collect::<Result<Vec<_>>>()?;
    Ok((shape, n_bytes))
}

fn read_tensor_info(c: &mut Cursor<'_>) -> Result<GgufTensorInfo> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32("tensor n_dims")?;
    if n_dims as usize > GGML_MAX_DIMS {
        return Err(Error::TooManyDims {
            tensor: name,
            n_dims: u64::from(n_dims),
            max: GGML_MAX_DIMS as u64,
        });
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64("tensor dimension")?);
    }
    let type_id = c.u32("tensor type")?;
    let offset = c.u64("tensor offset")?;
    let Some(ggml_type) = GgmlType::from_id(type_id) else {
        return Err(Error::UnknownGgmlType {
            tensor: name,
            type_id,
        });
    };
    let (shape, n_bytes) = tensor_geometry(&name, ggml_type, &ne)?;
    Ok(GgufTensorInfo {
        name,
        ggml_type,
        ne,
        shape,
        offset,
        n_bytes,
    })
}

/// Checks alignment, bounds and overlap of every tensor's bytes.
fn check_ranges(
    tensors: &[GgufTensorInfo],
    alignment: u64,
    data_offset: u64,
    len: u64,
) -> Result<()> {
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(Error::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            _ => {
                return Err(Error::TensorOutOfRange {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    available: len,
                })
            }
        }
    }
    let mut order: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Sums cannot overflow: both ranges were checked to end inside the file.
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(Error::TensorOverlap {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

/// Parses a GGUF header from the start of `bytes` (the whole file).
pub(crate) fn parse_header(bytes: &[u8]) -> Result<GgufHeader> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.array::<4>("magic")?;
    if magic != GGUF_MAGIC {
        return Err(Error::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if !matches!(version, 2 | 3) {
        return Err(Error::UnsupportedVersion { version });
    }
    let n_tensors = c.count("tensor count", MIN_TENSOR_INFO)?;
    let n_kv = c.count("metadata count", MIN_KV)?;

    let mut metadata = GgufMetadata::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = value_type(&mut c, &key)?;
        let value = read_value(&mut c, ty, &key)?;
        metadata.insert(key, value)?;
    }
    let alignment = alignment(&metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors.min(c.remaining() / MIN_TENSOR_INFO));
    let mut tensor_index = HashMap::with_capacity(tensors.capacity());
    for _ in 0..n_tensors {
        let info = read_tensor_info(&mut c)?;
        if tensor_index.contains_key(&info.name) {
            return Err(Error::DuplicateTensor { name: info.name });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    check_ranges(&tensors, alignment, data_offset, bytes.len() as u64)?;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}
