//! Tests of the training-side helpers: gradients against finite differences,
//! schedules, validation and the delta codec.

use super::*;
use ndarray::{array, s};
use proptest::prelude::*;
use tensorpress_tensor::SeededRng;

/// Central differences of `f` at every entry of `x`: the step is taken in
/// f32 and measured exactly (`x + h` and `x − h` as f64), `f` evaluated
/// in f64.
fn central_diff(x: &Array2<f32>, h: f32, f: impl Fn(ArrayView2<'_, f32>) -> f64) -> Array2<f64> {
    let mut xp = x.clone();
    Array2::from_shape_fn(x.dim(), |ij| {
        let v = x[ij];
        let (hi, lo) = (v + h, v - h);
        xp[ij] = hi;
        let fp = f(xp.view());
        xp[ij] = lo;
        let fm = f(xp.view());
        xp[ij] = v;
        (fp - fm) / (f64::from(hi) - f64::from(lo))
    })
}

#[track_caller]
fn assert_grad_close(grad: &Array2<f32>, fd: &Array2<f64>, tol: f64) {
    for ((ij, &g), &n) in grad.indexed_iter().zip(fd.iter()) {
        let err = (f64::from(g) - n).abs();
        assert!(
            err <= tol * (1.0 + n.abs()),
            "at {ij:?}: analytic {g}, finite differences {n}"
        );
    }
}

/// ReLU'd normals: about half the entries exactly zero.
fn relu_acts(seed: u64, shape: (usize, usize)) -> Array2<f32> {
    SeededRng::new(seed)
        .array_normal(shape)
        .mapv(|v| v.max(0.0))
}

#[test]
fn deft_gradient_matches_finite_differences() {
    // ε = 0.05 so the surrogate's curvature (scale √ε ≈ 0.22) is resolved by h.
    let deft = DensityLoss::new(0.05).unwrap();
    let mut acts = SeededRng::new(7).array_normal((4, 6));
    acts[[1, 2]] = 0.0;
    acts[[3, 5]] = 0.0;
    let (value, grad) = deft.value_and_grad(acts.view()).unwrap();
    assert_eq!(value, deft.value(acts.view()).unwrap());
    assert_eq!(grad, deft.grad(acts.view()).unwrap());
    let fd = central_diff(&acts, 1.0 / 4096.0, |a| deft.value_f64(a));
    assert_grad_close(&grad, &fd, 1e-5);
    assert_eq!(grad[[1, 2]], 0.0);
    // The gradient pulls every nonzero entry toward zero.
    assert!(acts.iter().zip(&grad).all(|(&a, &g)| a * g >= 0.0));
}

#[test]
fn deft_surrogate_approaches_the_exact_density_as_eps_shrinks() {
    let acts = relu_acts(11, (16, 64));
    let exact = activation_density(acts.view()).unwrap();
    assert!(exact > 0.3 && exact < 0.7, "{exact}");
    // This draw has a nonzero entry of 2.4e-6: it counts as (almost) 0
    // until ε falls well below its square, 5.7e-12.
    let min_sq = acts
        .iter()
        .filter(|&&a| a != 0.0)
        .map(|&a| f64::from(a).powi(2))
        .fold(f64::INFINITY, f64::min);
    let mut last_gap = f64::INFINITY;
    for eps in [1e-1, 1e-2, 1e-4, 1e-6, 1e-9, 1e-12, 1e-15] {
        let deft = DensityLoss::new(eps).unwrap();
        let surrogate = deft.value_f64(acts.view());
        assert_eq!(deft.value(acts.view()).unwrap(), surrogate as f32);
        let gap = exact - surrogate;
        assert!(
            gap > 0.0 && gap < last_gap,
            "ε = {eps}: gap {gap}, before {last_gap}"
        );
        assert!(gap <= exact * eps / min_sq, "ε = {eps}: gap {gap}");
        last_gap = gap;
    }
    assert!(last_gap < 1e-5, "{last_gap}");
    // At ε = 1e-1 the surrogate is far from the count.
    let coarse = DensityLoss::new(1e-1).unwrap().value_f64(acts.view());
    assert!(exact - coarse > 0.05);
}

#[test]
fn deft_validation() {
    for eps in [0.0, -1e-7, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            DensityLoss::new(eps),
            Err(Error::InvalidParameter {
                name: "DEFT ε", ..
            })
        ));
    }
    let deft = DensityLoss::default();
    assert_eq!(deft.eps(), 1e-7);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let a = array![[1.0f32, 0.0], [0.0, bad]];
        assert!(matches!(
            deft.value(a.view()),
            Err(Error::NonFinite { row: 1, col: 1 })
        ));
        assert!(matches!(
            deft.grad(a.view()),
            Err(Error::NonFinite { row: 1, col: 1 })
        ));
        assert!(matches!(
            activation_density(a.view()),
            Err(Error::NonFinite { .. })
        ));
    }
    let empty = Array2::<f32>::zeros((0, 4));
    assert!(matches!(
        deft.value_and_grad(empty.view()),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        activation_density(empty.view()),
        Err(Error::EmptyInput { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each entry counts a²/(a²+ε) < 1 (0 at a = 0), so the surrogate is
    /// below the exact density by at most ε / min(a²) per nonzero entry.
    #[test]
    fn deft_surrogate_is_below_the_density_within_the_bound(
        rows in 1usize..6, cols in 1usize..20, eps_exp in -9i32..-1, seed in any::<u64>(),
    ) {
        let acts = relu_acts(seed, (rows, cols));
        let eps = 10f64.powi(eps_exp);
        let exact = activation_density(acts.view()).unwrap();
        let surrogate = DensityLoss::new(eps).unwrap().value_f64(acts.view());
        let min_sq = acts.iter().filter(|&&a| a != 0.0).map(|&a| f64::from(a).powi(2)).fold(f64::INFINITY, f64::min);
        prop_assert!(surrogate >= 0.0 && surrogate <= exact + 1e-12);
        if exact > 0.0 {
            prop_assert!(exact - surrogate <= exact * eps / min_sq + 1e-12);
        } else {
            prop_assert_eq!(surrogate, 0.0);
        }
    }
}

/// ProSparse-7B's schedule (Table 6), counted from the warmup.
fn prosparse_7b() -> ProSparseSchedule {
    ProSparseSchedule::new(&[
        (1000, 5e-3),
        (4000, 5e-2),
        (2000, 5e-2),
        (4000, 2e-1),
        (500, 2e-1),
    ])
    .unwrap()
}

#[test]
fn prosparse_schedule_follows_algorithm_1() {
    let s = prosparse_7b();
    for t in [0, 1, 500, 1000] {
        assert_eq!(s.lambda_at(t), 5e-3, "warmup at {t}");
    }
    // Stage 2 runs over (1000, 5000]: η = ½(1 − cos(π u)).
    for (t, u) in [
        (1001u64, 1.0 / 4000.0),
        (2000, 0.25),
        (3000, 0.5),
        (4000, 0.75),
    ] {
        let eta = 0.5 * (1.0 - (PI * u).cos());
        let want = 5e-3 + eta * (5e-2 - 5e-3);
        assert!((s.lambda_at(t) - want).abs() < 1e-15, "t = {t}");
    }
    assert!((s.lambda_at(3000) - 0.0275).abs() < 1e-15);
    // Zero slope at both ends of a stage: the first and last steps move little.
    assert!(s.lambda_at(1001) - 5e-3 < 1e-8);
    assert!(5e-2 - s.lambda_at(4999) < 1e-8);
    for t in [5000, 5001, 6000, 7000] {
        assert_eq!(s.lambda_at(t), 5e-2, "constant stage at {t}");
    }
    assert!((s.lambda_at(9000) - 0.125).abs() < 1e-15);
    for t in [11_000, 11_500, 20_000, u64::MAX] {
        assert_eq!(s.lambda_at(t), 0.2, "after the schedule at {t}");
    }
    assert_eq!(s.total_steps(), 11_500);
    let with_sub = s.clone().with_substitution_steps(5000);
    assert_eq!(with_sub.total_steps(), 16_500);
    for t in 0..=5000 {
        assert_eq!(with_sub.lambda_at(t), 0.0);
    }
    for t in (5001..20_000).step_by(37) {
        assert_eq!(with_sub.lambda_at(t), s.lambda_at(t - 5000));
    }
}

#[test]
fn prosparse_schedule_validation() {
    assert!(matches!(
        ProSparseSchedule::new(&[]),
        Err(Error::EmptySchedule)
    ));
    assert!(matches!(
        ProSparseSchedule::new(&[(10, 0.1), (0, 0.2)]),
        Err(Error::InvalidStage {
            stage: 1,
            steps: 0,
            ..
        })
    ));
    for bad in [-1e-3, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            ProSparseSchedule::new(&[(10, 0.1), (5, 0.2), (5, bad)]),
            Err(Error::InvalidStage { stage: 2, .. })
        ));
    }
    assert!(matches!(
        ProSparseSchedule::new(&[(10, 0.1), (5, 0.05)]),
        Err(Error::DecreasingSchedule { stage: 1, .. })
    ));
    // A zero factor (no regularization yet) and equal targets are allowed.
    let s = ProSparseSchedule::new(&[(10, 0.0), (10, 0.0), (10, 1.0)]).unwrap();
    assert_eq!(s.lambda_at(15), 0.0);
    assert_eq!(s.lambda_at(25), 0.5);
}

#[test]
fn l1_penalty_gradient_matches_finite_differences() {
    let acts = relu_acts(5, (5, 8));
    assert!(acts.iter().any(|&a| a == 0.0));
    // Central differences of |a| are exactly 0 at a = 0, the subgradient
    // l1_penalty returns; elsewhere |a| > h, so the kink is not crossed.
    assert!(acts.iter().all(|&a| a == 0.0 || a.abs() > 1e-3));
    for reduction in [L1Reduction::RowSum, L1Reduction::Mean] {
        let (value, grad) = l1_penalty(acts.view(), 0.2, reduction).unwrap();
        let fd = central_diff(&acts, 1.0 / 1024.0, |a| l1_value(a, 0.2, reduction));
        assert_grad_close(&grad, &fd, 1e-6);
        let sum: f64 = acts.iter().map(|&a| f64::from(a)).sum();
        let d = if reduction == L1Reduction::RowSum {
            5.0
        } else {
            40.0
        };
        assert!((f64::from(value) - 0.2 * sum / d).abs() < 1e-6);
    }
    let (row, _) = l1_penalty(acts.view(), 0.2, L1Reduction::RowSum).unwrap();
    let (mean, _) = l1_penalty(acts.view(), 0.2, L1Reduction::Mean).unwrap();
    assert!((row / 8.0 - mean).abs() < 1e-6);
    // Signs, and exact zeros untouched.
    let (_, g) = l1_penalty(array![[-2.0f32, 0.0, 3.0]].view(), 1.0, L1Reduction::RowSum).unwrap();
    assert_eq!(g, array![[-1.0, 0.0, 1.0]]);
}

#[test]
fn l1_penalty_validation() {
    let a = array![[1.0f32]];
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            l1_penalty(a.view(), bad, L1Reduction::Mean),
            Err(Error::InvalidParameter {
                name: "ProSparse λ",
                ..
            })
        ));
    }
    assert!(matches!(
        l1_penalty(array![[1.0f32, f32::NAN]].view(), 0.1, L1Reduction::Mean),
        Err(Error::NonFinite { row: 0, col: 1 })
    ));
    assert!(matches!(
        l1_penalty(
            Array2::<f32>::zeros((3, 0)).view(),
            0.1,
            L1Reduction::RowSum
        ),
        Err(Error::EmptyInput { .. })
    ));
}

