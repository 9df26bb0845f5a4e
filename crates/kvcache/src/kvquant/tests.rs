//! Tests of KVQuant: the rotation, calibration (ranges, k-means, Fisher
//! weights, Q-Norm), the cache's errors by bit width, outliers and sinks kept
//! exactly, pre- against post-RoPE keys, streaming, memory and typed errors.

use super::*;
use ndarray::{s, Array2, Array3};
use proptest::prelude::*;
use tensorpress_tensor::SeededRng;

const ROPE: Rotary = Rotary {
    theta: 10_000.0,
    layout: RotaryLayout::Halves,
};

/// Keys before RoPE with a few heavy channels, values, and their rotated
/// keys `[n, heads, d]` at positions `0..n`.
fn data(n: usize, heads: usize, d: usize, seed: u64) -> (Array2<f32>, Array2<f32>, Array3<f32>) {
    let mut rng = SeededRng::new(seed);
    let mut keys: Array2<f32> = rng.array_normal((n, heads * d));
    for c in (0..heads * d).step_by(5) {
        keys.column_mut(c).mapv_inplace(|x| 6.0 + 4.0 * x);
    }
    let values: Array2<f32> = rng.array_normal((n, heads * d));
    let mut rotated = keys.clone().into_shape_with_order((n, heads, d)).unwrap();
    for t in 0..n {
        for mut h in rotated.slice_mut(s![t, .., ..]).outer_iter_mut() {
            ROPE.rotate(h.as_slice_mut().unwrap(), t, false);
        }
    }
    (keys, values, rotated)
}

fn cache_for(
    config: KvQuantConfig,
    keys: &Array2<f32>,
    values: &Array2<f32>,
    d: usize,
) -> KvQuantCache {
    let positions: Vec<usize> = (0..keys.nrows()).collect();
    let samples = KvQuantSamples::new(keys.view(), values.view(), &positions);
    let layer = KvQuantLayer::calibrate(&config, ROPE, d, &samples).unwrap();
    KvQuantCache::new(keys.ncols() / d, d, config, ROPE, Arc::new(layer)).unwrap()
}

fn rel_err(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
    let e: f32 = (a - b).mapv(|x| x * x).sum();
    (e / b.mapv(|x| x * x).sum()).sqrt()
}

#[test]
fn rotation_inverts_and_matches_the_table() {
    let mut rng = SeededRng::new(1);
    for layout in [RotaryLayout::Halves, RotaryLayout::Interleaved] {
        let r = Rotary::new(100_000.0, layout);
        let x: Vec<f32> = rng.array_normal((16,)).to_vec();
        let mut y = x.clone();
        r.rotate(&mut y, 37, false);
        let mut table = AngleTable::default();
        table.ensure(&r, 16, 40);
        let mut z = x.clone();
        table.rotate(layout, &mut z, 37, false);
        assert_eq!(y, z);
        r.rotate(&mut y, 37, true);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
        // Position 0 is the identity; the norm is kept.
        let mut w = x.clone();
        r.rotate(&mut w, 0, false);
        assert_eq!(w, x);
    }
    // The pairing: Halves turns (0, 8), Interleaved (0, 1).
    let mut h = [0.0f32; 16];
    h[0] = 1.0;
    Rotary::new(10_000.0, RotaryLayout::Halves).rotate(&mut h, 1, false);
    assert!(h[8] > 0.8 && h[1] == 0.0);
    let mut i = [0.0f32; 16];
    i[0] = 1.0;
    Rotary::new(10_000.0, RotaryLayout::Interleaved).rotate(&mut i, 1, false);
    assert!(i[1] > 0.8 && i[8] == 0.0);
}

