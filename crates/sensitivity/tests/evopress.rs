//! EvoPress on separable fitnesses, where the exact knapsack gives the optimum.

use tensorpress_sensitivity::{
    allocate, evopress, AllocateOptions, Budget, Choice, EvoOptions, LayerChoices, Stage,
};
use tensorpress_tensor::SeededRng;

/// Layers with 2..=8-bit candidates of `bits = params · b + 16 · params / 64`
/// (a 16-bit scale per group of 64) and cost `scale · 4^-b`, with scales
/// log-uniform over two decades.
fn model(params: &[u64], seed: u64) -> Vec<LayerChoices> {
    let mut rng = SeededRng::new(seed);
    params
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let scale = 10f64.powf(2.0 * rng.uniform_f64());
            let choices = (2..=8u32)
                .map(|b| {
                    let bits = (p * u64::from(b) + 16 * p / 64) as f64;
                    Choice::new(format!("int{b}"), bits, scale * 4f64.powi(-(b as i32)))
                })
                .collect();
            LayerChoices::new(format!("layer{i}"), p, choices)
        })
        .collect()
}

fn cost(layers: &[LayerChoices], picks: &[usize]) -> f64 {
    layers
        .iter()
        .zip(picks)
        .map(|(l, &k)| l.choices[k].cost)
        .sum()
}

fn options(generations: usize, seed: u64) -> EvoOptions {
    EvoOptions {
        generations,
        offspring: 16,
        stages: vec![Stage::new(4, 256), Stage::new(1, 4096)],
        seed,
        max_mutations: 3,
    }
}

/// Runs EvoPress with the separable fitness, checking every scored
/// configuration against the budget.
fn run(layers: &[LayerChoices], budget: Budget, start: &[usize], o: &EvoOptions) -> (f64, usize) {
    let params: u64 = layers.iter().map(|l| l.params).sum();
    let capacity = match budget {
        Budget::BitsPerWeight(b) => b * params as f64,
        Budget::Bits(b) => b,
        Budget::Bops(_) => unreachable!(),
    };
    let mut over = 0;
    let mut fitness = |picks: &[usize], _tokens: usize| {
        let bits: f64 = layers
            .iter()
            .zip(picks)
            .map(|(l, &k)| l.choices[k].bits)
            .sum();
        if bits > capacity {
            over += 1;
        }
        Ok(cost(layers, picks))
    };
    let r = evopress(layers, budget, start, o, &mut fitness, &mut |_, _| {}).unwrap();
    assert!(r.bits <= capacity);
    assert_eq!(r.fitness, cost(layers, &r.picks));
    assert!(r.history.windows(2).all(|w| w[1] <= w[0]));
    (r.fitness, over)
}

#[test]
fn equal_layers_reach_the_knapsack_optimum() {
    // 32 layers of 4096 weights at 4.25 bits/weight: uniform int4 is the start.
    let layers = model(&[4096; 32], 1);
    let budget = Budget::BitsPerWeight(4.25);
    // All sizes are multiples of 64 bits: 64-bit units make the knapsack exact.
    let capacity = 4.25 * 32.0 * 4096.0;
    let exact = AllocateOptions {
        resolution: (capacity / 64.0) as usize,
    };
    let best = allocate(&layers, budget, exact).unwrap().cost;
    let start = vec![2; 32];
    let uniform = cost(&layers, &start);
    let (found, over) = run(&layers, budget, &start, &options(300, 3));
    assert_eq!(over, 0);
    assert!(best < 0.6 * uniform, "{best} vs uniform {uniform}");
    assert!(
        found <= best * (1.0 + 1e-9),
        "evopress {found} vs optimum {best}"
    );
}

#[test]
fn unequal_layers_come_close_and_never_break_the_budget() {
    let sizes: Vec<u64> = (0..24)
        .map(|i| [1024, 2048, 4096, 8192][i % 4] * (1 + i as u64 % 3))
        .collect();
    for seed in 0..3 {
        let layers = model(&sizes, 10 + seed);
        // About 3.6 bits/weight, rounded to 64 bits so 64-bit units are exact.
        let params: u64 = sizes.iter().sum();
        let units = (3.6 * params as f64 / 64.0).floor() as usize;
        let budget = Budget::Bits(64.0 * units as f64);
        let exact = AllocateOptions { resolution: units };
        let best = allocate(&layers, budget, exact).unwrap().cost;
        // Uniform int3 (3.25 bits/weight): well under the budget.
        let start = vec![1; sizes.len()];
        let (found, over) = run(&layers, budget, &start, &options(400, seed));
        assert_eq!(over, 0, "seed {seed}");
        assert!(
            found <= best * 1.02,
            "seed {seed}: evopress {found} vs optimum {best}"
        );
    }
}

#[test]
fn same_seed_same_search() {
    let layers = model(&[1024, 2048, 1024, 4096, 2048, 1024], 5);
    let budget = Budget::BitsPerWeight(3.5);
    let start = vec![1; 6];
    let trace = |seed: u64| {
        let mut calls = Vec::new();
        let mut fitness = |picks: &[usize], tokens: usize| {
            calls.push((picks.to_vec(), tokens));
            Ok(cost(&layers, picks))
        };
        let r = evopress(
            &layers,
            budget,
            &start,
            &options(20, seed),
            &mut fitness,
            &mut |_, _| {},
        )
        .unwrap();
        (r, calls)
    };
    let (a, calls_a) = trace(42);
    let (b, calls_b) = trace(42);
    assert_eq!(a, b);
    assert_eq!(calls_a, calls_b);
    let (_, calls_c) = trace(43);
    assert_ne!(calls_a, calls_c, "another seed explores differently");
}
