//! Reference forward passes for tensorpress: the Llama family and BERT, on
//! candle, with model definitions of our own so that every linear layer can be
//! observed (calibration capture) and swapped (quantized, sparse, low-rank ops).
//!
//! - [`llama::LlamaModel`] loads a GGUF file or a Hugging Face folder and
//!   computes logits; [`eval::perplexity`] scores a text the way llama.cpp's
//!   `llama-perplexity` does.
//! - [`bert::SentenceEncoder`] computes sentence-transformers embeddings (mean
//!   pooling, L2 normalization) with a BERT encoder such as all-MiniLM-L6-v2.
//! - [`tokenizer::TextTokenizer`] wraps the `tokenizers` crate, loaded from a
//!   `tokenizer.json` or rebuilt from GGUF metadata.
//! - [`linear::Observer`] receives the inputs of linear layers.
//!
//! # Quick start
//!
//! A two-layer Llama with random weights, run on four tokens:
//!
//! ```
//! use tensorpress_models::llama::{LlamaModel, LlamaParams, Naming, RopeLayout};
//! use tensorpress_models::weights::{LoadOptions, MemoryWeights};
//!
//! let params = LlamaParams {
//!     vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_layers: 2,
//!     num_heads: 4, num_kv_heads: 2, head_dim: 4, rms_norm_eps: 1e-5,
//!     rope_theta: 10_000.0, max_position_embeddings: 64, tie_word_embeddings: true,
//!     rope_layout: RopeLayout::Halves, bos_token_id: Some(1), eos_token_id: Some(2),
//!     add_bos: true,
//! };
//! let weights = MemoryWeights::random_llama(&params, 7);
//! let model = LlamaModel::load(&weights, params, Naming::HuggingFace, LoadOptions::default())?;
//! let logits = model.logits(&[1, 5, 9, 3], 2)?; // positions 2 and 3
//! assert_eq!(logits.dims(), &[2, 32]);
//! # Ok::<(), tensorpress_models::Error>(())
//! ```

pub mod bert;
mod error;
pub mod eval;
pub mod linear;
pub mod llama;
pub mod lossless;
pub mod tokenizer;
pub mod weights;

pub use error::{Error, Result};
