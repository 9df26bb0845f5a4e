//! `tensorpress generate`: text from a prompt, greedy or top-p sampled, with
//! the quantized layers on the kernels.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tensorpress::compress::{load_llama_kernels, KernelReport};
use tensorpress::kvcache::CacheSpec;
use tensorpress::models::linear::KernelActivations;
use tensorpress::models::llama::{generate_with, DecodeCache, LlamaModel, Sampling};
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

use crate::CliResult;

/// How a quantized checkpoint's layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelMode {
    /// Dequantize every layer to f32 on load and use f32 matrix products.
    Off,
    /// Quantized kernels with f32 activations (the dequantized model's
    /// results, up to summation order).
    F32,
    /// Quantized kernels with activations quantized to int8 per block of 32
    /// (llama.cpp's CPU scheme; fastest decoding).
    Int8,
}

impl KernelMode {
    fn activations(self) -> Option<KernelActivations> {
        match self {
            KernelMode::Off => None,
            KernelMode::F32 => Some(KernelActivations::F32),
            KernelMode::Int8 => Some(KernelActivations::Int8),
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The model: a `.gguf` file or a Hugging Face folder (Llama family;
    /// compressed-tensors and GPTQ folders included).
    #[arg(long, short = 'm', value_name = "PATH")]
    model: PathBuf,
    /// The prompt.
    #[arg(long, short = 'p', value_name = "TEXT", conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Wrap the prompt as one user turn of the model's ChatML chat template
    /// (`<|im_start|>user … <|im_end|>`, as SmolLM2-Instruct expects) and
    /// stop at `<|im_end|>`.
    #[arg(long)]
    chat: bool,
    /// New tokens at most.
    #[arg(long, short = 'n', default_value_t = 128, value_name = "N")]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    temperature: f32,
    /// Nucleus sampling: draw from the most likely tokens that together
    /// hold this much probability (1 keeps all).
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    top_p: f32,
    /// Seed of the sampling draws.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How quantized layers run (GGUF Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q4_K,
    /// Q5_K, Q6_K tensors and int4/int8 compressed-tensors/GPTQ layers have
    /// kernels; others stay f32).
    #[arg(long, value_enum, default_value_t = KernelMode::F32)]
    kernels: KernelMode,
    /// Keep the keys and values in a compressed cache: `f16`, `int8`,
    /// `kivi-2`, `kivi-4`, `kivi-BITS-gGROUP-rRESIDUAL`, `gear-2-r4`,
    /// `zipcache-4-2-s20`, or an
    /// evicting cache such as `h2o-n512` or `streaming-n256-s4` (default:
    /// f32).
    #[arg(long, value_name = "SPEC", value_parser = |s: &str| s.parse::<CacheSpec>())]
    kv_cache: Option<CacheSpec>,
    /// Print the result as JSON on stdout instead of streaming the text.
    #[arg(long)]
    json: bool,
}

/// Loads a Llama model, on the kernels unless `mode` is off; reports what
/// runs where on stderr.
pub fn load_model(
    path: &Path,
    mode: KernelMode,
    quiet: bool,
) -> Result<LlamaModel, Box<dyn std::error::Error>> {
    let Some(activations) = mode.activations() else {
        return Ok(tensorpress::convert::load_llama(
            path,
            LoadOptions::default(),
        )?);
    };
    let (model, report) = load_llama_kernels(path, LoadOptions::default(), activations)?;
    if !quiet {
        print_kernel_report(&report, model.linears().len());
    }
    Ok(model)
}

fn print_kernel_report(report: &KernelReport, layers: usize) {
    eprintln!(
        "kernels: {} of {layers} linear layers run their quantized weights directly",
        report.attached.len()
    );
    // One line per distinct reason, with a count: 200 identical lines help nobody.
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for (_, why) in &report.skipped {
        let key = why
            .split_once(": ")
            .map_or(why.as_str(), |(_, r)| r)
            .to_string();
        match reasons.iter_mut().find(|(r, _)| *r == key) {
            Some((_, n)) => *n += 1,
            None => reasons.push((key, 1)),
        }
    }
    for (why, n) in reasons {
        eprintln!("  {n} stay f32: {why}");
    }
}

fn tokenizer_for(path: &Path) -> Result<TextTokenizer, Box<dyn std::error::Error>> {
    Ok(if path.is_dir() {
        TextTokenizer::from_file(&path.join("tokenizer.json"))?
    } else {
        let gguf = tensorpress::io::gguf::GgufFile::open(path)?;
        TextTokenizer::from_gguf(&gguf)?
    })
}

pub fn run(args: GenerateArgs) -> CliResult {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?
        }
        (None, None) => return Err("give a prompt: --prompt TEXT or --prompt-file FILE".into()),
    };
    let sampling = Sampling::top_p(args.temperature, args.top_p, args.seed);
    sampling.validate()?;

    let t0 = Instant::now();
    let model = load_model(&args.model, args.kernels, args.json)?;
    let tokenizer = tokenizer_for(&args.model)?;
    let load_s = t0.elapsed().as_secs_f64();

    let mut stop: Vec<u32> = model.params().eos_token_id.into_iter().collect();
    let text = if args.chat {
        let end = tokenizer
            .token_to_id("<|im_end|>")
            .ok_or("--chat needs a ChatML model (its vocabulary has no `<|im_end|>` token)")?;
        stop.push(end);
        format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
    } else {
        prompt
    };
    let mut tokens = Vec::new();
    if model.params().add_bos {
        tokens.extend(model.params().bos_token_id);
    }
    tokens.extend(tokenizer.encode_with_special(&text)?);

    // Stream the text: decode everything so far and print what is new (a
    // token can end in the middle of a UTF-8 character).
    let mut new_tokens = Vec::new();
    let mut printed = 0usize;
    let mut stdout = std::io::stdout().lock();
    let cache = match args.kv_cache {
        Some(spec) => {
            let layers = model.blocks().len();
            DecodeCache::compressed(Arc::new(move |block, heads, head_dim| {
                spec.build_layer(block, layers, heads, head_dim)
            }))
        }
        None => DecodeCache::new(),
    };
    let generation = generate_with(
        &model,
        cache,
        &tokens,
        args.max_tokens,
        sampling,
        &stop,
        &mut |t| {
            if args.json {
                return true;
            }
            new_tokens.push(t);
            if let Ok(text) = tokenizer.decode(&new_tokens, true) {
                if text.len() > printed
                    && text.is_char_boundary(printed)
                    && !text.ends_with('\u{fffd}')
                {
                    let _ = write!(stdout, "{}", &text[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
            }
            true
        },
    )?;
    let text = tokenizer.decode(&generation.tokens, true)?;
    if args.json {
        let v = serde_json::json!({
            "model": args.model,
            "prompt_tokens": generation.prompt_tokens,
            "kv_cache": args.kv_cache.map(|c| c.to_string()),
            "tokens": generation.tokens,
            "text": text,
            "stopped": generation.stopped,
            "load_seconds": load_s,
            "prompt_tokens_per_second": generation.prompt_tokens_per_second(),
            "decode_tokens_per_second": generation.decode_tokens_per_second(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if text.len() > printed && text.is_char_boundary(printed) {
        write!(stdout, "{}", &text[printed..])?;
    }
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens at {:.1} tokens/s; {} new tokens at {:.1} tokens/s{}; load {:.1} s",
        generation.prompt_tokens,
        generation.prompt_tokens_per_second(),
        generation.tokens.len(),
        generation.decode_tokens_per_second(),
        if generation.stopped {
            " (stop token)"
        } else {
            ""
        },
        load_s
    );
    Ok(())
}
