//! SmolLM2-135M at 4 bits running on the quantized kernels: perplexity from
//! the kernels against perplexity from the dequantized f32 weights, and
//! prompt-processing and decoding speed against the f32 model, in one run.
//!
//! ```sh
//! cargo run --release --example quantized_decode -- [SCHEME]
//! ```
//!
//! `SCHEME` (default `rtn-w4-g128`) is any weight scheme of
//! [`tensorpress::compress::parse_scheme`] whose format the kernels run (int4
//! groups, `ggml-q4_0`, `ggml-q8_0`); `lm_head` goes to Q8_0. Calibrated
//! schemes calibrate on `CALIB_WINDOWS` (default 16) windows of SOTU
//! 1990–2009. Perplexity on the first `EVAL_CHUNKS` (default 8) windows of
//! SOTU 2017–2021; decoding: a `PROMPT` (default 128) token prompt, then
//! `DECODE` (default 64) greedy tokens, best of 2 runs.

use std::sync::Arc;
use std::time::Instant;

use tensorpress::compress::{
    attach_kernels, calibration_windows, compress_llama, parse_scheme, LayerFilter, Method,
};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::linear::KernelActivations;
use tensorpress::models::llama::{DecodeCache, LlamaModel};
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::{GgmlRtn, GgmlType};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (prompt tokens/s, decode tokens/s), best of 2 runs; greedy decoding.
fn speed(
    model: &LlamaModel,
    prompt: &[u32],
    decode: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let (mut best_p, mut best_d) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        let mut cache = DecodeCache::new();
        let t = Instant::now();
        let mut logits = model.decode(&mut cache, prompt)?;
        let prefill = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..decode {
            let next = logits.argmax(0)?.to_scalar::<u32>()?;
            logits = model.decode(&mut cache, &[next])?;
        }
        let dec = t.elapsed().as_secs_f64();
        best_p = best_p.max(prompt.len() as f64 / prefill);
        best_d = best_d.max(decode as f64 / dec);
    }
    Ok((best_p, best_d))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "rtn-w4-g128".into());
    let scheme = parse_scheme(&name)?;
    let chunks = env_usize("EVAL_CHUNKS", 8);
    let (prompt_len, decode) = (env_usize("PROMPT", 128), env_usize("DECODE", 64));

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut ppl_config = PerplexityConfig::with_ctx(512);
    ppl_config.max_chunks = Some(chunks);
    let prompt = &eval_tokens[..prompt_len];

    let base = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
    let mut model = base.clone();
    let mut options = scheme.options();
    options.targets = LayerFilter::all();
    let options = options.override_layers(
        LayerFilter::new(["lm_head"], Vec::<String>::new())?,
        Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0))),
    );
    let calib = if options.method.calibrates() {
        let text = testdata::sotu_text(1990..=2009)?;
        calibration_windows(
            &tokenizer.encode(&text)?,
            env_usize("CALIB_WINDOWS", 16),
            512,
        )?
    } else {
        Vec::new()
    };
    let t = Instant::now();
    let report = compress_llama(&mut model, &calib, &options, &mut |_| {})?;
    eprintln!(
        "compressed with {} in {:.1} s",
        scheme.label,
        t.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let ppl = |m: &LlamaModel| perplexity(m, &eval_tokens, &ppl_config, &mut |_, _| {});
    let base_ppl = ppl(&base)?.perplexity;
    let (bp, bd) = speed(&base, prompt, decode)?;
    rows.push(("f32 (candle matmul)".to_string(), base_ppl, bp, bd));
    let deq_ppl = ppl(&model)?.perplexity;
    let (dp, dd) = speed(&model, prompt, decode)?;
    rows.push((
        format!("{} dequantized to f32", scheme.label),
        deq_ppl,
        dp,
        dd,
    ));
    for act in [KernelActivations::F32, KernelActivations::Int8] {
        let mut k = model.clone();
        let attached = attach_kernels(&mut k, &report, act)?;
        for (layer, why) in &attached.skipped {
            eprintln!("  {layer}: stays f32 ({why})");
        }
        let p = ppl(&k)?.perplexity;
        let (kp, kd) = speed(&k, prompt, decode)?;
        rows.push((
            format!(
                "{} on kernels, {act:?} activations ({} layers)",
                scheme.label,
                attached.attached.len()
            ),
            p,
            kp,
            kd,
        ));
    }

    println!(
        "SmolLM2-135M-Instruct, perplexity on the first {chunks} windows of SOTU 2017–2021 (n_ctx 512); \
         prompt {prompt_len} tokens, then {decode} greedy tokens (best of 2); {} rayon threads\n",
        rayon::current_num_threads()
    );
    println!(
        "| model | perplexity | vs dequantized | prompt tok/s | × f32 | decode tok/s | × f32 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, p, pp, dd) in &rows {
        println!(
            "| {label} | {p:.4} | {:+.3}% | {pp:.1} | ×{:.2} | {dd:.1} | ×{:.2} |",
            100.0 * (p / deq_ppl - 1.0),
            pp / bp,
            dd / bd
        );
    }
    Ok(())
}
