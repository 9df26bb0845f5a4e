//! A parsed GGUF header: version, metadata, tensor infos and the data section's place.

use std::collections::HashMap;

use tensorpress_quant_core::ggml::GgmlType;

use super::value::GgufMetadata;

/// Where and how one tensor is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub(crate) name: String,
    pub(crate) ggml_type: GgmlType,
    pub(crate) ne: Vec<u64>,
    pub(crate) shape: Vec<usize>,
    pub(crate) offset: u64,
    pub(crate) n_bytes: u64,
}

impl GgufTensorInfo {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its storage type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Dimensions in ggml order: innermost (contiguous) first, as stored.
    pub fn ne(&self) -> &[u64] {
        &self.ne
    }

    /// Dimensions in row-major order, outermost first (the reverse of [`ne`](Self::ne)):
    /// a linear weight is `[out_features, in_features]`, as in PyTorch.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Offset of its bytes from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Size of its bytes.
    pub fn n_bytes(&self) -> usize {
        // Validated at parse time to lie inside the input, so it fits in usize.
        self.n_bytes as usize
    }
}

/// The parsed header of a GGUF file (everything but the tensor bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub(crate) version: u32,
    pub(crate) metadata: GgufMetadata,
    pub(crate) tensors: Vec<GgufTensorInfo>,
    pub(crate) tensor_index: HashMap<String, usize>,
    pub(crate) alignment: u64,
    pub(crate) data_offset: u64,
}

impl GgufHeader {
    /// Parses and validates the header of a whole GGUF file in `bytes`: every
    /// length is checked against the bytes that remain before anything is
    /// allocated, and every tensor must lie aligned, in range and without overlap.
    pub fn parse(bytes: &[u8]) -> crate::Result<GgufHeader> {
        super::read::parse_header(bytes)
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &GgufMetadata {
        &self.metadata
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of the tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The alignment of the data section and of every tensor in it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
}
