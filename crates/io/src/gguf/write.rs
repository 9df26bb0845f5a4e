//! [`GgufWriter`]: builds GGUF v3 files that llama.cpp and the `gguf` package read.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use ndarray::ArrayViewD;
use tensorpress_quant_core::ggml::{self, GgmlType};

use super::read::tensor_geometry;
use super::value::{GgufArray, GgufMetadata, GgufValue};
use super::{DEFAULT_ALIGNMENT, GGML_MAX_NAME, GGUF_MAGIC};
use crate::fs::{write_all, write_atomic};
use crate::{Error, Result};

/// The metadata key that sets the alignment.
const ALIGNMENT_KEY: &str = "general.alignment";

struct PendingTensor<'a> {
    name: String,
    ggml_type: GgmlType,
    ne: Vec<u64>,
    data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
///
/// Tensors are written in insertion order, each at an offset that is a multiple
/// of the alignment and padded to it, which is the layout llama.cpp's reader
/// requires. Raw tensor bytes may be borrowed (`&'a [u8]`, e.g. from a mapped
/// source file) or owned.
///
/// ```
/// use tensorpress_io::gguf::{GgufFile, GgufWriter};
/// use tensorpress_quant_core::ggml::GgmlType;
///
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", "llama")?;
/// let weights = ndarray::Array2::<f32>::from_shape_fn((2, 32), |(i, j)| (i * 32 + j) as f32);
/// w.add_f32("w", GgmlType::Q8_0, weights.view().into_dyn())?;
/// let file = GgufFile::parse(w.to_bytes()?)?;
/// assert_eq!(file.get_str("general.architecture")?, "llama");
/// assert_eq!(file.tensor("w").unwrap().shape(), [2, 32]);
/// # Ok::<(), tensorpress_io::Error>(())
/// ```
pub struct GgufWriter<'a> {
    metadata: GgufMetadata,
    tensors: Vec<PendingTensor<'a>>,
    names: HashSet<String>,
    alignment: u64,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl<'a> GgufWriter<'a> {
    /// An empty writer with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            metadata: GgufMetadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Sets the alignment (a power of two that fits in `u32`) and records it as
    /// `general.alignment`, as GGUF requires for non-default alignments.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<()> {
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidAlignment {
                alignment: u64::from(alignment),
            });
        }
        self.alignment = u64::from(alignment);
        self.metadata.set(ALIGNMENT_KEY, alignment);
        Ok(())
    }

    /// Adds a metadata pair; [`Error::DuplicateKey`] if the key was added before.
    /// `general.alignment` must be a `u32` power of two and sets the alignment.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<GgufValue>,
    ) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if key == ALIGNMENT_KEY {
            match value {
                GgufValue::U32(a) if a.is_power_of_two() => self.alignment = u64::from(a),
                GgufValue::U32(a) => {
                    return Err(Error::InvalidAlignment {
                        alignment: u64::from(a),
                    })
                }
                ref other => {
                    return Err(Error::WrongType {
                        key,
                        expected: "u32",
                        found: other.type_description(),
                    })
                }
            }
        }
        self.metadata.insert(key, value)
    }

    /// Adds every pair of `metadata` (e.g. copied from another file).
    pub fn extend_metadata(&mut self, metadata: &GgufMetadata) -> Result<()> {
        for (k, v) in metadata.iter() {
            self.add_metadata(k, v.clone())?;
        }
        Ok(())
    }

    /// The metadata added so far.
    pub fn metadata(&self) -> &GgufMetadata {
        &self.metadata
    }

    /// Adds a tensor of any GGML type from its encoded bytes. `shape` is
    /// row-major (outermost first); its last dimension must be a whole number
    /// of blocks and the bytes must match the shape exactly.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        shape: &[usize],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        let name = name.into();
        let data = data.into();
        if name.len() >= GGML_MAX_NAME {
            return Err(Error::NameTooLong {
                name,
                max: GGML_MAX_NAME - 1,
            });
        }
        if self.names.contains(&name) {
            return Err(Error::DuplicateTensor { name });
        }
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let (_, n_bytes) = tensor_geometry(&name, ggml_type, &ne)?;
        if n_bytes != data.len() as u64 {
            return Err(Error::ByteCount {
                tensor: name,
                expected: n_bytes,
                actual: data.len() as u64,
            });
        }
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            ggml_type,
            ne,
            data,
        });
        Ok(())
    }

    /// Adds an f32 array encoded as `ggml_type` (F32, F16, BF16, Q4_0, Q4_1,
    /// Q5_0, Q5_1 or Q8_0), row by row along the last axis, bit-exact with the
    /// `gguf` package's quantizers.
    pub fn add_f32(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        values: ArrayViewD<'_, f32>,
    ) -> Result<()> {
        let name = name.into();
        let shape = values.shape().to_vec();
        let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        // Validate the shape before encoding, for a precise error.
        tensor_geometry(&name, ggml_type, &ne)?;
        let contiguous = values.as_standard_layout();
        let flat = contiguous.as_slice().ok_or_else(|| Error::ShapeOverflow {
            tensor: name.clone(),
            dims: ne.clone(),
        })?;
        let mut bytes = Vec::new();
        ggml::quantize_par(ggml_type, flat, &mut bytes).map_err(|source| Error::Quant {
            tensor: name.clone(),
            source,
        })?;
        self.add_tensor(name, ggml_type, &shape, bytes)
    }

    /// Serializes the file into `w`; `path` is only used in error messages.
    fn emit(&self, w: &mut impl Write, path: &Path) -> Result<()> {
        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut head, key);
            head.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut head, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += (t.data.len() as u64).next_multiple_of(self.alignment);
        }
        let pad = (head.len() as u64).next_multiple_of(self.alignment) as usize - head.len();
        head.resize(head.len() + pad, 0);
        write_all(w, &head, path)?;
        let zeros = vec![0u8; self.alignment as usize];
        for t in &self.tensors {
            write_all(w, &t.data, path)?;
            let pad =
                (t.data.len() as u64).next_multiple_of(self.alignment) as usize - t.data.len();
            write_all(w, &zeros[..pad], path)?;
        }
        Ok(())
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.emit(&mut out, Path::new("<memory>"))?;
        Ok(out)
    }

    /// Writes the file to `path` atomically (a temporary file in the same
    /// folder, renamed over `path` once complete).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_atomic(path, |w| self.emit(w, path))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        GgufArray::U8(v) => out.extend_from_slice(v),
        GgufArray::I8(v) => le!(v),
        GgufArray::U16(v) => le!(v),
        GgufArray::I16(v) => le!(v),
        GgufArray::U32(v) => le!(v),
        GgufArray::I32(v) => le!(v),
        GgufArray::F32(v) => le!(v),
        GgufArray::U64(v) => le!(v),
        GgufArray::I64(v) => le!(v),
        GgufArray::F64(v) => le!(v),
        GgufArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        GgufArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        GgufArray::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}
