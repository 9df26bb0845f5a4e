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
    /// A gradient of a rank the compressor does not take.
    #[error("gradient of rank {ndim} is not supported (expected {expected})")]
    UnsupportedRank {
        /// Rank of the gradient given.
        ndim: usize,
        /// The ranks accepted, in words (`"1 or 2"`).
        expected: &'static str,
    },
    /// A configuration parameter outside its valid range.
    #[error("invalid {param} = {value}: must be {expected}")]
    InvalidParameter {
        /// Name of the parameter.
        param: &'static str,
        /// The value given, as written by `Display`.
        value: String,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// Two tensors or payloads whose shapes should agree but do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Shape of the left operand.
        lhs: Vec<usize>,
        /// Shape of the right operand.
        rhs: Vec<usize>,
    },
    /// A payload of a kind the operation cannot take.
    #[error("{op} cannot take a {got} payload (expected {expected})")]
    PayloadKind {
        /// The operation.
        op: &'static str,
        /// The kind expected.
        expected: &'static str,
        /// The kind given.
        got: &'static str,
    },
    /// A serialized payload with an unknown kind tag.
    #[error("unknown payload tag {tag}")]
    UnknownTag {
        /// The tag byte.
        tag: u8,
    },
    /// A serialized payload whose fields contradict each other or its shape.
    #[error("malformed payload: {what}")]
    Malformed {
        /// Which invariant is broken.
        what: &'static str,
    },
    /// A declared size past a cap or the range of `usize`.
    #[error("{what} of {requested} exceeds the limit {limit}")]
    TooLarge {
        /// What is counted.
        what: &'static str,
        /// The size declared (saturated at `u128::MAX`).
        requested: u128,
        /// The largest size accepted.
        limit: u128,
    },
    /// Bytes left over after a complete payload.
    #[error("{extra} trailing bytes after the payload")]
    TrailingBytes {
        /// How many bytes follow the payload.
        extra: usize,
    },
    /// A multi-round exchange driven out of order (e.g. a reduced payload fed
    /// to a compressor that has no round in progress).
    #[error("exchange protocol violated: {what}")]
    Protocol {
        /// What went wrong.
        what: &'static str,
    },
    /// A layer-wise selection with no candidate set fitting the byte budget.
    #[error(
        "no choice of candidates fits the budget of {budget} bytes (smallest total is {minimum})"
    )]
    BudgetInfeasible {
        /// The budget given.
        budget: u64,
        /// The smallest total any choice reaches.
        minimum: u64,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