#[test]
fn errors_fall_with_bits_and_nuq_beats_uniform_levels() {
    let (keys, values, rotated) = data(600, 2, 16, 2);
    let vals = values.clone().into_shape_with_order((600, 2, 16)).unwrap();
    let mut last = f32::INFINITY;
    for bits in [2, 3, 4] {
        let mut c = cache_for(KvQuantConfig::new(bits), &keys, &values, 16);
        c.append(rotated.view(), vals.view()).unwrap();
        let (ek, ev) = (rel_err(&c.keys(), &rotated), rel_err(&c.values(), &vals));
        assert!(ek < last && ev < 0.5, "{bits}: {ek} {ev}");
        last = ek;
        if bits == 3 {
            let uniform = KvQuantConfig {
                nuq: false,
                ..KvQuantConfig::new(3)
            };
            let mut u = cache_for(uniform, &keys, &values, 16);
            u.append(rotated.view(), vals.view()).unwrap();
            let eu = rel_err(&u.values(), &vals);
            assert!(ev < eu, "nuq {ev} vs uniform {eu}");
        }
    }
    assert!(last < 0.08, "4-bit keys {last}");
}

#[test]
fn outliers_and_sinks_are_kept_exactly() {
    // 4 heads of 64: each token's 256 values leave round(2.56) = 3 outliers.
    let (keys, values, mut rotated) = data(300, 4, 64, 3);
    let mut vals = values.clone().into_shape_with_order((300, 4, 64)).unwrap();
    let mut c = cache_for(KvQuantConfig::new(2), &keys, &values, 64);
    // A value spike far outside its token's range, and a key spike.
    vals[[50, 1, 3]] = 1000.0;
    rotated[[60, 2, 2]] = -500.0;
    c.append(rotated.view(), vals.view()).unwrap();
    let (k, v) = (c.keys(), c.values());
    assert_eq!(v[[50, 1, 3]], 1000.0);
    // The key outlier is exact before RoPE; rotated back it is within f16
    // and the quantized partner channel's error.
    assert!((k[[60, 2, 2]] + 500.0).abs() < 2.0, "{}", k[[60, 2, 2]]);
    // The sink: f16 of what was appended.
    for j in 0..64 {
        assert_eq!(k[[0, 3, j]], f16::from_f32(rotated[[0, 3, j]]).to_f32());
        assert_eq!(v[[0, 3, j]], f16::from_f32(vals[[0, 3, j]]).to_f32());
    }
    let (ko, vo) = c.outliers();
    // Three per token, less the few that the f16-rounded range still covers.
    assert!(ko >= 1 && vo > 299 * 2 && vo <= 299 * 3 + 1, "{ko} {vo}");
    // About 1 % of the key entries are outliers (calibrated on this data).
    assert!((ko as f32) < 0.02 * 299.0 * 256.0, "{ko}");
}

#[test]
fn keys_before_rope_beat_keys_after_it() {
    // Heavy channels are fixed before RoPE; rotation mixes them with their
    // pair by a position-dependent angle, so per-channel ranges fit worse.
    let (keys, values, rotated) = data(800, 2, 16, 4);
    let vals = values.clone().into_shape_with_order((800, 2, 16)).unwrap();
    let mut pre = cache_for(KvQuantConfig::new(3), &keys, &values, 16);
    let post_config = KvQuantConfig {
        pre_rope: false,
        ..KvQuantConfig::new(3)
    };
    let mut post = cache_for(post_config, &keys, &values, 16);
    pre.append(rotated.view(), vals.view()).unwrap();
    post.append(rotated.view(), vals.view()).unwrap();
    let (a, b) = (
        rel_err(&pre.keys(), &rotated),
        rel_err(&post.keys(), &rotated),
    );
    assert!(a < 0.8 * b, "pre-RoPE {a} vs post-RoPE {b}");
}

