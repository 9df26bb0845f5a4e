//! Quantized matrix-vector products against their baselines, measured in the
//! same run: each SIMD level against the scalar reference, int4 and every
//! GGML type of `GgmlMatrix::TYPES` against the f32 product of the same
//! shape, the weight bytes streamed per second against a streaming-read probe
//! of this machine's memory, and the GGML kernels of the types candle has
//! (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K) against candle's quantized
//! matmul (`QMatMul`, which quantizes the activations to Q8_0 / Q8_K and
//! uses its own AVX2 / repacked VNNI kernels) on the same bytes.
//!
//! ```sh
//! cargo bench -p tensorpress-quant-core --bench kernels
//! KERNELS_SHAPES=4096x4096 KERNELS_THREADS=1 cargo bench ... # a subset
//! KERNELS_KINDS=Q4_1,Q6_K cargo bench ... # some kinds (int4 or GGML names)
//! ```
//!
//! Decoding reads each weight once per token from memory, not from cache: the
//! products cycle through enough copies of each matrix (≥ 1 GiB, beyond the
//! last-level cache) that every call streams its weights from DRAM.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::Array2;
use rayon::prelude::*;
use tensorpress_quant_core::ggml::GgmlType;
use tensorpress_quant_core::kernels::{F32Matrix, GgmlMatrix, Int4Matrix, Isa, QuantMatrix};
use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
use tensorpress_tensor::SeededRng;

/// Times one kernel at a level, with f32 or int8 activations: (seconds, weight bytes).
type Timer<'a> = dyn Fn(Isa, bool) -> (f64, usize) + 'a;

/// Bytes the cycled copies of one matrix add up to.
const WORKING_SET: usize = 1 << 30;

/// Best of `reps` wall-clock runs of `f`.
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

/// Streaming-read bandwidth in bytes/s: sums of a 1 GiB buffer, split over
/// the current pool's threads.
fn read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..WORKING_SET / 8).map(|i| i as u64).collect();
    let t = best_of(5, || {
        let s: u64 = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
            .reduce(|| 0, u64::wrapping_add);
        black_box(s);
    });
    WORKING_SET as f64 / t.as_secs_f64()
}

/// Seconds per product of `m` with `x`, cycling over copies of `m` so the
/// weights come from memory. `q8` quantizes the activations (inside the timing).
fn time_gemv<M: QuantMatrix + Clone>(m: &M, isa: Isa, q8: bool, x: &[f32], reps: usize) -> f64 {
    let copies: Vec<M> = (0..WORKING_SET.div_ceil(m.weight_bytes()).max(2))
        .map(|_| m.clone())
        .collect();
    let mut y = vec![0.0f32; m.rows()];
    let mut run = |m: &M| {
        if q8 {
            let xq = m.quantize_input(x).unwrap();
            m.gemv_q8_with(isa, &xq, &mut y).unwrap();
        } else {
            m.gemv_with(isa, x, &mut y).unwrap();
        }
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

/// Seconds per candle `QMatMul` product of the GGML bytes of `m` with `x`
/// (`[1, cols]`), cycling over copies as [`time_gemv`] does; checks that
/// candle's result agrees with ours first.
fn time_candle(m: &GgmlMatrix, x: &[f32], reps: usize) -> f64 {
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul};
    use candle_core::{Device, Module, Tensor};
    let Some(dtype) = candle_dtype(m.ggml_type()) else {
        panic!("no candle comparison for {}", m.ggml_type());
    };
    let bytes = m.to_bytes();
    let (rows, cols) = (m.rows(), m.cols());
    let copies: Vec<QMatMul> = (0..WORKING_SET.div_ceil(bytes.len()).max(2))
        .map(|_| {
            let q = qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu).unwrap();
            QMatMul::from_qtensor(q).unwrap()
        })
        .collect();
    let xt = Tensor::from_slice(x, (1, cols), &Device::Cpu).unwrap();
    let theirs: Vec<f32> = copies[0]
        .forward(&xt)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut ours = vec![0.0f32; rows];
    m.gemv_q8(&m.quantize_input(x).unwrap(), &mut ours).unwrap();
    // Candle quantizes the activations its own way (Q8_0 or Q8_K blocks), so
    // the two agree to the activation rounding, not bit for bit; a wrong
    // layout would be off by the whole norm.
    let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let diff = norm(&mut ours.iter().zip(&theirs).map(|(a, b)| a - b));
    let rel = diff / norm(&mut ours.iter().copied());
    assert!(
        rel < 0.02,
        "candle's product is {rel:.4} of the norm away from ours"
    );
    for c in &copies {
        black_box(c.forward(&xt).unwrap()); // warm up (candle repacks some types once)
    }
    let n = reps.max(copies.len());
    let t = Instant::now();
    for i in 0..n {
        black_box(copies[i % copies.len()].forward(&xt).unwrap());
    }
    t.elapsed().as_secs_f64() / n as f64
}

