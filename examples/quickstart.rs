//! The main job: compress SmolLM2-135M with GPTQ (4-bit weights, groups of
//! 128, calibrated on the 1990–2009 State of the Union addresses) and compare
//! it with the base model and with round-to-nearest on the 2017–2021
//! addresses (perplexity computed as llama.cpp's `llama-perplexity` does,
//! n_ctx 512), with checkpoint sizes and times; then all-MiniLM-L6-v2
//! sentence embeddings.
//!
//! ```sh
//! scripts/fetch-testdata.sh && cargo run --release --example quickstart
//! ```
//!
//! `QUICKSTART_CALIB=N` sets the calibration windows of 512 tokens (default
//! 32; the documented tables use 128), `QUICKSTART_CHUNKS=N` evaluates only
//! the first N windows.

use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, compress_llama, parse_scheme, write_hf_checkpoint, ExportFormat,
    ExportOptions,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::bert::{cosine_similarity, SentenceEncoder};
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = rayon::current_num_threads();
    println!("tensorpress quickstart ({threads} threads)\n");

    let path = testdata::smollm2_gguf()?;
    let gguf = GgufFile::open(&path)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let text = testdata::sotu_text(2017..=2021)?;
    let tokens = tokenizer.encode(text.strip_suffix('\n').unwrap_or(&text))?;
    let calib_text = testdata::sotu_text(1990..=2009)?;
    let windows = env_usize("QUICKSTART_CALIB").unwrap_or(32);
    let calibration = calibration_windows(&tokenizer.encode(&calib_text)?, windows, 512)?;
    let mut config = PerplexityConfig::with_ctx(512);
    config.max_chunks = env_usize("QUICKSTART_CHUNKS");
    let out = std::env::temp_dir().join(format!("tensorpress-quickstart-{}", std::process::id()));

    println!(
        "SmolLM2-135M-Instruct (GGUF Q4_1 weights as f32), perplexity on SOTU 2017-2021, n_ctx 512; \
         GPTQ calibrated on {windows} × 512 tokens of SOTU 1990-2009"
    );
    println!("| model | perplexity | Δ vs base | bits/weight (linear layers) | checkpoint (GPTQ v1 format) | compress s | eval s |");
    println!("|---|---|---|---|---|---|---|");
    let mut base = None;
    for scheme in [None, Some("rtn-w4-g128"), Some("gptq-w4-g128")] {
        let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
        let (mut label, mut bits, mut size, mut compress_s) = (
            "base".to_string(),
            "32".to_string(),
            "–".to_string(),
            "–".to_string(),
        );
        if let Some(name) = scheme {
            let scheme = parse_scheme(name)?;
            label = scheme.label.clone();
            let options = scheme.options();
            let t = Instant::now();
            let report = compress_llama(&mut model, &calibration, &options, &mut |_| {})?;
            compress_s = format!("{:.0}", t.elapsed().as_secs_f64());
            let (b, n) = report.layers.iter().fold((0.0, 0.0), |(b, n), l| {
                let k = (l.shape[0] * l.shape[1]) as f64;
                (b + l.bits_per_weight * k, n + k)
            });
            bits = format!("{:.3}", b / n);
            // GPTQ's checkpoint format holds 576-wide rows in groups of 128.
            let written = write_hf_checkpoint(
                &path,
                &report,
                &ExportOptions::new(ExportFormat::Gptq),
                &out,
            )?;
            size = format!(
                "{:.1} MiB ({:.2} bits/param)",
                written.tensor_bytes as f64 / f64::from(1 << 20),
                written.bits_per_weight()
            );
            std::fs::remove_dir_all(&out)?;
        }
        let r = perplexity(&model, &tokens, &config, &mut |_, _| {})?;
        let delta = base.map_or("–".to_string(), |b: f64| {
            format!("{:+.3}", r.perplexity - b)
        });
        base.get_or_insert(r.perplexity);
        println!(
            "| {label} | {:.4} ± {:.4} | {delta} | {bits} | {size} | {compress_s} | {:.0} |",
            r.perplexity, r.uncertainty, r.seconds
        );
    }
    // llama.cpp's figure for the base weights on the same text, from the golden
    // file that scripts/reference/ made with llama-perplexity.
    let golden: serde_json::Value = serde_json::from_str(include_str!(
        "../crates/models/tests/data/smollm2_llamacpp_perplexity.json"
    ))?;
    println!(
        "(llama.cpp's llama-perplexity on the base weights, all windows: {} ± {})\n",
        golden["final_ppl"], golden["final_ppl_plus_minus"]
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
