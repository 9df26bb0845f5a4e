//! Hessian accumulation and the Cholesky routes GPTQ needs, each against its
//! baseline in the same run (the printed ratios are what to read: absolute
//! times on a shared machine say little).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use tensorpress_tensor::{linalg, Hessian, SeededRng};

/// Best of `reps` wall-clock runs.
fn best_of(reps: usize, mut f: impl FnMut()) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(what: &str, ours: Duration, base: Duration, base_name: &str) {
    println!(
        "{what}: ours {:.1} ms, {base_name} {:.1} ms, speedup ×{:.2}",
        ours.as_secs_f64() * 1e3,
        base.as_secs_f64() * 1e3,
        base.as_secs_f64() / ours.as_secs_f64()
    );
}

fn hessian(c: &mut Criterion) {
    let (tokens, n_in) = (4096, 1536);
    let mut rng = SeededRng::new(0);
    let x = rng.array_normal((tokens, n_in));
    let update = || {
        let mut h = Hessian::new(n_in);
        h.update(x.view()).unwrap();
        black_box(h.n_samples());
    };
    // Baseline: the same f64 product through ndarray's matrixmultiply, full matrix.
    let naive = || {
        let x64 = x.mapv(f64::from);
        black_box(x64.t().dot(&x64));
    };
    report(
        &format!("Hessian::update {tokens}×{n_in}"),
        best_of(3, update),
        best_of(3, naive),
        "ndarray xᵀx (f64)",
    );
    let mut g = c.benchmark_group("hessian");
    g.sample_size(10);
    g.bench_function("update_4096x1536", |b| b.iter(update));
    g.finish();
}

fn spd(n: usize) -> Array2<f64> {
    let mut rng = SeededRng::new(1);
    let x = rng.array_normal((2 * n, n));
    let mut h = Hessian::new(n);
    h.update(x.view()).unwrap();
    h.finalize(0.01).unwrap().h
}

fn cholesky(c: &mut Criterion) {
    let n = 1536;
    let h = spd(n);
    // GPTQ's route: upper Cholesky of H⁻¹. Ours (reversed factor + triangular
    // inverse) against the textbook factor → inverse → factor.
    let ours = || black_box(linalg::cholesky_inverse_upper(h.view()).unwrap());
    let textbook = || {
        let inv = linalg::spd_inverse(h.view()).unwrap();
        black_box(linalg::cholesky(inv.view()).unwrap());
    };
    report(
        &format!("cholesky_inverse_upper {n}"),
        best_of(3, || {
            ours();
        }),
        best_of(3, textbook),
        "chol→inverse→chol",
    );
    // Bridge overhead: our ndarray-in/out cholesky against faer on its own Mat.
    let m = faer::Mat::<f64>::from_fn(n, n, |i, j| h[[i, j]]);
    report(
        &format!("cholesky {n}"),
        best_of(3, || {
            black_box(linalg::cholesky(h.view()).unwrap());
        }),
        best_of(3, || {
            black_box(m.llt(faer::Side::Lower).unwrap());
        }),
        "faer Mat::llt",
    );
    let mut g = c.benchmark_group("cholesky");
    g.sample_size(10);
    g.bench_function("inverse_upper_1536", |b| b.iter(ours));
    g.finish();
}

criterion_group!(benches, hessian, cholesky);
criterion_main!(benches);
