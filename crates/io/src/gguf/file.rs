//! [`GgufFile`]: a mapped (or owned) GGUF file with lazy access to its tensors.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use tensorpress_quant_core::ggml::{self, GgmlType};
use tensorpress_tensor::{DType, TensorView};

use super::header::{GgufHeader, GgufTensorInfo};
use super::value::{GgufArray, GgufMetadata, GgufValue};
use crate::fs::Storage;
use crate::{Error, Result};

/// A GGUF file: the parsed header plus the bytes, memory-mapped by
/// [`GgufFile::open`] or owned after [`GgufFile::parse`].
///
/// Tensors are read lazily: [`tensor_bytes`](Self::tensor_bytes) borrows from
/// the map, [`dequantize`](Self::dequantize) decodes one tensor to f32.
#[derive(Debug)]
pub struct GgufFile {
    header: GgufHeader,
    storage: Storage,
    path: Option<PathBuf>,
}

/// Forwards typed getters to [`GgufMetadata`].
macro_rules! forward_getters {
    ($($(#[$doc:meta])* $name:ident -> $ret:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> Result<$ret> {
            self.header.metadata.$name(key)
        }
    )*};
}

impl GgufFile {
    /// Maps the file at `path` and parses its header.
    ///
    /// Content errors come wrapped in [`Error::InFile`]; see [`Error::root`].
    /// The file must not be modified while the `GgufFile` is alive.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let storage = Storage::map(path)?;
        let header = GgufHeader::parse(&storage).map_err(|e| e.in_file(path))?;
        Ok(GgufFile {
            header,
            storage,
            path: Some(path.to_owned()),
        })
    }

    /// Parses a whole GGUF file held in memory.
    pub fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
        let header = GgufHeader::parse(&bytes)?;
        Ok(GgufFile {
            header,
            storage: Storage::Owned(bytes),
            path: None,
        })
    }

    /// The path given to [`open`](Self::open), if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The parsed header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The alignment of the data section.
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// The metadata in file order, with lookup and typed getters.
    pub fn metadata(&self) -> &GgufMetadata {
        &self.header.metadata
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.metadata.get(key)
    }

    forward_getters! {
        /// See [`GgufMetadata::get_u32`].
        get_u32 -> u32;
        /// See [`GgufMetadata::get_u64`].
        get_u64 -> u64;
        /// See [`GgufMetadata::get_i32`].
        get_i32 -> i32;
        /// See [`GgufMetadata::get_i64`].
        get_i64 -> i64;
        /// See [`GgufMetadata::get_usize`].
        get_usize -> usize;
        /// See [`GgufMetadata::get_f32`].
        get_f32 -> f32;
        /// See [`GgufMetadata::get_f64`].
        get_f64 -> f64;
        /// See [`GgufMetadata::get_bool`].
        get_bool -> bool;
        /// See [`GgufMetadata::get_str`].
        get_str -> &str;
        /// See [`GgufMetadata::get_array`].
        get_array -> &GgufArray;
        /// See [`GgufMetadata::get_str_array`].
        get_str_array -> &[String];
        /// See [`GgufMetadata::get_f32_array`].
        get_f32_array -> &[f32];
        /// See [`GgufMetadata::get_i32_array`].
        get_i32_array -> Vec<i32>;
        /// See [`GgufMetadata::get_u32_array`].
        get_u32_array -> Vec<u32>;
    }

    /// The tensor infos in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    /// The info of the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.header.tensor(name)
    }

    fn require(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor(name).ok_or_else(|| Error::TensorNotFound {
            name: name.to_owned(),
        })
    }

    fn bytes_of(&self, info: &GgufTensorInfo) -> &[u8] {
        // In range: checked against the input length when the header was parsed.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.storage[start..start + info.n_bytes()]
    }

    /// The stored bytes of a tensor (encoded blocks for quantized types).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.require(name)?;
        Ok(self.bytes_of(info))
    }

    /// A typed view of a tensor of a plain element type (F32, F16, BF16, F64,
    /// I8…I64); [`Error::NotPlainType`] for block formats.
    pub fn tensor_view(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self.require(name)?;
        let dtype = plain_dtype(info.ggml_type).ok_or_else(|| Error::NotPlainType {
            tensor: name.to_owned(),
            ggml_type: info.ggml_type,
        })?;
        Ok(TensorView::new(dtype, &info.shape, self.bytes_of(info))?)
    }

    /// Decodes a tensor into `out`, which must hold exactly its element count.
    pub fn dequantize_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let info = self.require(name)?;
        ggml::dequantize_par(info.ggml_type, self.bytes_of(info), out).map_err(|source| {
            Error::Quant {
                tensor: name.to_owned(),
                source,
            }
        })
    }

    /// Decodes a tensor to f32 in row-major shape ([`GgufTensorInfo::shape`]),
    /// in parallel. Fails with [`Error::Quant`] for types without a decoder.
    pub fn dequantize(&self, name: &str) -> Result<ArrayD<f32>> {
        let info = self.require(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(Error::Quant {
                tensor: name.to_owned(),
                source: tensorpress_quant_core::Error::Unsupported {
                    op: "dequantize",
                    ty: info.ggml_type,
                },
            });
        }
        let mut out = vec![0.0f32; info.numel()];
        self.dequantize_into(name, &mut out)?;
        ArrayD::from_shape_vec(IxDyn(&info.shape), out).map_err(|source| Error::Shape {
            tensor: name.to_owned(),
            source,
        })
    }
}

/// The [`DType`] of a plain GGML element type; `None` for block formats.
pub fn plain_dtype(ty: GgmlType) -> Option<DType> {
    Some(match ty {
        GgmlType::F32 => DType::F32,
        GgmlType::F16 => DType::F16,
        GgmlType::BF16 => DType::BF16,
        GgmlType::F64 => DType::F64,
        GgmlType::I8 => DType::I8,
        GgmlType::I16 => DType::I16,
        GgmlType::I32 => DType::I32,
        GgmlType::I64 => DType::I64,
        _ => return None,
    })
}

/// The GGML type storing a [`DType`] unchanged, if GGUF has one.
pub fn ggml_type_of(dtype: DType) -> Option<GgmlType> {
    Some(match dtype {
        DType::F32 => GgmlType::F32,
        DType::F16 => GgmlType::F16,
        DType::BF16 => GgmlType::BF16,
        DType::F64 => GgmlType::F64,
        DType::I8 => GgmlType::I8,
        DType::I16 => GgmlType::I16,
        DType::I32 => GgmlType::I32,
        DType::I64 => GgmlType::I64,
        _ => return None,
    })
}
