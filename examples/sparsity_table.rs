//! Perplexity of SmolLM2-135M after weight pruning, one row per scheme:
//! calibrate on the 1990–2009 State of the Union addresses, evaluate on
//! 2017–2021 (n_ctx 512, llama.cpp's scoring), print a markdown table.
//!
//! ```sh
//! cargo run --release --example sparsity_table -- [SCHEME ...]
//! ```
//!
//! Schemes: `base`, or any scheme [`tensorpress::compress::parse_scheme`]
//! reads — `magnitude-50`, `wanda-2:4`, `sparsegpt-4:8`, `sparsegpt-50-w4`
//! (joint pruning and quantization) — or several joined by `+`, applied in
//! turn: `sparsegpt-50+gptq-w4-ch-sparse` prunes, then quantizes with GPTQ
//! keeping the zeros (prune-then-quantize).
//! Without arguments: base; magnitude, Wanda and SparseGPT at 50 %, 2:4 and
//! 4:8; SparseGPT 50 % + int4 per channel, joint and prune-then-quantize.
//! Environment: `CALIB_WINDOWS` (default 32 windows of 512 tokens),
//! `EVAL_CHUNKS` (default: all).

use std::time::Instant;

use tensorpress::compress::{calibration_windows, compress_llama, parse_scheme, Progress};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

const DEFAULT: &str = "base magnitude-50 wanda-50 sparsegpt-50 magnitude-2:4 wanda-2:4 \
sparsegpt-2:4 magnitude-4:8 wanda-4:8 sparsegpt-4:8 sparsegpt-50-w4-ch \
sparsegpt-50+gptq-w4-ch-sparse";

fn env<T: std::str::FromStr>(key: &str) -> Option<T> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<String> = if args.is_empty() {
        DEFAULT.split(' ').map(String::from).collect()
    } else {
        args
    };
    // Each row: its stages (none for the base model). Parse all before any work.
    let mut rows = Vec::new();
    for name in names.iter().map(String::as_str) {
        let mut stages = Vec::new();
        if name != "base" {
            for part in name.split('+') {
                stages.push(parse_scheme(part)?);
            }
        }
        rows.push(stages);
    }
    let windows: usize = env("CALIB_WINDOWS").unwrap_or(32);
    let chunks: Option<usize> = env("EVAL_CHUNKS");

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut ppl_config = PerplexityConfig::with_ctx(512);
    ppl_config.max_chunks = chunks;

    println!(
        "SmolLM2-135M-Instruct; calibration {windows} × 512 tokens of SOTU 1990–2009; \
         perplexity on SOTU 2017–2021, n_ctx 512{}\n",
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!("| scheme | sparsity | bits/weight | perplexity | Δ vs base | compress s |");
    println!("|---|---|---|---|---|---|");
    let mut base_ppl = None;
    for stages in &rows {
        let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
        let label = if stages.is_empty() {
            "base (f32)".to_string()
        } else {
            stages
                .iter()
                .map(|s| s.label.as_str())
                .collect::<Vec<_>>()
                .join(", then ")
        };
        let (mut sparsity, mut bpw, mut cost) = ("0".to_string(), "32".to_string(), 0.0);
        for scheme in stages {
            let t = Instant::now();
            let report = compress_llama(&mut model, &calib, &scheme.options(), &mut |p| {
                if let Progress::Calibrating { block, blocks } = p {
                    eprint!("\r  {}: block {}/{}   ", scheme.label, block + 1, blocks);
                }
            })?;
            eprintln!();
            cost += t.elapsed().as_secs_f64();
            // Weighted over the compressed layers' parameters; the last stage decides.
            let (mut zeros, mut bits, mut params) = (0.0, 0.0, 0.0);
            for l in &report.layers {
                let n = (l.shape[0] * l.shape[1]) as f64;
                zeros += l.sparsity * n;
                bits += l.bits_per_weight * n;
                params += n;
            }
            sparsity = format!("{:.1} %", 100.0 * zeros / params);
            bpw = format!("{:.3}", bits / params);
        }
        let r = perplexity(&model, &eval_tokens, &ppl_config, &mut |_, _| {})?;
        let delta = base_ppl.map_or(String::from("–"), |b: f64| {
            format!("{:+.3}", r.perplexity - b)
        });
        if stages.is_empty() {
            base_ppl = Some(r.perplexity);
        }
        println!(
            "| {label} | {sparsity} | {bpw} | {:.4} ± {:.4} | {delta} | {cost:.0} |",
            r.perplexity, r.uncertainty
        );
    }
    Ok(())
}
