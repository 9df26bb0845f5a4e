//! Errors of the codecs.

/// Errors of `tensorpress-codecs`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bit width outside the supported range `1..=8`.
    #[error("bit width {bits} is not supported (1..=8)")]
    InvalidBits {
        /// The width given.
        bits: u8,
    },
    /// An unsigned code that does not fit in the bit width.
    #[error("code {code} at index {index} does not fit in {bits} bits")]
    CodeTooWide {
        /// Position of the code.
        index: usize,
        /// The code.
        code: u8,
        /// The bit width.
        bits: u8,
    },
    /// A signed value outside `[-2^(bits-1), 2^(bits-1))`.
    #[error("value {value} at index {index} is outside the signed {bits}-bit range")]
    ValueOutOfRange {
        /// Position of the value.
        index: usize,
        /// The value.
        value: i8,
        /// The bit width.
        bits: u8,
    },
    /// A buffer is shorter than its declared contents need.
    #[error("truncated input: need {needed} {unit}, have {available}")]
    Truncated {
        /// What is counted (`"words"`, `"bytes"`, …).
        unit: &'static str,
        /// How many are needed.
        needed: usize,
        /// How many are present.
        available: usize,
    },
    /// An output buffer of the wrong length.
    #[error("output holds {got} {unit}, expected {expected}")]
    OutputLength {
        /// What is counted.
        unit: &'static str,
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A varint that does not fit in 64 bits.
    #[error("varint starting at byte {offset} overflows 64 bits")]
    VarintOverflow {
        /// Byte offset where the varint starts.
        offset: usize,
    },
    /// A varint cut off by the end of the input.
    #[error("varint starting at byte {offset} is truncated")]
    VarintTruncated {
        /// Byte offset where the varint starts.
        offset: usize,
    },
    /// A number of clusters that is zero or larger than the number of points.
    #[error("{op}: cannot make {k} clusters from {n} points")]
    InvalidClusterCount {
        /// The operation.
        op: &'static str,
        /// Clusters asked for.
        k: usize,
        /// Points available.
        n: usize,
    },
    /// A NaN or infinite value in an input.
    #[error("{op}: non-finite value at flat index {index}")]
    NonFinite {
        /// The operation.
        op: &'static str,
        /// Row-major index of the first non-finite value.
        index: usize,
    },
    /// A point weight that is negative or not finite, or weights that sum to zero.
    #[error("{op}: invalid weight {weight} at index {index} (weights must be finite, non-negative and not all zero)")]
    InvalidWeight {
        /// The operation.
        op: &'static str,
        /// Index of the offending weight (the number of weights when they all are zero).
        index: usize,
        /// The weight.
        weight: f32,
    },
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// First shape.
        lhs: Vec<usize>,
        /// Second shape.
        rhs: Vec<usize>,
    },
    /// A parameter outside its valid range (see the message for the range).
    #[error("{op}: {name} = {value} is outside {range}")]
    InvalidParameter {
        /// The operation.
        op: &'static str,
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The valid range, in words (`"1..=16"`, `"a divisor of 1536"`).
        range: String,
    },
    /// A code that does not index its codebook.
    #[error("code {code} at index {index} is out of range for a codebook of {size} entries")]
    CodeOutOfRange {
        /// Position of the code.
        index: usize,
        /// The code.
        code: u32,
        /// Entries in the codebook.
        size: usize,
    },
    /// An I/O error of the compressor (writing into memory; not expected in practice).
    #[error("compressor: {0}")]
    Io(#[from] std::io::Error),
    /// An error of the tensor layer (eigendecomposition, Cholesky).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
