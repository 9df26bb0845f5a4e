//! Tests of the evicting cache: each policy's choice, ZipVL's mass budget,
//! EMS's merge, typed errors, and the budget property.

use super::*;
use ndarray::Array3;
use proptest::prelude::*;
use tensorpress_tensor::SeededRng;

fn step(c: &mut EvictingCache, rng: &mut SeededRng, t: usize, attend: bool) {
    let heads = c.heads();
    let k = rng.array_normal((t, heads, c.head_dim()));
    c.append(k.view(), k.view()).unwrap();
    let probs = attend.then(|| {
        let n = c.len();
        let mut p = rng.array_uniform((2 * heads, t, n));
        for mut row in p.rows_mut() {
            let s = row.sum();
            row /= s;
        }
        p
    });
    c.end_step(probs.as_ref().map(|p| p.view())).unwrap();
}

#[test]
fn h2o_keeps_heavy_hitters_and_recent_tokens() {
    let mut c = EvictingCache::new(1, 2, Eviction::h2o(), Budget::Tokens(4)).unwrap();
    let four = Array3::<f32>::zeros((4, 1, 2));
    c.append(four.view(), four.view()).unwrap();
    // One query that looks at token 1, less at token 2.
    let mut p = Array3::<f32>::zeros((1, 1, 4));
    p[[0, 0, 1]] = 0.7;
    p[[0, 0, 2]] = 0.2;
    p[[0, 0, 3]] = 0.1;
    c.end_step(Some(p.view())).unwrap();
    assert_eq!(c.positions(0), [0, 1, 2, 3]);
    // Two more: back to 4, the 2 recent (4, 5) and the 2 heavy hitters.
    let two = Array3::<f32>::zeros((2, 1, 2));
    c.append(two.view(), two.view()).unwrap();
    c.end_step(None).unwrap();
    assert_eq!(c.positions(0), [1, 2, 4, 5]);
}

#[test]
fn snapkv_keeps_the_pooled_votes_of_the_window() {
    let policy = Eviction::SnapKv {
        window: 2,
        kernel: 3,
        sinks: 0,
    };
    let mut c = EvictingCache::new(1, 1, policy, Budget::Tokens(5)).unwrap();
    let kv = Array3::<f32>::zeros((10, 1, 1));
    c.append(kv.view(), kv.view()).unwrap();
    let mut p = Array3::<f32>::zeros((1, 10, 10));
    // The last two queries vote for token 3; an early query's vote for
    // token 7 is outside the window.
    p[[0, 9, 3]] = 1.0;
    p[[0, 8, 3]] = 1.0;
    p[[0, 0, 7]] = 5.0;
    c.end_step(Some(p.view())).unwrap();
    // The window (8, 9) and three old tokens: 3 and its pooled
    // neighbours (kernel 3).
    assert_eq!(c.positions(0), [2, 3, 4, 8, 9]);
}

#[test]
fn snapkv_keeps_its_sinks_even_when_the_window_fills_the_budget() {
    let policy = Eviction::SnapKv {
        window: 32,
        kernel: 7,
        sinks: 1,
    };
    let mut c = EvictingCache::new(1, 1, policy, Budget::Tokens(8)).unwrap();
    let mut rng = SeededRng::new(3);
    step(&mut c, &mut rng, 20, true);
    assert_eq!(c.positions(0), [0, 13, 14, 15, 16, 17, 18, 19]);
}

#[test]
fn streaming_llm_keeps_sinks_and_a_recent_window() {
    let mut c = EvictingCache::new(
        1,
        1,
        Eviction::StreamingLlm { sinks: 2 },
        Budget::Ratio(0.5),
    )
    .unwrap();
    let mut rng = SeededRng::new(0);
    for _ in 0..4 {
        step(&mut c, &mut rng, 5, false);
    }
    assert_eq!(c.positions(0), [0, 1, 12, 13, 14, 15, 16, 17, 18, 19]);
}

#[test]
fn bad_settings_are_typed_errors() {
    let e = |p, b| EvictingCache::new(2, 4, p, b).unwrap_err();
    assert!(matches!(
        e(Eviction::h2o(), Budget::Tokens(0)),
        Error::Config {
            field: "budget",
            ..
        }
    ));
    assert!(matches!(
        e(Eviction::h2o(), Budget::Ratio(1.5)),
        Error::Config {
            field: "budget",
            ..
        }
    ));
    assert!(matches!(
        e(Eviction::H2o { recent: -0.1 }, Budget::Ratio(0.5)),
        Error::Config {
            field: "recent",
            ..
        }
    ));
    assert!(matches!(
        e(
            Eviction::SnapKv {
                window: 4,
                kernel: 4,
                sinks: 0,
            },
            Budget::Ratio(0.5)
        ),
        Error::Config {
            field: "kernel",
            ..
        }
    ));
    let mut c = EvictingCache::new(2, 4, Eviction::h2o(), Budget::Ratio(0.5)).unwrap();
    let kv = Array3::<f32>::zeros((3, 2, 4));
    c.append(kv.view(), kv.view()).unwrap();
    let wrong = Array3::<f32>::zeros((3, 3, 3));
    assert!(c.end_step(Some(wrong.view())).is_err());
}

