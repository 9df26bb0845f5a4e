//! `config.json` of Llama-family decoders.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{divides, parse_json, positive, positive_float, read_json, write_json};
use crate::Result;

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10000.0
}

fn default_max_position_embeddings() -> usize {
    2048
}

/// One token id or several (Llama 3 lists several end-of-sequence ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }

    /// Whether `id` is one of them.
    pub fn contains(&self, id: u32) -> bool {
        match self {
            TokenIds::One(x) => *x == id,
            TokenIds::Many(ids) => ids.contains(&id),
        }
    }
}

/// A Llama-family `config.json` (`LlamaConfig` in transformers).
///
/// Absent optional fields default as in transformers: `num_key_value_heads` to
/// the head count ([`kv_heads`](Self::kv_heads)), `rope_theta` to 10000,
/// `rms_norm_eps` to 1e-6, `max_position_embeddings` to 2048,
/// `tie_word_embeddings` to false. Unknown keys are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None` means as many as query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the model was trained for.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Whether the output projection shares the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Per-head width, when it is not `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// The dtype the checkpoint was saved in (`"bfloat16"`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// Every other key, preserved for writing back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LlamaConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<LlamaConfig> {
        let config: LlamaConfig = read_json(path.as_ref())?;
        config.validate().map_err(|e| e.in_file(path.as_ref()))?;
        Ok(config)
    }

    /// Parses and validates JSON text.
    pub fn from_json_str(text: &str) -> Result<LlamaConfig> {
        let config: LlamaConfig = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config (known fields and `extra`) as indented JSON, atomically.
    pub fn to_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_json(path.as_ref(), self)
    }

    /// Key/value heads, defaulting to the query heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width: `head_dim`, or `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks sizes are positive, heads divide the width (unless `head_dim` is
    /// explicit), key/value heads divide query heads, and the floats are positive.
    pub fn validate(&self) -> Result<()> {
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("num_key_value_heads", self.kv_heads())?;
        positive("vocab_size", self.vocab_size)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        match self.head_dim {
            Some(d) => positive("head_dim", d)?,
            None => divides(
                "hidden_size",
                self.hidden_size,
                "num_attention_heads",
                self.num_attention_heads,
            )?,
        }
        divides(
            "num_attention_heads",
            self.num_attention_heads,
            "num_key_value_heads",
            self.kv_heads(),
        )?;
        positive_float("rms_norm_eps", self.rms_norm_eps)?;
        positive_float("rope_theta", self.rope_theta)?;
        Ok(())
    }
}