#[test]
fn fatrelu_forward_backward() {
    let act = FatRelu::new(FatRelu::PROSPARSE_THRESHOLD).unwrap();
    let x = array![[-1.0f32, 0.0, 0.005, 0.01, 0.02, 3.0]];
    assert_eq!(
        act.forward(x.view()).unwrap(),
        array![[0.0, 0.0, 0.0, 0.01, 0.02, 3.0]]
    );
    // t = 0 is ReLU.
    let relu = FatRelu::new(0.0).unwrap();
    assert_eq!(relu.forward(x.view()).unwrap(), x.mapv(|v| v.max(0.0)));
    // Backward of Σ w ⊙ FATReLU(x) against finite differences, away from t.
    let act = FatRelu::new(0.3).unwrap();
    let x = SeededRng::new(9).array_normal((4, 7));
    assert!(x.iter().all(|v| (v - 0.3).abs() > 1e-2));
    let w = SeededRng::new(10).array_normal((4, 7));
    let loss = |x: ArrayView2<'_, f32>| {
        let y = act.forward(x).unwrap();
        y.iter()
            .zip(&w)
            .map(|(&y, &w)| f64::from(y) * f64::from(w))
            .sum::<f64>()
    };
    let grad = act.backward(x.view(), w.view()).unwrap();
    assert_grad_close(&grad, &central_diff(&x, 1.0 / 1024.0, loss), 1e-6);
    assert!(grad.iter().any(|&g| g == 0.0) && grad.iter().any(|&g| g != 0.0));
}

