//! Structured FFN pruning of SmolLM2-135M: remove a fraction of every
//! block's FFN neurons (default 25 %), calibrated block by block on the
//! 1990–2009 State of the Union addresses, write the smaller model as a
//! Hugging Face folder (bf16 safetensors, `config.json` with the new
//! `intermediate_size`), load it back in the runner, and print sizes and
//! perplexities on 2017–2021 (n_ctx 512).
//!
//! ```sh
//! cargo run --release --example structured_ffn -- [RATIO] [OUT]   # 0.25 target/smollm2-ffn25
//! ```
//!
//! The folder loads in transformers too:
//! `python scripts/reference/hf_folder_perplexity.py OUT eval.txt`.
//! Environment: `CALIB_WINDOWS` (32), `EVAL_CHUNKS` (all),
//! `CRITERION` (`energy`, or `relevance`: gradient × activation of the true
//! token's logit), `ALLOCATION` (`uniform`, `sap`: PQ-Index bound,
//! `precropping`: one global Wanda ranking). Non-uniform widths are written
//! zero-padded to the widest block. `PRUNE=heads` removes that fraction of
//! the query heads of every key/value group instead (o_proj refit by least
//! squares; `config.json` gets the new `num_attention_heads`).

use std::path::PathBuf;
use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, prune_ffn_llama_with, prune_heads_llama, write_hf_checkpoint, BlockRatios,
    ExportFormat, ExportOptions, FfnPruning, NeuronCriterion, Progress,
};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::sparsity::SapRule;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ratio: f64 = args.first().map_or(Ok(0.25), |a| a.parse())?;
    let out = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| format!("target/smollm2-ffn{:.0}", ratio * 100.0)),
    );
    let windows: usize = std::env::var("CALIB_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());

    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let criterion = match env("CRITERION", "energy").as_str() {
        "energy" => NeuronCriterion::Energy,
        "relevance" => NeuronCriterion::Relevance,
        other => return Err(format!("CRITERION={other}: use energy or relevance").into()),
    };
    let allocation = match env("ALLOCATION", "uniform").as_str() {
        "uniform" => BlockRatios::Uniform,
        "sap" => BlockRatios::Sap(SapRule::default()),
        "precropping" => BlockRatios::PreCropping,
        other => return Err(format!("ALLOCATION={other}: use uniform, sap or precropping").into()),
    };
    let heads = match env("PRUNE", "ffn").as_str() {
        "ffn" => false,
        "heads" => true,
        other => return Err(format!("PRUNE={other}: use ffn or heads").into()),
    };
    let options = FfnPruning::new(ratio)
        .criterion(criterion)
        .allocation(allocation)
        .pad_to_uniform(allocation != BlockRatios::Uniform);

    let source = testdata::smollm2_gguf()?;
    let gguf = GgufFile::open(&source)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut config = PerplexityConfig::with_ctx(512);
    config.max_chunks = chunks;
    let ppl = |m: &LlamaModel| perplexity(m, &eval_tokens, &config, &mut |_, _| {});

    let load = if criterion == NeuronCriterion::Relevance {
        LoadOptions::trainable()
    } else {
        LoadOptions::default()
    };
    let mut model = LlamaModel::from_gguf(&gguf, load)?;
    let params = |m: &LlamaModel| -> usize {
        m.blocks()
            .iter()
            .flat_map(|b| b.linears())
            .map(|l| l.op().in_features() * l.op().out_features())
            .sum()
    };
    let (width0, linear0) = (model.params().intermediate_size, params(&model));
    let base_heads = model.params().num_heads;
    let base = ppl(&model)?;
    let t = Instant::now();
    let mut progress = |p: Progress| match p {
        Progress::Calibrating { block, blocks } => eprint!("\r  block {}/{blocks}   ", block + 1),
        Progress::Gradients { done, total } => eprint!("\r  gradients {done}/{total}   "),
        _ => {}
    };
    let report = if heads {
        prune_heads_llama(&mut model, &calib, ratio, criterion, &mut progress)?
    } else {
        prune_ffn_llama_with(&mut model, &calib, &options, &mut progress)?
    };
    eprintln!();
    let seconds = t.elapsed().as_secs_f64();
    let pruned = ppl(&model)?;
    let mut options = ExportOptions::new(ExportFormat::Dequantized);
    options.dtype = FloatDType::BF16;
    let written = write_hf_checkpoint(&source, &report, &options, &out)?;
    let reloaded = LlamaModel::from_hf_dir(&out, LoadOptions::default())?;
    let again = ppl(&reloaded)?;

    let widths: Vec<String> = model
        .blocks()
        .iter()
        .map(|b| b.linears()[4].op().out_features().to_string())
        .collect();
    let what = if heads {
        format!(
            "query heads removed (criterion {criterion:?}; {} of {} heads left",
            model.params().num_heads,
            base_heads
        )
    } else {
        format!("FFN neurons removed (criterion {criterion:?}, allocation {allocation:?}")
    };
    println!(
        "SmolLM2-135M-Instruct, {:.0} % of {what}; {windows} × 512 calibration tokens of SOTU \
         1990–2009, {seconds:.0} s); perplexity on SOTU 2017–2021, n_ctx 512{}\n\nFFN widths \
         per block: {}\n",
        ratio * 100.0,
        chunks.map_or(String::new(), |c| format!(", first {c} windows")),
        widths.join(" ")
    );
    println!("| model | FFN width | linear parameters | checkpoint | perplexity |");
    println!("|---|---|---|---|---|");
    println!(
        "| base | {width0} | {linear0} | – | {:.4} ± {:.4} |",
        base.perplexity, base.uncertainty
    );
    println!(
        "| pruned (in memory, f32) | {} | {} | – | {:.4} ± {:.4} |",
        model.params().intermediate_size,
        params(&model),
        pruned.perplexity,
        pruned.uncertainty
    );
    println!(
        "| pruned, written and reloaded (bf16) | {} | {} | {} ({:.1} MB of tensors, {} parameters) | {:.4} ± {:.4} |",
        reloaded.params().intermediate_size,
        params(&reloaded),
        out.display(),
        written.tensor_bytes as f64 / 1e6,
        written.parameters,
        again.perplexity,
        again.uncertainty
    );
    Ok(())
}
