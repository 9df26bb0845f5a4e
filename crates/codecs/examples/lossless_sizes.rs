//! Sizes and throughput of the lossless float codec on real checkpoints,
//! against zstd on the same bytes.
//!
//! ```text
//! cargo run --release -p tensorpress-codecs --example lossless_sizes [-- --runs 5 --zstd-max 22]
//! cargo run --release -p tensorpress-codecs --example lossless_sizes -- --zstd-levels 3,22
//! ```
//!
//! (a) all-MiniLM-L6-v2, every tensor of `model.safetensors` (f32);
//! (b) SmolLM2-135M-Instruct: the GGUF's tensors dequantized to f32 and
//! rounded to bf16 (what a bf16 export of that model would hold).
//!
//! Our size is the whole `.tpz` container (table, checksums, every tensor);
//! zstd compresses the concatenated tensor bytes. Throughput counts original
//! (decoded) bytes per second, best of `--runs` runs, on rayon pools of 1 and
//! 2 threads; decoding includes the CRC32 check of every payload. On a loaded
//! machine wall times undercount; the CPU-time figure (bytes per CPU-second
//! of the process, times the threads) estimates what as many idle cores give.

use std::time::{Duration, Instant};

use half::bf16;
use rayon::prelude::*;
use tensorpress_codecs::lossless::{LosslessFile, LosslessWriter};
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::safetensors::SafetensorsModel;
use tensorpress_io::testdata;
use tensorpress_tensor::DType;

/// One tensor: name, dtype, shape, little-endian bytes.
type Tensor = (String, DType, Vec<usize>, Vec<u8>);

fn minilm() -> Result<Vec<Tensor>, Box<dyn std::error::Error>> {
    let model = SafetensorsModel::open(testdata::minilm_dir()?.join("model.safetensors"))?;
    let mut out = Vec::new();
    for name in model.names() {
        let v = model.view(name)?;
        let info = model.info(name).ok_or("tensor without info")?;
        out.push((
            name.to_owned(),
            info.dtype,
            info.shape.clone(),
            v.data().to_vec(),
        ));
    }
    Ok(out)
}

fn smollm2_bf16() -> Result<Vec<Tensor>, Box<dyn std::error::Error>> {
    let file = GgufFile::open(testdata::smollm2_gguf()?)?;
    let mut out = Vec::new();
    for info in file.tensors() {
        let mut f = vec![0f32; info.numel()];
        file.dequantize_into(info.name(), &mut f)?;
        let bytes: Vec<u8> = f
            .par_iter()
            .flat_map_iter(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        out.push((
            info.name().to_owned(),
            DType::BF16,
            info.shape().to_vec(),
            bytes,
        ));
    }
    Ok(out)
}

/// CPU seconds this process has used, all threads (Linux `/proc/self/stat`,
/// 100 ticks per second); 0 elsewhere.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of the file (utime, stime); `after` starts at field 3.
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

/// Best wall time of `runs` runs, mean CPU seconds per run, and the last value.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, f64, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    let cpu0 = cpu_seconds();
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    let cpu = (cpu_seconds() - cpu0) / runs as f64;
    (best, cpu, last.expect("at least one run"))
}

fn encode(tensors: &[Tensor]) -> Vec<u8> {
    let mut w = LosslessWriter::new();
    for (name, dtype, shape, bytes) in tensors {
        w.add(name, *dtype, shape, bytes).expect("encode");
    }
    w.to_bytes().expect("container")
}

fn decode_all(file: &LosslessFile<'_>, outs: &mut [Vec<u8>]) {
    file.tensors()
        .par_iter()
        .zip(outs.par_iter_mut())
        .for_each(|(e, o)| file.decode_into(&e.name, o).expect("decode"));
}

fn report(
    label: &str,
    tensors: &[Tensor],
    runs: usize,
    zstd_levels: &[i32],
) -> Result<(), Box<dyn std::error::Error>> {
    let original: usize = tensors.iter().map(|t| t.3.len()).sum();
    let gb = original as f64 / 1e9;
    println!("\n## {label}: {} tensors, {original} bytes", tensors.len());
    let container = encode(tensors);
    let file = LosslessFile::parse(&container)?;
    let mut outs: Vec<Vec<u8>> = tensors.iter().map(|t| vec![0u8; t.3.len()]).collect();
    decode_all(&file, &mut outs);
    assert!(
        outs.iter().zip(tensors).all(|(o, t)| *o == t.3),
        "round trip is not bit-exact"
    );
    println!(
        "| ours (.tpz container) | {} | {:.2}% |",
        container.len(),
        100.0 * container.len() as f64 / original as f64
    );
    let concat: Vec<u8> = tensors.iter().flat_map(|t| t.3.iter().copied()).collect();
    for &level in zstd_levels {
        let t = Instant::now();
        let z = zstd::bulk::compress(&concat, level)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "| zstd -{level} | {} | {:.2}% | (1 thread, {:.3} GB/s encode)",
            z.len(),
            100.0 * z.len() as f64 / original as f64,
            gb / secs
        );
        if level == 3 {
            let (d, _, back) = best(runs, || zstd::bulk::decompress(&z, original).expect("zstd"));
            assert_eq!(back.len(), original);
            println!(
                "| zstd -3 decode | 1 thread | {:.3} GB/s |",
                gb / d.as_secs_f64()
            );
        }
    }
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let (enc, enc_cpu, _) = pool.install(|| best(runs, || encode(tensors)));
        let (dec, dec_cpu, _) = pool.install(|| best(runs, || decode_all(&file, &mut outs)));
        // Per CPU-second × threads: what `threads` unloaded cores would give.
        println!(
            "| ours, {threads} thread(s) | encode {:.3} GB/s | decode {:.3} GB/s | CPU-time based: encode {:.3}, decode {:.3} GB/s |",
            gb / enc.as_secs_f64(),
            gb / dec.as_secs_f64(),
            gb * threads as f64 / enc_cpu,
            gb * threads as f64 / dec_cpu,
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = arg("--runs", 3);
    let zstd_max = arg("--zstd-max", 19) as i32;
    // `--zstd-levels 3,22` picks the levels; otherwise 3, 19 and 22 up to `--zstd-max`.
    let levels: Vec<i32> = match args.iter().position(|a| a == "--zstd-levels") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--zstd-levels needs a list such as 3,22")?
            .split(',')
            .map(|l| l.trim().parse::<i32>())
            .collect::<Result<_, _>>()?,
        None => [3, 19, 22].into_iter().filter(|&l| l <= zstd_max).collect(),
    };
    report("all-MiniLM-L6-v2 (f32)", &minilm()?, runs, &levels)?;
    report(
        "SmolLM2-135M-Instruct, dequantized to bf16",
        &smollm2_bf16()?,
        runs,
        &levels,
    )?;
    Ok(())
}
