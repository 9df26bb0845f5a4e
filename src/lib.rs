#![doc = include_str!("../README.md")]

pub mod activation;
pub mod compress;
pub mod convert;
pub mod inspect;
pub mod mixed;

pub use tensorpress_codecs as codecs;
#[cfg(feature = "cuda")]
pub use tensorpress_cuda as cuda;
pub use tensorpress_io as io;
pub use tensorpress_kvcache as kvcache;
pub use tensorpress_lowrank as lowrank;
pub use tensorpress_models as models;
pub use tensorpress_quant_core as quant;
pub use tensorpress_sensitivity as sensitivity;
pub use tensorpress_sparsity as sparsity;
pub use tensorpress_tensor as tensor;

/// Errors of the facade: any crate's error, plus conversion-level ones.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the tensor layer.
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
    /// From checkpoint reading or writing.
    #[error(transparent)]
    Io(#[from] tensorpress_io::Error),
    /// From the model runner.
    #[error(transparent)]
    Models(#[from] tensorpress_models::Error),
    /// From candle, the tensor engine of the model runner.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From the quantizers.
    #[error(transparent)]
    Quant(#[from] tensorpress_quant_core::Error),
    /// From the sensitivity metrics.
    #[error(transparent)]
    Sensitivity(#[from] tensorpress_sensitivity::Error),
    /// From the codecs (the communicator of a data-parallel run).
    #[error(transparent)]
    Codecs(#[from] tensorpress_codecs::Error),
    /// The ranks of a data-parallel run disagree, or cannot split the work.
    #[error("data-parallel run: {reason}")]
    DataParallel {
        /// What is wrong.
        reason: String,
    },
    /// Compensating a compressed layer with a low-rank adapter failed.
    #[error("layer `{layer}`: low-rank compensation: {source}")]
    Compensation {
        /// The layer.
        layer: String,
        /// What the low-rank crate reported.
        source: tensorpress_lowrank::Error,
    },
    /// Factorizing a layer into low-rank factors failed.
    #[error("layer `{layer}`: low-rank factorization: {source}")]
    Factorize {
        /// The layer.
        layer: String,
        /// What the low-rank crate reported.
        source: tensorpress_lowrank::Error,
    },
    /// A parameter reduction outside `(0, 1)`.
    #[error(
        "parameter reduction {reduction} is outside (0, 1): it is the fraction of the \
         factorized layers' parameters to remove (0.2 keeps 80 %)"
    )]
    InvalidReduction {
        /// The value given.
        reduction: f64,
    },
    /// A memory budget that cannot be met (BitStack).
    #[error("memory budget: {reason}")]
    Budget {
        /// Why.
        reason: String,
    },
    /// Quantizing a layer failed.
    #[error("layer `{layer}`: {source}")]
    Layer {
        /// The layer.
        layer: String,
        /// What went wrong.
        source: tensorpress_quant_core::Error,
    },
    /// Pruning a layer failed.
    #[error("layer `{layer}`: {source}")]
    Prune {
        /// The layer.
        layer: String,
        /// What went wrong.
        source: tensorpress_sparsity::Error,
    },
    /// A calibrated method was given no calibration data.
    #[error("this method needs calibration text, and none was given")]
    NoCalibration,
    /// The calibration text is too short.
    #[error("calibration needs {windows} windows of {len} tokens, the text has {tokens} tokens")]
    NotEnoughCalibration {
        /// Tokens in the text.
        tokens: usize,
        /// Windows asked for.
        windows: usize,
        /// Tokens per window.
        len: usize,
    },
    /// A targeted layer saw no calibration input.
    #[error("layer `{layer}` received no calibration input")]
    NotObserved {
        /// The layer.
        layer: String,
    },
    /// A recipe is malformed.
    #[error("recipe: `{key}`: {reason}")]
    Recipe {
        /// The key (dotted path) at fault.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A scheme string does not parse.
    #[error("scheme `{scheme}`: {reason}")]
    Scheme {
        /// The scheme.
        scheme: String,
        /// What is wrong.
        reason: String,
    },
    /// A compressed layer cannot be written in the chosen format.
    #[error("layer `{layer}`: {reason}")]
    Export {
        /// The layer.
        layer: String,
        /// Why.
        reason: String,
    },
    /// A layer pattern selects no layer.
    #[error("pattern `{pattern}` matches no layer of the model")]
    PatternMatchesNothing {
        /// The pattern.
        pattern: String,
    },
    /// A layer pattern is malformed.
    #[error("pattern `{pattern}`: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// From JSON (de)serialization of configuration files.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A file or folder could not be read or created.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Conversion was asked for a dtype it does not write.
    #[error("cannot convert to {dtype}: choose f32, f16 or bf16")]
    ConvertDType {
        /// The requested dtype.
        dtype: tensorpress_tensor::DType,
    },
    /// A tensor has no counterpart in the target format's naming.
    #[error("tensor `{name}` has no counterpart in the {target} layout")]
    UnmappedTensor {
        /// The tensor.
        name: String,
        /// The target layout.
        target: &'static str,
    },
    /// A tensor does not have the rank an operation needs.
    #[error("tensor `{name}` has shape {shape:?}, expected a matrix")]
    NotAMatrix {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The output folder already holds files.
    #[error("{path} exists and is not empty: remove it or choose another output folder")]
    OutputExists {
        /// The path.
        path: std::path::PathBuf,
    },
    /// Input and output paths are the same.
    #[error("the output {path} must differ from the input")]
    SamePath {
        /// The path.
        path: std::path::PathBuf,
    },
}

/// Result with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
