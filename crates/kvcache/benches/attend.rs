//! One decoding step's attention over a cache of SmolLM2-135M's shape (3 KV
//! heads of 64, 9 query heads) holding 8192 tokens: the f32 cache against
//! KIVI-2 and KIVI-4 attending on their packed codes, and against the
//! dequantize-then-attend path (the trait's default), in the same run.
//!
//! ```sh
//! cargo bench -p tensorpress-kvcache --bench attend
//! ATTEND_TOKENS=2048,8192 cargo bench -p tensorpress-kvcache --bench attend
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tensorpress_kvcache::{attend_reference, F32Cache, KiviCache, KiviConfig, KvCache};
use tensorpress_tensor::SeededRng;

const HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const QUERY_HEADS: usize = 9;

fn attend(c: &mut Criterion) {
    let lengths: Vec<usize> = std::env::var("ATTEND_TOKENS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![8192]);
    for tokens in lengths {
        let mut rng = SeededRng::new(0);
        let k = rng.array_normal((tokens, HEADS, HEAD_DIM));
        let v = rng.array_normal((tokens, HEADS, HEAD_DIM));
        let q = rng.array_normal((QUERY_HEADS, HEAD_DIM)) * 0.125;
        let mut f32c = F32Cache::new(HEADS, HEAD_DIM);
        f32c.append(k.view(), v.view()).unwrap();
        let mut group = c.benchmark_group(format!("attend/{tokens}"));
        group.sample_size(20);
        group.bench_function("f32", |b| {
            b.iter(|| black_box(f32c.attend(q.view()).unwrap()))
        });
        for bits in [2u8, 4] {
            let mut kivi = KiviCache::new(HEADS, HEAD_DIM, KiviConfig::new(bits)).unwrap();
            kivi.append(k.view(), v.view()).unwrap();
            println!(
                "{tokens} tokens: f32 cache {} bytes, kivi-{bits} {} bytes ({:.2}× smaller)",
                f32c.memory_bytes(),
                kivi.memory_bytes(),
                f32c.memory_bytes() as f64 / kivi.memory_bytes() as f64
            );
            group.bench_function(format!("kivi-{bits} fused"), |b| {
                b.iter(|| black_box(kivi.attend(q.view()).unwrap()))
            });
            group.bench_function(format!("kivi-{bits} dequantize then attend"), |b| {
                b.iter(|| {
                    black_box(
                        attend_reference(kivi.keys().view(), kivi.values().view(), q.view())
                            .unwrap(),
                    )
                })
            });
        }
        group.finish();
        paired(&f32c, &q, &k, &v, tokens);
    }
}

/// Alternates the f32 cache and KIVI calls and reports the minimum of each
/// and the median of the per-pair ratios: on a shared machine, load that
/// drifts between criterion's sequential groups moves both sides of a pair
/// alike.
fn paired(
    f32c: &F32Cache,
    q: &ndarray::Array2<f32>,
    k: &ndarray::Array3<f32>,
    v: &ndarray::Array3<f32>,
    tokens: usize,
) {
    let time = |c: &dyn KvCache| {
        let t = std::time::Instant::now();
        black_box(c.attend(q.view()).unwrap());
        t.elapsed().as_secs_f64() * 1e3
    };
    for bits in [2u8, 4] {
        let mut kivi = KiviCache::new(HEADS, HEAD_DIM, KiviConfig::new(bits)).unwrap();
        kivi.append(k.view(), v.view()).unwrap();
        let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..200 {
            let (x, y) = (time(f32c), time(&kivi));
            a.push(x);
            b.push(y);
            ratios.push(y / x);
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        ratios.sort_by(f64::total_cmp);
        println!(
            "paired, {tokens} tokens, 200 alternating calls: f32 min {:.3} ms, kivi-{bits} fused min {:.3} ms; median kivi/f32 ratio {:.3}",
            min(&a),
            min(&b),
            ratios[ratios.len() / 2]
        );
    }
}

criterion_group!(benches, attend);
criterion_main!(benches);