#[test]
fn ems_merges_an_evicted_token_into_its_nearest_kept_key() {
    // One head of 2 dims; budget 3 tokens: the sink, one old token, the
    // newest. Token 1's key is close to token 2's; token 3's is not
    // close to any.
    let policy = Eviction::Ems {
        window: 1,
        sinks: 1,
        merge: 0.5,
    };
    let mut c = EvictingCache::new(1, 2, policy, Budget::Tokens(3)).unwrap();
    let keys = [[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-1.0, -0.2], [0.3, 0.3]];
    let values = [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0], [9.0, 9.0], [1.0, 1.0]];
    let k = Array3::from_shape_fn((5, 1, 2), |(t, _, i)| keys[t][i]);
    let v = Array3::from_shape_fn((5, 1, 2), |(t, _, i)| values[t][i]);
    c.append(k.view(), v.view()).unwrap();
    // Attention: token 2 is the heaviest old token, then token 1.
    let mut p = Array3::<f32>::zeros((1, 5, 5));
    for q in 0..5 {
        let row = [0.1, 0.2, 0.6, 0.05, 0.05];
        for i in 0..=q {
            p[[0, q, i]] = row[i];
        }
    }
    c.end_step(Some(p.view())).unwrap();
    assert_eq!(c.positions(0), [0, 2, 4]);
    let v = c.values();
    // Token 1 (cosine 0.995 with token 2) merged into it, weighted by the
    // two tokens' mean attention (0.2 vs 0.6): 4 + 0.25·(2 − 4) = 3.5;
    // token 3 (negative cosine with every kept key) was dropped.
    assert!((v[[1, 0, 0]] - 3.5).abs() < 1e-3, "{v:?}");
    assert_eq!(v[[0, 0, 0]], 0.0);
    assert_eq!(v[[2, 0, 0]], 1.0);
}

#[test]
fn attention_mass_sets_each_layers_ratio() {
    assert_eq!(tokens_for_mass(&[0.1, 0.6, 0.3], 0.9), 2);
    assert_eq!(tokens_for_mass(&[0.1, 0.6, 0.3], 0.6), 1);
    assert_eq!(tokens_for_mass(&[0.1, 0.6, 0.3], 1.0), 3);
    assert_eq!(tokens_for_mass(&[0.0, 0.0], 0.5), 2);
    // Two KV heads of one query each; head 0 concentrates its attention
    // on two tokens, head 1 spreads it over four: both keep four.
    let mut c = EvictingCache::new(2, 1, Eviction::h2o(), Budget::Mass(0.9)).unwrap();
    let kv = Array3::<f32>::zeros((8, 2, 1));
    c.append(kv.view(), kv.view()).unwrap();
    let mut p = Array3::<f32>::zeros((2, 8, 8));
    for q in 0..8 {
        p[[0, q, 0]] = 0.5;
        p[[0, q, 7]] = 0.5;
        for i in [0, 2, 5, 7] {
            p[[1, q, i]] = 0.25;
        }
    }
    c.end_step(Some(p.view())).unwrap();
    assert_eq!(c.len(), 4);
    // H2O's choice within that count: the 2 newest and each head's heavy hitters.
    assert_eq!(c.positions(0), [0, 5, 6, 7]);
    assert_eq!(c.positions(1), [2, 5, 6, 7]);
    // A concentrated layer keeps only what it needs.
    let mut c = EvictingCache::new(1, 1, Eviction::h2o(), Budget::Mass(0.9)).unwrap();
    let kv = Array3::<f32>::zeros((8, 1, 1));
    c.append(kv.view(), kv.view()).unwrap();
    let mut p = Array3::<f32>::zeros((1, 8, 8));
    for q in 0..8 {
        p[[0, q, 0]] = 1.0;
    }
    c.end_step(Some(p.view())).unwrap();
    // One token covers the mass; H2O keeps it and the newest (recent share).
    assert_eq!(c.len(), 1);
    // Without attention nothing is evicted.
    c.append(kv.view(), kv.view()).unwrap();
    c.end_step(None).unwrap();
    assert_eq!(c.len(), 9);
    assert!(EvictingCache::new(1, 1, Eviction::h2o(), Budget::Mass(0.0)).is_err());
}

