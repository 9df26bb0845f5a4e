//! The error type of the checkpoint readers and writers.

use std::path::PathBuf;

/// Errors of `tensorpress-io`.
///
/// Errors about the contents of a file carry byte offsets and tensor names; the
/// readers that open files by path wrap them in [`Error::InFile`], so match on
/// [`Error::root`] to see the underlying problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error about the contents of a file, with the file's path.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },

    // ---- bytes -------------------------------------------------------------
    /// The input ends before a field it announces.
    #[error("truncated: {what} at offset {offset} needs {needed} bytes, only {available} remain")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// A length or element count is larger than the rest of the input could hold
    /// (checked before anything is allocated).
    #[error("{what} at offset {offset} claims {len} items of at least {min_item_size} bytes, only {available} bytes remain")]
    LengthTooLarge {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the length field.
        offset: u64,
        /// The length read.
        len: u64,
        /// The smallest encoding of one item.
        min_item_size: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the string data.
        offset: u64,
    },

    // ---- GGUF --------------------------------------------------------------
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version other than 2 or 3 (or a big-endian file).
    #[error("unsupported GGUF version {version} (supported: 2 and 3, little-endian)")]
    UnsupportedVersion {
        /// The version field as read little-endian.
        version: u32,
    },
    /// A metadata value type id that GGUF does not define.
    #[error("metadata key {key:?}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The key whose value it is.
        key: String,
        /// The type id read.
        type_id: u32,
        /// Byte offset of the type id.
        offset: u64,
    },
    /// A boolean byte other than 0 or 1.
    #[error("metadata key {key:?}: invalid bool byte {value} at offset {offset}")]
    InvalidBool {
        /// The key whose value it is.
        key: String,
        /// The byte read.
        value: u8,
        /// Byte offset of the byte.
        offset: u64,
    },
    /// Arrays nested deeper than the reader accepts.
    #[error("metadata key {key:?}: arrays nested deeper than {max_depth}")]
    NestingTooDeep {
        /// The key whose value it is.
        key: String,
        /// The deepest nesting accepted.
        max_depth: usize,
    },
    /// A metadata key that appears twice.
    #[error("duplicate metadata key {key:?}")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("invalid alignment {alignment}: must be a non-zero power of two")]
    InvalidAlignment {
        /// The alignment given.
        alignment: u64,
    },
    /// A tensor type id that ggml does not define.
    #[error("tensor {tensor:?}: unknown ggml type id {type_id}")]
    UnknownGgmlType {
        /// The tensor.
        tensor: String,
        /// The type id read.
        type_id: u32,
    },
    /// A tensor with more dimensions than ggml supports.
    #[error("tensor {tensor:?}: {n_dims} dimensions, at most {max} are allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// The dimension count read.
        n_dims: u64,
        /// The maximum.
        max: u64,
    },
    /// A tensor whose dimensions or byte size overflow.
    #[error("tensor {tensor:?}: dimensions {dims:?} overflow")]
    ShapeOverflow {
        /// The tensor.
        tensor: String,
        /// The dimensions as read.
        dims: Vec<u64>,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        /// The tensor.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose bytes lie (partly) outside the file.
    #[error("tensor {tensor:?}: bytes {start}..{end} lie outside the {available} bytes of data")]
    TensorOutOfRange {
        /// The tensor.
        tensor: String,
        /// Start of its bytes (absolute file offset where the format has one).
        start: u64,
        /// End of its bytes.
        end: u64,
        /// Bytes available.
        available: u64,
    },
    /// Two tensors whose bytes overlap.
    #[error("tensors {first:?} and {second:?} overlap")]
    TensorOverlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// A tensor name that appears twice.
    #[error("duplicate tensor {name:?}")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A GGML block codec error for one tensor (row not a whole number of blocks,
    /// type without a decoder, …).
    #[error("tensor {tensor:?}: {source}")]
    Quant {
        /// The tensor.
        tensor: String,
        /// The codec error.
        #[source]
        source: tensorpress_quant_core::Error,
    },

    // ---- safetensors ---------------------------------------------------------
    /// A header length beyond the cap (safetensors' 100 MB `MAX_HEADER_SIZE`).
    #[error("header of {size} bytes exceeds the maximum of {max}")]
    HeaderTooLarge {
        /// The size read.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A header that is not the JSON object safetensors expects.
    #[error("invalid safetensors header: {source}")]
    HeaderJson {
        /// The parse error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A dtype name this crate does not know.
    #[error("tensor {tensor:?}: unknown dtype {dtype:?}")]
    UnknownDType {
        /// The tensor.
        tensor: String,
        /// The name read.
        dtype: String,
    },
    /// A tensor whose byte count disagrees with its shape and dtype.
    #[error("tensor {tensor:?}: {actual} bytes, but shape and dtype need {expected}")]
    ByteCount {
        /// The tensor.
        tensor: String,
        /// Bytes the shape needs.
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
    /// A tensor whose end offset precedes its start.
    #[error("tensor {tensor:?}: data offsets [{start}, {end}] are reversed")]
    ReversedOffsets {
        /// The tensor.
        tensor: String,
        /// The start offset.
        start: u64,
        /// The end offset.
        end: u64,
    },
    /// safetensors data that is not one contiguous run of tensors from offset 0
    /// (a gap, an overlap or reversed offsets).
    #[error("tensor {tensor:?}: data starts at {start}, expected {expected} (tensors must be contiguous)")]
    NonContiguous {
        /// The tensor.
        tensor: String,
        /// Where its bytes start.
        start: u64,
        /// Where the previous tensor ended.
        expected: u64,
    },
    /// Bytes after the last tensor, or fewer bytes than the tensors claim.
    #[error("data section is {actual} bytes, the tensors cover {expected}")]
    DataLength {
        /// Bytes the tensors cover.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A tensor name longer than the format allows (ggml: 63 bytes).
    #[error("tensor name {name:?} is longer than {max} bytes")]
    NameTooLong {
        /// The name.
        name: String,
        /// The longest name allowed.
        max: usize,
    },
    /// A tensor name that a format reserves.
    #[error("tensor name {name:?} is reserved")]
    ReservedName {
        /// The name.
        name: String,
    },
    /// A shard index (`model.safetensors.index.json`) that disagrees with its shards.
    #[error("shard index: tensor {tensor:?} {problem}")]
    IndexMismatch {
        /// The tensor.
        tensor: String,
        /// What disagrees.
        problem: IndexProblem,
    },
    /// A shard file name in an index that is not a plain file name.
    #[error("shard index: {name:?} is not a plain file name")]
    BadShardName {
        /// The name.
        name: String,
    },
    /// A path that holds no checkpoint this crate recognizes.
    #[error("{}: no model.safetensors, model.safetensors.index.json or .safetensors file", path.display())]
    NoCheckpoint {
        /// The path.
        path: PathBuf,
    },

    // ---- lookups -----------------------------------------------------------
    /// No tensor of this name.
    #[error("no tensor named {name:?}")]
    TensorNotFound {
        /// The name.
        name: String,
    },
    /// No metadata value under this key.
    #[error("missing metadata key {key:?}")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of another type than asked for.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for.
        expected: &'static str,
        /// The type present.
        found: String,
    },
    /// An integer metadata value that does not fit the type asked for.
    #[error("metadata key {key:?}: value {value} does not fit in {target}")]
    ValueOutOfRange {
        /// The key.
        key: String,
        /// The value.
        value: i128,
        /// The type asked for.
        target: &'static str,
    },
    /// A tensor type that has no equivalent [`DType`](tensorpress_tensor::DType).
    #[error("tensor {tensor:?}: {ggml_type} is a block format, not a plain dtype")]
    NotPlainType {
        /// The tensor.
        tensor: String,
        /// Its type.
        ggml_type: tensorpress_quant_core::ggml::GgmlType,
    },

    // ---- JSON files ------------------------------------------------------------
    /// A JSON file (`config.json`, a shard index) that does not parse or does
    /// not have the expected fields.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A config field that must be positive is zero.
    #[error("config: {field} must be positive")]
    ZeroField {
        /// The field.
        field: &'static str,
    },
    /// A config field that must divide another does not.
    #[error(
        "config: {dividend_field} = {dividend} is not divisible by {divisor_field} = {divisor}"
    )]
    NotDivisible {
        /// The field divided.
        dividend_field: &'static str,
        /// Its value.
        dividend: usize,
        /// The dividing field.
        divisor_field: &'static str,
        /// Its value.
        divisor: usize,
    },
    /// A float config field outside its valid range.
    #[error("config: {field} = {value} is out of range")]
    InvalidFloat {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },

    // ---- quantized checkpoints ---------------------------------------------------
    /// A quantized layer that a checkpoint format cannot hold, or a quantized
    /// checkpoint that does not follow its format.
    #[error(transparent)]
    QuantFormat(#[from] crate::export::QuantFormatError),

    // ---- other layers --------------------------------------------------------
    /// A tensor-layer error (view construction, dtype conversion).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
    /// A file of the project's test data is not in the cache.
    #[error("test data {path} is missing: run scripts/fetch-testdata.sh (cache: $TENSORPRESS_CACHE or ~/.cache/tensorpress)")]
    TestDataMissing {
        /// The missing file.
        path: PathBuf,
    },
    /// Bytes that should be UTF-8 text are not.
    #[error("{what} is not UTF-8 (valid up to byte {valid_up_to})")]
    NotUtf8 {
        /// What was being read.
        what: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// An array whose shape disagrees with its data.
    #[error("tensor {tensor:?}: {source}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// The ndarray error.
        #[source]
        source: ndarray::ShapeError,
    },
}

/// How a shard index disagrees with its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexProblem {
    /// The index maps the tensor to a shard that does not contain it.
    MissingFromShard {
        /// The shard file named in the index.
        shard: String,
    },
    /// A shard contains a tensor that the index does not list (or lists elsewhere).
    NotInIndex {
        /// The shard file that contains it.
        shard: String,
    },
}

impl std::fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexProblem::MissingFromShard { shard } => {
                write!(f, "is mapped to {shard:?}, which does not contain it")
            }
            IndexProblem::NotInIndex { shard } => {
                write!(f, "is in {shard:?} but the index does not map it there")
            }
        }
    }
}

impl Error {
    /// The underlying error, looking through [`Error::InFile`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.root(),
            other => other,
        }
    }

    /// Wraps an I/O error with its path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a content error with the file it came from.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
