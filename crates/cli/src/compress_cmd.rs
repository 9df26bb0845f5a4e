//! `tensorpress compress`: quantize a Llama model's linear layers and write a
//! checkpoint that transformers/vLLM (compressed-tensors, GPTQ) load.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tensorpress::codecs::grad::{Communicator, ThreadComm};
use tensorpress::compress::{
    calibrate_kv_cache_scales, calibration_windows, compress_llama_on, parse_scheme,
    write_hf_checkpoint, write_peft_adapter, Compensation, ExportFormat, ExportOptions,
    LayerFilter, Progress, Recipe,
};
use tensorpress::compress::{write_gguf, GgufExportOptions};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::GgmlType;

use tensorpress::mixed::{evopress_llama, profile_llama, Measure, ProfileOptions, ProfileProgress};
use tensorpress::sensitivity::{
    allocate, sensitivity_svg, sensitivity_table, AllocateOptions, Budget, EvoOptions, Stage,
};

use crate::{bar, read_text, CliResult};

#[derive(Debug, Args)]
pub(crate) struct CompressArgs {
    /// The model: a `.gguf` Llama file or a Hugging Face folder.
    #[arg(long, short = 'm', value_name = "PATH")]
    model: PathBuf,
    /// The method, e.g. `gptq-w4-g64`, `gptq-w4-g128-act`, `rtn-w8-ch`,
    /// `rtnmse-w4-g64-asym`, `rtn-nf4`, `rtn-mxfp4`, `rtn-nvfp4`, `rtn-fp8_e4m3-ch`;
    /// or pruning: `magnitude-50`, `wanda-2:4`, `sparsegpt-50`, `sparsegpt-4:8`
    /// (written as compressed-tensors `sparse-bitmask`, or dense with
    /// `--format dequantized`), `sparsegpt-50-w4` (joint pruning and int4).
    #[arg(
        long,
        short = 's',
        value_name = "SCHEME",
        required_unless_present_any = ["recipe", "target_bpw", "lossless"]
    )]
    scheme: Option<String>,
    /// Pack the folder's `model.safetensors` losslessly into `model.tpz`
    /// (exponents entropy-coded, every tensor bit-exact) and copy its other
    /// files to --out; `eval` and the loaders read the result like the original.
    #[arg(
        long,
        conflicts_with_all = ["scheme", "recipe", "target_bpw", "compensate", "kv_cache_fp8", "calib"]
    )]
    lossless: bool,
    /// Mixed precision: profile every layer under each of --candidates and
    /// give each layer the candidate that minimizes the estimated loss
    /// increase with the average bits per weight of the quantized layers
    /// (codes, scales, zero points) at most this (an exact knapsack, then
    /// EvoPress with --evopress).
    #[arg(long, value_name = "BITS", conflicts_with_all = ["scheme", "recipe"])]
    target_bpw: Option<f64>,
    /// --target-bpw: comma-separated candidate schemes (default: GPTQ
    /// act-order W2 g64, W3 per channel/g128/g64, W4 per channel/g128/g64,
    /// W5 g128, W8 g128; for --format gguf: GPTQ onto Q3_K, IQ4_NL, Q4_K, Q5_0,
    /// Q5_K, Q6_K, Q8_0 — a layer only takes the types whose blocks fit its rows).
    #[arg(long, value_name = "LIST", requires = "target_bpw")]
    candidates: Option<String>,
    /// --target-bpw: the sensitivity measure: fisher-output, fisher-weight
    /// or output-error.
    #[arg(long, default_value = "fisher-output", value_name = "MEASURE")]
    measure: String,
    /// --target-bpw: calibration windows (evenly spaced) for the Fisher.
    #[arg(long, default_value_t = 8, value_name = "N")]
    fisher_windows: usize,
    /// --target-bpw: refine the knapsack plan with this many EvoPress
    /// generations (KL divergence to the base model on 8 calibration windows).
    #[arg(long, default_value_t = 0, value_name = "GENERATIONS")]
    evopress: usize,
    /// --target-bpw: EvoPress's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// --target-bpw: write the plan as a recipe (TOML) that `--recipe` reruns.
    #[arg(long, value_name = "FILE", requires = "target_bpw")]
    plan_out: Option<PathBuf>,
    /// --target-bpw: write the per-layer sensitivity table (Markdown) and
    /// chart (SVG) into this folder.
    #[arg(long, value_name = "DIR", requires = "target_bpw")]
    report: Option<PathBuf>,
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
    /// Low-rank compensation after compression: `eora:RANK` (EoRA, fitted to
    /// the calibration activations; needs --calib) or `lorc:RANK` (SVD of the
    /// error). The adapters go to --adapter-out as a PEFT LoRA folder.
    #[arg(long, value_name = "METHOD:RANK", value_parser = parse_compensation, requires = "adapter_out")]
    compensate: Option<Compensation>,
    /// Calibrate static FP8 (E4M3) KV-cache scales on the compressed model
    /// (largest key and value magnitude / 448 per layer, over 8 windows of
    /// --kv-calib or --calib) and declare them in the compressed-tensors
    /// config (`kv_cache_scheme`, `self_attn.k_scale`/`v_scale`), which vLLM
    /// uses with `--kv-cache-dtype fp8`.
    #[arg(long)]
    kv_cache_fp8: bool,
    /// The text --kv-cache-fp8 calibrates on (default: the first --calib file).
    #[arg(long, value_name = "FILE", requires = "kv_cache_fp8")]
    kv_calib: Option<PathBuf>,
    /// Where --compensate writes its PEFT LoRA adapter folder (load it onto
    /// the `--format dequantized` model with peft).
    #[arg(long, value_name = "DIR", requires = "compensate")]
    adapter_out: Option<PathBuf>,
}

