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
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
