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

/// ToMe token merging on MiniLM: passages of State of the Union text
/// (each ~200 tokens) embedded with `r` tokens merged per layer, against the
/// unmerged embeddings.
#[test]
fn token_merging_keeps_embeddings_close() {
    let dir = testdata::minilm_dir().expect("test data");
    let encoder = SentenceEncoder::from_dir(&dir, LoadOptions::default()).unwrap();
    let text = testdata::sotu_text(2019..=2019).expect("test data");
    let words: Vec<&str> = text.split_whitespace().collect();
    let passages: Vec<Vec<u32>> = words
        .chunks(150)
        .step_by(4)
        .take(8)
        .map(|w| {
            let ids = encoder.tokenize(&w.join(" ")).unwrap();
            ids[..ids.len().min(256)].to_vec()
        })
        .collect();
    assert_eq!(passages.len(), 8);
    let model = encoder.model();
    let full: Vec<Vec<f32>> = passages
        .iter()
        .map(|ids| model.embed_ids(ids).unwrap())
        .collect();
    // r = 0 is the plain forward pass.
    assert_eq!(model.embed_ids_merging(&passages[0], 0).unwrap(), full[0]);
    // Measured: r = 8 keeps 73.7% of the tokens at the last layer, cosine
    // 0.990 on average (min 0.980); r = 16 keeps 47.4%, 0.963 (min 0.945).
    for (r, floor) in [(8usize, 0.97), (16, 0.93)] {
        let (mut cos, mut cut_cos, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for (ids, want) in passages.iter().zip(&full) {
            let (states, sizes) = model.forward_merging(ids, r).unwrap();
            assert_eq!(sizes.iter().sum::<f32>() as usize, ids.len());
            assert_eq!(states.dims()[0], sizes.len());
            kept.push(sizes.len() as f64 / ids.len() as f64);
            cos.push(cosine_similarity(
                &model.embed_ids_merging(ids, r).unwrap(),
                want,
            ));
            // The naive alternative at the same final length: drop the tail.
            let cut = &ids[..sizes.len()];
            cut_cos.push(cosine_similarity(&model.embed_ids(cut).unwrap(), want));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let min = cos.iter().copied().fold(1.0, f64::min);
        println!(
            "ToMe r = {r}: last layer keeps {:.1}% of the tokens; cosine to the unmerged \
             embedding mean {:.5}, min {min:.5}; truncating the input to as many tokens: {:.5}",
            100.0 * mean(&kept),
            mean(&cos),
            mean(&cut_cos)
        );
        assert!(min > floor, "r = {r}: cosine {min}");
        assert!(
            mean(&cos) > mean(&cut_cos),
            "r = {r}: merging is no better than truncation"
        );
    }
}
