//! Perplexity of SmolLM2-135M quantized with and without QuaRot-style
//! rotations fused into the weights (`rotate_llama`): one row per scheme and
//! rotation, evaluated on SOTU 2017–2021 (n_ctx 512, llama.cpp's scoring).
//!
//! ```sh
//! cargo run --example rotation -- [SCHEME ...]
//! ```
//!
//! Schemes as [`tensorpress::compress::parse_scheme`] reads them (default:
//! `rtn-w4-ch rtn-w4-g128 rtn-w3-g128`); calibrated schemes (GPTQ) calibrate on
//! 32 windows of SOTU 1990–2009 (`CALIB_WINDOWS`). Each runs on the model as
//! loaded (`none`), with the norms folded only (`fold`), rotated by `R1`
//! (`r1`), by `R1` and `R2` (`r1+r2`), and by random orthogonal matrices
//! (`orth`). `ROTATIONS` picks among those (comma-separated), `EVAL_CHUNKS`
//! sets the windows (default 16), `SEED` the rotation seed (default 0).

use tensorpress::compress::{
    calibration_windows, compress_llama, fold_llama_norms, parse_scheme, rotate_llama,
    CompressOptions, CompressReport, RotateOptions,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::rotation::RotationKind;

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Applies the named rotation to a freshly loaded model.
fn prepare(
    model: &mut LlamaModel,
    rotation: &str,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut report = CompressReport::new();
    let options = RotateOptions::default().seed(seed);
    match rotation {
        "none" => {}
        "fold" => fold_llama_norms(model, &mut report)?,
        "r1" => rotate_llama(model, &options.rotate_values(false), &mut report)?,
        "r1+r2" => rotate_llama(model, &options, &mut report)?,
        "orth" => rotate_llama(model, &options.kind(RotationKind::Orthogonal), &mut report)?,
        other => panic!("unknown rotation `{other}`: none, fold, r1, r1+r2, orth"),
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut schemes: Vec<String> = std::env::args().skip(1).collect();
    if schemes.is_empty() {
        schemes = ["rtn-w4-ch", "rtn-w4-g128", "rtn-w3-g128"]
            .map(String::from)
            .to_vec();
    }
    let rotations: Vec<String> = env("ROTATIONS", "none,fold,r1,r1+r2,orth".to_string())
        .split(',')
        .map(String::from)
        .collect();
    let chunks: usize = env("EVAL_CHUNKS", 16);
    let seed: u64 = env("SEED", 0);

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let config = PerplexityConfig::with_ctx(512).max_chunks(chunks);
    let calib_text = testdata::sotu_text(1990..=2009)?;
    let calib_tokens = tokenizer.encode(&calib_text)?;
    let calib = calibration_windows(&calib_tokens, env("CALIB_WINDOWS", 32), 512)?;

    println!(
        "SmolLM2-135M-Instruct, perplexity on SOTU 2017–2021, n_ctx 512, {chunks} windows, seed {seed}\n"
    );
    println!("| scheme | rotation | perplexity | mean relative weight error |");
    println!("|---|---|---|---|");
    for rotation in &rotations {
        let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
        prepare(&mut model, rotation, seed)?;
        let r = perplexity(&model, &eval, &config, &mut |_, _| {})?;
        println!(
            "| f32 | {rotation} | {:.4} ± {:.4} | – |",
            r.perplexity, r.uncertainty
        );
    }
    for name in &schemes {
        let scheme = parse_scheme(name)?;
        for rotation in &rotations {
            let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
            prepare(&mut model, rotation, seed)?;
            let options = CompressOptions::with_method(scheme.method.clone());
            let report = compress_llama(&mut model, &calib, &options, &mut |_| {})?;
            let err = report.layers.iter().map(|l| l.weight_error).sum::<f64>()
                / report.layers.len().max(1) as f64;
            let r = perplexity(&model, &eval, &config, &mut |_, _| {})?;
            println!(
                "| {} | {rotation} | {:.4} ± {:.4} | {err:.4e} |",
                scheme.label, r.perplexity, r.uncertainty
            );
        }
    }
    Ok(())
}
