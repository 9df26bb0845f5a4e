//! `config.json` parsing, defaults, validation and lossless round trips.

use tensorpress_io::config::{BertConfig, LlamaConfig, TokenIds};
use tensorpress_io::Error;

/// A config shaped like SmolLM2-135M-Instruct's (sizes as in its GGUF metadata), with
/// the assorted extra keys real configs carry.
const SMOLLM2: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.041666666666666664,
  "intermediate_size": 1536,
  "is_llama_config": true,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pad_token_id": 2,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_interleaved": false,
  "rope_scaling": null,
  "rope_theta": 100000,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
  "use_cache": true,
  "vocab_size": 49152
}"#;

#[test]
fn llama_fields_and_round_trip() {
    let c = LlamaConfig::from_json_str(SMOLLM2).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (576, 1536, 30)
    );
    assert_eq!(
        (c.num_attention_heads, c.kv_heads(), c.head_dim()),
        (9, 3, 64)
    );
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 100000.0));
    assert_eq!((c.vocab_size, c.max_position_embeddings), (49152, 8192));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_id, Some(TokenIds::One(2)));
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.extra["hidden_act"], "silu");
    assert!(c.extra["rope_scaling"].is_null());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    c.to_file(&path).unwrap();
    assert_eq!(LlamaConfig::from_file(&path).unwrap(), c);
    // Every key of the original survives, with its value.
    let orig: serde_json::Value = serde_json::from_str(SMOLLM2).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, v) in orig.as_object().unwrap() {
        let w = &back[k];
        let same = v == w || v.as_f64().zip(w.as_f64()).is_some_and(|(a, b)| a == b);
        assert!(same, "{k}: {v} became {w}");
    }
}

#[test]
fn llama_defaults() {
    let c = LlamaConfig::from_json_str(
        r#"{"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"eos_token_id":[1,7]}"#,
    )
    .unwrap();
    assert_eq!(c.kv_heads(), 4);
    assert_eq!(c.head_dim(), 16);
    assert_eq!(
        (c.rope_theta, c.rms_norm_eps, c.max_position_embeddings),
        (10000.0, 1e-6, 2048)
    );
    assert!(!c.tie_word_embeddings);
    assert!(c.eos_token_id.as_ref().unwrap().contains(7));
    assert_eq!(c.eos_token_id.unwrap().to_vec(), [1, 7]);
    assert_eq!(c.bos_token_id, None);
}

#[test]
fn llama_validation() {
    let base: serde_json::Value = serde_json::from_str(SMOLLM2).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut x = base.clone();
        x[k] = v;
        LlamaConfig::from_json_str(&x.to_string())
    };
    assert!(matches!(
        with("hidden_size", 577.into()),
        Err(Error::NotDivisible {
            dividend_field: "hidden_size",
            divisor_field: "num_attention_heads",
            ..
        })
    ));
    assert!(matches!(
        with("num_key_value_heads", 2.into()),
        Err(Error::NotDivisible {
            divisor_field: "num_key_value_heads",
            ..
        })
    ));
    assert!(matches!(
        with("num_hidden_layers", 0.into()),
        Err(Error::ZeroField {
            field: "num_hidden_layers"
        })
    ));
    assert!(matches!(
        with("rms_norm_eps", (-1.0).into()),
        Err(Error::InvalidFloat {
            field: "rms_norm_eps",
            ..
        })
    ));
    assert!(matches!(
        with("vocab_size", "many".into()),
        Err(Error::Json { .. })
    ));
    // An explicit head_dim lifts the divisibility requirement.
    let mut x = base.clone();
    x["hidden_size"] = 577.into();
    x["head_dim"] = 64.into();
    assert_eq!(
        LlamaConfig::from_json_str(&x.to_string())
            .unwrap()
            .head_dim(),
        64
    );
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("hidden_size");
    assert!(matches!(
        LlamaConfig::from_json_str(&missing.to_string()),
        Err(Error::Json { .. })
    ));
}

#[test]
fn bert_validation_and_file_errors() {
    let ok = r#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16}"#;
    let c = BertConfig::from_json_str(ok).unwrap();
    assert_eq!((c.layer_norm_eps, c.type_vocab_size), (1e-12, 2));
    let bad = ok.replace("\"num_attention_heads\":2", "\"num_attention_heads\":3");
    assert!(matches!(
        BertConfig::from_json_str(&bad),
        Err(Error::NotDivisible { .. })
    ));
    let act = ok.replace("{", "{\"hidden_act\":\"mystery\",");
    assert!(matches!(
        BertConfig::from_json_str(&act),
        Err(Error::Json { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    assert!(matches!(
        BertConfig::from_file(&path),
        Err(Error::Io { .. })
    ));
    std::fs::write(&path, bad).unwrap();
    let e = BertConfig::from_file(&path).unwrap_err();
    assert!(matches!(e.root(), Error::NotDivisible { .. }));
    assert!(e.to_string().contains("config.json"));
}
