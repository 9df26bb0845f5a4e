//! Evaluation: perplexity as llama.cpp measures it (also decode-style, through
//! a possibly compressed KV cache), and the loss curvature hooks of the
//! sensitivity measures.

pub mod curvature;
mod decode;
mod kvquant;
mod perplexity;

pub use decode::{calibrate_kv_amax, DecodeStyle};
pub use kvquant::{calibrate_kvquant, model_rotary};
pub use perplexity::{log_softmax_at, perplexity, CausalLm, PerplexityConfig, PerplexityReport};
