//! SmolLM2-135M-Instruct, the GGUF as shipped, against llama.cpp: the
//! tokenization of the evaluation text and the running perplexity, from the
//! golden files that `scripts/reference/` made with llama.cpp's own tools.

use serde_json::Value;
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::testdata;
use tensorpress_models::eval::{perplexity, PerplexityConfig};
use tensorpress_models::llama::LlamaModel;
use tensorpress_models::tokenizer::TextTokenizer;
use tensorpress_models::weights::LoadOptions;

fn golden(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("golden file");
    serde_json::from_str(&text).expect("golden json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// FNV-1a 64 over the ids as little-endian u32 bytes (as the golden file says).
fn fnv1a(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The evaluation text as llama-perplexity reads it: one trailing newline dropped.
fn eval_tokens(tokenizer: &TextTokenizer) -> Vec<u32> {
    let text = testdata::sotu_text(2017..=2021).expect("test data");
    tokenizer
        .encode(text.strip_suffix('\n').unwrap_or(&text))
        .unwrap()
}

#[test]
fn tokenization_equals_llama_cpp() {
    let gguf = GgufFile::open(testdata::smollm2_gguf().expect("test data")).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let g = golden("smollm2_eval_tokens.json");
    for (vector, want) in g["hash"]["test_vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let hex = t["value_hex"].as_str().unwrap().trim_start_matches("0x");
            (ids(&t["ids"]), u64::from_str_radix(hex, 16).unwrap())
        })
    {
        assert_eq!(fnv1a(&vector), want, "hash of {vector:?}");
    }

    let tokens = eval_tokens(&tokenizer);
    assert_eq!(tokens.len() as u64, g["num_tokens"].as_u64().unwrap());
    assert_eq!(tokens[..600], ids(&g["first_600"])[..]);
    assert_eq!(tokens[tokens.len() - 100..], ids(&g["last_100"])[..]);
    assert_eq!(fnv1a(&tokens), g["hash"]["value_u64"].as_u64().unwrap());

    for case in g["strings"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text).unwrap(),
            ids(&case["ids"]),
            "{}: {text:?}",
            case["name"]
        );
    }
}

#[test]
fn running_perplexity_equals_llama_cpp_f32() {
    let gguf = GgufFile::open(testdata::smollm2_gguf().expect("test data")).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let model = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let tokens = eval_tokens(&tokenizer);
    let g = golden("smollm2_llamacpp_perplexity.json");
    let running: Vec<f64> = g["running_ppl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let chunks = 3;
    let report = perplexity(
        &model,
        &tokens,
        &PerplexityConfig::with_ctx(512).max_chunks(chunks),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(report.chunks, chunks);
    assert_eq!(report.scored_tokens, chunks * 255);
    for (k, (ours, theirs)) in report.running.iter().zip(&running).enumerate() {
        let rel = (ours - theirs).abs() / theirs;
        // llama.cpp prints 4 decimals; agreement is far inside 0.05%.
        assert!(
            rel < 5e-4,
            "chunk {}: ours {ours:.4}, llama.cpp {theirs:.4}",
            k + 1
        );
    }
}