#[test]
fn fatrelu_validation() {
    for bad in [-0.01, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            FatRelu::new(bad),
            Err(Error::InvalidParameter {
                name: "FATReLU threshold",
                ..
            })
        ));
    }
    let act = FatRelu::new(0.1).unwrap();
    let x = array![[1.0f32, f32::NEG_INFINITY]];
    assert!(matches!(
        act.forward(x.view()),
        Err(Error::NonFinite { row: 0, col: 1 })
    ));
    assert!(matches!(
        act.backward(x.view(), array![[1.0f32]].view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// λ(t) never decreases, stays between the stage's endpoints and hits
    /// every target at the stage's last step.
    #[test]
    fn prosparse_schedule_is_monotone_and_hits_its_targets(
        stages in prop::collection::vec((1u64..50, 0.0f64..1.0), 1..6), probe in 0u64..300,
    ) {
        let mut lambdas: Vec<f64> = stages.iter().map(|s| s.1).collect();
        lambdas.sort_by(f64::total_cmp);
        let stages: Vec<(u64, f64)> = stages.iter().zip(&lambdas).map(|(s, &l)| (s.0, l)).collect();
        let s = ProSparseSchedule::new(&stages).unwrap();
        let mut end = 0;
        for (i, &(steps, lambda)) in stages.iter().enumerate() {
            let lo = if i == 0 { lambda } else { stages[i - 1].1 };
            for t in end + 1..=end + steps {
                let l = s.lambda_at(t);
                prop_assert!(lo <= l && l <= lambda, "stage {} step {}: {} not in [{}, {}]", i, t, l, lo, lambda);
            }
            end += steps;
            prop_assert_eq!(s.lambda_at(end), lambda);
        }
        prop_assert_eq!(s.lambda_at(end + probe), lambdas[lambdas.len() - 1]);
        for t in 0..=end {
            prop_assert!(s.lambda_at(t) <= s.lambda_at(t + 1), "decreases after step {}", t);
        }
    }
}

/// A sequence that mostly changes a little and sometimes stays put.
fn slow_sequence(seed: u64, steps: usize, features: usize, scale: f32) -> Array2<f32> {
    let mut rng = SeededRng::new(seed);
    let mut x = Array2::zeros((steps, features));
    let mut row = rng.array_normal(features);
    for t in 0..steps {
        if t % 5 != 3 {
            row += &rng.array_normal(features).mapv(|v| v * scale);
        }
        x.row_mut(t).assign(&row);
    }
    x
}

#[test]
fn delta_round_trip_is_exact_at_threshold_zero() {
    let x = slow_sequence(1, 40, 12, 0.1);
    let mut enc = DeltaEncoder::new(12, 0.0).unwrap();
    let deltas = enc.encode(x.view()).unwrap();
    let decoded = DeltaDecoder::new(12).decode(deltas.view()).unwrap();
    for (((t, f), &x), &y) in x.indexed_iter().zip(decoded.iter()) {
        assert!(
            (x - y).abs() <= 4.0 * f32::EPSILON * x.abs().max(1.0),
            "({t}, {f}): {x} vs {y}"
        );
    }
    assert_eq!(enc.reference(), decoded.row(39));
    // Every fifth step repeats the one before: its deltas are all zero.
    for t in (3..40).step_by(5) {
        assert!(deltas.row(t).iter().all(|&d| d == 0.0));
    }
    let sparsity = temporal_sparsity(deltas.slice(s![1.., ..])).unwrap();
    assert!((sparsity - 8.0 / 39.0).abs() < 1e-12, "{sparsity}");
}

#[test]
fn thresholded_deltas_decode_to_the_encoder_reference() {
    let x = slow_sequence(2, 60, 9, 0.05);
    let threshold = 0.1;
    let mut enc = DeltaEncoder::new(9, threshold).unwrap();
    let mut dec = DeltaDecoder::new(9);
    let mut sent = 0;
    for t in 0..60 {
        let d = enc.step(x.row(t)).unwrap();
        sent += d.iter().filter(|&&v| v != 0.0).count();
        let y = dec.decode(d.insert_axis(Axis(0)).view()).unwrap();
        assert_eq!(y.row(0), enc.reference(), "step {t}");
        for (&xv, &r) in x.row(t).iter().zip(enc.reference()) {
            assert!((xv - r).abs() <= threshold + 1e-6, "step {t}: {xv} vs {r}");
        }
    }
    // Small steps (σ = 0.05) against a threshold of 0.1: most changes wait.
    assert!(sent < 60 * 9 / 2, "{sent} of {} sent", 60 * 9);
    // Streaming in chunks gives the same deltas as one call.
    let whole = DeltaEncoder::new(9, threshold)
        .unwrap()
        .encode(x.view())
        .unwrap();
    let mut chunked = DeltaEncoder::new(9, threshold).unwrap();
    let mut parts = chunked
        .encode(x.slice(s![..25, ..]))
        .unwrap()
        .into_raw_vec_and_offset()
        .0;
    parts.extend(chunked.encode(x.slice(s![25.., ..])).unwrap().iter());
    assert_eq!(whole.into_raw_vec_and_offset().0, parts);
    assert_eq!(chunked.reference(), enc.reference());
    chunked.reset();
    assert!(chunked.reference().iter().all(|&r| r == 0.0));
}

#[test]
fn delta_l1_gradient_matches_finite_differences() {
    // Repeated steps give exact ties (zero deltas): central differences
    // there are 0, the subgradient delta_l1 uses.
    let x = slow_sequence(3, 12, 5, 0.5);
    for t in 1..12 {
        for (a, b) in x.row(t).iter().zip(x.row(t - 1)) {
            assert!(a == b || (a - b).abs() > 4e-3);
        }
    }
    let (value, grad) = delta_l1(x.view(), 0.7).unwrap();
    let fd = central_diff(&x, 1.0 / 1024.0, |x| delta_l1_value(x, 0.7));
    assert_grad_close(&grad, &fd, 1e-6);
    // The value is λ times the mean |delta| a threshold-0 encoder sends after step 0.
    let deltas = DeltaEncoder::new(5, 0.0).unwrap().encode(x.view()).unwrap();
    let mean = deltas.slice(s![1.., ..]).mapv(f32::abs).mean().unwrap();
    assert!(
        (value - 0.7 * mean).abs() < 1e-5 * value,
        "{value} vs {}",
        0.7 * mean
    );
    // A constant sequence costs nothing and has no gradient.
    let flat = Array2::from_elem((4, 3), 1.5f32);
    let (v, g) = delta_l1(flat.view(), 1.0).unwrap();
    assert_eq!(v, 0.0);
    assert!(g.iter().all(|&g| g == 0.0));
}

#[test]
fn delta_validation() {
    assert!(matches!(
        DeltaEncoder::new(0, 0.1),
        Err(Error::EmptyInput { .. })
    ));
    for bad in [-0.1, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            DeltaEncoder::new(3, bad),
            Err(Error::InvalidParameter {
                name: "delta threshold",
                ..
            })
        ));
    }
    let mut enc = DeltaEncoder::new(3, 0.0).unwrap();
    assert!(matches!(
        enc.encode(Array2::<f32>::zeros((2, 4)).view()),
        Err(Error::ShapeMismatch { .. })
    ));
    // A NaN at step 1 leaves the state as it was.
    let x = array![[1.0f32, 2.0, 3.0], [1.0, f32::NAN, 3.0]];
    assert!(matches!(
        enc.encode(x.view()),
        Err(Error::NonFinite { row: 1, col: 1 })
    ));
    assert!(enc.reference().iter().all(|&r| r == 0.0));
    assert!(matches!(
        enc.step(array![f32::INFINITY, 0.0, 0.0].view()),
        Err(Error::NonFinite { row: 0, col: 0 })
    ));
    let mut dec = DeltaDecoder::new(3);
    assert!(matches!(
        dec.decode(array![[1.0f32, 2.0]].view()),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dec.decode(array![[1.0f32, 2.0, f32::NAN]].view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        delta_l1(array![[1.0f32, 2.0]].view(), 1.0),
        Err(Error::TooFewSteps {
            steps: 1,
            needed: 2,
            ..
        })
    ));
    assert!(matches!(
        delta_l1(Array2::<f32>::zeros((3, 0)).view(), 1.0),
        Err(Error::EmptyInput { .. })
    ));
    assert!(matches!(
        delta_l1(Array2::<f32>::zeros((3, 2)).view(), -1.0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        temporal_sparsity(Array2::<f32>::zeros((0, 2)).view()),
        Err(Error::EmptyInput { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The decoder holds the encoder's reference bit for bit, which is
    /// within the threshold (plus rounding) of the input at every step.
    #[test]
    fn delta_codec_round_trip(
        steps in 1usize..30, features in 1usize..10, threshold in prop_oneof![Just(0.0f32), 0.0f32..0.5],
        seed in any::<u64>(),
    ) {
        let x = slow_sequence(seed, steps, features, 0.2);
        let mut enc = DeltaEncoder::new(features, threshold).unwrap();
        let decoded = DeltaDecoder::new(features).decode(enc.encode(x.view()).unwrap().view()).unwrap();
        prop_assert_eq!(decoded.row(steps - 1), enc.reference());
        for (&a, &b) in x.iter().zip(&decoded) {
            prop_assert!((a - b).abs() <= threshold + 8.0 * f32::EPSILON * a.abs().max(1.0), "{} vs {}", a, b);
        }
    }
}
