//! `tensorpress factorize`: low-rank factorization of every block projection
//! (truncated SVD, ASVD, SVD-LLM) under a parameter budget, written as a
//! Hugging Face folder with `{module}.u.weight` / `{module}.v.weight` factor
//! pairs that `tensorpress eval` and `generate` load back.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tensorpress::compress::{
    calibration_windows, factorize_llama, write_hf_checkpoint, ExportFormat, ExportOptions,
    FactorMethod, Factorization, Progress, RankAllocation,
};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

use crate::compress_cmd::parse_float_dtype;
use crate::{bar, read_text, CliResult};

#[derive(Debug, Args)]
pub(crate) struct FactorizeArgs {
    /// The model: a `.gguf` Llama file or a Hugging Face folder.
    #[arg(long, short = 'm', value_name = "PATH")]
    model: PathBuf,
    /// `svd` (truncated SVD of the weight, no data), `asvd` (ASVD's
    /// activation scaling) or `svd-llm` (SVD-LLM's whitening; best on the
    /// calibration outputs).
    #[arg(long, default_value = "svd-llm", value_parser = |s: &str| s.parse::<FactorMethod>())]
    method: FactorMethod,
    /// Fraction of the block projections' parameters to remove, in (0, 1).
    #[arg(long, value_name = "FRACTION")]
    reduction: f64,
    /// How the budget is split: `uniform` (every layer keeps the same share)
    /// or `spectrum` (one budget, spent on the components that keep the most
    /// of their layer's spectral energy per parameter).
    #[arg(long, default_value = "uniform", value_parser = parse_allocation)]
    allocation: RankAllocation,
    /// Calibration text file(s) (asvd, svd-llm; with svd only for the
    /// reported output errors).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    calib: Vec<PathBuf>,
    /// Calibration windows, spread evenly over the text.
    #[arg(long, default_value_t = 16, value_name = "N")]
    calib_windows: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    calib_len: usize,
    /// Float type of the factors and the other tensors: f16, bf16 or f32.
    #[arg(long, default_value = "f16", value_parser = parse_float_dtype)]
    dtype: FloatDType,
    /// The output folder (missing or empty).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: PathBuf,
}

fn parse_allocation(s: &str) -> Result<RankAllocation, String> {
    match s {
        "uniform" => Ok(RankAllocation::Uniform),
        "spectrum" => Ok(RankAllocation::Spectrum),
        other => Err(format!("unknown allocation `{other}` (uniform, spectrum)")),
    }
}

pub(crate) fn run(args: FactorizeArgs) -> CliResult {
    let options = Factorization::new(args.method, args.reduction).allocation(args.allocation);
    if !(args.reduction > 0.0 && args.reduction < 1.0) {
        return Err(format!(
            "--reduction {}: give the fraction of parameters to remove, in (0, 1), e.g. 0.2",
            args.reduction
        )
        .into());
    }
    if args.method.calibrates() && args.calib.is_empty() {
        return Err(format!(
            "{} calibrates on text: give --calib FILE (or --method svd)",
            args.method.name()
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
    let calibration = if args.calib.is_empty() {
        Vec::new()
    } else {
        let tokenizer = if args.model.is_dir() {
            TextTokenizer::from_file(&args.model.join("tokenizer.json"))?
        } else {
            TextTokenizer::from_gguf(&GgufFile::open(&args.model)?)?
        };
        let tokens = tokenizer.encode(&read_text(&args.calib)?)?;
        calibration_windows(&tokens, args.calib_windows, args.calib_len)?
    };
    eprintln!(
        "{}: {} on every block projection{}",
        args.model.display(),
        options.label(),
        if calibration.is_empty() {
            String::new()
        } else {
            format!(
                ", calibrating on {} × {} tokens",
                calibration.len(),
                args.calib_len
            )
        }
    );
    let layers = model
        .linear_names()
        .iter()
        .filter(|n| n.starts_with("model.layers."))
        .count();
    let pb = bar(calibration.len().max(1), "calibrating");
    let mut done = 0;
    let report = factorize_llama(&mut model, &calibration, &options, &mut |p| match p {
        Progress::Calibrating { block, .. } => pb.set_position(block as u64 + 1),
        Progress::Layer(l) => {
            done += 1;
            if done == 1 {
                pb.set_length(layers as u64);
                pb.set_message("factorizing");
            }
            pb.set_position(done as u64);
            pb.println(format!(
                "{:<40} {:>5}×{:<5} out-err {:>9} w-err {:.2e} {:.3} bits (f16)",
                l.name,
                l.shape[0],
                l.shape[1],
                l.output_error
                    .map_or("–".to_string(), |e| format!("{e:.2e}")),
                l.weight_error,
                l.bits_per_weight,
            ))
        }
        Progress::Gradients { .. } => {}
    })?;
    pb.finish_and_clear();
    let export = ExportOptions {
        format: ExportFormat::Dequantized,
        dtype: args.dtype,
    };
    let written = write_hf_checkpoint(&args.model, &report, &export, &args.out)?;
    let dense: usize = report.layers.iter().map(|l| l.shape[0] * l.shape[1]).sum();
    let kept: usize = report.factors.values().map(|f| f.params()).sum();
    println!(
        "{} layers factorized: {:.2} M of {:.2} M parameters kept ({:.1} %); checkpoint {:.1} MiB, {} parameters",
        report.factors.len(),
        kept as f64 / 1e6,
        dense as f64 / 1e6,
        100.0 * kept as f64 / dense.max(1) as f64,
        written.tensor_bytes as f64 / (1 << 20) as f64,
        written.parameters
    );
    println!(
        "time: {:.1} s (forward {:.1}, statistics {:.1}, factorization {:.1})",
        t0.elapsed().as_secs_f64(),
        report.timings.forward,
        report.timings.hessian,
        report.timings.solve
    );
    println!("wrote {}", args.out.display());
    Ok(())
}
