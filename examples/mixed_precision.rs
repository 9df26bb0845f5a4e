//! Mixed precision on SmolLM2-135M: profile every linear layer under each
//! candidate (GPTQ on the base model's Hessians, Fisher from the loss
//! gradients), allocate bits under budgets of bits per weight by the exact
//! knapsack, optionally refine with EvoPress, then quantize the model with
//! each plan block by block (as `tensorpress compress --target-bpw` does) and
//! print its perplexity.
//!
//! ```sh
//! cargo run --release --example mixed_precision -- [BUDGET ...]   # default 3.0 3.5 4.0
//! ```
//!
//! Environment: `CANDIDATES` (comma-separated schemes; default GPTQ
//! act-order W2 g64, W3 per channel/g128/g64, W4 per channel/g128/g64,
//! W5 g128, W8 g128), `CALIB_WINDOWS` (128), `FISHER_WINDOWS` (8),
//! `EVAL_CHUNKS` (all 74), `MEASURE` (`fisher-output`, `fisher-weight`,
//! `output-error`), `SEQUENTIAL=0` (skip the block-by-block quantization:
//! only the plans' perplexity from the profile's database of layers quantized
//! on the base model's Hessians), `EVOPRESS=GENERATIONS` (refine each
//! knapsack plan), `EVO_SEED` (0), `FITNESS_WINDOWS` (8: calibration windows
//! the EvoPress fitness scores on; the first stage uses one), `REPORT_DIR` (write each plan's per-layer
//! table, SVG chart and recipe there).

use std::collections::BTreeMap;
use std::time::Instant;

use tensorpress::compress::{calibration_windows, compress_llama, Recipe};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::mixed::{
    evopress_llama, profile_llama, Measure, Profile, ProfileOptions, ProfileProgress,
};
use tensorpress::models::eval::{perplexity, PerplexityConfig, PerplexityReport};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::sensitivity::{
    allocate, sensitivity_svg, sensitivity_table, AllocateOptions, Budget, EvoOptions, Stage,
};

