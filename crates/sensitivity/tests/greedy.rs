//! MPTQ-ViT's greedy allocation against the exact knapsack.

use proptest::prelude::*;
use tensorpress_sensitivity::{
    allocate, greedy_allocate, AllocateOptions, Budget, Choice, Error, LayerChoices,
};

fn instance() -> impl Strategy<Value = Vec<LayerChoices>> {
    let choice = ((0u32..=16).prop_map(f64::from), 0.0f64..10.0);
    let layer = (1u64..50, prop::collection::vec(choice, 1..=5));
    prop::collection::vec(layer, 1..=8).prop_map(|layers| {
        layers
            .into_iter()
            .enumerate()
            .map(|(i, (params, choices))| {
                let choices = choices
                    .into_iter()
                    .enumerate()
                    .map(|(k, (bits, cost))| Choice::new(format!("c{k}"), bits, cost))
                    .collect();
                LayerChoices::new(format!("layer{i}"), params, choices)
            })
            .collect()
    })
}

proptest! {
    /// Integer bits, one unit per bit: the knapsack is exact, so greedy can
    /// only match or lose; both fit the budget.
    #[test]
    fn greedy_never_beats_the_knapsack(layers in instance(), capacity in 1u32..=100) {
        let capacity = f64::from(capacity);
        let exact = AllocateOptions { resolution: capacity as usize };
        match (allocate(&layers, Budget::Bits(capacity), exact), greedy_allocate(&layers, Budget::Bits(capacity))) {
            (Ok(k), Ok(g)) => {
                prop_assert!(g.cost >= k.cost - 1e-9, "greedy {} below the optimum {}", g.cost, k.cost);
                prop_assert!(g.bits <= capacity && k.bits <= capacity);
            }
            (Err(Error::Infeasible { .. }), Err(Error::Infeasible { .. })) => {}
            (k, g) => prop_assert!(false, "knapsack {k:?} vs greedy {g:?}"),
        }
    }
}

#[test]
fn greedy_is_optimal_for_convex_costs_over_equal_steps() {
    // Equal layers with 2..=8 bits and costs s·4^-b (convex in b): lowering
    // by the least cost per bit is optimal when the budget is met exactly.
    let layers: Vec<LayerChoices> = (0..12)
        .map(|i| {
            let s = 1.0 + (i * 7 % 5) as f64;
            let choices = (2..=8)
                .map(|b| Choice::new(format!("int{b}"), 100.0 * f64::from(b), s * 4f64.powi(-b)))
                .collect();
            LayerChoices::new(format!("l{i}"), 100, choices)
        })
        .collect();
    for bpw in [3.0, 4.0, 5.5] {
        let budget = Budget::BitsPerWeight(bpw);
        let exact = AllocateOptions {
            resolution: (bpw * 12.0) as usize,
        };
        let k = allocate(&layers, budget, exact).unwrap();
        let g = greedy_allocate(&layers, budget).unwrap();
        assert!(
            (g.cost - k.cost).abs() <= 1e-12 * k.cost,
            "{bpw}: {} vs {}",
            g.cost,
            k.cost
        );
        assert_eq!(g.bits_per_weight(), bpw);
    }
}

#[test]
fn greedy_handles_bops_and_dominated_candidates() {
    let c = |label: &str, bits: f64, bops: f64, cost: f64| {
        Choice::new(label, bits, cost).with_bops(bops)
    };
    // "w8a8-bad" is larger and costlier than "w8a8": the start skips it.
    let layers = [
        LayerChoices::new(
            "a",
            1,
            vec![
                c("w4a4", 4.0, 16.0, 2.0),
                c("w8a8", 8.0, 64.0, 0.5),
                c("w8a8-bad", 9.0, 72.0, 3.0),
            ],
        ),
        LayerChoices::new(
            "b",
            1,
            vec![c("w4a4", 4.0, 16.0, 1.0), c("w8a8", 8.0, 64.0, 0.0)],
        ),
    ];
    let g = greedy_allocate(&layers, Budget::Bops(200.0)).unwrap();
    assert_eq!(g.labels(&layers), [("a", "w8a8"), ("b", "w8a8")]);
    // 80 BOPs: one must drop to w4a4; b's drop costs 1 per 48, a's 1.5 per 48.
    let g = greedy_allocate(&layers, Budget::Bops(80.0)).unwrap();
    assert_eq!(g.labels(&layers), [("a", "w8a8"), ("b", "w4a4")]);
    assert_eq!((g.bops, g.cost), (80.0, 1.5));
    assert!(matches!(
        greedy_allocate(&layers, Budget::Bops(20.0)),
        Err(Error::Infeasible { .. })
    ));
    assert!(matches!(
        greedy_allocate(&[], Budget::Bops(20.0)),
        Err(Error::NoLayers)
    ));
}
