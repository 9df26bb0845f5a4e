//! Mixed precision on a small random Llama: profiling, the knapsack plan,
//! applying it, writing it as a recipe, and the errors that say what to change.

use tensorpress::compress::{compress_llama, Recipe};
use tensorpress::mixed::{
    evopress_llama, profile_llama, CandidateResult, Measure, Profile, ProfileOptions,
};
use tensorpress::models::llama::{LlamaModel, LlamaParams, Naming, RopeLayout};
use tensorpress::models::weights::{LoadOptions, MemoryWeights};
use tensorpress::sensitivity::{allocate, AllocateOptions, Budget, EvoOptions, Stage};
use tensorpress::tensor::SeededRng;

fn params() -> LlamaParams {
    LlamaParams {
        vocab_size: 64,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        rope_layout: RopeLayout::Interleaved,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        add_bos: false,
    }
}

fn setup() -> (LlamaModel, LlamaModel, Vec<Vec<u32>>) {
    let p = params();
    let w = MemoryWeights::random_llama(&p, 17);
    let model =
        LlamaModel::load(&w, p.clone(), Naming::HuggingFace, LoadOptions::default()).unwrap();
    let trainable = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::trainable()).unwrap();
    let mut rng = SeededRng::new(2);
    let windows = (0..6)
        .map(|_| (0..32).map(|_| rng.below(64) as u32).collect())
        .collect();
    (model, trainable, windows)
}

const CANDIDATES: [&str; 3] = ["gptq-w2-g16", "gptq-w4-g16", "gptq-w8-g16"];

fn profile(model: &mut LlamaModel, trainable: &LlamaModel, windows: &[Vec<u32>]) -> Profile {
    let mut options = ProfileOptions::new(CANDIDATES);
    options.fisher_windows = 3;
    profile_llama(model, Some(trainable), windows, &options, &mut |_| {}).unwrap()
}

#[test]
fn more_bits_cost_less_and_the_plan_meets_the_budget() {
    let (mut model, trainable, windows) = setup();
    let profile = profile(&mut model, &trainable, &windows);
    assert_eq!(profile.layers.len(), 14);
    assert!(profile.has_fisher);
    for layer in &profile.layers {
        let r = &layer.results;
        assert!(
            r[0].bits < r[1].bits && r[1].bits < r[2].bits,
            "{}",
            layer.name
        );
        let measures: [fn(&CandidateResult) -> f64; 3] =
            [|c| c.output_error, |c| c.fisher_output, |c| c.fisher_weight];
        for m in measures {
            assert!(m(&r[0]) > m(&r[1]) && m(&r[1]) > m(&r[2]), "{}", layer.name);
            assert!(m(&r[2]) >= 0.0);
        }
    }
    for measure in [
        Measure::FisherOutput,
        Measure::FisherWeight,
        Measure::OutputError,
    ] {
        let layers = profile.choices(measure).unwrap();
        // Uniform W4 g16 is 5 bits/weight (f16 scales per 16 weights), W8 g16 9.
        let plan = allocate(
            &layers,
            Budget::BitsPerWeight(6.0),
            AllocateOptions::default(),
        )
        .unwrap();
        let bpw = profile.bits_per_weight(&plan.picks);
        assert!(bpw <= 6.0 + 1e-9 && bpw > 5.0, "{bpw}");
        // The spare bit goes to some layers as 8 bits: better than uniform W4
        // under its own measure.
        assert!(plan.picks.contains(&2), "{:?}", plan.picks);
        let uniform: f64 = layers.iter().map(|l| l.choices[1].cost).sum();
        assert!(plan.cost < uniform, "{} vs {uniform}", plan.cost);
    }
}

#[test]
fn a_plan_applies_and_reruns_as_a_recipe() {
    let (mut model, trainable, windows) = setup();
    let profile = profile(&mut model, &trainable, &windows);
    let layers = profile.choices(Measure::FisherOutput).unwrap();
    let plan = allocate(
        &layers,
        Budget::BitsPerWeight(5.0),
        AllocateOptions::default(),
    )
    .unwrap();

    let mut applied = model.clone();
    profile.apply(&mut applied, &plan.picks).unwrap();
    for (layer, &k) in profile.layers.iter().zip(&plan.picks) {
        let op = applied.linear_mut(&layer.name).unwrap().op().clone();
        let expected = layer.results[k].weight.as_ref().unwrap();
        assert!(std::sync::Arc::ptr_eq(&op, expected), "{}", layer.name);
    }

    // One-layer KL: every layer alone at 2 bits moves the output more than at 8.
    let kl2 = profile
        .one_layer_kl(&model, 0, &windows[..2], &mut |_, _| {})
        .unwrap();
    let kl8 = profile
        .one_layer_kl(&model, 2, &windows[..2], &mut |_, _| {})
        .unwrap();
    assert_eq!(kl2.len(), 14);
    for (a, b) in kl2.iter().zip(&kl8) {
        assert!(a > b && *b >= -1e-6, "{a} vs {b}");
    }
    assert!(profile
        .one_layer_kl(&model, 3, &windows, &mut |_, _| {})
        .is_err());

    let text = profile.recipe(&plan.picks, "test plan").unwrap();
    assert!(text.starts_with("# test plan\n"), "{text}");
    let recipe = Recipe::from_toml_str(&text).unwrap();
    // Sequential compression with the recipe gives each layer its planned bits.
    let mut m = model.clone();
    let report = compress_llama(&mut m, &windows, &recipe.options, &mut |_| {}).unwrap();
    for (layer, &k) in profile.layers.iter().zip(&plan.picks) {
        let got = report.layers.iter().find(|l| l.name == layer.name).unwrap();
        let params = (layer.shape[0] * layer.shape[1]) as f64;
        assert!(
            (got.bits_per_weight * params - layer.results[k].bits).abs() < 1e-6,
            "{}",
            layer.name
        );
    }
}

