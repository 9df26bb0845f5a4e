//! Shared fixtures of the facade's integration tests: a small random Llama
//! and calibration windows for it.
#![allow(dead_code)]

use tensorpress::models::llama::{LlamaModel, LlamaParams, Naming, RopeLayout};
use tensorpress::models::weights::{LoadOptions, MemoryWeights};
use tensorpress::tensor::SeededRng;

/// A two-block Llama: hidden 64, FFN 128, four query heads over two KV heads.
pub fn params() -> LlamaParams {
    LlamaParams {
        vocab_size: 64,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 128,
        tie_word_embeddings: false,
        rope_layout: RopeLayout::Halves,
        bos_token_id: None,
        eos_token_id: None,
        add_bos: false,
    }
}

/// The random model of [`params`] (seed 11).
pub fn model() -> LlamaModel {
    let p = params();
    let w = MemoryWeights::random_llama(&p, 11);
    LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap()
}

/// Largest |a − b| over two tensors of the same shape.
pub fn max_gap(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Six windows of 48 random tokens (seed 5).
pub fn windows() -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(5);
    (0..6)
        .map(|_| (0..48).map(|_| (rng.next_u64() % 64) as u32).collect())
        .collect()
}
