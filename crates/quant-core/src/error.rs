//! Errors of the quantization layer.

use crate::formats::Specials;
use crate::ggml::GgmlType;
use crate::spec::{Format, Granularity};

/// Errors of `tensorpress-quant-core`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An element count is not a whole number of blocks of a block format.
    #[error("{n} elements is not a multiple of the {ty} block size {block_size}")]
    NotBlockMultiple {
        /// The block format.
        ty: GgmlType,
        /// The element count given.
        n: usize,
        /// Elements per block.
        block_size: usize,
    },
    /// An encoded buffer is not a whole number of blocks of a block format.
    #[error("{len} bytes is not a multiple of the {ty} block size of {type_size} bytes")]
    NotWholeBlocks {
        /// The block format.
        ty: GgmlType,
        /// The byte count given.
        len: usize,
        /// Bytes per block.
        type_size: usize,
    },
    /// A caller-owned output buffer has the wrong length.
    #[error("output buffer holds {actual} values, the input decodes to {expected}")]
    OutputLength {
        /// Values the input decodes to.
        expected: usize,
        /// Values the output holds.
        actual: usize,
    },
    /// The operation is not implemented for this format (yet).
    #[error("{op} is not supported for {ty}")]
    Unsupported {
        /// The operation (`"dequantize"`, `"quantize"`).
        op: &'static str,
        /// The format.
        ty: GgmlType,
    },
    /// A buffer is not a whole number of rows.
    #[error("{len} values is not a whole number of rows of {row_len}")]
    RowLength {
        /// Values given.
        len: usize,
        /// Values per row.
        row_len: usize,
    },
    /// An importance (per-column weight) is negative, NaN or infinite.
    #[error("importance[{col}] is {value}, expected a finite non-negative weight")]
    InvalidImportance {
        /// The column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A size computation overflowed `usize`.
    #[error("size computation overflowed")]
    Overflow,
    /// Integer formats take 2 to 8 bits.
    #[error("{bits} bits is outside 2..=8")]
    InvalidBits {
        /// The bits asked for.
        bits: u8,
    },
    /// A group size that cannot partition the columns.
    #[error("group size {group} does not fit {cols} columns")]
    InvalidGroupSize {
        /// The group size asked for.
        group: usize,
        /// Columns of the weight.
        cols: usize,
    },
    /// An array has the wrong shape.
    #[error("{what} has shape {actual:?}, expected {expected:?}")]
    Shape {
        /// Which array.
        what: &'static str,
        /// The shape expected.
        expected: Vec<usize>,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// A group index points past the last group.
    #[error("group index {index} is out of range for {groups} groups")]
    GroupIndex {
        /// The offending index.
        index: u32,
        /// Groups per row.
        groups: usize,
    },
    /// A code does not fit in the format's bits.
    #[error("code {code} does not fit in {bits} bits")]
    CodeRange {
        /// The offending code.
        code: u8,
        /// Bits per code.
        bits: u8,
    },
    /// A weight or activation is NaN or infinite.
    #[error("{what}[{row}, {col}] is {value}")]
    NonFinite {
        /// Which array.
        what: &'static str,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// The quantizer needs calibration data it was not given.
    #[error("{method} needs {what}")]
    MissingCalibration {
        /// The method.
        method: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// A float format that cannot exist (no exponent bit, outside 2–8 bits,
    /// or specials that do not fit).
    #[error("no {specials:?} float format has {exp_bits} exponent and {man_bits} mantissa bits")]
    InvalidFloatFormat {
        /// Exponent bits asked for.
        exp_bits: u8,
        /// Mantissa bits asked for.
        man_bits: u8,
        /// Special values asked for.
        specials: Specials,
    },
    /// A format name that does not parse.
    #[error("unknown number format {name:?}")]
    UnknownFormat {
        /// The name given.
        name: String,
    },
    /// The format prescribes its scale sharing (MX: groups of 32, NVFP4: 16).
    #[error("{format} needs {required:?} scales, the spec asks for {actual:?}")]
    FormatGranularity {
        /// The format.
        format: Format,
        /// The granularity it needs.
        required: Granularity,
        /// The granularity asked for.
        actual: Granularity,
    },
    /// An asymmetric spec for a format without zero points.
    #[error("{format} has no zero point: use a symmetric spec")]
    AsymmetricFormat {
        /// The format.
        format: Format,
    },
    /// A code that is not a finite value of the format (a NaN or ∞ code).
    #[error("code {code:#x} is not a finite {format} value")]
    NonFiniteCode {
        /// The offending code.
        code: u8,
        /// The format.
        format: Format,
    },
    /// A scale the format cannot store (MX: not a power of two in E8M0's
    /// range; NVFP4: not an E4M3 value; others: negative or not finite).
    #[error("scale[{row}, {group}] = {value:e} is not a valid {format} scale")]
    InvalidScale {
        /// The format.
        format: Format,
        /// Row.
        row: usize,
        /// Group.
        group: usize,
        /// The scale.
        value: f32,
    },
    /// A nonzero zero point for a format that has none.
    #[error("zero[{row}, {group}] = {value} but {format} has no zero point")]
    ZeroPoint {
        /// The format.
        format: Format,
        /// Row.
        row: usize,
        /// Group.
        group: usize,
        /// The zero point.
        value: f32,
    },
    /// A tensor scale that is not positive and finite, or given to a format
    /// without one (only NVFP4 has a tensor scale).
    #[error("tensor scale {value:e} is not valid for {format}")]
    GlobalScale {
        /// The format.
        format: Format,
        /// The scale.
        value: f32,
    },
    /// A group index for a format whose blocks must be contiguous (MX, NVFP4):
    /// only the identity `g_idx[c] = c / group_size` is allowed.
    #[error("{format} blocks must be contiguous: g_idx[{col}] = {index}")]
    NonContiguousGroups {
        /// The format.
        format: Format,
        /// The first column out of place.
        col: usize,
        /// Its group index.
        index: u32,
    },
    /// A search or quantizer option outside its range.
    #[error("{option} = {value} is out of range: {expected}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Its value, printed.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// No Hadamard matrix of this order can be built here (orders
    /// `2^k · Π (q_i + 1)` with primes `q_i ≡ 3 mod 4`); a random orthogonal
    /// rotation works at every order.
    #[error("no Hadamard matrix of order {n} is known (orders 2^k · Π(q+1), q prime ≡ 3 mod 4): use a random orthogonal rotation")]
    NoHadamard {
        /// The order asked for.
        n: usize,
    },
    /// A method built on this crate's traits failed (SparseGPT's joint
    /// pruning and quantization, in `tensorpress-sparsity`).
    #[error("{method}: {reason}")]
    Method {
        /// The method.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Codes that a packing layout cannot store, or packed data of the wrong shape.
    #[error(transparent)]
    Pack(#[from] crate::pack::PackError),
    /// Linear algebra failed (e.g. a Hessian that stays singular after damping).
    #[error(transparent)]
    Linalg(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
