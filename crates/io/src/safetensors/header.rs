//! Parsing and validating a safetensors header.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON (an
//! object mapping tensor names to `{dtype, shape, data_offsets}`, plus an
//! optional `__metadata__` object of strings), then the data section. The
//! checks are those of the reference `safetensors` crate — header at most
//! [`MAX_HEADER_SIZE`], JSON starting with `{`, tensors contiguous from offset 0
//! covering the data section exactly, byte counts equal to shape × dtype — plus
//! typed errors for duplicate tensor names and metadata keys, which JSON maps
//! would otherwise silently overwrite.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use tensorpress_tensor::DType;

use crate::{Error, Result};

/// Largest header accepted, as in the reference implementation (100 MB).
pub const MAX_HEADER_SIZE: u64 = 100_000_000;

/// The key of the free-form string metadata.
pub(crate) const METADATA_KEY: &str = "__metadata__";

/// The dtype and row-major shape of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
}

/// One tensor of a parsed header: its info and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderEntry {
    pub(crate) info: TensorInfo,
    /// Byte range relative to the start of the data section.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A validated header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    /// Tensors by name.
    pub(crate) tensors: BTreeMap<String, HeaderEntry>,
    /// `__metadata__`.
    pub(crate) metadata: BTreeMap<String, String>,
    /// Absolute offset of the data section (8 + header length).
    pub(crate) data_start: usize,
}

/// A tensor entry exactly as the JSON has it.
#[derive(serde::Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

enum RawEntry {
    Metadata(Vec<(String, String)>),
    Tensor(RawTensor),
}

/// The top-level object, entries in order, duplicates kept for the caller to reject.
struct RawHeader(Vec<(String, RawEntry)>);

/// A JSON object of strings, duplicates kept.
pub(crate) struct StringPairs(pub(crate) Vec<(String, String)>);

impl<'de> Deserialize<'de> for StringPairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringPairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringPairs, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = map.next_entry::<String, String>()? {
                    out.push(kv);
                }
                Ok(StringPairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawHeader;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a safetensors header object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let entry = if key == METADATA_KEY {
                        RawEntry::Metadata(map.next_value::<StringPairs>()?.0)
                    } else {
                        RawEntry::Tensor(map.next_value()?)
                    };
                    out.push((key, entry));
                }
                Ok(RawHeader(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn json_error(msg: &str) -> Error {
    Error::HeaderJson {
        source: <serde_json::Error as de::Error>::custom(msg),
    }
}

/// Parses and validates the header of a whole safetensors file in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Header> {
    let len = bytes.len() as u64;
    let Some(n_bytes) = bytes.get(..8) else {
        return Err(Error::Truncated {
            what: "header length",
            offset: 0,
            needed: 8,
            available: len,
        });
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(n_bytes);
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_SIZE {
        return Err(Error::HeaderTooLarge {
            size: n,
            max: MAX_HEADER_SIZE,
        });
    }
    // n ≤ 100 MB, so these fit in usize.
    let data_start = 8 + n as usize;
    let Some(json) = bytes.get(8..data_start) else {
        return Err(Error::Truncated {
            what: "header",
            offset: 8,
            needed: n,
            available: len - 8,
        });
    };
    if json.first() != Some(&b'{') {
        return Err(json_error("header must be a JSON object starting with '{'"));
    }
    let raw: RawHeader =
        serde_json::from_slice(json).map_err(|source| Error::HeaderJson { source })?;

    let mut metadata = BTreeMap::new();
    let mut seen_metadata = false;
    let mut tensors = BTreeMap::new();
    let mut order = Vec::new();
    for (name, entry) in raw.0 {
        match entry {
            RawEntry::Metadata(pairs) => {
                if std::mem::replace(&mut seen_metadata, true) {
                    return Err(Error::DuplicateKey { key: name });
                }
                for (k, v) in pairs {
                    if metadata.contains_key(&k) {
                        return Err(Error::DuplicateKey { key: k });
                    }
                    metadata.insert(k, v);
                }
            }
            RawEntry::Tensor(t) => {
                if tensors.contains_key(&name) {
                    return Err(Error::DuplicateTensor { name });
                }
                let entry = validate_tensor(&name, t)?;
                order.push((entry.start, entry.end, name.clone()));
                tensors.insert(name, entry);
            }
        }
    }

    // Contiguous from 0, in offset order, covering the data section exactly.
    order.sort();
    let mut expected = 0usize;
    for (start, end, name) in order {
        if start != expected {
            return Err(Error::NonContiguous {
                tensor: name,
                start: start as u64,
                expected: expected as u64,
            });
        }
        expected = end;
    }
    let data_len = bytes.len() - data_start;
    if expected != data_len {
        return Err(Error::DataLength {
            expected: expected as u64,
            actual: data_len as u64,
        });
    }
    Ok(Header {
        tensors,
        metadata,
        data_start,
    })
}

fn validate_tensor(name: &str, t: RawTensor) -> Result<HeaderEntry> {
    let dtype = DType::from_safetensors_name(&t.dtype).ok_or_else(|| Error::UnknownDType {
        tensor: name.to_owned(),
        dtype: t.dtype.clone(),
    })?;
    let overflow = || Error::ShapeOverflow {
        tensor: name.to_owned(),
        dims: t.shape.clone(),
    };
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| overflow()))
        .collect::<Result<Vec<_>>>()?;
    // ndarray needs the product of the non-zero dimensions to fit in isize,
    // even when another dimension is zero.
    let nonzero = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize);
    if nonzero.is_none() {
        return Err(overflow());
    }
    let expected = tensorpress_tensor::byte_len(dtype, &shape).map_err(|_| overflow())?;
    let (start, end) = t.data_offsets;
    if end < start {
        return Err(Error::ReversedOffsets {
            tensor: name.to_owned(),
            start,
            end,
        });
    }
    if end - start != expected as u64 {
        return Err(Error::ByteCount {
            tensor: name.to_owned(),
            expected: expected as u64,
            actual: end - start,
        });
    }
    // end - start fits in usize (it equals `expected`); start may not on 32-bit.
    let start = usize::try_from(start).map_err(|_| Error::TensorOutOfRange {
        tensor: name.to_owned(),
        start,
        end,
        available: 0,
    })?;
    Ok(HeaderEntry {
        info: TensorInfo { dtype, shape },
        start,
        end: start.checked_add(expected).ok_or_else(overflow)?,
    })
}
