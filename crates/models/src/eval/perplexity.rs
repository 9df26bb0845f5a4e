//! Perplexity computed the way llama.cpp's `llama-perplexity` computes it, so
//! figures compare one to one.
//!
//! The whole text is tokenized once and cut into non-overlapping windows of
//! `n_ctx` tokens (a trailing partial window is dropped). Each window is run
//! from an empty context; when the model adds BOS, the window's first token is
//! replaced by BOS. Only the second half of each window is scored: the logits
//! at positions `n_ctx/2 … n_ctx-2` predict tokens `n_ctx/2+1 … n_ctx-1`, so
//! every scored token has at least `n_ctx/2` tokens of context. Perplexity is
//! `exp(mean NLL)`, and the reported uncertainty is llama.cpp's: the standard
//! error of the mean NLL, times the perplexity.

use std::time::Instant;

use candle_core::Tensor;

use crate::llama::LlamaModel;
use crate::{Error, Result};

/// A model that predicts next-token logits.
pub trait CausalLm {
    /// Vocabulary size (columns of the logits).
    fn vocab_size(&self) -> usize;
    /// The BOS token, if the model has one.
    fn bos_token_id(&self) -> Option<u32>;
    /// Whether texts start with BOS.
    fn add_bos(&self) -> bool;
    /// Logits for positions `from..tokens.len()` of a fresh sequence,
    /// `[tokens.len() - from, vocab]`.
    fn logits(&self, tokens: &[u32], from: usize) -> Result<Tensor>;
}

impl CausalLm for LlamaModel {
    fn vocab_size(&self) -> usize {
        self.params().vocab_size
    }

    fn bos_token_id(&self) -> Option<u32> {
        self.params().bos_token_id
    }

    fn add_bos(&self) -> bool {
        self.params().add_bos
    }

    fn logits(&self, tokens: &[u32], from: usize) -> Result<Tensor> {
        LlamaModel::logits(self, tokens, from)
    }
}

/// How to compute perplexity.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityConfig {
    /// Window length in tokens (llama.cpp's `-c`).
    pub n_ctx: usize,
    /// Evaluate at most this many windows (llama.cpp's `--chunks`).
    pub max_chunks: Option<usize>,
    /// Override whether BOS replaces each window's first token (default: the model's own setting).
    pub add_bos: Option<bool>,
}

impl Default for PerplexityConfig {
    fn default() -> Self {
        PerplexityConfig {
            n_ctx: 512,
            max_chunks: None,
            add_bos: None,
        }
    }
}

impl PerplexityConfig {
    /// Windows of `n_ctx` tokens.
    pub fn with_ctx(n_ctx: usize) -> Self {
        PerplexityConfig {
            n_ctx,
            ..Self::default()
        }
    }

    /// At most `chunks` windows.
    pub fn max_chunks(mut self, chunks: usize) -> Self {
        self.max_chunks = Some(chunks);
        self
    }
}

/// The outcome of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// `exp(mean NLL)`.
    pub perplexity: f64,
    /// llama.cpp's `±`: standard error of the mean NLL times the perplexity.
    pub uncertainty: f64,
    /// Mean negative log-likelihood in nats per token.
    pub mean_nll: f64,
    /// Windows evaluated.
    pub chunks: usize,
    /// Tokens scored (`chunks × (n_ctx − 1 − n_ctx/2)`).
    pub scored_tokens: usize,
    /// Tokens in the whole text.
    pub text_tokens: usize,
    /// Running perplexity after each window (llama.cpp's `[1]…,[2]…` line).
    pub running: Vec<f64>,
    /// Wall-clock seconds of the forward passes and scoring.
    pub seconds: f64,
}

impl PerplexityReport {
    /// Tokens pushed through the model per second (every window token counts).
    pub fn tokens_per_second(&self, n_ctx: usize) -> f64 {
        (self.chunks * n_ctx) as f64 / self.seconds.max(1e-9)
    }
}

