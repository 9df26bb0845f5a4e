//! The `tensorpress` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use tensorpress::models::bert::{cosine_similarity, SentenceEncoder};

use tensorpress::kvcache::{CacheSpec, Fp8Cache, Fp8Scales, KvCache};
use tensorpress::models::eval::{
    calibrate_kv_amax, perplexity, CausalLm, DecodeStyle, PerplexityConfig,
};
use tensorpress::models::llama::{CacheFactory, DecodeCache};
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::tensor::DType;

mod compress_cmd;
mod factorize_cmd;
mod generate_cmd;
mod inspect_cmd;
mod lossless_cmd;

/// Compress, evaluate, inspect and convert neural-network checkpoints.
#[derive(Debug, Parser)]
#[command(name = "tensorpress", version, about, long_about = None)]
struct Cli {
    /// Worker threads for matrix products (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Quantize a Llama model's linear layers (RTN, GPTQ; integer, NF4, MX,
    /// NVFP4 and FP8 formats) and write a compressed-tensors, GPTQ or
    /// dequantized checkpoint; or pack a folder losslessly (`--lossless`).
    Compress(Box<compress_cmd::CompressArgs>),
    /// Factorize every block projection of a Llama model into low-rank
    /// factors (truncated SVD, ASVD or SVD-LLM) with a given share of its
    /// parameters removed, and write a folder that eval and generate load.
    Factorize(factorize_cmd::FactorizeArgs),
    /// Evaluate a model: perplexity of a language model on text files, or
    /// sentence-embedding similarities for a BERT encoder.
    Eval(EvalArgs),
    /// Generate text from a prompt (greedy or top-p sampling) with a Llama
    /// model, its quantized layers running on the kernels.
    Generate(generate_cmd::GenerateArgs),
    /// List a checkpoint's tensors: dtype, shape, bytes, and bits per weight.
    Inspect(InspectArgs),
    /// Convert a checkpoint: a GGUF Llama model to a Hugging Face folder
    /// (query/key permutation undone), or a Hugging Face folder to another dtype.
    Convert(ConvertArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// The model: a `.gguf` file or a Hugging Face folder (Llama family or BERT).
    #[arg(long, short = 'm', value_name = "PATH")]
    model: PathBuf,
    /// Text file(s) to score; several are concatenated byte for byte in the
    /// order given (as `cat` does). Like llama-perplexity, one trailing newline
    /// of the whole text is dropped.
    #[arg(long, short = 'f', value_name = "FILE", num_args = 1..)]
    text: Vec<PathBuf>,
    /// Window length in tokens (llama-perplexity's `-c`).
    #[arg(long, short = 'c', default_value_t = 512, value_name = "TOKENS")]
    ctx: usize,
    /// Evaluate only the first N windows.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// Sentences to embed (BERT models); repeat the flag for several.
    #[arg(long, short = 's', value_name = "TEXT")]
    sentence: Vec<String>,
    /// A file with one sentence per line to embed (BERT models).
    #[arg(long, value_name = "FILE")]
    sentences: Option<PathBuf>,
    /// How a quantized Llama checkpoint's layers run: `off` dequantizes
    /// them to f32 on load; `f32` and `int8` run GGUF tensors (Q4_0, Q4_1,
    /// Q5_0, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K) and int4/int8
    /// compressed-tensors/GPTQ layers on the quantized kernels, with
    /// f32 activations or int8 ones (per block of 32, as llama.cpp).
    #[arg(long, value_enum, default_value_t = generate_cmd::KernelMode::Off)]
    kernels: generate_cmd::KernelMode,
    /// Decode-style perplexity through a KV cache: each window is prefilled
    /// --kv-chunk tokens at a time into a cache of this kind, and every token
    /// attends to the cached (dequantized) keys and values before it:
    /// `f32`, `f16`, `int8`, `fp8` (per-token scales), `fp8-static` (per-layer
    /// scales, with --kv-calib), `kivi-2`, `kivi-4`, `kivi-BITS-gGROUP-rRESIDUAL`,
    /// `gear-BITS-gGROUP-bBUFFER-rRANK-sOUTLIER_PERCENT`,
    /// `zipcache-HIGH-LOW-sSALIENT_PERCENT-cCHUNK-rRESIDUAL-pPROBE_PERCENT`, or eviction under a
    /// budget of a percentage of the tokens seen, a token count, a share of
    /// each step's attention (ZipVL) or a mean ratio decaying over layers
    /// (p-MoD): `streaming-p50-s4`, `h2o-p50-r50`, `snapkv-n512-w32-k7-s0`,
    /// `h2o-m95`, `h2o-d50-f5-c100`.
    #[arg(long, value_name = "SPEC", value_parser = |s: &str| s.parse::<CacheSpec>())]
    kv_cache: Option<CacheSpec>,
    /// Tokens per decoding step with --kv-cache.
    #[arg(
        long,
        default_value_t = 64,
        value_name = "TOKENS",
        requires = "kv_cache"
    )]
    kv_chunk: usize,
    /// With `--kv-cache fp8-static`: calibrate each layer's FP8 key and value
    /// scales (largest magnitude / 448) on the first 8 windows of this text
    /// (default: the scales of a checkpoint written with
    /// `compress --kv-cache-fp8`). With `--kv-cache kvquant-…`: calibrate
    /// KVQuant's per-channel key ranges and Fisher-weighted datatypes on the
    /// first 16 windows of 512 tokens of this text (required).
    #[arg(long, value_name = "FILE", requires = "kv_cache")]
    kv_calib: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A `.gguf` file, a `.safetensors` file, or a Hugging Face folder.
    path: PathBuf,
    /// Also print every metadata key and value (long arrays abbreviated).
    #[arg(long)]
    metadata: bool,
    /// Print only the summary, not one line per tensor.
    #[arg(long)]
    summary: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// The input: a `.gguf` Llama model or a Hugging Face folder.
    input: PathBuf,
    /// The output folder (created if missing).
    output: PathBuf,
    /// Dtype of the float tensors written: f32, f16 or bf16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: DType,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::parse(s).ok_or_else(|| format!("unknown dtype `{s}` (use f32, f16 or bf16)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Candle sizes its GEMM parallelism from RAYON_NUM_THREADS.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            eprintln!("warning: could not size the thread pool: {e}");
        }
    }
    let result = match cli.command {
        Command::Compress(args) => compress_cmd::run(*args),
        Command::Factorize(args) => factorize_cmd::run(args),
        Command::Eval(args) => eval(args),
        Command::Generate(args) => generate_cmd::run(args),
        Command::Inspect(args) => {
            inspect_cmd::run(&args.path, args.metadata, args.summary, args.json)
        }
        Command::Convert(args) => convert(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut shown = e.to_string();
            eprintln!("error: {shown}");
            // Print causes the messages above do not already include.
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                let text = s.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn bar(total: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    let style =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed_precise} (eta {eta})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    pb
}

/// What kind of model a path holds.
enum ModelKind {
    Llama,
    Bert,
}

fn model_kind(path: &Path) -> Result<ModelKind, Box<dyn std::error::Error>> {
    if !path.is_dir() {
        return Ok(ModelKind::Llama);
    }
    let config = path.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| {
        format!(
            "{}: {e} (a model folder needs a config.json)",
            config.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    match v.get("model_type").and_then(|t| t.as_str()) {
        Some("bert") => Ok(ModelKind::Bert),
        Some("llama") | Some("mistral") | None => Ok(ModelKind::Llama),
        Some(other) => Err(format!("model_type `{other}` is not supported (llama, bert)").into()),
    }
}

/// The files concatenated byte for byte, one trailing newline dropped (as
/// llama-perplexity reads its text).
fn read_text(files: &[PathBuf]) -> Result<String, Box<dyn std::error::Error>> {
    let mut bytes = Vec::new();
    for f in files {
        let b = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        bytes.extend_from_slice(&b);
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Ok(String::from_utf8(bytes).map_err(|e| format!("the text is not UTF-8: {e}"))?)
}

fn eval(args: EvalArgs) -> CliResult {
    match model_kind(&args.model)? {
        ModelKind::Bert => eval_embeddings(&args),
        ModelKind::Llama => eval_perplexity(&args),
    }
}

fn eval_perplexity(args: &EvalArgs) -> CliResult {
    if args.text.is_empty() {
        return Err("perplexity needs at least one --text FILE".into());
    }
    let text = read_text(&args.text)?;

    let t0 = Instant::now();
    let model = generate_cmd::load_model(&args.model, args.kernels, args.json)?;
    let tokenizer = if args.model.is_dir() {
        TextTokenizer::from_file(&args.model.join("tokenizer.json"))?
    } else {
        let gguf = tensorpress::io::gguf::GgufFile::open(&args.model)?;
        TextTokenizer::from_gguf(&gguf)?
    };
    let load_s = t0.elapsed().as_secs_f64();
    let tokens = tokenizer.encode(&text)?;
    let mut config = PerplexityConfig::with_ctx(args.ctx);
    config.max_chunks = args.chunks;
    let total = config
        .max_chunks
        .map_or(tokens.len() / args.ctx, |m| m.min(tokens.len() / args.ctx));
    let pb = bar(total, "perplexity");
    if args.json {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut cache_bytes = None;
    let report = match args.kv_cache {
        None => perplexity(&model, &tokens, &config, &mut |done, _| {
            pb.set_position(done as u64)
        })?,
        Some(spec) => {
            let factory: CacheFactory = match spec {
                CacheSpec::KvQuant(config) => {
                    let layers = kvquant_layers(args, &model, &tokenizer, &config)?;
                    let rotary = tensorpress::models::eval::model_rotary(&model);
                    Arc::new(move |block, heads, head_dim| {
                        let layer = layers.get(block).cloned().ok_or_else(|| {
                            tensorpress::kvcache::Error::Config {
                                field: "KVQuant calibration",
                                reason: format!("no calibration for block {block}"),
                            }
                        })?;
                        Ok(Box::new(tensorpress::kvcache::KvQuantCache::new(
                            heads, head_dim, config, rotary, layer,
                        )?) as Box<dyn KvCache>)
                    })
                }
                CacheSpec::Fp8Static => {
                    let scales = fp8_scales(args, &model, &tokenizer)?;
                    Arc::new(move |block, heads, head_dim| {
                        let s = scales.get(block).copied().unwrap_or(Fp8Scales::PerToken);
                        Ok(Box::new(Fp8Cache::new(heads, head_dim, s)?) as Box<dyn KvCache>)
                    })
                }
                _ => {
                    let layers = model.blocks().len();
                    Arc::new(move |block, heads, head_dim| {
                        spec.build_layer(block, layers, heads, head_dim)
                    })
                }
            };
            let new_cache = move || DecodeCache::compressed(factory.clone());
            let lm = DecodeStyle::new(&model, args.kv_chunk, &new_cache)?;
            let r = perplexity(&lm, &tokens, &config, &mut |done, _| {
                pb.set_position(done as u64)
            })?;
            cache_bytes = Some(lm.bytes_per_token());
            r
        }
    };
    pb.finish_and_clear();
    let tps = report.tokens_per_second(args.ctx);
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "perplexity": report.perplexity,
            "uncertainty": report.uncertainty,
            "mean_nll": report.mean_nll,
            "n_ctx": args.ctx,
            "chunks": report.chunks,
            "scored_tokens": report.scored_tokens,
            "text_tokens": report.text_tokens,
            "seconds": report.seconds,
            "load_seconds": load_s,
            "kernels": format!("{:?}", args.kernels).to_lowercase(),
            "tokens_per_second": tps,
            "running": report.running,
            "kv_cache": args.kv_cache.map(|c| c.to_string()),
            "kv_cache_bytes_per_token": cache_bytes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "perplexity {:.4} ± {:.4}  ({} chunks of {} tokens, {} scored, text {} tokens)",
            report.perplexity,
            report.uncertainty,
            report.chunks,
            args.ctx,
            report.scored_tokens,
            report.text_tokens
        );
        if let (Some(spec), Some(bytes)) = (args.kv_cache, cache_bytes) {
            println!(
                "kv cache {spec}: {bytes:.0} bytes per token (all blocks, keys and values) \
                 at the end of a window, decoding {} tokens per step",
                args.kv_chunk
            );
        }
        println!(
            "time: load {:.1} s, eval {:.1} s, {:.0} tokens/s",
            load_s, report.seconds, tps
        );
    }
    Ok(())
}

/// KVQuant's per-block datatypes, calibrated on `--kv-calib`'s first 16
/// windows of 512 tokens with Fisher weights from a trainable copy of the
/// model.
fn kvquant_layers(
    args: &EvalArgs,
    model: &tensorpress::models::llama::LlamaModel,
    tokenizer: &TextTokenizer,
    config: &tensorpress::kvcache::KvQuantConfig,
) -> Result<Vec<Arc<tensorpress::kvcache::KvQuantLayer>>, Box<dyn std::error::Error>> {
    let Some(path) = args.kv_calib.as_ref() else {
        return Err(
            "--kv-cache kvquant-… calibrates per-layer datatypes on the model: give \
                    --kv-calib FILE (a text unlike the evaluation text)"
                .into(),
        );
    };
    let windows = kv_calib_windows(model, tokenizer, path, 511, 16)?;
    let t = Instant::now();
    // Fisher weights need gradients: a trainable copy of the model.
    let trainable = if config.fisher {
        Some(tensorpress::convert::load_llama(
            &args.model,
            LoadOptions::trainable(),
        )?)
    } else {
        None
    };
    let pb = bar(windows.len(), "kvquant calibration");
    if args.json {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let layers = tensorpress::models::eval::calibrate_kvquant(
        trainable.as_ref().unwrap_or(model),
        &windows,
        config,
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();
    if !args.json {
        eprintln!(
            "kvquant: datatypes calibrated on {} windows of {} in {:.1} s ({})",
            windows.len(),
            path.display(),
            t.elapsed().as_secs_f64(),
            if config.fisher {
                "Fisher weights"
            } else {
                "unweighted"
            }
        );
    }
    Ok(layers.into_iter().map(Arc::new).collect())
}

/// Per-layer static FP8 scales: from `--kv-calib`'s first 8 windows, or the
/// `kv_cache_scheme` scales of a compressed-tensors checkpoint folder.
fn fp8_scales(
    args: &EvalArgs,
    model: &tensorpress::models::llama::LlamaModel,
    tokenizer: &TextTokenizer,
) -> Result<Vec<Fp8Scales>, Box<dyn std::error::Error>> {
    let Some(path) = args.kv_calib.as_ref() else {
        let stored = checkpoint_kv_scales(&args.model, model.params().num_layers)?;
        return stored.ok_or_else(|| {
            "--kv-cache fp8-static calibrates per-layer scales: give --kv-calib FILE, a \
             checkpoint with a kv_cache_scheme (compress --kv-cache-fp8), or use fp8, which \
             scales each token"
                .into()
        });
    };
    let windows = kv_calib_windows(model, tokenizer, path, args.ctx.saturating_sub(1), 8)?;
    let amax = calibrate_kv_amax(model, &windows, args.kv_chunk)?;
    if !args.json {
        let (k, v) = amax
            .iter()
            .fold((0f32, 0f32), |(k, v), a| (k.max(a.key), v.max(a.value)));
        eprintln!(
            "fp8-static: scales calibrated on {} windows of {}; largest |key| {k:.2}, |value| {v:.2}",
            windows.len(),
            path.display()
        );
    }
    Ok(amax
        .iter()
        .map(|a| Fp8Scales::from_amax(a.key, a.value))
        .collect())
}

/// The static FP8 KV-cache scales a compressed-tensors checkpoint folder
/// declares (`kv_cache_scheme`), one per block; `None` when it has none.
fn checkpoint_kv_scales(
    path: &Path,
    blocks: usize,
) -> Result<Option<Vec<Fp8Scales>>, Box<dyn std::error::Error>> {
    let quantized = path.is_dir()
        && std::fs::read_to_string(path.join("config.json"))
            .is_ok_and(|c| c.contains("\"kv_cache_scheme\""));
    if !quantized {
        return Ok(None);
    }
    let ckpt = tensorpress::io::import::QuantizedCheckpoint::open(path)?;
    let stored = ckpt.kv_cache_scales();
    if stored.is_empty() {
        return Ok(None);
    }
    let scales = (0..blocks)
        .map(|b| {
            let name = format!("model.layers.{b}.self_attn");
            let &(key, value) = stored.get(&name).ok_or_else(|| {
                format!("{}: kv_cache_scheme has no {name}.k_scale", path.display())
            })?;
            Ok(Fp8Scales::Static { key, value })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(scales))
}

/// The first `count` windows of `len` tokens of `path` (each after the model's
/// BOS, as evaluation windows start): the KV-cache calibration text.
pub(crate) fn kv_calib_windows(
    model: &tensorpress::models::llama::LlamaModel,
    tokenizer: &TextTokenizer,
    path: &Path,
    len: usize,
    count: usize,
) -> Result<Vec<Vec<u32>>, Box<dyn std::error::Error>> {
    let tokens = tokenizer.encode(&read_text(std::slice::from_ref(&path.to_path_buf()))?)?;
    let len = len.max(1);
    let windows: Vec<Vec<u32>> = tokens
        .chunks_exact(len)
        .take(count)
        .map(|w| {
            model
                .bos_token_id()
                .into_iter()
                .chain(w.iter().copied())
                .collect()
        })
        .collect();
    if windows.is_empty() {
        return Err(format!(
            "{}: fewer than {len} tokens to calibrate the KV cache on",
            path.display()
        )
        .into());
    }
    Ok(windows)
}

fn eval_embeddings(args: &EvalArgs) -> CliResult {
    let mut sentences = args.sentence.clone();
    if let Some(f) = &args.sentences {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        sentences.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    if sentences.is_empty() {
        return Err(
            "a BERT model embeds sentences: give --sentence TEXT or --sentences FILE".into(),
        );
    }
    let encoder = SentenceEncoder::from_dir(&args.model, LoadOptions::default())?;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let embeddings = encoder.embed(&refs)?;
    let secs = t0.elapsed().as_secs_f64();
    let n = embeddings.len();
    let sims: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| cosine_similarity(&embeddings[i], &embeddings[j]))
                .collect()
        })
        .collect();
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "sentences": sentences,
            "embeddings": embeddings,
            "cosine_similarity": sims,
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} sentences, {} dimensions, {:.1} ms per sentence",
        n,
        embeddings.first().map_or(0, Vec::len),
        secs * 1e3 / n as f64
    );
    for (i, s) in sentences.iter().enumerate() {
        let short: String = s.chars().take(60).collect();
        println!("[{i}] {short}");
    }
    print!("cosine ");
    for j in 0..n {
        print!("{:>7}", format!("[{j}]"));
    }
    println!();
    for (i, row) in sims.iter().enumerate() {
        print!("{:>6} ", format!("[{i}]"));
        for v in row {
            print!("{v:>7.4}");
        }
        println!();
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> CliResult {
    let t0 = Instant::now();
    let pb = bar(0, "converting");
    let mut progress = |done: usize, total: usize| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let report = if args.input.is_dir() {
        tensorpress::convert::hf_change_dtype(&args.input, &args.output, args.dtype, &mut progress)?
    } else {
        let gguf = tensorpress::io::gguf::GgufFile::open(&args.input)?;
        tensorpress::convert::gguf_to_hf(&gguf, &args.output, args.dtype, &mut progress)?
    };
    pb.finish_and_clear();
    println!(
        "wrote {} tensors ({:.1} MB of {} data) to {} in {:.1} s: {}",
        report.tensors,
        report.tensor_bytes as f64 / 1e6,
        args.dtype,
        args.output.display(),
        t0.elapsed().as_secs_f64(),
        report.files.join(", ")
    );
    Ok(())
}
