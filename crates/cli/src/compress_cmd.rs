//! `tensorpress compress`: quantize a Llama model's linear layers and write a
//! checkpoint that transformers/vLLM (compressed-tensors, GPTQ) load.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tensorpress::compress::{
    calibration_windows, compress_llama, parse_scheme, write_hf_checkpoint, ExportFormat,
    ExportOptions, LayerFilter, Progress, Recipe,
};
use tensorpress::compress::{write_gguf, GgufExportOptions};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::GgmlType;

use crate::{bar, read_text, CliResult};

#[derive(Debug, Args)]
pub(crate) struct CompressArgs {
    /// The model: a `.gguf` Llama file or a Hugging Face folder.
    #[arg(long, short = 'm', value_name = "PATH")]
    model: PathBuf,
    /// The method, e.g. `gptq-w4-g64`, `gptq-w4-g128-act`, `rtn-w8-ch`,
    /// `rtnmse-w4-g64-asym`, `rtn-nf4`, `rtn-mxfp4`, `rtn-nvfp4`, `rtn-fp8_e4m3-ch`.
    #[arg(
        long,
        short = 's',
        value_name = "SCHEME",
        required_unless_present = "recipe"
    )]
    scheme: Option<String>,
    /// A TOML recipe (default scheme, layer patterns, per-layer overrides,
    /// calibration size) instead of --scheme/--include/--exclude.
    #[arg(long, short = 'r', value_name = "FILE", conflicts_with_all = ["scheme", "include", "exclude"])]
    recipe: Option<PathBuf>,
    /// Calibration text file(s), concatenated (needed by GPTQ).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    calib: Vec<PathBuf>,
    /// Calibration windows, spread evenly over the text (default 128, or the recipe's).
    #[arg(long, value_name = "N")]
    calib_windows: Option<usize>,
    /// Tokens per calibration window (default 512, or the recipe's).
    #[arg(long, value_name = "TOKENS")]
    calib_len: Option<usize>,
    /// Quantize only layers matching one of these glob patterns (`*` wildcard,
    /// Hugging Face module names, e.g. `model.layers.*.mlp.*`).
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Leave layers matching these patterns in full precision (default: `lm_head`).
    #[arg(long, value_name = "PATTERN")]
    exclude: Option<Vec<String>>,
    /// Output: compressed-tensors, gptq or dequantized (a folder), or gguf
    /// (a file; needs a GGUF model and GGML schemes such as `gptq-q4_0`,
    /// `ggml-q4_k-imatrix`).
    #[arg(long, default_value = "compressed-tensors", value_name = "FORMAT")]
    format: String,
    /// GGUF output: re-encode the token embedding as this GGML type
    /// (llama-quantize's --token-embedding-type); default: copy it.
    #[arg(long, value_name = "TYPE")]
    token_embedding_type: Option<String>,
    /// Float type of scales and unquantized tensors: f16, bf16 or f32.
    #[arg(long, default_value = "f16", value_parser = parse_float_dtype)]
    dtype: FloatDType,
    /// The output folder (a `.gguf` file for --format gguf).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
}

fn parse_float_dtype(s: &str) -> Result<FloatDType, String> {
    match s {
        "f16" | "float16" => Ok(FloatDType::F16),
        "bf16" | "bfloat16" => Ok(FloatDType::BF16),
        "f32" | "float32" => Ok(FloatDType::F32),
        other => Err(format!("unknown float type `{other}` (f16, bf16, f32)")),
    }
}

