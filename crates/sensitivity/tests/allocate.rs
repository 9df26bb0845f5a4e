//! The knapsack allocation against brute force on small random instances.

use proptest::prelude::*;
use tensorpress_sensitivity::{allocate, AllocateOptions, Budget, Choice, Error, LayerChoices};

/// Least cost over every combination whose summed bits fit `capacity`.
fn brute_force(layers: &[LayerChoices], capacity: f64) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut picks = vec![0usize; layers.len()];
    loop {
        let bits: f64 = layers
            .iter()
            .zip(&picks)
            .map(|(l, &k)| l.choices[k].bits)
            .sum();
        if bits <= capacity {
            let cost: f64 = layers
                .iter()
                .zip(&picks)
                .map(|(l, &k)| l.choices[k].cost)
                .sum();
            best = Some(best.map_or(cost, |b: f64| b.min(cost)));
        }
        // Odometer over the choice indices.
        let mut i = 0;
        loop {
            if i == layers.len() {
                return best;
            }
            picks[i] += 1;
            if picks[i] < layers[i].choices.len() {
                break;
            }
            picks[i] = 0;
            i += 1;
        }
    }
}

fn instance(bits: impl Strategy<Value = f64>) -> impl Strategy<Value = Vec<LayerChoices>> {
    let choice = (bits, 0.0f64..10.0);
    let layer = (1u64..100, prop::collection::vec(choice, 1..=4));
    prop::collection::vec(layer, 1..=6).prop_map(|layers| {
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
    /// Integer bits with one unit per bit: the dynamic program is the exact optimum.
    #[test]
    fn integer_weights_match_brute_force(
        layers in instance((0u32..=12).prop_map(f64::from)),
        capacity in 1u32..=60,
    ) {
        let capacity = f64::from(capacity);
        let options = AllocateOptions { resolution: capacity as usize };
        match (allocate(&layers, Budget::Bits(capacity), options), brute_force(&layers, capacity)) {
            (Ok(a), Some(best)) => {
                prop_assert!((a.cost - best).abs() <= 1e-9, "dp {} vs brute force {best}", a.cost);
                prop_assert!(a.bits <= capacity);
                prop_assert_eq!(a.picks.len(), layers.len());
            }
            (Err(Error::Infeasible { .. }), None) => {}
            (got, best) => prop_assert!(false, "dp {got:?} vs brute force {best:?}"),
        }
    }

    /// Arbitrary bits and resolution: never over budget, never better than the optimum.
    #[test]
    fn real_weights_stay_within_budget(
        layers in instance(0.0f64..20.0),
        capacity in 0.5f64..80.0,
        resolution in 1usize..=2000,
    ) {
        let options = AllocateOptions { resolution };
        let result = allocate(&layers, Budget::Bits(capacity), options);
        match (result, brute_force(&layers, capacity)) {
            (Ok(a), Some(best)) => {
                prop_assert!(a.bits <= capacity, "{} bits over {capacity}", a.bits);
                prop_assert!(a.cost >= best - 1e-9, "dp {} below the optimum {best}", a.cost);
            }
            (Err(Error::ResolutionTooCoarse { .. }), Some(_)) | (Err(Error::Infeasible { .. }), None) => {}
            (got, best) => prop_assert!(false, "dp {got:?} vs brute force {best:?}"),
        }
    }

    /// Bits per weight is bits over the summed parameters.
    #[test]
    fn bits_per_weight_budget_is_a_bits_budget(
        layers in instance((0u32..=400).prop_map(f64::from)),
        bpw in 0.5f64..4.0,
    ) {
        let params: u64 = layers.iter().map(|l| l.params).sum();
        let options = AllocateOptions { resolution: 5000 };
        let a = allocate(&layers, Budget::BitsPerWeight(bpw), options);
        let b = allocate(&layers, Budget::Bits(bpw * params as f64), options);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(&a.picks, &b.picks);
                prop_assert!(a.bits_per_weight() <= bpw * (1.0 + 1e-12));
            }
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{a:?} vs {b:?}"),
        }
    }
}

#[test]
fn default_resolution_is_near_optimal_on_a_model_sized_instance() {
    // 64 layers with 2..8-bit candidates and sensitivities that fall by 4× per
    // bit: the optimum at 4 bits/weight gives sensitive layers more bits.
    let layers: Vec<LayerChoices> = (0..64)
        .map(|i| {
            let params = 1_000_000 + 37_123 * i as u64;
            let scale = 1.0 + (i % 7) as f64;
            let choices = (2..=8)
                .map(|b| {
                    let bits = (params * b) as f64 + 32.0 * (params / 128) as f64;
                    Choice::new(format!("int{b}"), bits, scale * 4f64.powi(-(b as i32)))
                })
                .collect();
            LayerChoices::new(format!("layer{i}"), params, choices)
        })
        .collect();
    let a = allocate(
        &layers,
        Budget::BitsPerWeight(4.25),
        AllocateOptions::default(),
    )
    .unwrap();
    assert!(a.bits_per_weight() <= 4.25);
    // Within a few rounding units of the budget.
    assert!(a.bits_per_weight() > 4.2, "{}", a.bits_per_weight());
    // Uniform int4 is exactly 4.25 bits/weight, so feasible: the optimum beats it.
    let uniform: f64 = layers.iter().map(|l| l.choices[2].cost).sum();
    assert!(a.cost < uniform, "{} vs uniform int4 {uniform}", a.cost);
}
