//! GGUF files of SmolLM2-135M compressed with GPTQ into GGML block types, for
//! the perplexity-vs-bits frontier against llama.cpp's own `llama-quantize
//! --imatrix` (docs/gguf-frontier.md, scripts/reference/gguf_frontier.sh).
//!
//! ```sh
//! cargo run --release --example gguf_frontier -- OUT_DIR [RECIPE ...]
//! ```
//!
//! A recipe is `METHOD:TYPE[,PATTERN=TYPE ...][,embd=TYPE]`: METHOD `gptq`
//! ([`GgmlGptq`]) or `rtn` (llama.cpp's encoders with the imatrix-style
//! importance), TYPE a GGML type name (`q4_0`, `iq4_nl`, `q3_k`, …) for every
//! linear layer, PATTERN a layer glob (`*.down_proj`) with its own type, and
//! `embd` the type of `token_embd` (default: as stored, Q8_0). Example:
//! `gptq:iq4_nl,*.down_proj=q3_k,embd=q5_0`.
//!
//! For each recipe it calibrates on 128 windows of 512 tokens of the State of
//! the Union addresses 1990–2009 (`CALIB_WINDOWS` to change), writes
//! `OUT_DIR/<recipe>.gguf`, and prints its bits per weight (file bytes × 8 /
//! 134,515,008) and the perplexity of the written file, loaded back, on the
//! 2017–2021 addresses (n_ctx 512, llama.cpp's scoring; `EVAL_CHUNKS` limits
//! the windows, `EVAL=0` skips it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tensorpress::compress::{
    calibration_windows, compress_llama, write_gguf, CompressOptions, GgufExportOptions,
    LayerFilter, Method, Progress,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::{GgmlQuantizer, GgmlRtn, GgmlType};
use tensorpress::quant::gptq::GgmlGptq;

/// SmolLM2-135M's parameter count, as the llama.cpp anchors count it.
const PARAMS: f64 = 134_515_008.0;

struct Recipe {
    name: String,
    options: CompressOptions,
    export: GgufExportOptions,
}

fn ggml_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s).ok_or(format!("unknown GGML type `{s}`"))
}

fn parse(s: &str) -> Result<Recipe, String> {
    let (method, rest) = s
        .split_once(':')
        .ok_or(format!("`{s}`: expected METHOD:TYPE[,PATTERN=TYPE...]"))?;
    let quantizer = |ty: GgmlType| -> Result<Method, String> {
        let q: Arc<dyn GgmlQuantizer> = match method {
            "gptq" => Arc::new(GgmlGptq::new(ty)),
            "rtn" => Arc::new(GgmlRtn::new(ty).with_importance()),
            m => return Err(format!("unknown method `{m}` (gptq, rtn)")),
        };
        Ok(Method::Ggml(q))
    };
    let mut items = rest.split(',');
    let default = ggml_type(items.next().unwrap_or(""))?;
    let mut options = CompressOptions::with_method(quantizer(default)?);
    let mut export = GgufExportOptions::default();
    for item in items {
        let (pattern, ty) = item
            .split_once('=')
            .ok_or(format!("`{item}`: expected PATTERN=TYPE"))?;
        let ty = ggml_type(ty)?;
        if pattern == "embd" {
            export = export.token_embedding_type(ty);
        } else {
            let filter = LayerFilter::new([pattern], ["lm_head"]).map_err(|e| e.to_string())?;
            options = options.override_layers(filter, quantizer(ty)?);
        }
    }
    let name = s.replace([':', ',', '=', '*', '.'], "_").replace("__", "_");
    Ok(Recipe {
        name,
        options,
        export,
    })
}

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out_dir = PathBuf::from(
        args.next()
            .ok_or("usage: gguf_frontier OUT_DIR [RECIPE ...]")?,
    );
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = ["gptq:q4_0", "gptq:iq4_nl", "gptq:iq4_nl,*.down_proj=q3_k"]
            .map(String::from)
            .to_vec();
    }
    let recipes: Vec<Recipe> = names.iter().map(|n| parse(n)).collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&out_dir)?;
    let windows = env("CALIB_WINDOWS").unwrap_or(128);
    let evaluate = env("EVAL") != Some(0);

    let source_path = testdata::smollm2_gguf()?;
    let gguf = GgufFile::open(&source_path)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut ppl_config = PerplexityConfig::with_ctx(512);
    ppl_config.max_chunks = env("EVAL_CHUNKS");

    println!(
        "SmolLM2-135M-Instruct from {}; calibration (recipes that calibrate) {windows} × 512 \
         tokens of SOTU 1990–2009; perplexity of the written file on SOTU 2017–2021, n_ctx 512\n",
        source_path.display()
    );
    println!("| recipe | file | bits/weight | perplexity (ours) | compress s |");
    println!("|---|---|---|---|---|");
    // Recipes that differ only in `embd=` share one compression run.
    let mut last: Option<(String, tensorpress::compress::CompressReport, f64)> = None;
    for (recipe, name) in recipes.iter().zip(&names) {
        let key: Vec<&str> = name
            .split(',')
            .filter(|p| !p.starts_with("embd="))
            .collect();
        let key = key.join(",");
        if last.as_ref().is_none_or(|(k, _, _)| *k != key) {
            let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
            let t = Instant::now();
            let report = compress_llama(&mut model, &calib, &recipe.options, &mut |p| {
                if let Progress::Calibrating { block, blocks } = p {
                    eprint!("\r  {}: block {}/{}   ", recipe.name, block + 1, blocks);
                }
            })?;
            eprintln!();
            last = Some((key, report, t.elapsed().as_secs_f64()));
        }
        let (_, report, seconds) = last.as_ref().ok_or("no compression report")?;
        let path = out_dir.join(format!("{}.gguf", recipe.name));
        let summary = write_gguf(&gguf, report, &recipe.export, &path)?;
        let bpw = summary.file_bytes as f64 * 8.0 / PARAMS;
        let ppl = if evaluate {
            let file = GgufFile::open(&path)?;
            let back = LlamaModel::from_gguf(&file, LoadOptions::default())?;
            let r = perplexity(&back, &eval_tokens, &ppl_config, &mut |_, _| {})?;
            format!("{:.4} ± {:.4}", r.perplexity, r.uncertainty)
        } else {
            String::from("–")
        };
        println!(
            "| `{name}` | {} | {bpw:.3} | {ppl} | {seconds:.0} |",
            path.display(),
        );
    }
    Ok(())
}
