//! `write_gguf` on a small random Llama stored as a GGUF: the written file
//! loads back, computes exactly what the compressed in-memory model computes,
//! and has the tensor types that were asked for.

use std::sync::Arc;

use tensorpress::compress::{
    compress_llama, write_gguf, CompressOptions, GgufExportOptions, LayerFilter, Method,
};
use tensorpress::io::gguf::{GgufFile, GgufValue, GgufWriter};
use tensorpress::models::llama::{hf_module_to_gguf, LlamaModel, LlamaParams, RopeLayout};
use tensorpress::models::weights::WeightSource;
use tensorpress::models::weights::{LoadOptions, MemoryWeights};
use tensorpress::quant::ggml::{GgmlRtn, GgmlType};
use tensorpress::quant::kernels::GgmlMatrix;
use tensorpress::quant::{QuantSpec, Rtn};
use tensorpress::tensor::SeededRng;
use tensorpress::Error;

fn params() -> LlamaParams {
    LlamaParams {
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 128,
        tie_word_embeddings: true,
        rope_layout: RopeLayout::Interleaved,
        bos_token_id: None,
        eos_token_id: None,
        add_bos: false,
    }
}

/// A random model as an all-F32 GGUF (tied embeddings, so no `output.weight`).
fn source_gguf() -> GgufFile {
    let p = params();
    let w = MemoryWeights::random_llama(&p, 21);
    let mut g = GgufWriter::new();
    g.add_metadata("general.architecture", "llama").unwrap();
    g.add_metadata("general.file_type", GgufValue::U32(0))
        .unwrap();
    g.add_metadata("general.name", "tiny").unwrap();
    for (k, v) in [
        ("embedding_length", p.hidden_size),
        ("feed_forward_length", p.intermediate_size),
        ("block_count", p.num_layers),
        ("attention.head_count", p.num_heads),
        ("attention.head_count_kv", p.num_kv_heads),
        ("context_length", p.max_position_embeddings),
        ("vocab_size", p.vocab_size),
    ] {
        g.add_metadata(format!("llama.{k}"), GgufValue::U32(v as u32))
            .unwrap();
    }
    g.add_metadata(
        "llama.attention.layer_norm_rms_epsilon",
        GgufValue::F32(1e-5),
    )
    .unwrap();
    g.add_metadata("llama.rope.freq_base", GgufValue::F32(10_000.0))
        .unwrap();
    for name in w.names() {
        let module = name.strip_suffix(".weight").unwrap();
        let value = w.load_f32(name).unwrap();
        g.add_f32(
            format!("{}.weight", hf_module_to_gguf(module)),
            GgmlType::F32,
            value.view(),
        )
        .unwrap();
    }
    GgufFile::parse(g.to_bytes().unwrap()).unwrap()
}

fn windows() -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(5);
    (0..4)
        .map(|_| (0..40).map(|_| (rng.next_u64() % 96) as u32).collect())
        .collect()
}

