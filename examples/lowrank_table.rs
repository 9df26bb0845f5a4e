//! Low-rank compensation of GPTQ on SmolLM2-135M: EoRA against LoRC at ranks
//! 8/16/32/64 after GPTQ W3 g128 and W2 g64, with the bits per weight each
//! rank adds and the share of the perplexity gap to the base model it
//! recovers. Calibration: the 1990–2009 State of the Union addresses;
//! perplexity on 2017–2021 (n_ctx 512).
//!
//! ```sh
//! cargo run --release --example lowrank_table
//! ```
//!
//! One compensated run per method at the largest rank; smaller ranks are the
//! leading components of the same adapters (`set_adapter_rank`; EoRA's and
//! LoRC's factors are ordered by singular value). Each layer is compensated
//! right after GPTQ, so later blocks calibrate on the compensated model.
//! Environment: `CALIB_WINDOWS` (16), `EVAL_CHUNKS` (all), `FORMATS`
//! (`w3-g128,w2-g64`; `-asym` adds zero points, e.g. `w3-g128-asym`), `RANKS` (`8,16,32,64`),
//! `COMPENSATIONS` (`eora,lorc`), `PEFT_OUT` (a folder: also
//! writes the first format's EoRA model at rank 32 as `PEFT_OUT/base`, the
//! dequantized weights, and `PEFT_OUT/adapter`, a PEFT LoRA folder, for
//! `scripts/reference/peft_perplexity.py`).

use std::sync::Arc;
use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, compress_llama, set_adapter_rank, write_hf_checkpoint, write_peft_adapter,
    Compensation, CompressOptions, CompressReport, ExportFormat, ExportOptions, Progress,
};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::{Gptq, QuantSpec};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// `w3-g128` → int3, groups of 128; a `-asym` suffix adds zero points.
fn parse_format(s: &str) -> Res<QuantSpec> {
    let (body, asym) = match s.strip_suffix("-asym") {
        Some(body) => (body, true),
        None => (s, false),
    };
    let (bits, group) = body
        .strip_prefix('w')
        .and_then(|r| r.split_once("-g"))
        .ok_or_else(|| format!("FORMATS entry `{s}`: expected wB-gN[-asym], e.g. w3-g128"))?;
    let spec = QuantSpec::int(bits.parse()?).group(group.parse()?);
    Ok(if asym { spec.asymmetric() } else { spec })
}

/// Bits per weight the adapters add at `rank` (fp16 factors), over every
/// compensated layer.
fn added_bpw(report: &CompressReport, rank: usize) -> f64 {
    let (mut bits, mut weights) = (0.0, 0.0);
    for l in &report.layers {
        let (m, n) = (l.shape[0] as f64, l.shape[1] as f64);
        weights += m * n;
        if report.adapters.contains_key(&l.name) {
            bits += 16.0 * rank as f64 * (m + n);
        }
    }
    bits / weights.max(1.0)
}

fn main() -> Res<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let windows: usize = env("CALIB_WINDOWS", "16").parse()?;
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    let formats: Vec<String> = env("FORMATS", "w3-g128,w2-g64")
        .split(',')
        .map(str::to_string)
        .collect();
    let ranks: Vec<usize> = env("RANKS", "8,16,32,64")
        .split(',')
        .map(|r| r.parse())
        .collect::<Result<_, _>>()?;
    let max_rank = *ranks.iter().max().ok_or("RANKS is empty")?;
    let peft_out = std::env::var("PEFT_OUT").ok();
    let methods: Vec<String> = env("COMPENSATIONS", "eora,lorc")
        .split(',')
        .map(str::to_string)
        .collect();
    let mut compensations = Vec::new();
    for m in &methods {
        compensations.push(match m.as_str() {
            "eora" => Compensation::eora(max_rank),
            "lorc" => Compensation::lorc(max_rank),
            other => return Err(format!("COMPENSATIONS entry `{other}`: eora or lorc").into()),
        });
    }

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
        "SmolLM2-135M-Instruct; GPTQ on {windows} × 512 tokens of SOTU 1990–2009, then a \
         low-rank adapter per linear layer (fp16 factors); perplexity on SOTU 2017–2021, \
         n_ctx 512{}; base {base:.4}\n",
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!("| format | compensation | rank | + bits / weight | perplexity | gap recovered |");
    println!("|---|---|---|---|---|---|");
    for (i, f) in formats.iter().enumerate() {
        let spec = parse_format(f)?;
        let run = |compensation: Option<Compensation>| -> Res<(LlamaModel, CompressReport, f64)> {
            let mut model = fresh()?;
            let mut options = CompressOptions::new(Arc::new(Gptq::new(spec)), true);
            options.compensation = compensation;
            let t = Instant::now();
            let report = compress_llama(&mut model, &calib, &options, &mut |p| {
                if let Progress::Calibrating { block, blocks } = p {
                    eprint!("\r  {f} {compensation:?}: block {}/{blocks}   ", block + 1);
                }
            })?;
            eprintln!();
            Ok((model, report, t.elapsed().as_secs_f64()))
        };
        let (plain, _, secs) = run(None)?;
        let q = ppl(&plain)?;
        drop(plain);
        println!("| GPTQ {spec} | none ({secs:.0} s) | 0 | 0 | {q:.4} | – |");
        for &c in &compensations {
            let (mut model, report, secs) = run(Some(c))?;
            let name = c.label();
            for &r in &ranks {
                set_adapter_rank(&mut model, &report, r)?;
                let p = ppl(&model)?;
                println!(
                    "| GPTQ {spec} | {} ({secs:.0} s at r{max_rank}) | {r} | {:.3} | {p:.4} | {:.1} % |",
                    name.split(' ').next().unwrap_or(&name),
                    added_bpw(&report, r),
                    100.0 * (q - p) / (q - base)
                );
            }
            if let (0, Some(out), true) = (i, &peft_out, c == Compensation::eora(max_rank)) {
                let rank = 32.min(max_rank);
                set_adapter_rank(&mut model, &report, rank)?;
                let p = ppl(&model)?;
                let mut truncated = report.clone();
                for a in truncated.adapters.values_mut() {
                    *a = a.truncate(rank)?;
                }
                let out = std::path::Path::new(out);
                let options = ExportOptions {
                    format: ExportFormat::Dequantized,
                    dtype: FloatDType::F32,
                };
                write_hf_checkpoint(&source, &truncated, &options, &out.join("base"))?;
                write_peft_adapter(&source, &truncated, FloatDType::F32, &out.join("adapter"))?;
                eprintln!(
                    "wrote {0}/base and {0}/adapter (GPTQ {spec} + EoRA r{rank}); \
                     tensorpress perplexity {p:.4}",
                    out.display()
                );
            }
        }
    }
    Ok(())
}
