//! Errors of the KV caches.

/// Errors of `tensorpress-kvcache`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Keys or values whose `[heads, head_dim]` differ from the cache's.
    #[error("{what} have shape {got:?}; the cache holds [tokens, {heads}, {head_dim}]")]
    Shape {
        /// `"keys"` or `"values"`.
        what: &'static str,
        /// The shape given.
        got: Vec<usize>,
        /// Heads of the cache.
        heads: usize,
        /// Head dimension of the cache.
        head_dim: usize,
    },
    /// Keys and values with different token counts.
    #[error("{keys} key tokens but {values} value tokens")]
    TokenMismatch {
        /// Tokens of keys.
        keys: usize,
        /// Tokens of values.
        values: usize,
    },
    /// Settings a cache cannot use (bits, group size, residual length).
    #[error("invalid {field}: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Why, and what would do.
        reason: String,
    },
    /// A NaN or infinity in the appended data.
    #[error("non-finite {what} at token {token}, head {head}, dim {dim}")]
    NonFinite {
        /// `"keys"` or `"values"`.
        what: &'static str,
        /// Token index within the appended block.
        token: usize,
        /// Head index.
        head: usize,
        /// Position within the head.
        dim: usize,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