fn parse_compensation(s: &str) -> Result<Compensation, String> {
    let (method, rank) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: expected METHOD:RANK, e.g. eora:32"))?;
    let rank: usize = rank
        .parse()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| format!("`{rank}`: the rank must be a positive integer"))?;
    match method {
        "eora" => Ok(Compensation::eora(rank)),
        "lorc" => Ok(Compensation::lorc(rank)),
        other => Err(format!("unknown compensation `{other}`: eora or lorc")),
    }
}

pub(crate) fn parse_float_dtype(s: &str) -> Result<FloatDType, String> {
    match s {
        "f16" | "float16" => Ok(FloatDType::F16),
        "bf16" | "bfloat16" => Ok(FloatDType::BF16),
        "f32" | "float32" => Ok(FloatDType::F32),
        other => Err(format!("unknown float type `{other}` (f16, bf16, f32)")),
    }
}

pub(crate) fn run(args: CompressArgs) -> CliResult {
    if args.lossless {
        return crate::lossless_cmd::run(&args.model, &args.out);
    }
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
        _ if args.target_bpw.is_some() => {
            let r = plan(&args, gguf_out)?;
            (r.options, r.label, r.windows, r.tokens)
        }
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
    let mut options = options;
    options.compensation = args.compensate;
    let label = match args.compensate {
        Some(c) => format!("{label} + {}", c.label()),
        None => label,
    };
    let windows = args.calib_windows.unwrap_or(windows);
    let len = args.calib_len.unwrap_or(len);
    let calibrates = options.smoothing.is_some()
        || options.compensation.is_some_and(|c| c.calibrates())
        || options.method.calibrates()
        || options.overrides.iter().any(|(_, m)| m.calibrates());
    if calibrates && args.calib.is_empty() {
        return Err(format!(
            "{label} calibrates on text: give --calib FILE (e.g. a few hundred KB of text like the model's training data)"
        )
        .into());
    }

    let kv_calib = match (args.kv_cache_fp8, &args.kv_calib, args.calib.first()) {
        (false, _, _) => None,
        (true, _, _) if format != Some(ExportFormat::CompressedTensors) => {
            return Err(format!(
                "--kv-cache-fp8 declares compressed-tensors' kv_cache_scheme: use --format \
                 compressed-tensors, not {}",
                args.format
            )
            .into())
        }
        (true, Some(path), _) | (true, None, Some(path)) => Some(path.clone()),
        (true, None, None) => {
            return Err(
                "--kv-cache-fp8 calibrates on text: give --kv-calib FILE or --calib FILE".into(),
            )
        }
    };
    if args.out.is_file() || std::fs::read_dir(&args.out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty: remove it or choose another --out",
            args.out.display()
        )
        .into());
    }

    if let Some(dir) = &args.adapter_out {
        if dir.is_file() || std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(format!(
                "{} exists and is not empty: remove it or choose another --adapter-out",
                dir.display()
            )
            .into());
        }
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
    let comm = ranks()?;
    let rank0 = comm.rank() == 0;
    if comm.size() > 1 && rank0 {
        eprintln!(
            "data-parallel over {} MPI ranks: each calibrates on its share of the windows",
            comm.size()
        );
    }
    let pb = if rank0 {
        bar(blocks, "calibrating")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let t1 = Instant::now();
    let report = compress_llama_on(
        &mut model,
        &calibration,
        &options,
        &*comm,
        &mut |p| match p {
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
            Progress::Gradients { .. } => {}
        },
    )?;
    pb.finish_and_clear();
    if !rank0 {
        // Every rank holds the same report; rank 0 writes it.
        return Ok(());
    }
    let mut report = report;
    if let Some(path) = &kv_calib {
        let windows = crate::kv_calib_windows(&model, &tokenizer, path, len, 8)?;
        report.kv_cache_scales = calibrate_kv_cache_scales(&model, &windows, 64)?;
        let (k, v) = report
            .kv_cache_scales
            .values()
            .fold((0f32, 0f32), |(k, v), s| (k.max(s.0), v.max(s.1)));
        eprintln!(
            "FP8 KV-cache scales calibrated on {} windows of {}; largest k_scale {k:.4}, v_scale {v:.4}",
            windows.len(),
            path.display()
        );
    }
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
    if let Some(dir) = &args.adapter_out {
        let files = write_peft_adapter(&args.model, &report, args.dtype, dir)?;
        eprintln!(
            "wrote the PEFT LoRA adapter {} ({} files)",
            dir.display(),
            files.len()
        );
    }
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

/// The ranks of this run: MPI's world when started by `mpirun` (and built with
/// the `mpi` feature), else this process alone.
fn ranks() -> Result<Box<dyn Communicator>, Box<dyn std::error::Error>> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    #[cfg(feature = "mpi")]
    if launched {
        return Ok(Box::new(tensorpress::codecs::grad::Mpi::init()?));
    }
    #[cfg(not(feature = "mpi"))]
    if launched && std::env::var("OMPI_COMM_WORLD_SIZE").is_ok_and(|n| n != "1") {
        return Err(
            "started by mpirun with several ranks, but this tensorpress was built \
                    without MPI: build it with `cargo build --release -p tensorpress-cli \
                    --features mpi`"
                .into(),
        );
    }
    Ok(Box::new(ThreadComm::group(1)?.remove(0)))
}

