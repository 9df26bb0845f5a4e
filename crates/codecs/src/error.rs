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
    /// An entropy-model precision outside `1..=16` bits (or too small for the alphabet).
    #[error("precision of {precision} bits is not supported here (1..={max})")]
    InvalidPrecision {
        /// The precision given, in bits.
        precision: u32,
        /// The largest precision this coder accepts.
        max: u32,
    },
    /// An alphabet that is empty or larger than supported.
    #[error("alphabet of {size} symbols is not supported (1..={max})")]
    InvalidAlphabet {
        /// Symbols in the alphabet.
        size: usize,
        /// The largest alphabet supported here.
        max: usize,
    },
    /// A model built from counts where no symbol occurs.
    #[error("every symbol count is zero: a model needs at least one symbol")]
    EmptyModel,
    /// More symbols with nonzero probability than `2^precision` slots.
    #[error(
        "{symbols} symbols with nonzero probability do not fit in {precision}-bit frequencies"
    )]
    TooManySymbolsForPrecision {
        /// Symbols that need a slot.
        symbols: usize,
        /// The precision, in bits.
        precision: u32,
    },
    /// Quantized frequencies (or a CDF) that do not sum to `2^precision`,
    /// or are not strictly increasing.
    #[error("frequencies are invalid: they sum to {sum}, expected {expected}")]
    InvalidFrequencies {
        /// Their sum (saturated at the first excess).
        sum: u64,
        /// `2^precision`.
        expected: u64,
    },
    /// A CDF table that does not start at 0, end at `2^precision` and increase strictly.
    #[error("CDF table {table} is invalid at entry {entry}")]
    InvalidCdf {
        /// Index of the table.
        table: usize,
        /// First entry that breaks the rule.
        entry: usize,
    },
    /// A symbol the model gives zero probability (or that lies outside its support).
    #[error("symbol at index {index} has zero probability under its model")]
    ZeroProbability {
        /// Position of the symbol in the input.
        index: usize,
    },
    /// A distribution parameter that is not finite or out of its domain.
    #[error("invalid {name} = {value}")]
    InvalidParameter {
        /// The parameter (`"scale"`, `"mean"`, `"tail mass"`, …).
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// An empty or reversed integer range, or one wider than `2^precision` symbols.
    #[error("integer range {min}..={max} is invalid for {precision}-bit frequencies")]
    InvalidRange {
        /// Lowest symbol.
        min: i64,
        /// Highest symbol.
        max: i64,
        /// The precision, in bits.
        precision: u32,
    },
    /// An index into a set of tables that is out of range.
    #[error("table index {index} is out of range ({tables} tables)")]
    TableIndex {
        /// The index given.
        index: usize,
        /// Number of tables.
        tables: usize,
    },
    /// A Huffman code-length configuration or table that is not a valid prefix code.
    #[error("invalid Huffman code lengths: {kind}")]
    InvalidCodeLengths {
        /// What is wrong.
        kind: CodeLengthFault,
    },
    /// A header declaring more symbols than the caller allows.
    #[error("stream declares {declared} symbols, more than the limit of {limit}")]
    TooManySymbols {
        /// Symbols the header declares.
        declared: u64,
        /// The caller's limit.
        limit: usize,
    },
    /// An entropy-coded stream that cannot have come from the encoder.
    #[error("corrupt {codec} stream at symbol {position}")]
    CorruptStream {
        /// The coder (`"rANS"`, `"Huffman"`, `"range"`).
        codec: &'static str,
        /// Index of the symbol being decoded when the fault showed.
        position: usize,
    },
    /// Input left over after the declared contents.
    #[error("{count} trailing {unit} after the end of the stream")]
    TrailingData {
        /// What is counted.
        unit: &'static str,
        /// How many are left.
        count: usize,
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
    InvalidConfig {
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
    /// A parameter outside its valid range (see the message for the range).
    #[error("{op}: {name} = {value} is outside {range}")]
    ParameterOutOfRange {
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
    /// A byte buffer that is not a whole number of elements.
    #[error("{bytes} bytes are not a whole number of {width}-byte elements")]
    PartialElement {
        /// Bytes given.
        bytes: usize,
        /// Bytes per element.
        width: usize,
    },
    /// A file that does not start with the expected magic bytes.
    #[error("not a {format} file: magic bytes {found:02x?}")]
    BadMagic {
        /// The format expected.
        format: &'static str,
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A file of a format version this build cannot read.
    #[error("{format} version {version} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The format.
        format: &'static str,
        /// The version in the file.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// Stored bytes whose checksum differs from the one recorded.
    #[error("checksum mismatch in {section}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The header, or the tensor whose payload is damaged.
        section: String,
        /// The checksum recorded in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// Two tensors whose stored byte ranges overlap.
    #[error("tensors {first} and {second} have overlapping byte ranges")]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// A tensor name that occurs twice.
    #[error("tensor {name} occurs twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A tensor that is not in the file.
    #[error("no tensor named {name}")]
    TensorNotFound {
        /// The name asked for.
        name: String,
    },
    /// A tensor whose codec cannot store its element type.
    #[error("tensor {tensor}: codec {codec} cannot store {dtype}")]
    CodecMismatch {
        /// The tensor.
        tensor: String,
        /// The codec.
        codec: &'static str,
        /// Its element type.
        dtype: String,
    },
}

/// Ways a set of Huffman code lengths can fail to describe a prefix code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeLengthFault {
    /// The maximum code length asked for is outside `1..=15`.
    #[error("maximum length {max} is outside 1..=15")]
    MaxLength {
        /// The maximum asked for.
        max: u32,
    },
    /// More symbols than codes of the maximum length can hold (`n > 2^max`).
    #[error("{symbols} symbols cannot get codes of at most {max} bits")]
    TooManySymbols {
        /// Symbols with nonzero count.
        symbols: usize,
        /// The maximum code length.
        max: u32,
    },
    /// A length above the declared maximum.
    #[error("symbol {symbol} has length {length}, above the maximum {max}")]
    TooLong {
        /// The symbol.
        symbol: usize,
        /// Its length.
        length: u32,
        /// The maximum.
        max: u32,
    },
    /// Lengths whose Kraft sum exceeds one: no prefix code has them.
    #[error("the lengths are oversubscribed (Kraft sum above one)")]
    Oversubscribed,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
