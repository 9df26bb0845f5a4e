//! Perplexity of SmolLM2-135M after weight quantization, one row per scheme:
//! calibrate on the 1990–2009 State of the Union addresses, evaluate on
//! 2017–2021 (n_ctx 512, llama.cpp's scoring), print a markdown table.
//!
//! ```sh
//! cargo run --release --example compress_table -- [SCHEME ...]
//! ```
//!
//! Schemes: `base`, or any scheme [`tensorpress::compress::parse_scheme`]
//! reads: `gptq-w4-g128`, `rtn-w3-g128`, `gptq-w4-ch-act`, `rtn-nf4-g64`,
//! `rtn-mxfp4`, `ggml-q4_0`, …
//! Without arguments: base, then RTN and GPTQ at W4 g128, W3 g128 and W4 per channel.
//! Environment: `CALIB_WINDOWS` (default 128), `EVAL_CHUNKS` (default: all),
//! `LAYER_REPORT=FILE` (write each layer's relative output and weight error as
//! TSV; RTN then captures Hessians too, to measure its output error).

use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, compress_llama, parse_scheme, Method, Progress, Scheme,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<String> = if args.is_empty() {
        [
            "base",
            "rtn-w4-g128",
            "gptq-w4-g128",
            "rtn-w3-g128",
            "gptq-w3-g128",
            "rtn-w4-ch",
            "gptq-w4-ch",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args
    };
    // `None` is the uncompressed base model.
    let mut schemes: Vec<Option<Scheme>> = Vec::new();
    for name in &names {
        schemes.push(if name == "base" {
            None
        } else {
            Some(parse_scheme(name)?)
        });
    }
    let windows: usize = std::env::var("CALIB_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_text = testdata::sotu_text(1990..=2009)?;
    let calib_tokens = tokenizer.encode(&calib_text)?;
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
    println!("| scheme | bits/weight (quantized layers) | perplexity | Δ vs base | compress s (forward / hessian / solve) |");
    println!("|---|---|---|---|---|");
    let mut base_ppl = None;
    for scheme in &schemes {
        let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
        let mut cost = String::from("–");
        let mut bpw = String::from("32");
        let label = scheme
            .as_ref()
            .map_or("base (f32)".to_string(), |s| s.label.clone());
        if let Some(scheme) = scheme {
            let layer_report = std::env::var("LAYER_REPORT").ok();
            let mut method = scheme.method.clone();
            if layer_report.is_some() {
                // Capture Hessians for every method, to report output errors.
                if let Method::Weight { calibrate, .. } = &mut method {
                    *calibrate = true;
                }
            }
            let mut options = scheme.options();
            options.method = method;
            let t = Instant::now();
            let report = compress_llama(&mut model, &calib, &options, &mut |p| {
                if let Progress::Calibrating { block, blocks } = p {
                    eprint!("\r  {label}: block {}/{}   ", block + 1, blocks);
                }
            })?;
            eprintln!();
            let total = t.elapsed().as_secs_f64();
            let tm = &report.timings;
            cost = format!(
                "{total:.0} ({:.0} / {:.0} / {:.1})",
                tm.forward, tm.hessian, tm.solve
            );
            let (bits, params) = report.layers.iter().fold((0.0, 0.0), |(b, p), l| {
                let n = (l.shape[0] * l.shape[1]) as f64;
                (b + l.bits_per_weight * n, p + n)
            });
            bpw = format!("{:.3}", bits / params);
            if let Some(path) = layer_report {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                for l in &report.layers {
                    writeln!(
                        f,
                        "{}\t{}\t{:.6e}\t{:.6e}",
                        label,
                        l.name,
                        l.output_error.unwrap_or(f64::NAN),
                        l.weight_error
                    )?;
                }
            }
        }
        let r = perplexity(&model, &eval_tokens, &ppl_config, &mut |_, _| {})?;
        let delta = base_ppl.map_or(String::from("–"), |b: f64| {
            format!("{:+.3}", r.perplexity - b)
        });
        if scheme.is_none() {
            base_ppl = Some(r.perplexity);
        }
        println!(
            "| {} | {bpw} | {:.4} ± {:.4} | {delta} | {cost} |",
            label, r.perplexity, r.uncertainty
        );
    }
    Ok(())
}
