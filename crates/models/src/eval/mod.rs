//! Evaluation: perplexity as llama.cpp measures it, and the loss curvature
//! hooks of the sensitivity measures.

pub mod curvature;
mod perplexity;

pub use perplexity::{log_softmax_at, perplexity, CausalLm, PerplexityConfig, PerplexityReport};