#[test]
fn fisher_weights_pull_levels_and_qnorm_keeps_the_moments() {
    let mut rng = SeededRng::new(5);
    let keys: Array2<f32> = rng.array_uniform((2000, 4)) * 2.0 - 1.0;
    let values = keys.clone();
    let positions: Vec<usize> = (0..2000).collect();
    // Gradients large only where keys are near 0.5.
    let grads = keys.mapv(|x| if (x - 0.5).abs() < 0.05 { 10.0 } else { 0.01 });
    let config = KvQuantConfig::new(2);
    let plain = KvQuantSamples::new(keys.view(), values.view(), &positions);
    let weighted = plain.clone().with_grads(grads.view(), grads.view());
    let no_qnorm = KvQuantConfig {
        qnorm: false,
        ..config
    };
    let a = KvQuantLayer::calibrate(&no_qnorm, ROPE, 4, &plain).unwrap();
    let b = KvQuantLayer::calibrate(&no_qnorm, ROPE, 4, &weighted).unwrap();
    let near = |l: &[f32]| {
        l.iter()
            .map(|x| (x - 0.5).abs())
            .fold(f32::INFINITY, f32::min)
    };
    // (Keys: per-channel ranges, so x = 0.5 is u ≈ 0.5 in every token.)
    assert!(near(&b.key_levels) < 0.03, "{:?}", b.key_levels);
    assert!(near(&b.key_levels) < near(&a.key_levels));
    // Uniform data: k-means levels sit near the cell centres ±0.25, ±0.75.
    for (l, e) in a.key_levels.iter().zip([-0.75, -0.25, 0.25, 0.75]) {
        assert!((l - e).abs() < 0.05, "{:?}", a.key_levels);
    }
    // Q-Norm widens the levels so the coded spread matches (uniform on
    // [-1, 1] has σ = 0.577; four centroids alone give 0.559).
    let q = KvQuantLayer::calibrate(&config, ROPE, 4, &plain).unwrap();
    assert!(
        q.key_levels[3] > a.key_levels[3],
        "{:?} {:?}",
        q.key_levels,
        a.key_levels
    );
}

#[test]
fn memory_is_counted_as_packed_codes_outliers_and_sinks() {
    let (keys, values, rotated) = data(100, 2, 8, 6);
    let vals = values.clone().into_shape_with_order((100, 2, 8)).unwrap();
    let mut c = cache_for(KvQuantConfig::new(3), &keys, &values, 8);
    c.append(rotated.view(), vals.view()).unwrap();
    let (ko, vo) = c.outliers();
    let coded = 99;
    let expect = 2 * (coded * 16 * 3usize).div_ceil(8)
        + 4 * (ko + vo)
        + 8 * coded
        + 4 * coded
        + 2 * 2 * 16
        + 2 * 2 * 16
        + 4 * 2 * 8;
    assert_eq!(c.memory_bytes(), expect);
    // Far below f32's 128 bytes per token.
    assert!((c.memory_bytes() as f32 / 100.0) < 40.0);
    c.clear();
    assert!(c.is_empty());
}

