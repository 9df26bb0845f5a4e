//! Entropy-coder throughput on SmolLM2-135M's Q4_1 codes (4-bit symbols):
//! our interleaved rANS against constriction's ANS coder (its default preset
//! with a categorical model, and its small preset with a lookup decoder model),
//! and our Huffman coder. Prints the decode-speed ratios before criterion runs.
//!
//! Falls back to a synthetic skewed 16-symbol source when the model is missing
//! (`scripts/fetch-testdata.sh` fetches it).

use std::hint::black_box;
use std::time::{Duration, Instant};

use constriction::stream::model::{
    DefaultContiguousCategoricalEntropyModel, IterableEntropyModel,
    SmallContiguousCategoricalEntropyModel, SmallContiguousLookupDecoderModel,
};
use constriction::stream::stack::{DefaultAnsCoder, SmallAnsCoder};
use constriction::stream::Decode;
use constriction::UnwrapInfallible;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tensorpress_codecs::entropy::huffman::HuffmanCode;
use tensorpress_codecs::entropy::rans::DefaultRans;
use tensorpress_codecs::entropy::{empirical_entropy, symbol_counts, Categorical};
use tensorpress_io::gguf::{GgmlType, GgufFile};

/// Symbols per benchmark iteration.
const N: usize = 1 << 22;

fn symbols() -> (Vec<u8>, &'static str) {
    if let Ok(path) = tensorpress_io::testdata::smollm2_gguf() {
        let file = GgufFile::open(path).expect("SmolLM2 GGUF opens");
        let mut codes = Vec::with_capacity(N);
        for info in file.tensors() {
            if info.ggml_type() != GgmlType::Q4_1 {
                continue;
            }
            for block in file
                .tensor_bytes(info.name())
                .expect("bytes")
                .chunks_exact(20)
            {
                codes.extend(block[4..].iter().map(|&b| b & 15));
                codes.extend(block[4..].iter().map(|&b| b >> 4));
            }
            if codes.len() >= N {
                codes.truncate(N);
                return (codes, "SmolLM2-135M Q4_1 codes");
            }
        }
    }
    eprintln!("SmolLM2 missing: benchmarking a synthetic skewed source");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let codes = (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40).trailing_zeros().min(15)) as u8
        })
        .collect();
    (codes, "synthetic skewed 16-symbol source")
}

/// Best of `reps` timings of `f`.
fn best(reps: usize, mut f: impl FnMut()) -> Duration {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("reps > 0")
}

struct Fixture {
    codes: Vec<u8>,
    ours: Categorical,
    ours_words: Vec<u16>,
    theirs: DefaultContiguousCategoricalEntropyModel,
    theirs_coder: DefaultAnsCoder,
    small_lookup: SmallContiguousLookupDecoderModel,
    small_coder: SmallAnsCoder,
    huffman: HuffmanCode,
    huffman_bytes: Vec<u8>,
}

fn fixture() -> Fixture {
    let (codes, source) = symbols();
    let counts = symbol_counts(&codes);
    let ours = Categorical::from_counts(&counts, Categorical::DEFAULT_PRECISION).unwrap();
    let ours_words = DefaultRans::encode_categorical(&ours, &codes).unwrap();

    let total: u64 = counts.iter().sum();
    let probs: Vec<f64> = counts.iter().map(|&c| c as f64 / total as f64).collect();
    let theirs =
        DefaultContiguousCategoricalEntropyModel::from_floating_point_probabilities_perfect(&probs)
            .unwrap();
    let mut theirs_coder = DefaultAnsCoder::new();
    theirs_coder
        .encode_iid_symbols_reverse(codes.iter().map(|&s| usize::from(s)), theirs.as_view())
        .unwrap();
    let small =
        SmallContiguousCategoricalEntropyModel::from_floating_point_probabilities_perfect(&probs)
            .unwrap();
    let fixed: Vec<u16> = small.symbol_table().map(|(_, _, p)| p.get()).collect();
    let small_lookup =
        SmallContiguousLookupDecoderModel::from_nonzero_fixed_point_probabilities(&fixed, false)
            .unwrap();
    let mut small_coder = SmallAnsCoder::new();
    small_coder
        .encode_iid_symbols_reverse(codes.iter().map(|&s| usize::from(s)), &small)
        .unwrap();

    let huffman = HuffmanCode::from_counts(&counts, 15).unwrap();
    let mut huffman_bytes = Vec::new();
    huffman.encode(&codes, &mut huffman_bytes).unwrap();

    let h = empirical_entropy(&codes);
    let bits = |bytes: usize| 8.0 * bytes as f64 / codes.len() as f64;
    println!(
        "{source}: {} symbols, H = {h:.4} bits/symbol; ours rANS {:.4}, constriction default {:.4}, \
         constriction small {:.4}, Huffman {:.4} bits/symbol",
        codes.len(),
        bits(2 * ours_words.len()),
        bits(4 * theirs_coder.num_words()),
        bits(2 * small_coder.num_words()),
        bits(huffman_bytes.len()),
    );
    Fixture {
        codes,
        ours,
        ours_words,
        theirs,
        theirs_coder,
        small_lookup,
        small_coder,
        huffman,
        huffman_bytes,
    }
}

