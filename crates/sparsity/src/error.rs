//! Errors of the sparsity crate.

/// Errors of `tensorpress-sparsity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A target sparsity outside `[0, 1]`.
    #[error("sparsity {sparsity} is outside [0, 1]")]
    InvalidSparsity {
        /// The value given.
        sparsity: f64,
    },
    /// An N:M pattern with `m == 0` or `n > m`.
    #[error("invalid N:M pattern {n}:{m}")]
    InvalidPattern {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// The input dimension is not a multiple of the N:M group size.
    #[error("{cols} input columns are not a multiple of the group size {m}")]
    IndivisibleGroups {
        /// Columns of the matrix.
        cols: usize,
        /// Group size.
        m: usize,
    },
    /// A group keeps more than `n` of its `m` entries.
    #[error("row {row}, group {group} keeps {kept} entries, more than {n}:{m} allows")]
    PatternViolation {
        /// Row of the group.
        row: usize,
        /// Index of the group within the row.
        group: usize,
        /// Entries kept.
        kept: usize,
        /// Allowed per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// A NaN or infinite score or weight.
    #[error("non-finite value at row {row}, column {col}")]
    NonFinite {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
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
    /// A block size of 0 (or, for N:M, smaller than the group size `m`).
    #[error("block size {block} is too small: use at least one N:M group (or 128, the reference)")]
    InvalidBlockSize {
        /// The block size given.
        block: usize,
    },
    /// A method that needs calibration data got none.
    #[error("{method} needs {what} from calibration data: compress with calibration windows")]
    MissingCalibration {
        /// The method.
        method: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// A method that cannot prune to this kind of target.
    #[error("{method} cannot prune to {target}")]
    UnsupportedTarget {
        /// The method.
        method: &'static str,
        /// The target.
        target: &'static str,
    },
    /// SparseGPT was asked for quantized codes without a quantization spec.
    #[error("SparseGPT has no quantization spec: set one with `SparseGpt::with_quant` for the joint mode")]
    NoQuantization,
    /// Removing structure would leave a layer with nothing.
    #[error("removing {removed} of {total} {what} would leave nothing: keep at least one")]
    EmptyLayer {
        /// What is removed (`"FFN neurons"`, `"heads"`).
        what: &'static str,
        /// How many would go.
        removed: usize,
        /// How many there are.
        total: usize,
    },
    /// An option outside the range its method accepts.
    #[error("{option} = {value}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What it must be, and what to change.
        reason: &'static str,
    },
    /// A scalar hyperparameter outside its domain (a negative threshold, a
    /// non-finite or non-positive ε, a negative regularization factor).
    #[error("{name} = {value} is invalid: it must be {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: f64,
        /// Its domain, in words.
        expected: &'static str,
    },
    /// An input with no elements where a mean or a fraction is taken.
    #[error("{op} got an empty input (shape {shape:?})")]
    EmptyInput {
        /// The operation.
        op: &'static str,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// A sequence too short for a temporal operation.
    #[error("{op} needs at least {needed} time steps, got {steps}")]
    TooFewSteps {
        /// The operation.
        op: &'static str,
        /// Time steps given.
        steps: usize,
        /// Time steps needed.
        needed: usize,
    },
    /// A regularization schedule without stages.
    #[error("a ProSparse schedule needs at least one stage")]
    EmptySchedule,
    /// A schedule stage with no steps or a factor that is not finite and non-negative.
    #[error("schedule stage {stage} ({steps} steps, factor {lambda}) needs at least one step and a finite factor >= 0")]
    InvalidStage {
        /// Index of the stage.
        stage: usize,
        /// Its length in steps.
        steps: u64,
        /// Its target factor.
        lambda: f64,
    },
    /// A schedule stage whose target factor is below the previous one.
    #[error("schedule stage {stage} targets {lambda}, below the previous stage's {previous}: factors must not decrease")]
    DecreasingSchedule {
        /// Index of the stage.
        stage: usize,
        /// The previous stage's target.
        previous: f64,
        /// This stage's target.
        lambda: f64,
    },
    /// The parts given to a sparse matrix's `from_parts` (or a dense weight
    /// given to its `from_dense`) do not describe a valid matrix.
    #[error("invalid {format} matrix: {defect}")]
    InvalidSparseParts {
        /// The layout (`"CSR"`, `"bitmask"`).
        format: &'static str,
        /// What is wrong.
        defect: SparseDefect,
    },
    /// An error of the quantization layer (joint pruning and quantization).
    #[error(transparent)]
    Quant(Box<tensorpress_quant_core::Error>),
    /// An error of the tensor layer.
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

impl From<tensorpress_quant_core::Error> for Error {
    fn from(e: tensorpress_quant_core::Error) -> Self {
        Error::Quant(Box::new(e))
    }
}

/// What is wrong with the parts of a sparse matrix ([`Error::InvalidSparseParts`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SparseDefect {
    /// The shape is too large for the layout: more than `max_cols` columns
    /// (column indices are stored in at most 32 bits) or more than
    /// `isize::MAX` entries in the dense matrix.
    #[error(
        "shape [{rows}, {cols}] is too large (at most {max_cols} columns and isize::MAX entries)"
    )]
    TooLarge {
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
        /// The most columns the layout takes.
        max_cols: usize,
    },
    /// An array of the wrong length.
    #[error("{what} has {actual} entries, expected {expected}")]
    Length {
        /// The array.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The row pointers do not start at 0.
    #[error("the first row pointer is {first}, not 0")]
    RowPointerStart {
        /// The first row pointer.
        first: usize,
    },
    /// A row pointer (or row offset) smaller than the one before it.
    #[error("row {row} starts at {start}, before the previous row's start {previous}")]
    RowPointerDecreasing {
        /// The row.
        row: usize,
        /// Where it starts.
        start: usize,
        /// Where the previous row starts.
        previous: usize,
    },
    /// The last row pointer is not the number of stored values.
    #[error("the rows end at {end} but {nnz} values are stored")]
    RowPointerEnd {
        /// The last row pointer.
        end: usize,
        /// Values stored.
        nnz: usize,
    },
    /// A column index outside the matrix.
    #[error("row {row} has column {col}, outside 0..{cols}")]
    ColumnOutOfRange {
        /// The row.
        row: usize,
        /// The column index.
        col: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// Column indices of a row that are not strictly increasing (unsorted or
    /// repeated).
    #[error(
        "row {row}: column {col} follows column {previous} (columns must be strictly increasing)"
    )]
    ColumnsNotIncreasing {
        /// The row.
        row: usize,
        /// The column index.
        col: usize,
        /// The column before it.
        previous: usize,
    },
    /// A bitmask bit set past the last column, in a row's padding bits.
    #[error("row {row} sets bitmask bits past column {cols}")]
    PaddingBits {
        /// The row.
        row: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// A row offset that is not the number of kept values in the rows before.
    #[error("row {row} has offset {actual}, but the bitmask keeps {expected} values before it")]
    RowOffset {
        /// The row.
        row: usize,
        /// The values the bitmask keeps in rows `0..row`.
        expected: usize,
        /// The offset given.
        actual: usize,
    },
    /// The bitmask keeps a different number of values than are stored.
    #[error("the bitmask keeps {kept} values but {stored} are stored")]
    KeptCount {
        /// Bits set in the bitmask.
        kept: usize,
        /// Values given.
        stored: usize,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
