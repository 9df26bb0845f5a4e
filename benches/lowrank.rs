//! Exact truncated SVD ([`factorize`]) against randomized SVD
//! ([`randomized_svd`], Halko–Martinsson–Tropp) on a 4096×4096 matrix with a
//! slowly decaying spectrum, at ranks 256 and 409 (≤ 10 % of the dimension).
//!
//! The randomized SVD runs twice: with the defaults (oversampling 10, 2 power
//! iterations) and with a wider sketch (oversampling 100, 2 power iterations).
//! Printed for each rank, from one run of each: the relative Frobenius errors,
//! `err_rsvd / err_exact` and the speedup `t_exact / t_rsvd`; the wide sketch's
//! error ratio is asserted ≤ 1.01. On this spectrum (`σ_i ∝ (1 + i)^-0.8`,
//! no gap at the cut) the defaults land 2 % above the exact error: the
//! directions just past the rank are nearly as strong as the last kept ones,
//! and a 10-column margin with 2 iterations does not separate them.
//!
//! Criterion then times the exact SVD once (its cost does not depend on the
//! rank: the full thin SVD is computed, then truncated) and both randomized
//! settings at each rank.
//!
//! ```sh
//! cargo bench --bench lowrank
//! LOWRANK_BENCH_DIM=2048 LOWRANK_BENCH_RANKS=204 cargo bench --bench lowrank   # smaller
//! LOWRANK_BENCH_P=10 LOWRANK_BENCH_Q=4 cargo bench --bench lowrank   # other wide sketch
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use ndarray::{Array1, Array2, Axis};
use tensorpress::lowrank::{
    factorize, randomized_svd, reconstruction_error, LowRank, RandomizedSvd, RankSelection,
};
use tensorpress::tensor::{linalg, SeededRng};

/// Directions of the decaying part of the spectrum.
const DIRECTIONS: usize = 1024;

fn env_usize(key: &str, default: &str) -> Vec<usize> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("a list of integers"))
        .collect()
}

/// `U diag(σ) V + noise`: `U` (`[n, k]`) and `V` (`[k, n]`) Gaussian with
/// columns / rows of norm ≈ 1 (nearly orthonormal at this size),
/// `σ_i = (1 + i)^-0.8` over `k = 1024` directions, and Gaussian noise of
/// standard deviation `1e-5` (singular values ≈ 1e-3) under them. One GEMM of
/// `[n, k] × [k, n]`: a second or two, not minutes.
fn decaying_matrix(n: usize, seed: u64) -> Array2<f32> {
    let k = DIRECTIONS.min(n);
    let mut rng = SeededRng::new(seed);
    let sigma = Array1::from_shape_fn(k, |i| (1.0 + i as f32).powf(-0.8));
    let u = rng.array_normal((n, k)) / (n as f32).sqrt();
    let v = rng.array_normal((k, n)) / (n as f32).sqrt() * sigma.view().insert_axis(Axis(1));
    let mut w = linalg::matmul(u.view(), v.view()).expect("[n, k] × [k, n]");
    w.zip_mut_with(&rng.array_normal((n, n)), |x, e| *x += 1e-5 * e);
    w
}

fn timed(f: impl FnOnce() -> LowRank) -> (LowRank, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn err(w: &Array2<f32>, f: &LowRank) -> f64 {
    reconstruction_error(w.view(), f.reconstruct().view())
        .expect("same shape")
        .relative
}

fn svd_vs_rsvd(c: &mut Criterion) {
    let n = env_usize("LOWRANK_BENCH_DIM", "4096")[0];
    let ranks = env_usize("LOWRANK_BENCH_RANKS", "256,409");
    let t = Instant::now();
    let w = decaying_matrix(n, 0);
    eprintln!(
        "lowrank: {n}×{n} test matrix built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let defaults = RandomizedSvd::default().seed(1);
    let wide = defaults
        .oversampling(env_usize("LOWRANK_BENCH_P", "100")[0])
        .power_iterations(env_usize("LOWRANK_BENCH_Q", "2")[0]);

    for &rank in &ranks {
        let (exact, t_exact) =
            timed(|| factorize(w.view(), RankSelection::Rank(rank)).expect("exact SVD"));
        let e_exact = err(&w, &exact);
        eprintln!(
            "lowrank {n}×{n} rank {rank}: exact SVD {:.2} s, err {e_exact:.6}",
            t_exact.as_secs_f64()
        );
        let mut last_ratio = f64::NAN;
        for cfg in [defaults, wide] {
            let (fast, t_fast) = timed(|| randomized_svd(w.view(), rank, &cfg).expect("rsvd"));
            let e_fast = err(&w, &fast);
            last_ratio = e_fast / e_exact;
            eprintln!(
                "lowrank {n}×{n} rank {rank}: randomized SVD (oversampling {}, power \
                 iterations {}) {:.2} s, err {e_fast:.6}; err_rsvd/err_exact {last_ratio:.5}; \
                 time exact/rsvd ×{:.1}",
                cfg.oversampling,
                cfg.power_iterations,
                t_fast.as_secs_f64(),
                t_exact.as_secs_f64() / t_fast.as_secs_f64(),
            );
        }
        assert!(
            last_ratio <= 1.01,
            "rank {rank}: randomized SVD error {last_ratio}× the exact one, more than 1 % above"
        );
    }

    let mut g = c.benchmark_group(format!("lowrank_{n}"));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(5));
    let top = ranks.iter().copied().max().unwrap_or(1);
    g.bench_function("exact_svd", |b| {
        b.iter(|| black_box(factorize(w.view(), RankSelection::Rank(top)).expect("exact SVD")))
    });
    for &rank in &ranks {
        for (name, cfg) in [("default", defaults), ("wide", wide)] {
            g.bench_function(format!("rsvd_{name}_rank_{rank}"), |b| {
                b.iter(|| black_box(randomized_svd(w.view(), rank, &cfg).expect("rsvd")))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, svd_vs_rsvd);
criterion_main!(benches);