const CANDIDATES: &str = "gptq-w2-g64-act,gptq-w3-ch-act,gptq-w3-g128-act,gptq-w3-g64-act,\
gptq-w4-ch-act,gptq-w4-g128-act,gptq-w4-g64-act,gptq-w5-g128-act,gptq-w8-g128-act";
// K-quants take rows of a multiple of 256 weights; the 32-block types cover
// the other layers (each layer chooses among the candidates that fit it).
const GGUF_CANDIDATES: &str =
    "gptq-q3_k,gptq-iq4_nl,gptq-q4_k,gptq-q5_0,gptq-q5_k,gptq-q6_k,gptq-q8_0";

/// `--target-bpw`: profile, allocate, and return the plan as a recipe.
fn plan(args: &CompressArgs, gguf_out: bool) -> Result<Recipe, Box<dyn std::error::Error>> {
    let target = args.target_bpw.expect("called with --target-bpw");
    if !(target.is_finite() && target > 0.0) {
        return Err(format!("--target-bpw {target}: give a positive number of bits").into());
    }
    let measure = Measure::parse(&args.measure)?;
    let candidates: Vec<String> = args
        .candidates
        .as_deref()
        .unwrap_or(if gguf_out {
            GGUF_CANDIDATES
        } else {
            CANDIDATES
        })
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if args.calib.is_empty() {
        return Err("--target-bpw profiles the layers on text: give --calib FILE".into());
    }
    let windows = args.calib_windows.unwrap_or(128);
    let len = args.calib_len.unwrap_or(512);
    let mut model = tensorpress::convert::load_llama(&args.model, LoadOptions::default())?;
    let tokenizer = if args.model.is_dir() {
        TextTokenizer::from_file(&args.model.join("tokenizer.json"))?
    } else {
        TextTokenizer::from_gguf(&GgufFile::open(&args.model)?)?
    };
    let tokens = tokenizer.encode(&read_text(&args.calib)?)?;
    let calibration = calibration_windows(&tokens, windows, len)?;
    let trainable = if measure == Measure::OutputError {
        None
    } else {
        Some(tensorpress::convert::load_llama(
            &args.model,
            LoadOptions::trainable(),
        )?)
    };
    let mut options = ProfileOptions::new(candidates.clone());
    options.fisher_windows = args.fisher_windows;
    options.keep_weights = args.evopress > 0;
    eprintln!(
        "profiling {} candidates on {} × {len} tokens (Fisher from {} windows)",
        candidates.len(),
        calibration.len(),
        args.fisher_windows
    );
    let pb = bar(calibration.len(), "Hessians");
    let profile = profile_llama(
        &mut model,
        trainable.as_ref(),
        &calibration,
        &options,
        &mut |p| match p {
            ProfileProgress::Hessians { done, .. } => pb.set_position(done as u64),
            ProfileProgress::Fisher { done, total } => {
                pb.set_message("Fisher");
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
            ProfileProgress::Candidate { candidate, total } => {
                pb.set_message("quantizing every candidate");
                pb.set_length(total as u64);
                pb.set_position(candidate as u64);
            }
        },
    )?;
    pb.finish_and_clear();
    drop(trainable);
    let t = profile.timings;
    eprintln!(
        "profiled in {:.0} s (Hessians {:.0}, Fisher {:.0}, quantizing {:.0})",
        t.hessians + t.fisher + t.quantize,
        t.hessians,
        t.fisher,
        t.quantize
    );
    let layers = profile.choices(measure)?;
    let budget = Budget::BitsPerWeight(target);
    let mut plan = allocate(&layers, budget, AllocateOptions::default())?;
    let mut how = format!(
        "knapsack on {} (minimum cost {:.4e})",
        args.measure, plan.cost
    );
    if args.evopress > 0 {
        let evo = EvoOptions {
            generations: args.evopress,
            offspring: 8,
            stages: vec![
                Stage {
                    survivors: 2,
                    tokens: len,
                },
                Stage {
                    survivors: 1,
                    tokens: 8 * len,
                },
            ],
            seed: args.seed,
            max_mutations: 3,
        };
        let fitness: Vec<Vec<u32>> = calibration
            .iter()
            .step_by((calibration.len() / 8).max(1))
            .take(8)
            .cloned()
            .collect();
        let pb = bar(args.evopress, "EvoPress");
        let result = evopress_llama(
            &profile,
            &model,
            &layers,
            budget,
            &plan.picks,
            &evo,
            &fitness,
            &mut |g, best| {
                pb.set_position(g as u64);
                pb.set_message(format!("EvoPress, KL {best:.5}"));
            },
        )?;
        pb.finish_and_clear();
        how = format!(
            "{how}, then EvoPress ({} generations, seed {}, KL {:.5})",
            args.evopress, args.seed, result.fitness
        );
        plan.picks = result.picks;
    }
    let bpw = profile.bits_per_weight(&plan.picks);
    let comment = format!(
        "tensorpress compress --target-bpw {target}: {bpw:.4} bits/weight in the quantized layers\n{how}\ncandidates: {}",
        candidates.join(",")
    );
    let mut recipe_text = profile.recipe(&plan.picks, &comment)?;
    recipe_text.push_str(&format!(
        "\n[calibration]\nwindows = {windows}\ntokens = {len}\n"
    ));
    eprintln!("plan: {bpw:.4} bits/weight; {how}");
    if let Some(path) = &args.plan_out {
        tensorpress::io::write_bytes_atomic(path, recipe_text.as_bytes())?;
        eprintln!("wrote the plan to {}", path.display());
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)?;
        let title = format!("{}: {bpw:.3} bits/weight", args.model.display());
        tensorpress::io::write_bytes_atomic(
            &dir.join("sensitivity.md"),
            sensitivity_table(&layers, &plan.picks).as_bytes(),
        )?;
        tensorpress::io::write_bytes_atomic(
            &dir.join("sensitivity.svg"),
            sensitivity_svg(&layers, &plan.picks, &title).as_bytes(),
        )?;
        eprintln!("wrote the sensitivity report to {}", dir.display());
    }
    Ok(Recipe::from_toml_str(&recipe_text)?)
}
