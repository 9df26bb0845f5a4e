//! Times dequantizing every tensor of a GGUF file, serially and in parallel,
//! against the time to copy the same number of f32 bytes (the memory-bandwidth
//! bound of writing the output).
//!
//! ```text
//! cargo run --release -p tensorpress-io --example dequantize_gguf -- [FILE.gguf]
//! ```
//! Without an argument it uses SmolLM2 from the test-data cache.

use std::path::PathBuf;
use std::time::Instant;

use tensorpress_io::gguf::GgufFile;
use tensorpress_quant_core::ggml;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("TENSORPRESS_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorpress"))
                })
                .ok_or("set TENSORPRESS_CACHE or pass a file")?;
            cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    let file = GgufFile::open(&path)?;
    let tensors: Vec<_> = file
        .tensors()
        .iter()
        .filter(|t| t.ggml_type().can_dequantize())
        .collect();
    let numel: usize = tensors.iter().map(|t| t.numel()).sum();
    let max = tensors.iter().map(|t| t.numel()).max().unwrap_or(0);
    let mut out = vec![0.0f32; max];
    // Touch the map and the buffer once so page faults are not timed.
    for t in &tensors {
        file.dequantize_into(t.name(), &mut out[..t.numel()])?;
    }

    let best = |f: &mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>| {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t0 = Instant::now();
            f()?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        Ok::<f64, Box<dyn std::error::Error>>(best)
    };
    let serial = best(&mut || {
        for t in &tensors {
            let bytes = file.tensor_bytes(t.name())?;
            ggml::dequantize(t.ggml_type(), bytes, &mut out[..t.numel()])?;
        }
        Ok(())
    })?;
    let parallel = best(&mut || {
        for t in &tensors {
            file.dequantize_into(t.name(), &mut out[..t.numel()])?;
        }
        Ok(())
    })?;
    let src = vec![1.0f32; max];
    let copy = best(&mut || {
        for t in &tensors {
            out[..t.numel()].copy_from_slice(&src[..t.numel()]);
        }
        Ok(())
    })?;
    let gb = (numel * 4) as f64 / 1e9;
    println!(
        "{}: {} tensors, {:.1} M values",
        path.display(),
        tensors.len(),
        numel as f64 / 1e6
    );
    println!(
        "serial    {:7.1} ms  {:5.2} GB/s of f32  {:5.1}x the copy",
        serial * 1e3,
        gb / serial,
        serial / copy
    );
    println!(
        "parallel  {:7.1} ms  {:5.2} GB/s of f32  {:5.1}x the copy ({} threads)",
        parallel * 1e3,
        gb / parallel,
        parallel / copy,
        rayon_threads()
    );
    println!(
        "f32 copy  {:7.1} ms  {:5.2} GB/s (bandwidth baseline)",
        copy * 1e3,
        gb / copy
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