#[test]
fn bad_settings_and_calibrations_are_typed_errors() {
    let (keys, values, _) = data(50, 1, 8, 7);
    let positions: Vec<usize> = (0..50).collect();
    let samples = KvQuantSamples::new(keys.view(), values.view(), &positions);
    let ok = KvQuantConfig::new(3);
    for bad in [
        KvQuantConfig::new(5),
        KvQuantConfig::new(1),
        KvQuantConfig {
            outliers: 0.6,
            ..ok
        },
    ] {
        assert!(KvQuantLayer::calibrate(&bad, ROPE, 8, &samples).is_err());
    }
    assert!(KvQuantLayer::calibrate(&ok, ROPE, 3, &samples).is_err());
    assert!(KvQuantLayer::calibrate(&ok, ROPE, 16, &samples).is_err());
    let short = KvQuantSamples::new(keys.view(), values.view(), &positions[..10]);
    assert!(KvQuantLayer::calibrate(&ok, ROPE, 8, &short).is_err());
    let mut nan = keys.clone();
    nan[[3, 2]] = f32::NAN;
    let e = KvQuantLayer::calibrate(
        &ok,
        ROPE,
        8,
        &KvQuantSamples::new(nan.view(), values.view(), &positions),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                token: 3,
                dim: 2,
                ..
            }
        ),
        "{e}"
    );
    let layer = Arc::new(KvQuantLayer::calibrate(&ok, ROPE, 8, &samples).unwrap());
    // Another channel count or bit width than calibrated.
    assert!(KvQuantCache::new(2, 8, ok, ROPE, layer.clone()).is_err());
    assert!(KvQuantCache::new(1, 8, KvQuantConfig::new(2), ROPE, layer.clone()).is_err());
    let mut c = KvQuantCache::new(1, 8, ok, ROPE, layer).unwrap();
    let mut k = Array3::<f32>::zeros((2, 1, 8));
    k[[1, 0, 0]] = f32::INFINITY;
    assert!(c.append(k.view(), k.view()).is_err());
    assert!(c.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Tokens are coded once, as they arrive: however the text is split
    /// into appends, the cache reads back the same, and earlier tokens never
    /// change.
    #[test]
    fn streaming_never_recodes(splits in proptest::collection::vec(1usize..9, 1..8), seed in any::<u64>()) {
        let n: usize = splits.iter().sum();
        let (keys, values, rotated) = data(n.max(40), 1, 8, seed);
        let vals = values.clone().into_shape_with_order((keys.nrows(), 1, 8)).unwrap();
        let mut whole = cache_for(KvQuantConfig::new(2), &keys, &values, 8);
        whole.append(rotated.slice(s![..n, .., ..]), vals.slice(s![..n, .., ..])).unwrap();
        let mut parts = cache_for(KvQuantConfig::new(2), &keys, &values, 8);
        let mut at = 0;
        let mut before: Option<Array3<f32>> = None;
        for &m in &splits {
            parts.append(rotated.slice(s![at..at + m, .., ..]), vals.slice(s![at..at + m, .., ..])).unwrap();
            let now = parts.keys();
            if let Some(b) = &before {
                prop_assert_eq!(&now.slice(s![..at, .., ..]), &b.view());
            }
            before = Some(now);
            at += m;
        }
        prop_assert_eq!(parts.keys(), whole.keys());
        prop_assert_eq!(parts.values(), whole.values());
        prop_assert_eq!(parts.memory_bytes(), whole.memory_bytes());
    }
}

#[test]
fn head_ranges_help_heads_of_different_scales() {
    // Head 1's values are 50× head 0's: one range per token codes head 0
    // with a few levels at most, one per head keeps it.
    let (keys, mut values, rotated) = data(300, 2, 16, 9);
    values.slice_mut(s![.., 16..]).mapv_inplace(|x| 50.0 * x);
    let vals = values.clone().into_shape_with_order((300, 2, 16)).unwrap();
    let err_head0 = |c: &KvQuantCache| {
        let v = c.values();
        let (a, b) = (v.slice(s![.., 0, ..]), vals.slice(s![.., 0, ..]));
        let e: f32 = (&a - &b).mapv(|x| x * x).sum();
        (e / b.mapv(|x| x * x).sum()).sqrt()
    };
    let per_token = KvQuantConfig::new(3);
    let per_head = KvQuantConfig {
        head_ranges: true,
        ..per_token
    };
    let mut a = cache_for(per_token, &keys, &values, 16);
    let mut b = cache_for(per_head, &keys, &values, 16);
    a.append(rotated.view(), vals.view()).unwrap();
    b.append(rotated.view(), vals.view()).unwrap();
    let (ea, eb) = (err_head0(&a), err_head0(&b));
    assert!(eb < 0.3 && eb < ea / 3.0, "per token {ea}, per head {eb}");
    // 4 more bytes per extra range: one more head per coded token.
    let (oa, ob) = (a.outliers(), b.outliers());
    let extra = 4 * 299 + 4 * ((ob.0 + ob.1) as isize - (oa.0 + oa.1) as isize);
    assert_eq!(b.memory_bytes() as isize - a.memory_bytes() as isize, extra);
}
