//! `convert`: GGUF → Hugging Face folder on the real SmolLM2, and dtype changes.

use tensorpress::convert::{gguf_to_hf, hf_change_dtype};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::safetensors::SafetensorsModel;
use tensorpress::io::testdata;
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::tensor::DType;
use tensorpress::Error;

use crate::common::max_gap;

#[test]
fn gguf_to_hf_folder_computes_the_same_model() {
    let gguf = GgufFile::open(testdata::smollm2_gguf().expect("test data")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let report = gguf_to_hf(&gguf, dir.path(), DType::F32, &mut |_, _| calls += 1).unwrap();
    assert_eq!(report.tensors, 272);
    assert_eq!(calls, 272);
    let st = SafetensorsModel::open(dir.path()).unwrap();
    assert!(st.contains("model.layers.29.mlp.down_proj.weight"));
    assert!(!st.contains("lm_head.weight"), "embeddings are tied");

    // Same tokens from the rebuilt tokenizer.json as from the GGUF metadata.
    let text = testdata::sotu_text(2021..=2021).unwrap();
    let from_gguf = TextTokenizer::from_gguf(&gguf).unwrap();
    let from_json = TextTokenizer::from_file(&dir.path().join("tokenizer.json")).unwrap();
    let tokens = from_gguf.encode(&text).unwrap();
    assert_eq!(from_json.encode(&text).unwrap(), tokens);

    // Same logits from the GGUF (interleaved RoPE) and the folder (Q/K rows un-permuted).
    let a = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let b = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
    let window = &tokens[..96];
    let la = a.logits(window, 0).unwrap();
    let lb = b.logits(window, 0).unwrap();
    let diff = max_gap(&la, &lb);
    assert!(diff < 2e-3, "max |Δ logit| = {diff}");
}

#[test]
fn dtype_change_rounds_every_float_tensor() {
    let src = testdata::minilm_dir().expect("test data");
    let dir = tempfile::tempdir().unwrap();
    let report = hf_change_dtype(&src, dir.path(), DType::BF16, &mut |_, _| {}).unwrap();
    let a = SafetensorsModel::open(&src).unwrap();
    let b = SafetensorsModel::open(dir.path()).unwrap();
    assert_eq!(report.tensors, a.names().len());
    for name in a.names() {
        let (ia, ib) = (a.info(name).unwrap(), b.info(name).unwrap());
        assert_eq!(ia.shape, ib.shape);
        if ia.dtype.is_float() {
            assert_eq!(ib.dtype, DType::BF16, "{name}");
            let want = a
                .to_f32(name)
                .unwrap()
                .mapv(|v| half::bf16::from_f32(v).to_f32());
            assert_eq!(b.to_f32(name).unwrap(), want, "{name}");
        } else {
            assert_eq!(ib.dtype, ia.dtype, "{name} keeps its integer type");
        }
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
    assert!(dir.path().join("tokenizer.json").exists());
}

#[test]
fn bad_requests_are_typed_errors() {
    let src = testdata::minilm_dir().expect("test data");
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        hf_change_dtype(&src, dir.path(), DType::I8, &mut |_, _| {}),
        Err(Error::ConvertDType { dtype: DType::I8 })
    ));
    assert!(matches!(
        hf_change_dtype(&src, &src, DType::F16, &mut |_, _| {}),
        Err(Error::SamePath { .. })
    ));
    // Nothing was written for the refused requests.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
