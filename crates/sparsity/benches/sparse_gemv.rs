//! Sparse matrix-vector products against the dense f32 product of the same
//! shape, measured in the same run:
//!
//! - activation-sparse GEMV ([`ActivationSparseMatrix`], CHESS-style: the
//!   columns of zero activations are skipped) at 0 %, 50 %, 90 % and 99 %
//!   zero activations;
//! - 2:4 GEMV ([`Sparse24Matrix`]) on a 2:4-pruned weight;
//! - unstructured sparse GEMV, CSR ([`CsrMatrix`]) and compressed-tensors'
//!   bitmask layout ([`BitmaskMatrix`]), on the weight magnitude-pruned to
//!   50 %, 70 % and 90 % per row;
//!
//! each at every SIMD level, against quant-core's [`F32Matrix`] (row dot
//! products, AVX2+FMA) on the same weight, with one and with all threads.
//!
//! ```sh
//! cargo bench -p tensorpress-sparsity --bench sparse_gemv
//! SPARSE_SHAPES=576x1536 SPARSE_THREADS=1 cargo bench ...   # a subset
//! ```
//!
//! Like decoding, each product streams its weights from memory, not from
//! cache: the products cycle through enough copies of each matrix (≥ 512 MiB,
//! beyond the last-level cache).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tensorpress_quant_core::kernels::{F32Matrix, Isa, QuantMatrix};
use tensorpress_sparsity::kernels::{
    ActivationSparseMatrix, BitmaskMatrix, CsrMatrix, Sparse24Matrix,
};
use tensorpress_sparsity::{magnitude_prune, nm_magnitude, PruneScope};
use tensorpress_tensor::SeededRng;

/// Bytes the cycled copies of one matrix add up to.
const WORKING_SET: usize = 1 << 29;

/// Seconds per product of `m` with `x` at `isa`, cycling over copies.
fn time_gemv<M: QuantMatrix + Clone>(m: &M, isa: Isa, x: &[f32], reps: usize) -> f64 {
    let copies: Vec<M> = (0..WORKING_SET.div_ceil(m.weight_bytes()).max(2))
        .map(|_| m.clone())
        .collect();
    let mut y = vec![0.0f32; m.rows()];
    let mut run = |m: &M| {
        m.gemv_with(isa, x, &mut y).unwrap();
        black_box(&y);
    };
    for c in &copies {
        run(c); // warm up and fault the pages in
    }
    let n = reps.max(copies.len());
    let t = Instant::now();
    for i in 0..n {
        run(&copies[i % copies.len()]);
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn env_list<T>(key: &str, default: &str, parse: impl Fn(&str) -> T) -> Vec<T> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| parse(s.trim()))
        .collect()
}

/// Activations with every `1/(1 − zero)`-th entry nonzero (exactly `zero` of them 0).
fn activations(rng: &mut SeededRng, cols: usize, zero: f64) -> Vec<f32> {
    let keep = ((1.0 - zero) * cols as f64).round() as usize;
    let mut x = vec![0.0f32; cols];
    let mut order: Vec<usize> = (0..cols).collect();
    // A seeded shuffle: which neurons fire is scattered, as in a real FFN.
    for i in (1..cols).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    for &j in &order[..keep] {
        x[j] = rng.normal_f64() as f32;
    }
    x
}

/// Table rows of an unstructured sparse matrix at every level: its time
/// against the dense product's `dense_t` and against its scalar reference.
fn unstructured_rows<M: QuantMatrix + Clone>(
    name: &str,
    sparsity: f64,
    m: &M,
    dense_bytes: usize,
    dense_t: f64,
    x: &[f32],
) {
    let scalar = time_gemv(m, Isa::Scalar, x, 50);
    for isa in Isa::available() {
        let s = time_gemv(m, isa, x, 50);
        println!(
            "| {name}, {:.0} % pruned ({:.0} % of the dense bytes) | {isa:?} | 0 % | {:.3} | ×{:.2} | ×{:.2} |",
            sparsity * 100.0,
            100.0 * m.weight_bytes() as f64 / dense_bytes as f64,
            s * 1e3,
            dense_t / s,
            scalar / s
        );
    }
}

