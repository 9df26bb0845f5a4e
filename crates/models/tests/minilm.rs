//! all-MiniLM-L6-v2 sentence embeddings against sentence-transformers
//! (golden file made by `scripts/reference/minilm_embeddings.py`).

use serde_json::Value;
use tensorpress_io::testdata;
use tensorpress_models::bert::{cosine_similarity, SentenceEncoder};
use tensorpress_models::weights::LoadOptions;

fn reference() -> Value {
    let text = include_str!("data/minilm_reference.json");
    serde_json::from_str(text).expect("golden file is valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let dir = testdata::minilm_dir().expect("test data");
    let encoder = SentenceEncoder::from_dir(&dir, LoadOptions::default()).unwrap();
    let golden = reference();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let (mut min_cos, mut worst_abs) = (1.0f64, 0.0f32);
    for case in cases {
        let sentence = case["sentence"].as_str().unwrap();
        let ids: Vec<u32> = case["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            encoder.tokenize(sentence).unwrap(),
            ids,
            "token ids of {sentence:?}"
        );

        let pooled = encoder
            .model()
            .mean_pooled(&ids)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want_pooled = floats(&case["mean_pooled"]);
        let max_pooled = pooled
            .iter()
            .zip(&want_pooled)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_pooled < 1e-3,
            "{sentence:?}: mean-pooled max |Δ| {max_pooled}"
        );

        let emb = &encoder.embed(&[sentence]).unwrap()[0];
        let want = floats(&case["embedding"]);
        let cos = cosine_similarity(emb, &want);
        let max_abs = emb
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(cos >= 0.9999, "{sentence:?}: cosine {cos}");
        assert!(max_abs < 1e-4, "{sentence:?}: max |Δ| {max_abs}");
        min_cos = min_cos.min(cos);
        worst_abs = worst_abs.max(max_abs);
    }
    eprintln!(
        "{} sentences: min cosine {min_cos:.9}, max |Δ| {worst_abs:.3e} against sentence-transformers",
        cases.len()
    );
}
