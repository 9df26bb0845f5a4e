//! The real SmolLM2-135M-Instruct GGUF: metadata, tensor infos, and every
//! tensor dequantized and compared with checksums the `gguf` package computed
//! (`scripts/golden/gguf_codecs.py` → `tests/data/gguf_smollm2_checksums.json`).

mod common;

use serde_json::Value;
use tensorpress_io::gguf::{GgmlType, GgufFile};

/// Sum and (i+1)-weighted sum of the f32 bit patterns, mod 2^64.
fn checksums(values: &[f32]) -> (u64, u64) {
    values
        .iter()
        .enumerate()
        .fold((0u64, 0u64), |(s, w), (i, v)| {
            let b = u64::from(v.to_bits());
            (
                s.wrapping_add(b),
                w.wrapping_add(b.wrapping_mul(i as u64 + 1)),
            )
        })
}

fn golden() -> Value {
    serde_json::from_str(include_str!("data/gguf_smollm2_checksums.json")).expect("valid JSON")
}

#[test]
fn metadata_and_tensor_infos() {
    let f = GgufFile::open(common::smollm2()).expect("open SmolLM2");
    assert_eq!(f.version(), 3);
    assert_eq!(f.tensors().len(), 272);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    let eps = f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap();
    assert!((eps - 1e-5).abs() < 1e-9, "rms eps {eps}");
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    let bos = f.get_u32("tokenizer.ggml.bos_token_id").unwrap() as usize;
    assert_eq!(tokens[bos], "<|im_start|>");
    assert!(matches!(
        f.get_str("llama.block_count"),
        Err(tensorpress_io::Error::WrongType { .. })
    ));

    let embd = f.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type(), GgmlType::Q8_0);
    assert_eq!(embd.shape(), [49152, 576]);
    assert_eq!(embd.ne(), [576, 49152]);
    assert_eq!(embd.n_bytes(), 49152 * 576 / 32 * 34);
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.ggml_type(), q.shape()),
        (GgmlType::Q4_1, &[576usize, 576][..])
    );
    let k = f.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.shape(), [192, 576]);
    let counts = |t: GgmlType| f.tensors().iter().filter(|i| i.ggml_type() == t).count();
    assert_eq!(
        (
            counts(GgmlType::Q4_1),
            counts(GgmlType::F32),
            counts(GgmlType::Q8_0)
        ),
        (210, 61, 1)
    );
    let norm = f.tensor_view("output_norm.weight").unwrap();
    assert_eq!(tensorpress_tensor::Tensor::shape(&norm), [576]);
    assert!(matches!(
        f.tensor_view("token_embd.weight"),
        Err(tensorpress_io::Error::NotPlainType { .. })
    ));
}

#[test]
fn every_tensor_dequantizes_like_gguf_py() {
    let f = GgufFile::open(common::smollm2()).expect("open SmolLM2");
    let g = golden();
    let expected = g["tensors"].as_array().unwrap();
    assert_eq!(expected.len(), f.tensors().len());
    let mut checked = 0;
    for (info, want) in f.tensors().iter().zip(expected) {
        assert_eq!(info.name(), want["name"].as_str().unwrap());
        assert_eq!(info.ggml_type().name(), want["type"].as_str().unwrap());
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(info.shape(), shape, "{}", info.name());
        assert_eq!(info.n_bytes() as u64, want["n_bytes"].as_u64().unwrap());
        let values = f.dequantize(info.name()).unwrap();
        assert_eq!(values.shape(), shape);
        let (sum, wsum) = checksums(values.as_slice().unwrap());
        assert_eq!(
            (sum, wsum),
            (
                want["sum"].as_u64().unwrap(),
                want["wsum"].as_u64().unwrap()
            ),
            "{} ({}) differs from gguf-py",
            info.name(),
            info.ggml_type()
        );
        checked += 1;
    }
    assert_eq!(checked, 272);
}

#[test]
fn rewriting_reproduces_the_file_byte_for_byte() {
    let path = common::smollm2();
    let f = GgufFile::open(&path).expect("open SmolLM2");
    let mut w = tensorpress_io::gguf::GgufWriter::new();
    w.extend_metadata(f.metadata()).unwrap();
    for info in f.tensors() {
        let bytes = f.tensor_bytes(info.name()).unwrap();
        w.add_tensor(info.name(), info.ggml_type(), info.shape(), bytes)
            .unwrap();
    }
    let out = w.to_bytes().unwrap();
    let original = std::fs::read(&path).unwrap();
    assert_eq!(out.len(), original.len());
    assert!(out == original, "rewritten file differs from the original");
}