fn decode_ours(f: &Fixture, table: &tensorpress_codecs::entropy::DecodeTable, out: &mut [u8]) {
    DefaultRans::decode_categorical(table, &f.ours_words, out).unwrap();
}

fn decode_theirs(coder: DefaultAnsCoder, f: &Fixture, out: &mut [u8]) {
    let mut coder = coder;
    for (o, s) in out
        .iter_mut()
        .zip(coder.decode_iid_symbols(f.codes.len(), f.theirs.as_view()))
    {
        *o = s.unwrap_infallible() as u8;
    }
}

fn decode_small(coder: SmallAnsCoder, f: &Fixture, out: &mut [u8]) {
    let mut coder = coder;
    for (o, s) in out
        .iter_mut()
        .zip(coder.decode_iid_symbols(f.codes.len(), &f.small_lookup))
    {
        *o = s.unwrap_infallible() as u8;
    }
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let n = f.codes.len();
    let table = f.ours.decode_table();
    let huff_table = f.huffman.decode_table();
    let mut out = vec![0u8; n];

    // Correctness of every decoder on the benchmark data.
    decode_ours(&f, &table, &mut out);
    assert_eq!(out, f.codes);
    decode_theirs(f.theirs_coder.clone(), &f, &mut out);
    assert_eq!(out, f.codes);
    decode_small(f.small_coder.clone(), &f, &mut out);
    assert_eq!(out, f.codes);
    huff_table.decode(&f.huffman_bytes, &mut out).unwrap();
    assert_eq!(out, f.codes);

    // The ratios, measured in one run (best of 7).
    let ours = best(7, || decode_ours(&f, &table, &mut out));
    let theirs = best(7, || decode_theirs(f.theirs_coder.clone(), &f, &mut out));
    let small = best(7, || decode_small(f.small_coder.clone(), &f, &mut out));
    let msym = |d: Duration| n as f64 / d.as_secs_f64() / 1e6;
    println!(
        "decode Msymbols/s: ours rANS x4 {:.0}, constriction DefaultAnsCoder {:.0} (ours {:.2}x), \
         constriction SmallAnsCoder+lookup {:.0} (ours {:.2}x)",
        msym(ours),
        msym(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64(),
        msym(small),
        small.as_secs_f64() / ours.as_secs_f64(),
    );

    let mut g = c.benchmark_group("entropy_decode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("ours_rans_x4", |b| {
        b.iter(|| decode_ours(&f, &table, black_box(&mut out)))
    });
    g.bench_function("constriction_default_ans", |b| {
        b.iter_batched(
            || f.theirs_coder.clone(),
            |coder| decode_theirs(coder, &f, black_box(&mut out)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("constriction_small_ans_lookup", |b| {
        b.iter_batched(
            || f.small_coder.clone(),
            |coder| decode_small(coder, &f, black_box(&mut out)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("ours_huffman", |b| {
        b.iter(|| {
            huff_table
                .decode(&f.huffman_bytes, black_box(&mut out))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("entropy_encode");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("ours_rans_x4", |b| {
        b.iter(|| DefaultRans::encode_categorical(&f.ours, black_box(&f.codes)).unwrap())
    });
    g.bench_function("ours_huffman", |b| {
        let mut bytes = Vec::with_capacity(f.huffman_bytes.len());
        b.iter(|| {
            bytes.clear();
            f.huffman.encode(black_box(&f.codes), &mut bytes).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