#[test]
fn evopress_refines_the_knapsack_plan_within_the_budget_reproducibly() {
    let (mut model, trainable, windows) = setup();
    let profile = profile(&mut model, &trainable, &windows);
    let layers = profile.choices(Measure::FisherOutput).unwrap();
    let budget = Budget::BitsPerWeight(6.0);
    let plan = allocate(&layers, budget, AllocateOptions::default()).unwrap();
    let options = EvoOptions {
        generations: 4,
        offspring: 4,
        stages: vec![
            Stage {
                survivors: 2,
                tokens: 32,
            },
            Stage {
                survivors: 1,
                tokens: 96,
            },
        ],
        seed: 11,
        max_mutations: 2,
    };
    let run = || {
        evopress_llama(
            &profile,
            &model,
            &layers,
            budget,
            &plan.picks,
            &options,
            &windows[..3],
            &mut |_, _| {},
        )
        .unwrap()
    };
    let a = run();
    assert!(profile.bits_per_weight(&a.picks) <= 6.0 + 1e-9);
    // Elitist: never worse than the start on the full fitness.
    assert!(a.fitness <= a.history[0] + 1e-12, "{:?}", a.history);
    assert!(a.history.windows(2).all(|w| w[1] <= w[0] + 1e-12));
    let b = run();
    assert_eq!(a.picks, b.picks);
    assert_eq!(a.fitness, b.fitness);
    assert!(evopress_llama(
        &profile,
        &model,
        &layers,
        budget,
        &plan.picks,
        &options,
        &[],
        &mut |_, _| {}
    )
    .is_err());
}

#[test]
fn bad_settings_are_typed_errors_that_say_what_to_change() {
    let (mut model, trainable, windows) = setup();
    let run = |model: &mut LlamaModel, candidates: &[&str], windows: &[Vec<u32>]| {
        profile_llama(
            model,
            Some(&trainable),
            windows,
            &ProfileOptions::new(candidates.iter().copied()),
            &mut |_| {},
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(run(&mut model, &[], &windows).contains("at least one candidate"));
    assert!(run(&mut model, &["gptq-w4-g16", "gptq-q4_0"], &windows).contains("not a mix"));
    assert!(run(&mut model, &["awq-w4-g16"], &windows).contains("plain weight quantizer"));
    assert!(run(&mut model, &["gptq-w4-g16"], &[]).contains("calibration"));

    let mut options = ProfileOptions::new(CANDIDATES);
    options.fisher_windows = 0;
    options.keep_weights = false;
    let p = profile_llama(&mut model, None, &windows, &options, &mut |_| {}).unwrap();
    let e = p.choices(Measure::FisherOutput).unwrap_err().to_string();
    assert!(e.contains("output-error"), "{e}");
    let picks = p.uniform(1).unwrap();
    let e = p.apply(&mut model.clone(), &picks).unwrap_err().to_string();
    assert!(e.contains("keep_weights"), "{e}");
    assert!(p.recipe(&picks[1..], "").is_err());
    assert!(p.recipe(&vec![7; picks.len()], "").is_err());

    // GGML candidates whose blocks do not fit a layer's rows are left out of
    // that layer (K-quants need rows of 256 weights; these are 32 and 64 wide).
    let mut ggml = ProfileOptions::new(["gptq-q4_0", "gptq-q4_k"]);
    ggml.keep_weights = false;
    let g = profile_llama(&mut model, None, &windows, &ggml, &mut |_| {}).unwrap();
    assert!(g
        .layers
        .iter()
        .all(|l| l.results.len() == 1 && l.skipped.len() == 1));
    assert_eq!(g.label(0, 0), "gptq-q4_0");
    assert!(g
        .uniform(1)
        .unwrap_err()
        .to_string()
        .contains("does not apply"));
    assert_eq!(g.uniform(0).unwrap(), vec![0; 14]);
    let e = run(&mut model, &["gptq-q4_k"], &windows);
    assert!(
        e.contains("no candidate applies") && e.contains("256"),
        "{e}"
    );

    // An infeasible budget names the smallest possible one.
    let layers = p.choices(Measure::OutputError).unwrap();
    let e = allocate(
        &layers,
        Budget::BitsPerWeight(1.0),
        AllocateOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("3.00 bits/weight"), "{e}");
}
