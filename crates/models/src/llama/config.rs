//! Llama-family hyper-parameters, read from GGUF metadata or an HF `config.json`.

use tensorpress_io::config::LlamaConfig;
use tensorpress_io::gguf::GgufFile;

use crate::{Error, Result};

/// How the query/key weights lay out the pairs that rotary embeddings rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs are adjacent, `(x[2i], x[2i+1])`: Meta's original layout, which GGUF
    /// stores (llama.cpp's converter permutes HF's Q/K rows into it).
    Interleaved,
    /// Pairs are half a head apart, `(x[i], x[i + d/2])`: Hugging Face's
    /// `rotate_half` layout.
    Halves,
}

/// Everything the Llama forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Q/K pair layout of the stored weights.
    pub rope_layout: RopeLayout,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_token_id: Option<u32>,
    /// Whether the tokenizer puts BOS in front of a text.
    pub add_bos: bool,
}

impl LlamaParams {
    /// Reads the parameters from a GGUF file's metadata (`general.architecture`
    /// must be `llama`). The Q/K weights of a GGUF are in the interleaved layout.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::UnsupportedArchitecture(arch.to_string()));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let hidden = gguf.get_u32(&key("embedding_length"))? as usize;
        let heads = gguf.get_u32(&key("attention.head_count"))? as usize;
        let kv_heads = match gguf.get(&key("attention.head_count_kv")) {
            Some(_) => gguf.get_u32(&key("attention.head_count_kv"))? as usize,
            None => heads,
        };
        let vocab = match gguf.get(&key("vocab_size")) {
            Some(_) => gguf.get_u32(&key("vocab_size"))? as usize,
            None => gguf.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match gguf.get(&key("attention.key_length")) {
            Some(_) => gguf.get_u32(&key("attention.key_length"))? as usize,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        let theta = match gguf.get(&key("rope.freq_base")) {
            Some(_) => gguf.get_f32(&key("rope.freq_base"))? as f64,
            None => 10_000.0,
        };
        let tokenizer_model = gguf.get_str("tokenizer.ggml.model").unwrap_or("llama");
        let add_bos = match gguf.get("tokenizer.ggml.add_bos_token") {
            Some(_) => gguf.get_bool("tokenizer.ggml.add_bos_token")?,
            // llama.cpp's default: SentencePiece vocabularies add BOS, BPE ones do not.
            None => tokenizer_model == "llama",
        };
        let optional_u32 = |k: &str| -> Result<Option<u32>> {
            match gguf.get(k) {
                Some(_) => Ok(Some(gguf.get_u32(k)?)),
                None => Ok(None),
            }
        };
        let params = LlamaParams {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: gguf.get_u32(&key("feed_forward_length"))? as usize,
            num_layers: gguf.get_u32(&key("block_count"))? as usize,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_norm_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
            rope_theta: theta,
            max_position_embeddings: gguf.get_u32(&key("context_length"))? as usize,
            tie_word_embeddings: gguf.tensor("output.weight").is_none(),
            rope_layout: RopeLayout::Interleaved,
            bos_token_id: optional_u32("tokenizer.ggml.bos_token_id")?,
            eos_token_id: optional_u32("tokenizer.ggml.eos_token_id")?,
            add_bos,
        };
        params.validate()?;
        Ok(params)
    }

    /// Reads the parameters from an HF `config.json`; the Q/K weights of an HF
    /// checkpoint are in the halves layout. `add_bos` comes from the tokenizer
    /// configuration (`tokenizer_config.json`'s `add_bos_token`).
    pub fn from_hf_config(config: &LlamaConfig, add_bos: bool) -> Result<Self> {
        config.validate()?;
        let heads = config.num_attention_heads;
        let head_dim = config.head_dim();
        let params = LlamaParams {
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_layers: config.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: config.kv_heads(),
            head_dim,
            rms_norm_eps: config.rms_norm_eps,
            rope_theta: config.rope_theta,
            max_position_embeddings: config.max_position_embeddings,
            tie_word_embeddings: config.tie_word_embeddings,
            rope_layout: RopeLayout::Halves,
            bos_token_id: config.bos_token_id,
            eos_token_id: config
                .eos_token_id
                .as_ref()
                .and_then(|ids| ids.to_vec().first().copied()),
            add_bos,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks that the dimensions fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_layers == 0 {
            return bad(
                "num_heads",
                "heads, key/value heads and layers must be positive".into(),
            );
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(
                "num_key_value_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_heads, self.num_kv_heads
                ),
            );
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} is not a positive even number", self.head_dim),
            );
        }
        if self.hidden_size == 0 || self.intermediate_size == 0 || self.vocab_size == 0 {
            return bad(
                "hidden_size",
                "hidden, intermediate and vocabulary sizes must be positive".into(),
            );
        }
        if self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
            || self.rms_norm_eps.is_nan()
            || self.rms_norm_eps < 0.0
        {
            return bad(
                "rope_theta",
                "rope θ must be positive and the norm epsilon non-negative".into(),
            );
        }
        Ok(())
    }
}
