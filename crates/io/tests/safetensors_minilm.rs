//! The real all-MiniLM-L6-v2 checkpoint: reading, writing back (single file
//! and shards) losslessly, and its `config.json`.

mod common;

use tensorpress_io::config::{BertConfig, HiddenAct};
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_tensor::{DType, Tensor};

#[test]
fn reads_minilm() {
    let m = SafetensorsModel::open(common::minilm()).unwrap();
    assert_eq!(m.len(), 104);
    assert_eq!(m.metadata().get("format").map(String::as_str), Some("pt"));
    let info = m.info("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(
        (info.dtype, info.shape.as_slice()),
        (DType::F32, &[30522usize, 384][..])
    );
    let emb = m.to_f32("embeddings.word_embeddings.weight").unwrap();
    // Bit patterns and checksum from the python safetensors package.
    let bits = |r: usize, n: usize| -> Vec<u32> { (0..n).map(|c| emb[[r, c]].to_bits()).collect() };
    assert_eq!(bits(0, 4), [0xbca3c000, 0xbb5f0000, 0xbc708000, 0x3c3fc000]);
    assert_eq!(bits(101, 3), [0xbc90568e, 0xbbf90e08, 0x3d40f1be]);
    let sum = emb
        .iter()
        .fold(0u64, |s, v| s.wrapping_add(u64::from(v.to_bits())));
    assert_eq!(sum, 24553525774266535);
    let params: usize = m
        .names()
        .iter()
        .map(|n| m.info(n).unwrap().shape.iter().product::<usize>())
        .sum();
    assert_eq!(params, 22713728);
    let view = m.view("encoder.layer.5.output.dense.weight").unwrap();
    assert_eq!(view.shape(), [384, 1536]);
    assert_eq!(
        m.file_of("pooler.dense.bias").unwrap().file_name().unwrap(),
        "model.safetensors"
    );
}

#[test]
fn writes_minilm_back_losslessly() {
    let src = SafetensorsModel::open(common::minilm()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut w = SafetensorsWriter::new();
    for (k, v) in src.metadata() {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    for name in src.names() {
        w.add_view(name, &src.view(name).unwrap()).unwrap();
    }
    // Single file.
    let single = dir.path().join("single");
    w.write_dir(&single).unwrap();
    // The original came from the reference writer; ours reproduces it byte for byte.
    let original = std::fs::read(common::minilm().join("model.safetensors")).unwrap();
    let rewritten = std::fs::read(single.join("model.safetensors")).unwrap();
    assert!(
        original == rewritten,
        "rewritten MiniLM differs from the original"
    );
    // Shards of at most 16 MB: the 46.9 MB embedding gets its own.
    let sharded = dir.path().join("sharded");
    w.max_shard_size(16 << 20);
    let written = w.write_dir(&sharded).unwrap();
    assert!(written.len() >= 4, "{written:?}");
    assert!(written
        .last()
        .unwrap()
        .ends_with("model.safetensors.index.json"));
    for out in [single, sharded] {
        let m = SafetensorsModel::open(&out).unwrap();
        assert_eq!(m.names(), src.names());
        assert_eq!(m.metadata(), src.metadata());
        for name in src.names() {
            assert_eq!(m.info(name), src.info(name));
            assert_eq!(
                m.view(name).unwrap().data(),
                src.view(name).unwrap().data(),
                "{name}"
            );
        }
    }
}

#[test]
fn minilm_config() {
    let path = common::minilm().join("config.json");
    let c = BertConfig::from_file(&path).unwrap();
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size
        ),
        (30522, 384, 6, 12, 1536)
    );
    assert_eq!(c.hidden_act, HiddenAct::Gelu);
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(
        (c.max_position_embeddings, c.type_vocab_size, c.pad_token_id),
        (512, 2, 0)
    );
    assert_eq!(c.head_dim(), 32);
    assert_eq!(c.extra["position_embedding_type"], "absolute");
    // Written and read back, every key survives.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("config.json");
    c.to_file(&out).unwrap();
    assert_eq!(BertConfig::from_file(&out).unwrap(), c);
    let orig: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(orig, back);
}
