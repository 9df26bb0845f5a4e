//! FFN activation sparsity on SmolLM2-135M: thresholds calibrated on the
//! 1990–2009 State of the Union addresses, perplexity on 2017–2021 (n_ctx
//! 512) with every token's gate activations sparsified in the runner.
//!
//! ```sh
//! cargo run --release --example activation_sparsity -- [SPARSITY ...]   # default 0.5
//! ```
//!
//! For each target: CHESS channel-wise thresholds, CATS (one threshold per
//! layer), top-k per token, and CHESS+ (CHESS plus its selective
//! sparsification of the query and output projections' inputs); then the per-layer realized sparsity and
//! dead-neuron rate of CHESS at the first target, and the PPL-p% sparsity
//! (Sparsing Law): the largest common CHESS target whose perplexity stays
//! within p % of the base model, found by bisection, with each layer's
//! realized sparsity there.
//! Environment: `CALIB_WINDOWS` (8), `EVAL_CHUNKS` (all 74), `PPL_P` (1.0,
//! in percent; 0 skips the search), `SEARCH_STEPS` (7).

use std::sync::Arc;

use tensorpress::activation::{calibrate_ffn, FfnLayerReport, FfnSparsity, FfnSparsityHook};
use tensorpress::compress::calibration_windows;
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mean_sparsity(report: &[FfnLayerReport]) -> f64 {
    report.iter().map(|l| l.sparsity).sum::<f64>() / report.len().max(1) as f64
}

fn main() -> Res<()> {
    let targets: Vec<f64> = {
        let args: Vec<f64> = std::env::args()
            .skip(1)
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        if args.is_empty() {
            vec![0.5]
        } else {
            args
        }
    };
    let windows: usize = env("CALIB_WINDOWS", 8);
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    let p: f64 = env("PPL_P", 1.0);
    let steps: usize = env("SEARCH_STEPS", 7);

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut config = PerplexityConfig::with_ctx(512);
    config.max_chunks = chunks;

    let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
    let stats = calibrate_ffn(&mut model, &calib, windows * 512)?;
    let base = perplexity(&model, &eval_tokens, &config, &mut |_, _| {})?;
    println!(
        "SmolLM2-135M-Instruct; FFN gate activations; thresholds from {windows} × 512 tokens of \
         SOTU 1990–2009; perplexity on SOTU 2017–2021, n_ctx 512{}\n",
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!("| rule | target | realized sparsity (eval) | perplexity | Δ vs base |");
    println!("|---|---|---|---|---|");
    println!(
        "| dense | 0 | {:.1} % | {:.4} ± {:.4} | – |",
        0.0, base.perplexity, base.uncertainty
    );
    // Runs `rule`, returning the perplexity and the hook's per-layer report.
    let mut run =
        |rule: FfnSparsity, chunks: Option<usize>| -> Res<(f64, f64, Vec<FfnLayerReport>)> {
            let hook = Arc::new(FfnSparsityHook::new(&stats, rule)?);
            model.set_ffn_hook(Some(hook.clone()));
            let mut c = config.clone();
            c.max_chunks = chunks;
            let r = perplexity(&model, &eval_tokens, &c, &mut |_, _| {});
            model.set_ffn_hook(None);
            let r = r?;
            Ok((r.perplexity, r.uncertainty, hook.report()))
        };
    let mut chess_layers = None;
    for &s in &targets {
        for (name, rule) in [
            ("CHESS (channel-wise)", FfnSparsity::Chess(s)),
            ("CATS (per layer)", FfnSparsity::Cats(s)),
            ("top-k per token", FfnSparsity::TopK(s)),
            ("CHESS+ (FFN, and attention", FfnSparsity::ChessPlus(s)),
        ] {
            let (ppl, unc, layers) = run(rule, chunks)?;
            let name = if matches!(rule, FfnSparsity::ChessPlus(_)) {
                let n = layers.len().max(1) as f64;
                format!(
                    "{name}: q_proj inputs {:.1} %, o_proj inputs {:.1} %)",
                    100.0 * layers.iter().map(|l| l.query_sparsity).sum::<f64>() / n,
                    100.0 * layers.iter().map(|l| l.output_sparsity).sum::<f64>() / n
                )
            } else {
                name.to_string()
            };
            println!(
                "| {name} | {:.0} % | {:.1} % | {ppl:.4} ± {unc:.4} | {:+.3} |",
                s * 100.0,
                100.0 * mean_sparsity(&layers),
                ppl - base.perplexity
            );
            if chess_layers.is_none() && matches!(rule, FfnSparsity::Chess(_)) {
                chess_layers = Some((s, layers));
            }
        }
    }
    if let Some((s, layers)) = chess_layers {
        println!(
            "\nCHESS at {:.0} %: per layer, realized sparsity and dead-neuron rate on the evaluation text\n",
            s * 100.0
        );
        println!("| block | sparsity | dead neurons |");
        println!("|---|---|---|");
        for (b, l) in layers.iter().enumerate() {
            println!(
                "| {b} | {:.1} % | {:.2} % |",
                100.0 * l.sparsity,
                100.0 * l.dead_rate
            );
        }
    }
    if p > 0.0 {
        // Bisection on the common CHESS target: the largest whose perplexity
        // stays within p % of the base model's.
        let limit = base.perplexity * (1.0 + p / 100.0);
        let (mut lo, mut hi) = (0.0f64, 0.95f64);
        let mut best: Option<(f64, f64, Vec<FfnLayerReport>)> = None;
        for _ in 0..steps {
            let mid = 0.5 * (lo + hi);
            let (ppl, _, layers) = run(FfnSparsity::Chess(mid), chunks)?;
            eprintln!("  PPL-{p}%: target {mid:.4} → {ppl:.4} (limit {limit:.4})");
            if ppl <= limit {
                lo = mid;
                best = Some((mid, ppl, layers));
            } else {
                hi = mid;
            }
        }
        match best {
            None => println!("\nPPL-{p}%: no CHESS target above {hi:.4} stays within {p} %"),
            Some((target, ppl, layers)) => {
                println!(
                    "\nPPL-{p}% sparsity (CHESS, {steps} bisection steps): common target {:.1} %, \
                     perplexity {ppl:.4} (limit {limit:.4}), realized {:.1} % overall\n",
                    100.0 * target,
                    100.0 * mean_sparsity(&layers)
                );
                println!("| block | PPL-{p}% sparsity |");
                println!("|---|---|");
                for (b, l) in layers.iter().enumerate() {
                    println!("| {b} | {:.1} % |", 100.0 * l.sparsity);
                }
            }
        }
    }
    Ok(())
}
