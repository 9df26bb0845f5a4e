//! GGUF, llama.cpp's checkpoint format: a reader over memory-mapped files and a
//! writer.
//!
//! A GGUF file is a header (magic `GGUF`, version, counts), typed key–value
//! metadata, tensor infos (name, dimensions innermost first, [`GgmlType`],
//! offset), and an aligned data section. Versions 2 and 3 are read; version 3
//! is written.
//!
//! The reader treats its input as untrusted: lengths and counts are checked
//! against the bytes that remain before anything is allocated, arrays nest at
//! most [`MAX_ARRAY_DEPTH`] deep, tensors have at most [`GGML_MAX_DIMS`]
//! dimensions, and every tensor must lie aligned, in range and without overlap.
//! Strings (keys, names, values) must be UTF-8, as the GGUF specification says.
//!
//! Shapes: [`GgufTensorInfo::ne`] is ggml's order (innermost first, as stored);
//! [`GgufTensorInfo::shape`] and every `ArrayD` this module returns are row-major
//! (outermost first), so a linear weight is `[out_features, in_features]`.
//! llama.cpp's converters permute the rows of llama Q and K projection weights
//! for its RoPE layout; this module returns tensors as stored.

mod file;
mod header;
mod read;
mod value;
mod write;

pub use file::{ggml_type_of, plain_dtype, GgufFile};
pub use header::{GgufHeader, GgufTensorInfo};
pub use tensorpress_quant_core::ggml::GgmlType;
pub use value::{GgufArray, GgufMetadata, GgufValue, GgufValueType};
pub use write::GgufWriter;

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
pub const GGML_MAX_DIMS: usize = 4;
/// ggml's name buffer size: names are at most 63 bytes.
pub const GGML_MAX_NAME: usize = 64;
/// Deepest nesting of metadata arrays the reader accepts.
pub const MAX_ARRAY_DEPTH: usize = 8;
