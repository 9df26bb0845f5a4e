//! Greedy generation on SmolLM2-135M with a compressed KV cache against the
//! f32 cache: on the first ~1500 characters of each State of the Union
//! address 2017–2021 (300+ prompt tokens, so most of the prompt leaves KIVI's
//! 128-token residual), how many greedy tokens agree, and at the first
//! difference how close the f32 model's top two logits were — a flip where
//! they nearly tie is the cache's small error tipping a coin, not a broken
//! cache.
//!
//! ```sh
//! cargo run --release --example kv_greedy            # kivi-4
//! SPEC=kivi-2 TOKENS=64 cargo run --release --example kv_greedy
//! ```

use std::sync::Arc;

use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::kvcache::CacheSpec;
use tensorpress::models::eval::CausalLm;
use tensorpress::models::llama::{DecodeCache, LlamaModel};
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Greedy tokens and each step's logits.
fn greedy(
    model: &LlamaModel,
    mut cache: DecodeCache,
    prompt: &[u32],
    n: usize,
) -> Res<(Vec<u32>, Vec<Vec<f32>>)> {
    let (mut tokens, mut all) = (Vec::new(), Vec::new());
    let mut logits = model.decode(&mut cache, prompt)?.to_vec1::<f32>()?;
    for _ in 0..n {
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(0) as u32;
        tokens.push(best);
        all.push(logits);
        logits = model.decode(&mut cache, &[best])?.to_vec1::<f32>()?;
    }
    Ok((tokens, all))
}

/// Top-1 minus top-2 logit.
fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    a - b
}

fn main() -> Res<()> {
    let spec: CacheSpec = std::env::var("SPEC")
        .unwrap_or_else(|_| "kivi-4".into())
        .parse()?;
    let n: usize = std::env::var("TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let path = testdata::smollm2_gguf()?;
    let gguf = GgufFile::open(&path)?;
    let model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    println!("{spec} against the f32 cache, {n} greedy tokens");
    println!("| prompt | prompt tokens | agreeing tokens | f32 margin at the flip | median f32 margin before it | largest logit change up to it |");
    println!("|---|---|---|---|---|---|");
    for year in 2017..=2021 {
        let text = testdata::sotu_text(year..=year)?;
        let cut = text.char_indices().nth(1500).map_or(text.len(), |(i, _)| i);
        let head = &text[..cut];
        let head = &head[..head.rfind(' ').map_or(head.len(), |i| i + 1)];
        let mut prompt: Vec<u32> = model.bos_token_id().into_iter().collect();
        prompt.extend(tokenizer.encode(head)?);
        let (base, base_logits) = greedy(&model, DecodeCache::new(), &prompt, n)?;
        let compressed = DecodeCache::compressed(Arc::new(move |_, h, d| spec.build(h, d)));
        let (ours, our_logits) = greedy(&model, compressed, &prompt, n)?;
        let agree = base.iter().zip(&ours).take_while(|(a, b)| a == b).count();
        let mut margins: Vec<f32> = base_logits[..agree].iter().map(|l| margin(l)).collect();
        margins.sort_by(f32::total_cmp);
        let median = margins.get(margins.len() / 2).copied().unwrap_or(f32::NAN);
        // Up to and including the flip, both runs saw the same tokens.
        let change = base_logits[..(agree + 1).min(n)]
            .iter()
            .zip(&our_logits)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max);
        let flip = if agree < n {
            format!("{:.3}", margin(&base_logits[agree]))
        } else {
            "–".into()
        };
        println!(
            "| {year} | {} | {agree} | {flip} | {median:.3} | {change:.3} |",
            prompt.len()
        );
    }
    Ok(())
}
