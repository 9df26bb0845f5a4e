//! Shared fixtures of the facade's integration tests: a small random Llama
//! and calibration windows for it.

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

/// Writes the random model of [`model`] as a Hugging Face folder
/// (`config.json`, `model.safetensors`, f32) at `dir`.
pub fn write_hf_folder(dir: &std::path::Path) {
    use tensorpress::io::safetensors::SafetensorsWriter;
    use tensorpress::models::weights::WeightSource;
    let p = params();
    let w = MemoryWeights::random_llama(&p, 11);
    std::fs::create_dir_all(dir).unwrap();
    let arrays: Vec<(String, ndarray::ArrayD<f32>)> = w
        .names()
        .map(|n| (n.to_string(), w.load_f32(n).unwrap()))
        .collect();
    let mut st = SafetensorsWriter::new();
    for (name, a) in &arrays {
        st.add_array(name, a.view()).unwrap();
    }
    st.write_file(dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": p.hidden_size,
        "intermediate_size": p.intermediate_size,
        "num_hidden_layers": p.num_layers,
        "num_attention_heads": p.num_heads,
        "num_key_value_heads": p.num_kv_heads,
        "head_dim": p.head_dim,
        "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta,
        "vocab_size": p.vocab_size,
        "max_position_embeddings": p.max_position_embeddings,
        "tie_word_embeddings": p.tie_word_embeddings,
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
}
