//! `config.json` of BERT-family encoders.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{divides, parse_json, positive, positive_float, read_json, write_json};
use crate::Result;

/// The activation function of an MLP, as transformers names it in `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HiddenAct {
    /// Exact GELU (erf).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU, tanh approximation (`gelu_new`).
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// GELU, tanh approximation as PyTorch computes it.
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    /// GELU, fast tanh approximation.
    #[serde(rename = "gelu_fast")]
    GeluFast,
    /// `x · sigmoid(1.702 x)`.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
    /// SiLU, `x · sigmoid(x)`.
    #[serde(rename = "silu")]
    Silu,
    /// Swish (SiLU under another name).
    #[serde(rename = "swish")]
    Swish,
    /// tanh.
    #[serde(rename = "tanh")]
    Tanh,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Gelu
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_max_position_embeddings() -> usize {
    512
}

fn default_type_vocab_size() -> usize {
    2
}

/// A BERT-family `config.json` (`BertConfig` in transformers).
///
/// Absent optional fields default as in transformers; unknown keys are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// MLP activation (default GELU).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    /// LayerNorm epsilon (default 1e-12).
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Position embeddings (default 512).
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Token type (segment) vocabulary (default 2).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Padding token id (default 0).
    #[serde(default)]
    pub pad_token_id: u32,
    /// Every other key, preserved for writing back.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BertConfig {
    /// Reads and validates a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BertConfig> {
        let config: BertConfig = read_json(path.as_ref())?;
        config.validate().map_err(|e| e.in_file(path.as_ref()))?;
        Ok(config)
    }

    /// Parses and validates JSON text.
    pub fn from_json_str(text: &str) -> Result<BertConfig> {
        let config: BertConfig = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config (known fields and `extra`) as indented JSON, atomically.
    pub fn to_file(&self, path: impl AsRef<Path>) -> Result<()> {
        write_json(path.as_ref(), self)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Checks sizes are positive, heads divide the width, epsilon is positive.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        positive("type_vocab_size", self.type_vocab_size)?;
        divides(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        positive_float("layer_norm_eps", self.layer_norm_eps)?;
        Ok(())
    }
}
