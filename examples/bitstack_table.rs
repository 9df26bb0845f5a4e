//! BitStack on SmolLM2-135M: one decomposition of every block projection
//! into ~1-bit residual blocks, loaded at several memory budgets, against
//! uniform GPTQ at comparable sizes. Calibration: 1990–2009 State of the
//! Union addresses; perplexity on 2017–2021 (n_ctx 512). Sizes are bits per
//! weight of the block projections (signs, fp16 factors; GPTQ codes and
//! fp16 scales); embeddings and norms stay as they are in both.
//!
//! ```sh
//! cargo run --release --example bitstack_table
//! ```
//!
//! Environment: `CALIB_WINDOWS` (16), `EVAL_CHUNKS` (all), `BLOCKS` (8 per
//! layer), `K` (magnitude rank per block, 4: the paper's 16 is for 4096-wide
//! layers, where it costs 0.125 bits per weight; at SmolLM2's 576 it would
//! cost 0.9), `BUDGETS` (bits per weight, `2.25,2.75,3.125,3.5,4.125,5,6`),
//! `GPTQ` (`w2-g64,w3-g128,w4-g128`; empty to skip), `STACK_OUT` (a file:
//! also writes the stacks there and loads every budget from the file,
//! reading only the blocks each plan needs).

use std::sync::Arc;
use std::time::Instant;

use tensorpress::compress::{
    bitstack_llama, calibration_windows, compress_llama, CompressOptions, Progress, StackedFile,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::lowrank::BitStackConfig;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::{Gptq, QuantSpec};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let windows: usize = env("CALIB_WINDOWS", "16").parse()?;
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    let blocks: usize = env("BLOCKS", "8").parse()?;
    let k: usize = env("K", "4").parse()?;
    let budgets: Vec<f64> = env("BUDGETS", "2.25,2.75,3.125,3.5,4.125,5,6")
        .split(',')
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let gptq: Vec<String> = env("GPTQ", "w2-g64,w3-g128,w4-g128")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();

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
    let t = Instant::now();
    let stacked = bitstack_llama(
        &mut fresh()?,
        &calib,
        &BitStackConfig::new(blocks).magnitude_rank(k),
        &mut |p| {
            if let Progress::Layer(l) = p {
                eprint!("\r  decomposed {:<40}", l.name);
            }
        },
    )?;
    eprintln!();
    let (lo, hi) = stacked.bits_per_weight_range();
    println!(
        "SmolLM2-135M-Instruct; BitStack: {blocks} blocks of magnitude rank {k} per block \
         projection ({lo:.3}–{hi:.3} bits per weight), decomposed once in {:.0} s with scales \
         from {windows} × 512 tokens of SOTU 1990–2009; perplexity on SOTU 2017–2021, \
         n_ctx 512{}; base {base:.4}\n",
        t.elapsed().as_secs_f64(),
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!("| method | budget (bits / weight) | loaded (bits / weight) | blocks per layer (min–max) | perplexity |");
    println!("|---|---|---|---|---|");
    let file = match std::env::var("STACK_OUT") {
        Ok(path) => {
            let path = std::path::PathBuf::from(path);
            let bytes = stacked.write(&path)?;
            eprintln!("wrote {} ({:.1} MB)", path.display(), bytes as f64 / 1e6);
            Some(StackedFile::open(&path)?)
        }
        Err(_) => None,
    };
    for &b in &budgets {
        let mut model = fresh()?;
        let plan = match &file {
            Some(f) => {
                let plan = f.allocate(b)?;
                f.assemble(&mut model, &plan)?;
                plan
            }
            None => {
                let plan = stacked.allocate(b)?;
                stacked.assemble(&mut model, &plan)?;
                plan
            }
        };
        let (min, max) = (
            plan.blocks.iter().min().copied().unwrap_or(0),
            plan.blocks.iter().max().copied().unwrap_or(0),
        );
        println!(
            "| BitStack | {b} | {:.3} | {min}–{max} | {:.4} |",
            stacked.plan_bits_per_weight(&plan),
            ppl(&model)?
        );
    }
    for f in &gptq {
        let (bits, group) = f
            .strip_prefix('w')
            .and_then(|r| r.split_once("-g"))
            .ok_or_else(|| format!("GPTQ entry `{f}`: expected wB-gN, e.g. w3-g128"))?;
        let spec = QuantSpec::int(bits.parse()?).group(group.parse()?);
        let mut model = fresh()?;
        let options = CompressOptions::new(Arc::new(Gptq::new(spec)), true);
        let report = compress_llama(&mut model, &calib, &options, &mut |_| {})?;
        let (qbits, n) = report.layers.iter().fold((0.0, 0.0), |(b, n), l| {
            let w = (l.shape[0] * l.shape[1]) as f64;
            (b + l.bits_per_weight * w, n + w)
        });
        println!(
            "| GPTQ {spec} | – | {:.3} | – | {:.4} |",
            qbits / n,
            ppl(&model)?
        );
    }
    Ok(())
}
