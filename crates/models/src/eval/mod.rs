//! Evaluation: perplexity as llama.cpp measures it.

mod perplexity;

pub use perplexity::{log_softmax_at, perplexity, CausalLm, PerplexityConfig, PerplexityReport};