pub(crate) fn run(args: CompressArgs) -> CliResult {
    let gguf_out = args.format == "gguf";
    let format: Option<ExportFormat> = if gguf_out {
        None
    } else {
        Some(args.format.parse()?)
    };
    let embd_type = match &args.token_embedding_type {
        None => None,
        Some(t) => Some(
            GgmlType::from_name(t)
                .filter(|t| t.can_quantize())
                .ok_or_else(|| {
                    format!("--token-embedding-type: `{t}` is not a GGML type tensorpress encodes")
                })?,
        ),
    };
    if gguf_out && args.model.is_dir() {
        return Err(
            "--format gguf needs a .gguf model (its metadata and tokenizer are carried over)"
                .into(),
        );
    }
    let (options, label, windows, len) = match (&args.recipe, &args.scheme) {
        (Some(path), _) => {
            let r = Recipe::from_file(path)?;
            (r.options, r.label, r.windows, r.tokens)
        }
        (None, Some(s)) => {
            let scheme = parse_scheme(s)?;
            let mut options = scheme.options();
            let exclude = args
                .exclude
                .clone()
                .unwrap_or_else(|| vec!["lm_head".into()]);
            options.targets = LayerFilter::new(args.include.clone(), exclude)?;
            (options, scheme.label, 128, 512)
        }
        (None, None) => return Err("give --scheme SCHEME or --recipe FILE".into()),
    };
    let windows = args.calib_windows.unwrap_or(windows);
    let len = args.calib_len.unwrap_or(len);
    let calibrates = options.smoothing.is_some()
        || options.method.calibrates()
        || options.overrides.iter().any(|(_, m)| m.calibrates());
    if calibrates && args.calib.is_empty() {
        return Err(format!(
            "{label} calibrates on text: give --calib FILE (e.g. a few hundred KB of text like the model's training data)"
        )
        .into());
    }

    if args.out.is_file() || std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty: remove it or choose another --out",
            args.out.display()
        )
        .into());
    }

    let t0 = Instant::now();
    let mut model = tensorpress::convert::load_llama(&args.model, LoadOptions::default())?;
    let tokenizer = if args.model.is_dir() {
        TextTokenizer::from_file(&args.model.join("tokenizer.json"))?
    } else {
        let gguf = GgufFile::open(&args.model)?;
        TextTokenizer::from_gguf(&gguf)?
    };
    let load_s = t0.elapsed().as_secs_f64();
    let calibration = if calibrates {
        let text = read_text(&args.calib)?;
        let tokens = tokenizer.encode(&text)?;
        calibration_windows(&tokens, windows, len)?
    } else {
        Vec::new()
    };
    eprintln!(
        "{}: {label} on {}{}",
        args.model.display(),
        if args.include.is_empty() {
            "the targeted linear layers".to_string()
        } else {
            args.include.join(", ")
        },
        if calibration.is_empty() {
            String::new()
        } else {
            format!(", calibrating on {} × {} tokens", calibration.len(), len)
        }
    );
    let blocks = model.params().num_layers;
    let pb = bar(blocks, "calibrating");
    let t1 = Instant::now();
    let report = compress_llama(&mut model, &calibration, &options, &mut |p| match p {
        Progress::Calibrating { block, .. } => pb.set_position(block as u64),
        Progress::Layer(l) => pb.println(format!(
            "{:<40} {:>5}×{:<5} out-err {:>9} w-err {:.2e} {:.3} bits {:.2} s",
            l.name,
            l.shape[0],
            l.shape[1],
            l.output_error
                .map_or("–".to_string(), |e| format!("{e:.2e}")),
            l.weight_error,
            l.bits_per_weight,
            l.seconds
        )),
    })?;
    pb.finish_and_clear();
    let compress_s = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let (bytes, bits_per_param) = match format {
        Some(format) => {
            let export = ExportOptions {
                format,
                dtype: args.dtype,
            };
            let w = write_hf_checkpoint(&args.model, &report, &export, &args.out)?;
            (w.tensor_bytes, w.bits_per_weight())
        }
        None => {
            let source = GgufFile::open(&args.model)?;
            let opts = GgufExportOptions {
                token_embedding_type: embd_type,
                ..Default::default()
            };
            let w = write_gguf(&source, &report, &opts, &args.out)?;
            (w.file_bytes, w.bits_per_weight())
        }
    };
    let write_s = t2.elapsed().as_secs_f64();
    let (qbits, qparams) = report.layers.iter().fold((0.0, 0.0), |(b, p), l| {
        let n = (l.shape[0] * l.shape[1]) as f64;
        (b + l.bits_per_weight * n, p + n)
    });
    let tm = &report.timings;
    println!(
        "{} layers quantized, {:.3} bits per weight in them; checkpoint {:.1} MiB, {:.2} bits per parameter overall",
        report.layers.len(),
        qbits / qparams.max(1.0),
        bytes as f64 / (1 << 20) as f64,
        bits_per_param
    );
    println!(
        "time: load {load_s:.1} s, compress {compress_s:.1} s (forward {:.1}, hessian {:.1}, solve {:.1}), write {write_s:.1} s",
        tm.forward, tm.hessian, tm.solve
    );
    println!("wrote {}", args.out.display());
    Ok(())
}