#[test]
fn progressive_decay_follows_the_shifted_cosine() {
    // SmolLM2's 30 layers at a 50 % mean: the first layer keeps all, the
    // last the floor, the ratios fall monotonically and average the mean
    // (the cosine is antisymmetric about the middle layer; the floor adds a
    // little at the deep end).
    let schedule = Budget::decay(0.5);
    let ratios: Vec<f32> = (0..30)
        .map(|l| match schedule.for_layer(l, 30) {
            Budget::Ratio(r) => r,
            other => panic!("layer {l}: {other:?}"),
        })
        .collect();
    assert_eq!(ratios[0], 1.0);
    assert_eq!(ratios[29], 0.05);
    assert!(ratios.windows(2).all(|w| w[0] >= w[1]), "{ratios:?}");
    let mean = ratios.iter().sum::<f32>() / 30.0;
    assert!((0.5..0.52).contains(&mean), "{mean}");
    // p-MoD's ceiling: layers scheduled at or above it keep everything.
    let capped = Budget::Decay {
        mean: 0.5,
        floor: 0.25,
        ceiling: 0.75,
    };
    assert_eq!(capped.for_layer(5, 30), Budget::Ratio(1.0));
    // 0.5 + cos(12π / 29) / 2, as Python computes it.
    assert_eq!(capped.for_layer(12, 30), Budget::Ratio(0.633764));
    assert_eq!(capped.for_layer(29, 30), Budget::Ratio(0.25));
    // A one-layer model keeps the mean; other budgets ignore the layer.
    assert_eq!(schedule.for_layer(0, 1), Budget::Ratio(0.5));
    assert_eq!(Budget::Tokens(7).for_layer(3, 30), Budget::Tokens(7));
}

#[test]
fn progressive_decay_needs_a_layer_and_sane_numbers() {
    let build = |b| EvictingCache::new(1, 1, Eviction::h2o(), b);
    let err = build(Budget::decay(0.5)).unwrap_err().to_string();
    assert!(err.contains("for_layer"), "{err}");
    for bad in [
        Budget::decay(0.0),
        Budget::decay(1.5),
        Budget::Decay {
            mean: 0.5,
            floor: 0.8,
            ceiling: 0.6,
        },
        Budget::Decay {
            mean: 0.5,
            floor: 0.0,
            ceiling: 1.0,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any schedule gives every layer a valid ratio between its floor and
    /// one, non-increasing with depth.
    #[test]
    fn decay_ratios_stay_in_range(
        mean in 0.01f32..1.0,
        floor in 0.01f32..1.0,
        ceiling in 0.01f32..1.0,
        layers in 1usize..80,
    ) {
        let budget = Budget::Decay { mean, floor: floor.min(ceiling), ceiling: floor.max(ceiling) };
        prop_assume!(budget.validate().is_ok());
        let mut last = f32::INFINITY;
        for l in 0..layers {
            let Budget::Ratio(r) = budget.for_layer(l, layers) else {
                panic!("not a ratio");
            };
            prop_assert!(Budget::Ratio(r).validate().is_ok());
            prop_assert!(r >= floor.min(ceiling) && r <= 1.0);
            prop_assert!(r <= last || r == 1.0, "{r} after {last}");
            if r < 1.0 { last = r; }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Between steps no cache holds more than its budget, whatever the
    /// policy, budget and step sizes; heads keep equal counts, the newest
    /// token always, and positions stay increasing.
    #[test]
    fn never_past_the_budget(
        policy in 0usize..4,
        ratio in proptest::option::of(0.05f32..1.0),
        tokens in 1usize..40,
        steps in proptest::collection::vec(1usize..20, 1..12),
        attend in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let policy = [Eviction::streaming_llm(), Eviction::h2o(), Eviction::SnapKv { window: 5, kernel: 3, sinks: 1 }, Eviction::Ems { window: 4, sinks: 1, merge: 0.0 }][policy];
        let budget = ratio.map_or(Budget::Tokens(tokens), Budget::Ratio);
        let mut c = EvictingCache::new(2, 4, policy, budget).unwrap();
        let mut rng = SeededRng::new(seed);
        for &t in &steps {
            step(&mut c, &mut rng, t, attend);
            let allowed = budget.allowed(c.seen());
            prop_assert!(c.len() <= allowed, "{} > {allowed} ({policy:?}, step {t})", c.len());
            prop_assert_eq!(c.keys().dim().0, c.len());
            prop_assert_eq!(c.positions(0).len(), c.positions(1).len());
            prop_assert_eq!(*c.positions(1).last().unwrap(), c.seen() - 1);
            prop_assert!(c.positions(0).windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(c.memory_bytes(), 2 * c.len() * 2 * 4 * 4);
        }
    }
}