const DEFAULT_CANDIDATES: &str = "gptq-w2-g64-act,gptq-w3-ch-act,gptq-w3-g128-act,\
gptq-w3-g64-act,gptq-w4-ch-act,gptq-w4-g128-act,gptq-w4-g64-act,gptq-w5-g128-act,\
gptq-w8-g128-act";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn env<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How many layers take each candidate.
fn mix(profile: &Profile, picks: &[usize]) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (layer, &k) in picks.iter().enumerate() {
        *count.entry(profile.label(layer, k)).or_default() += 1;
    }
    count
        .iter()
        .map(|(c, n)| format!("{n}× {}", c.trim_start_matches("gptq-")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Res<()> {
    let budgets: Vec<f64> = {
        let args: Vec<f64> = std::env::args()
            .skip(1)
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        if args.is_empty() {
            vec![3.0, 3.5, 4.0]
        } else {
            args
        }
    };
    let candidates: Vec<String> = std::env::var("CANDIDATES")
        .unwrap_or_else(|_| DEFAULT_CANDIDATES.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let windows: usize = env("CALIB_WINDOWS", 128);
    let fisher_windows: usize = env("FISHER_WINDOWS", 8);
    let chunks: Option<usize> = std::env::var("EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok());
    let measure = Measure::parse(&env("MEASURE", "fisher-output".to_string()))?;
    let sequential = env("SEQUENTIAL", 1) != 0;
    let generations: usize = env("EVOPRESS", 0);
    let fitness_count: usize = env("FITNESS_WINDOWS", 8);
    let evo_seed: u64 = env("EVO_SEED", 0);
    let report_dir = std::env::var("REPORT_DIR").ok();

    let gguf = GgufFile::open(testdata::smollm2_gguf()?)?;
    let tokenizer = TextTokenizer::from_gguf(&gguf)?;
    let calib_tokens = tokenizer.encode(&testdata::sotu_text(1990..=2009)?)?;
    let calib = calibration_windows(&calib_tokens, windows, 512)?;
    let eval_text = testdata::sotu_text(2017..=2021)?;
    let eval_tokens = tokenizer.encode(eval_text.strip_suffix('\n').unwrap_or(&eval_text))?;
    let mut ppl_config = PerplexityConfig::with_ctx(512);
    ppl_config.max_chunks = chunks;

    let mut model = LlamaModel::from_gguf(&gguf, LoadOptions::default())?;
    let trainable = LlamaModel::from_gguf(&gguf, LoadOptions::trainable())?;
    let mut options = ProfileOptions::new(candidates.clone());
    options.fisher_windows = fisher_windows;
    let t = Instant::now();
    let profile = profile_llama(
        &mut model,
        Some(&trainable),
        &calib,
        &options,
        &mut |p| match p {
            ProfileProgress::Hessians { done, total } => eprint!("\r  Hessians {done}/{total}   "),
            ProfileProgress::Fisher { done, total } => eprint!("\r  Fisher {done}/{total}     "),
            ProfileProgress::Candidate { candidate, total } => {
                eprint!("\r  {candidate}/{total} layers × every candidate   ")
            }
        },
    )?;
    eprintln!();
    drop(trainable);
    let tm = profile.timings;
    println!(
        "SmolLM2-135M-Instruct; calibration {windows} × 512 tokens of SOTU 1990–2009 \
         (Fisher from {fisher_windows} of them); perplexity on SOTU 2017–2021, n_ctx 512{}; \
         measure {measure:?}",
        chunks.map_or(String::new(), |c| format!(", first {c} windows"))
    );
    println!(
        "profiling: {:.0} s (Hessians {:.0} s, Fisher {:.0} s, {} candidates × {} layers {:.0} s)\n",
        t.elapsed().as_secs_f64(),
        tm.hessians,
        tm.fisher,
        candidates.len(),
        profile.layers.len(),
        tm.quantize
    );
    println!("| plan | bits/weight | perplexity (database) | perplexity (block by block) | mix |");
    println!("|---|---|---|---|---|");

    let ppl = |m: &LlamaModel| -> Res<PerplexityReport> {
        Ok(perplexity(m, &eval_tokens, &ppl_config, &mut |_, _| {})?)
    };
    let row = |label: &str, picks: &[usize]| -> Res<()> {
        let mut m = model.clone();
        profile.apply(&mut m, picks)?;
        let db = ppl(&m)?;
        let seq = if sequential {
            let recipe = Recipe::from_toml_str(&profile.recipe(picks, label)?)?;
            let mut m = model.clone();
            let t = Instant::now();
            compress_llama(&mut m, &calib, &recipe.options, &mut |_| {})?;
            let seconds = t.elapsed().as_secs_f64();
            let r = ppl(&m)?;
            format!(
                "{:.4} ± {:.4} ({seconds:.0} s)",
                r.perplexity, r.uncertainty
            )
        } else {
            "–".to_string()
        };
        println!(
            "| {label} | {:.4} | {:.4} ± {:.4} | {seq} | {} |",
            profile.bits_per_weight(picks),
            db.perplexity,
            db.uncertainty,
            mix(&profile, picks)
        );
        Ok(())
    };

    let layers = profile.choices(measure)?;
    let fitness_windows: Vec<Vec<u32>> = calib
        .iter()
        .step_by((windows / fitness_count.max(1)).max(1))
        .take(fitness_count)
        .cloned()
        .collect();
    for &b in &budgets {
        let t = Instant::now();
        let plan = allocate(
            &layers,
            Budget::BitsPerWeight(b),
            AllocateOptions::default(),
        )?;
        let solve = t.elapsed().as_secs_f64();
        let label = format!("knapsack ≤ {b} ({solve:.2} s)");
        row(&label, &plan.picks)?;
        if let Some(dir) = &report_dir {
            std::fs::create_dir_all(dir)?;
            let stem = format!("{dir}/knapsack-{b}");
            let title = format!("SmolLM2-135M, knapsack ≤ {b} bits/weight, {measure:?}");
            std::fs::write(
                format!("{stem}.md"),
                sensitivity_table(&layers, &plan.picks),
            )?;
            std::fs::write(
                format!("{stem}.svg"),
                sensitivity_svg(&layers, &plan.picks, &title),
            )?;
            std::fs::write(format!("{stem}.toml"), profile.recipe(&plan.picks, &title)?)?;
        }
        if generations > 0 {
            let evo = EvoOptions {
                generations,
                offspring: 8,
                stages: vec![
                    Stage {
                        survivors: 2,
                        tokens: 512,
                    },
                    Stage {
                        survivors: 1,
                        tokens: 512 * fitness_windows.len(),
                    },
                ],
                seed: evo_seed,
                max_mutations: 3,
            };
            let t = Instant::now();
            let result = evopress_llama(
                &profile,
                &model,
                &layers,
                Budget::BitsPerWeight(b),
                &plan.picks,
                &evo,
                &fitness_windows,
                &mut |g, best| eprint!("\r  EvoPress generation {g}: KL {best:.5}   "),
            )?;
            eprintln!();
            let label = format!(
                "EvoPress ≤ {b} from the knapsack (seed {evo_seed}, {generations} generations, \
                 {} evaluations, {:.0} s, KL {:.5} → {:.5})",
                result.evaluations,
                t.elapsed().as_secs_f64(),
                result.history.first().copied().unwrap_or(f64::NAN),
                result.fitness
            );
            row(&label, &result.picks)?;
        }
    }
    Ok(())
}