/// Perplexity of `model` on the token sequence `tokens`. `progress(done, total)`
/// is called after each window.
pub fn perplexity(
    model: &dyn CausalLm,
    tokens: &[u32],
    config: &PerplexityConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityReport> {
    let n_ctx = config.n_ctx;
    if n_ctx < 4 {
        return Err(Error::Config {
            field: "n_ctx",
            reason: format!("{n_ctx} is too short: windows need at least 4 tokens"),
        });
    }
    let available = tokens.len() / n_ctx;
    if available == 0 {
        return Err(Error::TooFewTokens {
            tokens: tokens.len(),
            needed: n_ctx,
        });
    }
    let chunks = config.max_chunks.map_or(available, |m| m.min(available));
    let add_bos = config.add_bos.unwrap_or_else(|| model.add_bos());
    let bos = if add_bos {
        Some(model.bos_token_id().ok_or(Error::Config {
            field: "bos_token_id",
            reason: "BOS is requested but the model has no BOS token".into(),
        })?)
    } else {
        None
    };
    let first = n_ctx / 2;
    let vocab = model.vocab_size();
    let start_time = Instant::now();
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    let mut window = vec![0u32; n_ctx];
    for c in 0..chunks {
        window.copy_from_slice(&tokens[c * n_ctx..(c + 1) * n_ctx]);
        if let Some(b) = bos {
            window[0] = b;
        }
        // Rows first..n_ctx-2 predict tokens first+1..n_ctx-1; the last row is unused.
        let logits = model.logits(&window[..n_ctx - 1], first)?;
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for (i, row) in rows.iter().enumerate() {
            if row.len() != vocab {
                return Err(Error::Config {
                    field: "vocab_size",
                    reason: format!("logit row has {} entries, vocab is {vocab}", row.len()),
                });
            }
            let target = window[first + i + 1] as usize;
            let v = -log_softmax_at(row, target);
            nll += v;
            nll2 += v * v;
        }
        count += rows.len();
        running.push((nll / count as f64).exp());
        progress(c + 1, chunks);
    }
    let seconds = start_time.elapsed().as_secs_f64();
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let uncertainty = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityReport {
        perplexity: ppl,
        uncertainty,
        mean_nll: mean,
        chunks,
        scored_tokens: count,
        text_tokens: tokens.len(),
        running,
        seconds,
    })
}

/// `log softmax(logits)[target]` as llama.cpp computes it: an f32 max, an f64
/// sum of `exp(l - max)`.
pub fn log_softmax_at(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits[target] - max) as f64 - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A model whose logits favour `token + 1` by a fixed margin.
    struct Counting {
        vocab: usize,
        margin: f32,
    }

    impl CausalLm for Counting {
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn bos_token_id(&self) -> Option<u32> {
            Some(0)
        }
        fn add_bos(&self) -> bool {
            false
        }
        fn logits(&self, tokens: &[u32], from: usize) -> Result<Tensor> {
            let mut data = Vec::new();
            for &t in &tokens[from..] {
                let next = (t as usize + 1) % self.vocab;
                data.extend((0..self.vocab).map(|v| if v == next { self.margin } else { 0.0 }));
            }
            Ok(Tensor::from_vec(
                data,
                (tokens.len() - from, self.vocab),
                &Device::Cpu,
            )?)
        }
    }

    #[test]
    fn matches_closed_form_and_llama_cpp_counting() {
        let model = Counting {
            vocab: 10,
            margin: 2.0,
        };
        let tokens: Vec<u32> = (0..100).map(|i| i % 10).collect();
        let cfg = PerplexityConfig::with_ctx(16);
        let mut calls = 0;
        let r = perplexity(&model, &tokens, &cfg, &mut |_, _| calls += 1).unwrap();
        // 100 / 16 = 6 windows, each scoring 16 - 1 - 8 = 7 tokens.
        assert_eq!(r.chunks, 6);
        assert_eq!(calls, 6);
        assert_eq!(r.scored_tokens, 42);
        let p = (2.0f64).exp() / ((2.0f64).exp() + 9.0);
        assert!((r.perplexity - 1.0 / p).abs() < 1e-9, "{}", r.perplexity);
        assert!(r.uncertainty < 1e-6);
        assert_eq!(r.running.len(), 6);
    }

    #[test]
    fn too_short_text_is_an_error() {
        let model = Counting {
            vocab: 10,
            margin: 1.0,
        };
        let err = perplexity(
            &model,
            &[1, 2, 3],
            &PerplexityConfig::with_ctx(16),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::TooFewTokens {
                tokens: 3,
                needed: 16
            }
        ));
    }

    #[test]
    fn log_softmax_is_normalized() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f64 = (0..3).map(|i| log_softmax_at(&logits, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
