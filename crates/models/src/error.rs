//! Errors of the model runner.

/// Errors of `tensorpress-models`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A compressed key/value cache refused its settings or data.
    #[error(transparent)]
    KvCache(#[from] tensorpress_kvcache::Error),
    /// Reading a checkpoint failed.
    #[error(transparent)]
    Io(#[from] tensorpress_io::Error),
    /// A lossless `.tpz` container is malformed or damaged.
    #[error("{path}: {source}")]
    Container {
        /// The container file.
        path: std::path::PathBuf,
        /// What the container reader found (boxed: the variant stays small).
        source: Box<tensorpress_codecs::Error>,
    },
    /// A quantized kernel refused its input.
    #[error(transparent)]
    Kernel(#[from] tensorpress_quant_core::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weight the architecture needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor name as the checkpoint would spell it.
        name: String,
    },
    /// A weight has a different shape than the configuration implies.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    WeightShape {
        /// The tensor name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        actual: Vec<usize>,
    },
    /// The configuration is inconsistent or unsupported.
    #[error("invalid model configuration: {field}: {reason}")]
    Config {
        /// The configuration field.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The checkpoint's architecture is not one this runner implements.
    #[error("unsupported architecture `{0}` (supported: llama, bert)")]
    UnsupportedArchitecture(String),
    /// The tokenizer described by the checkpoint is not supported.
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    /// The tokenizers library failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// The text is too short for one evaluation window.
    #[error("the text has {tokens} tokens, fewer than the {needed} one window needs")]
    TooFewTokens {
        /// Tokens in the text.
        tokens: usize,
        /// Tokens needed.
        needed: usize,
    },
    /// An observer refused an input or failed while recording it.
    #[error("observer failed on layer `{layer}`: {source}")]
    Observer {
        /// The layer whose input was observed.
        layer: String,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn tokenizer(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Tokenizer(e.into())
    }
}