fn logits(m: &LlamaModel, tokens: &[u32]) -> Vec<f32> {
    m.logits(tokens, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn written_file_loads_back_with_the_same_logits_and_the_asked_types() {
    let src = source_gguf();
    let mut model = LlamaModel::from_gguf(&src, LoadOptions::default()).unwrap();
    let options = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q4_0)))
        .override_layers(
            LayerFilter::new(["*.down_proj"], ["lm_head"]).unwrap(),
            Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0))),
        )
        .override_layers(
            LayerFilter::new(["*.v_proj"], ["lm_head"]).unwrap(),
            Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::IQ4NL).with_importance())),
        );
    let report = compress_llama(&mut model, &windows(), &options, &mut |_| {}).unwrap();
    assert_eq!(report.quantized.len(), 14);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-q4_0.gguf");
    let summary = write_gguf(&src, &report, &GgufExportOptions::default(), &path).unwrap();
    assert_eq!(summary.compressed, 14);
    assert_eq!(summary.copied, src.tensors().len() - 14);
    assert_eq!(summary.reencoded, 0);
    assert_eq!(summary.file_type, 2, "mostly Q4_0");
    assert_eq!(summary.file_bytes, std::fs::metadata(&path).unwrap().len());

    let out = GgufFile::open(&path).unwrap();
    assert_eq!(out.get_str("general.name").unwrap(), "tiny");
    assert_eq!(out.get_u32("general.file_type").unwrap(), 2);
    assert_eq!(out.get_u32("general.quantization_version").unwrap(), 2);
    assert_eq!(out.metadata().len(), src.metadata().len() + 1);
    let ty = |n: &str| out.tensor(n).unwrap().ggml_type();
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlType::Q4_0);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::IQ4NL);
    assert_eq!(ty("token_embd.weight"), GgmlType::F32);
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    let names: Vec<&str> = out.tensors().iter().map(|t| t.name()).collect();
    let src_names: Vec<&str> = src.tensors().iter().map(|t| t.name()).collect();
    assert_eq!(names, src_names, "source order kept");

    let back = LlamaModel::from_gguf(&out, LoadOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 7 % 96) as u32).collect();
    let (a, b) = (logits(&model, &tokens), logits(&back, &tokens));
    assert_eq!(a, b, "the file computes what the compressed model computes");
    let plain = LlamaModel::from_gguf(&src, LoadOptions::default()).unwrap();
    assert_ne!(logits(&plain, &tokens), b, "and differs from the source");

    // Run from the file on the kernels: every layer whose type has a kernel
    // multiplies the file's blocks; the others (the tied F32 lm_head, and
    // any type without a kernel) stay f32, with the reason.
    let (k, kr) = tensorpress::compress::load_llama_kernels(
        &path,
        LoadOptions::default(),
        tensorpress::models::linear::KernelActivations::F32,
    )
    .unwrap();
    assert_eq!(kr.attached.len() + kr.skipped.len(), 15, "{kr:?}");
    for name in &kr.attached {
        let t = out
            .tensor(&format!("{}.weight", hf_module_to_gguf(name)))
            .unwrap();
        assert!(GgmlMatrix::TYPES.contains(&t.ggml_type()), "{name}");
    }
    assert!(kr
        .attached
        .iter()
        .any(|n| n.ends_with("attn_q") || n.ends_with("q_proj")));
    assert!(kr.attached.iter().any(|n| n.ends_with("down_proj")));
    assert!(kr
        .skipped
        .iter()
        .any(|(n, why)| n == "lm_head" && why.contains("F32")));
    let got = logits(&k, &tokens);
    let gap = got
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(gap < 1e-4, "kernels vs dequantized: {gap}");
}

#[test]
fn token_embedding_type_reencodes_the_embedding() {
    let src = source_gguf();
    let mut model = LlamaModel::from_gguf(&src, LoadOptions::default()).unwrap();
    let options = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q5_1)));
    let report = compress_llama(&mut model, &[], &options, &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("a.gguf");
    let q8_path = dir.path().join("b.gguf");
    let a = write_gguf(&src, &report, &GgufExportOptions::default(), &f32_path).unwrap();
    let b = write_gguf(
        &src,
        &report,
        &GgufExportOptions::default().token_embedding_type(GgmlType::Q8_0),
        &q8_path,
    )
    .unwrap();
    assert_eq!((b.reencoded, b.file_type), (1, 9));
    // 96 × 64 f32 (24576 bytes) against Q8_0 (6528 bytes), give or take alignment.
    let saved = a.file_bytes - b.file_bytes;
    assert!((18_000..=18_100).contains(&saved), "{saved}");
    assert!(b.bits_per_weight() < a.bits_per_weight());
    let out = GgufFile::open(&q8_path).unwrap();
    assert_eq!(
        out.tensor("token_embd.weight").unwrap().ggml_type(),
        GgmlType::Q8_0
    );
    // The embedding is RTN of the source's: within half a Q8_0 step of it.
    let (x, y) = (
        src.dequantize("token_embd.weight").unwrap(),
        out.dequantize("token_embd.weight").unwrap(),
    );
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = (&x - &y).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(err > 0.0 && err <= amax / 127.0 * 0.51, "{err}");
}

#[test]
fn non_ggml_layers_are_refused() {
    let src = source_gguf();
    let mut model = LlamaModel::from_gguf(&src, LoadOptions::default()).unwrap();
    let options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(4).group(32))), false);
    let report = compress_llama(&mut model, &[], &options, &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let err = write_gguf(&src, &report, &GgufExportOptions::default(), &path).unwrap_err();
    assert!(matches!(err, Error::UnmappedTensor { .. }), "{err}");
    assert!(!path.exists(), "nothing written");
}