/// Candle's name of a GGML type, where candle has kernels for it.
fn candle_dtype(ty: GgmlType) -> Option<candle_core::quantized::GgmlDType> {
    use candle_core::quantized::GgmlDType;
    Some(match ty {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
        _ => return None,
    })
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn report() {
    let shapes: Vec<(usize, usize)> = env_list("KERNELS_SHAPES", "4096x4096,11008x4096")
        .iter()
        .map(|s| {
            let (r, c) = s.split_once('x').expect("shape ROWSxCOLS");
            (r.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    let threads: Vec<usize> = env_list("KERNELS_THREADS", "1,2")
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let kinds = env_list(
        "KERNELS_KINDS",
        "int4,Q4_0,Q4_1,Q5_0,Q8_0,IQ4_NL,Q4_K,Q5_K,Q6_K",
    );
    let ggml_types: Vec<GgmlType> = kinds
        .iter()
        .filter(|k| k.as_str() != "int4")
        .map(|k| GgmlType::from_name(k).unwrap_or_else(|| panic!("unknown kind {k}")))
        .collect();
    let best = *Isa::available().last().unwrap();
    println!("kernels: levels {:?}, best {best:?}", Isa::available());
    for &(rows, cols) in &shapes {
        let mut rng = SeededRng::new(1);
        let w: Array2<f32> = rng.array_normal((rows, cols));
        let x: Vec<f32> = (0..cols).map(|_| rng.normal_f64() as f32).collect();
        let flat: Vec<f32> = w.iter().copied().collect();
        let f32m = F32Matrix::new(rows, cols, flat.clone()).unwrap();
        let q = Rtn::new(QuantSpec::int(4).group(128))
            .quantize(w.view(), None)
            .unwrap();
        let int4 = Int4Matrix::from_quantized(&q).unwrap();
        let ggml: Vec<GgmlMatrix> = ggml_types
            .iter()
            .map(|&ty| GgmlMatrix::quantize(ty, rows, cols, &flat).unwrap())
            .collect();
        drop((w, flat));
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap();
            pool.install(|| {
                let bw = read_bandwidth();
                let f32_t = time_gemv(&f32m, best, false, &x, 20);
                println!(
                    "\n{rows}×{cols}, {t} thread(s): streaming read {:.1} GB/s; \
                     f32 GEMV {:.3} ms = {:.1} GB/s ({:.0}% of read)",
                    bw / 1e9,
                    f32_t * 1e3,
                    f32m.weight_bytes() as f64 / f32_t / 1e9,
                    100.0 * f32m.weight_bytes() as f64 / f32_t / bw
                );
                println!(
                    "| kernel | activations | ms | weight GB/s | % of read | × f32 GEMV | × scalar |"
                );
                println!("|---|---|---|---|---|---|---|");
                let int4_case = |isa, q8| (time_gemv(&int4, isa, q8, &x, 50), int4.weight_bytes());
                let mut cases: Vec<(String, Box<Timer>)> = Vec::new();
                if kinds.iter().any(|k| k == "int4") {
                    cases.push(("int4 g128".to_string(), Box::new(int4_case)));
                }
                for m in &ggml {
                    cases.push((
                        m.ggml_type().to_string(),
                        Box::new(|isa, q8| (time_gemv(m, isa, q8, &x, 50), m.weight_bytes())),
                    ));
                }
                for m in ggml.iter().filter(|m| candle_dtype(m.ggml_type()).is_some()) {
                    let ty = m.ggml_type();
                    let theirs = time_candle(m, &x, 50);
                    let ours = time_gemv(m, best, true, &x, 50);
                    println!(
                        "| {ty} candle QMatMul | int8 | {:.3} | {:.1} | {:.0}% | ×{:.2} | ours (int8, {best:?}) ×{:.2} candle |",
                        theirs * 1e3,
                        m.weight_bytes() as f64 / theirs / 1e9,
                        100.0 * m.weight_bytes() as f64 / theirs / bw,
                        f32_t / theirs,
                        theirs / ours
                    );
                }
                for (name, run) in cases {
                    for q8 in [false, true] {
                        let (scalar_t, _) = run(Isa::Scalar, q8);
                        for isa in Isa::available().into_iter().skip(1) {
                            let (s, bytes) = run(isa, q8);
                            println!(
                                "| {name} {isa:?} | {} | {:.3} | {:.1} | {:.0}% | ×{:.2} | ×{:.2} |",
                                if q8 { "int8" } else { "f32" },
                                s * 1e3,
                                bytes as f64 / s / 1e9,
                                100.0 * bytes as f64 / s / bw,
                                f32_t / s,
                                scalar_t / s
                            );
                        }
                    }
                }
            });
        }
    }
}

fn bench(c: &mut Criterion) {
    report();
    // Criterion timings of the default-level kernels at one shape (cache-warm:
    // the ratios above are the figures to read).
    let (rows, cols) = (4096, 4096);
    let mut rng = SeededRng::new(2);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.normal_f64() as f32).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.normal_f64() as f32).collect();
    let q4 = GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &w).unwrap();
    let f32m = F32Matrix::new(rows, cols, w).unwrap();
    let mut y = vec![0.0f32; rows];
    let mut g = c.benchmark_group("gemv_4096");
    g.bench_function("f32", |b| b.iter(|| f32m.gemv(&x, &mut y).unwrap()));
    g.bench_function("q4_0_f32", |b| b.iter(|| q4.gemv(&x, &mut y).unwrap()));
    g.bench_function("q4_0_q8", |b| {
        b.iter(|| {
            let xq = q4.quantize_input(&x).unwrap();
            q4.gemv_q8(&xq, &mut y).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
