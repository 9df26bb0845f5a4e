//! Checkpoint formats of tensorpress: GGUF, safetensors and `config.json`.

mod error;
mod fs;
pub mod gguf;

pub use error::{Error, IndexProblem, Result};