fn report() {
    let shapes = env_list("SPARSE_SHAPES", "576x1536,2048x5632", |s| {
        let (r, c) = s.split_once('x').expect("ROWSxCOLS");
        (r.parse::<usize>().unwrap(), c.parse::<usize>().unwrap())
    });
    let threads = env_list("SPARSE_THREADS", "1,2", |s| s.parse::<usize>().unwrap());
    let best = *Isa::available().last().unwrap();
    println!("sparse_gemv: levels {:?}, best {best:?}", Isa::available());
    for &(rows, cols) in &shapes {
        let mut rng = SeededRng::new(1);
        let w = rng.array_normal((rows, cols));
        let dense = F32Matrix::new(rows, cols, w.iter().copied().collect()).unwrap();
        let act = ActivationSparseMatrix::from_dense(w.view());
        let w24 = nm_magnitude(w.view(), 2, 4)
            .unwrap()
            .applied(w.view())
            .unwrap();
        let s24 = Sparse24Matrix::from_dense(w24.view()).unwrap();
        drop(w24);
        let unstructured: Vec<(f64, CsrMatrix, BitmaskMatrix)> = [0.5, 0.7, 0.9]
            .iter()
            .map(|&sparsity| {
                let pruned = magnitude_prune(w.view(), sparsity, PruneScope::PerRow)
                    .unwrap()
                    .applied(w.view())
                    .unwrap();
                (
                    sparsity,
                    CsrMatrix::from_dense(pruned.view()).unwrap(),
                    BitmaskMatrix::from_dense(pruned.view()).unwrap(),
                )
            })
            .collect();
        drop(w);
        let xs: Vec<(f64, Vec<f32>)> = [0.0, 0.5, 0.9, 0.99]
            .iter()
            .map(|&z| (z, activations(&mut rng, cols, z)))
            .collect();
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            pool.install(|| {
                let dense_t = time_gemv(&dense, best, &xs[0].1, 50);
                println!(
                    "\n{rows}×{cols}, {t} thread(s): dense f32 GEMV ({best:?}) {:.3} ms = {:.1} GB/s",
                    dense_t * 1e3,
                    dense.weight_bytes() as f64 / dense_t / 1e9
                );
                println!("| kernel | level | zero activations | ms | × dense f32 GEMV | × scalar |");
                println!("|---|---|---|---|---|---|");
                for (zero, x) in &xs {
                    let scalar = time_gemv(&act, Isa::Scalar, x, 50);
                    for isa in Isa::available() {
                        let s = time_gemv(&act, isa, x, 50);
                        println!(
                            "| activation-sparse | {isa:?} | {:.0} % | {:.3} | ×{:.2} | ×{:.2} |",
                            zero * 100.0,
                            s * 1e3,
                            dense_t / s,
                            scalar / s
                        );
                    }
                }
                let scalar = time_gemv(&s24, Isa::Scalar, &xs[0].1, 50);
                for isa in Isa::available() {
                    let s = time_gemv(&s24, isa, &xs[0].1, 50);
                    println!(
                        "| 2:4 ({:.0} % of the dense bytes) | {isa:?} | 0 % | {:.3} | ×{:.2} | ×{:.2} |",
                        100.0 * s24.weight_bytes() as f64 / dense.weight_bytes() as f64,
                        s * 1e3,
                        dense_t / s,
                        scalar / s
                    );
                }
                for (sparsity, csr, bitmask) in &unstructured {
                    let x = &xs[0].1;
                    unstructured_rows("CSR", *sparsity, csr, dense.weight_bytes(), dense_t, x);
                    unstructured_rows("bitmask", *sparsity, bitmask, dense.weight_bytes(), dense_t, x);
                }
            });
        }
    }
}

fn bench(c: &mut Criterion) {
    report();
    // Criterion timings at the SmolLM2 down-projection shape (cache-warm:
    // the ratios above are the figures to read).
    let (rows, cols) = (576, 1536);
    let mut rng = SeededRng::new(2);
    let w = rng.array_normal((rows, cols));
    let dense = F32Matrix::new(rows, cols, w.iter().copied().collect()).unwrap();
    let act = ActivationSparseMatrix::from_dense(w.view());
    let x90 = activations(&mut rng, cols, 0.9);
    let mut y = vec![0.0f32; rows];
    let mut g = c.benchmark_group("gemv_576x1536");
    g.bench_function("dense_f32", |b| {
        b.iter(|| dense.gemv(&x90, &mut y).unwrap())
    });
    g.bench_function("activation_sparse_90", |b| {
        b.iter(|| act.gemv(&x90, &mut y).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
