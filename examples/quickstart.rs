//! The main job, for now: SmolLM2-135M perplexity on the 2017–2021 State of the
//! Union addresses (computed the way llama.cpp's `llama-perplexity` does, n_ctx
//! 512), and all-MiniLM-L6-v2 sentence embeddings, printed as tables.
//!
//! ```sh
//! scripts/fetch-testdata.sh && cargo run --release --example quickstart
//! ```
//!
//! Set `QUICKSTART_CHUNKS=N` to evaluate only the first N windows.

use std::time::Instant;

use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::bert::{cosine_similarity, SentenceEncoder};
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = rayon::current_num_threads();
    println!("tensorpress quickstart ({threads} threads)\n");

    // SmolLM2 perplexity.
    let path = testdata::smollm2_gguf()?;
    let t0 = Instant::now();
    let gguf = GgufFile::open(&path)?;
    let model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let load_s = t0.elapsed().as_secs_f64();
    let text = testdata::sotu_text(2017..=2021)?;
    let tokens = tokenizer.encode(text.strip_suffix('\n').unwrap_or(&text))?;
    let mut config = PerplexityConfig::with_ctx(512);
    config.max_chunks = std::env::var("QUICKSTART_CHUNKS")
        .ok()
        .and_then(|s| s.parse().ok());
    let report = perplexity(&model, &tokens, &config, &mut |done, total| {
        if done % 10 == 0 || done == total {
            eprintln!("  perplexity: window {done}/{total}");
        }
    })?;
    // llama.cpp's figure on the same weights and text, from the golden file
    // that scripts/reference/ made with llama-perplexity.
    let golden: serde_json::Value = serde_json::from_str(include_str!(
        "../crates/models/tests/data/smollm2_llamacpp_perplexity.json"
    ))?;
    let reference = format!(
        "{} ± {}",
        golden["final_ppl"], golden["final_ppl_plus_minus"]
    );
    println!("SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to f32), SOTU 2017-2021, n_ctx 512");
    println!("| text tokens | windows | perplexity | llama.cpp F32 (all windows) | load s | eval s | tokens/s |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.4} ± {:.4} | {reference} | {:.1} | {:.1} | {:.0} |\n",
        report.text_tokens,
        report.chunks,
        report.perplexity,
        report.uncertainty,
        load_s,
        report.seconds,
        report.tokens_per_second(512)
    );

    // MiniLM sentence embeddings.
    let encoder = SentenceEncoder::from_dir(&testdata::minilm_dir()?, LoadOptions::default())?;
    let sentences = [
        "The economy grew faster than expected this year.",
        "Economic growth this year beat the forecasts.",
        "Call me Ishmael.",
        "The whale surfaced near the ship.",
        "Congress passed the budget after a long debate.",
    ];
    let t0 = Instant::now();
    let emb = encoder.embed(&sentences)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "all-MiniLM-L6-v2 sentence embeddings ({} dims, {:.1} ms per sentence): cosine similarity",
        emb[0].len(),
        secs * 1e3 / sentences.len() as f64
    );
    print!("| |");
    for j in 0..sentences.len() {
        print!(" [{j}] |");
    }
    println!();
    println!("|---|{}", "---|".repeat(sentences.len()));
    for (i, a) in emb.iter().enumerate() {
        print!("| [{i}] {} |", sentences[i]);
        for b in &emb {
            print!(" {:.3} |", cosine_similarity(a, b));
        }
        println!();
    }
    Ok(())
}
