//! Low-rank factorization of SmolLM2-135M: plain truncated SVD, ASVD and
//! SVD-LLM's whitening at 20 % and 40 % fewer parameters in every block
//! projection (q/k/v/o, gate/up/down), perplexity on the 2017–2021 State of
//! the Union addresses (n_ctx 512). ASVD and SVD-LLM calibrate on 1990–2009.
//!
//! ```sh
//! cargo run --release --example factorize_table
//! ```
//!
//! Environment: `CALIB_WINDOWS` (16), `EVAL_CHUNKS` (all), `REDUCTIONS`
//! (`0.2,0.4`), `METHODS` (`svd,asvd,svd-llm`), `ALLOC` (`uniform`, or
//! `spectrum`: one budget across layers), `FACTOR_OUT` (a folder: also
//! writes the SVD-LLM model at the first reduction there as safetensors with
//! `{module}.u.weight` / `{module}.v.weight` factor pairs, reloads it and
//! prints its perplexity).

use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, factorize_llama, write_hf_checkpoint, ExportFormat, ExportOptions,
    FactorMethod, Factorization, Progress, RankAllocation,
};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let windows: usize = env("CALIB_WINDOWS", "16").parse()?;
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    let reductions: Vec<f64> = env("REDUCTIONS", "0.2,0.4")
        .split(',')
        .map(|r| r.parse())
        .collect::<Result<_, _>>()?;
    let methods: Vec<FactorMethod> = env("METHODS", "svd,asvd,svd-llm")
        .split(',')
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    let allocation = match env("ALLOC", "uniform").as_str() {
        "uniform" => RankAllocation::Uniform,
        "spectrum" => RankAllocation::Spectrum,
        other => return Err(format!("ALLOC `{other}`: expected uniform or spectrum").into()),
    };
    let out = std::env::var("FACTOR_OUT").ok();

    let source = testdata::smollm2_gguf()?;
    let gguf = GgufFile::open(&source)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut config = PerplexityConfig::with_ctx(512);
    config.max_chunks = chunks;
    let ppl = |m: &LlamaModel| -> Res<f64> {
        Ok(perplexity(m, &eval_tokens, &config, &mut |_, _| {})?.perplexity)
    };
    let fresh = || LlamaModel::from_gguf(&gguf, LoadOptions::default());

    let base = ppl(&fresh()?)?;
    println!(
        "SmolLM2-135M-Instruct; every block projection factorized (W ≈ A·B), {allocation:?} \
         ranks; ASVD/SVD-LLM calibrated on {windows} × 512 tokens of SOTU 1990–2009; \
         perplexity on SOTU 2017–2021, n_ctx 512{}; base {base:.4}\n",
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!(
        "| method | reduction | params kept (block linears) | ranks (q, gate, down) of block 0 \
         | mean output error | time | perplexity |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &reduction in &reductions {
        for &method in &methods {
            let options = Factorization::new(method, reduction).allocation(allocation);
            let mut model = fresh()?;
            let t = Instant::now();
            let report = factorize_llama(&mut model, &calib, &options, &mut |p| {
                if let Progress::Calibrating { block, blocks } = p {
                    eprint!("\r  {}: window {}/{blocks}   ", options.label(), block + 1);
                }
            })?;
            let secs = t.elapsed().as_secs_f64();
            let dense: usize = report.layers.iter().map(|l| l.shape[0] * l.shape[1]).sum();
            let kept: usize = report.factors.values().map(|f| f.params()).sum();
            let rank = |m: &str| {
                report
                    .factors
                    .get(&format!("model.layers.0.{m}"))
                    .map_or(0, |f| f.rank())
            };
            let errors: Vec<f64> = report
                .layers
                .iter()
                .filter_map(|l| l.output_error)
                .collect();
            let mean_error = if errors.is_empty() {
                "–".to_string()
            } else {
                format!("{:.4}", errors.iter().sum::<f64>() / errors.len() as f64)
            };
            let p = ppl(&model)?;
            eprintln!();
            println!(
                "| {} | {:.0} % | {:.2} M of {:.2} M ({:.1} %) | {}, {}, {} | {mean_error} | {secs:.0} s | {p:.4} |",
                options.label().split(' ').next().unwrap_or_default(),
                reduction * 100.0,
                kept as f64 / 1e6,
                dense as f64 / 1e6,
                100.0 * kept as f64 / dense as f64,
                rank("self_attn.q_proj"),
                rank("mlp.gate_proj"),
                rank("mlp.down_proj"),
            );
            if let (Some(dir), FactorMethod::SvdLlm, true) =
                (&out, method, reduction == reductions[0])
            {
                let dir = std::path::Path::new(dir);
                let options = ExportOptions {
                    format: ExportFormat::Dequantized,
                    dtype: FloatDType::F32,
                };
                let written = write_hf_checkpoint(&source, &report, &options, dir)?;
                let reloaded = LlamaModel::from_hf_dir(dir, LoadOptions::default())?;
                eprintln!(
                    "wrote {} ({:.1} MB of tensors, {} parameters); reloaded perplexity {:.4}",
                    dir.display(),
                    written.tensor_bytes as f64 / 1e6,
                    written.parameters,
                    ppl(&reloaded)?
                );
            }
        }
    }
    Ok(())
}
