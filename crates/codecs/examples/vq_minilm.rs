//! Product quantization and LR²VQ of a real weight matrix: reconstruction
//! error against bits per weight (codebooks and projections counted).
//!
//! ```text
//! cargo run --release -p tensorpress-codecs --example vq_minilm
//! ```
//!
//! Reads all-MiniLM-L6-v2's `encoder.layer.0.output.dense.weight` (the FFN
//! down projection, `[384, 1536]`, f32) from
//! `$TENSORPRESS_CACHE/minilm/model.safetensors` (default `~/.cache/tensorpress`).

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use safetensors::SafeTensors;
use tensorpress_codecs::vq::{
    reconstruction_error, CodebookSharing, Lr2vq, Lr2vqConfig, PqConfig, ProductQuantizer,
};

const TENSOR: &str = "encoder.layer.0.output.dense.weight";

fn weight() -> Result<Array2<f32>, Box<dyn std::error::Error>> {
    let cache = std::env::var_os("TENSORPRESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorpress")))
        .unwrap_or_else(|| PathBuf::from(".cache/tensorpress"));
    let file = cache.join("minilm/model.safetensors");
    let bytes = std::fs::read(&file).map_err(|e| {
        format!(
            "cannot read {}: {e} (run scripts/fetch-testdata.sh)",
            file.display()
        )
    })?;
    let st = SafeTensors::deserialize(&bytes)?;
    let t = st.tensor(TENSOR)?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape().len() != 2 {
        return Err(format!("{TENSOR}: expected a 2-D f32 tensor").into());
    }
    let data: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Array2::from_shape_vec((t.shape()[0], t.shape()[1]), data)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let w = weight()?;
    let (rows, cols) = w.dim();
    println!("{TENSOR} [{rows}, {cols}]");
    println!("| method | subvector | d | codebook | bits/weight | rel. error | fit (s) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let iters = 20;
    // Classic PQ: one codebook per subspace, trained on 384 subvectors each.
    for (sub, bits) in [(8usize, 4u8), (16, 6)] {
        let start = Instant::now();
        let cfg = PqConfig::new(cols / sub, bits).max_iter(iters);
        let pq = ProductQuantizer::fit(w.view(), &cfg)?;
        let e = reconstruction_error(w.view(), pq.decode().view())?;
        println!(
            "| PQ, codebook per subspace | {sub} | {sub} | {} × {} | {:.3} | {:.4} | {:.1} |",
            1 << bits,
            cols / sub,
            pq.bits_per_weight(),
            e.relative,
            start.elapsed().as_secs_f64()
        );
    }
    // PQ with one shared codebook (plain VQ of the subvectors).
    for (sub, bits) in [(2usize, 8u8), (4, 8), (8, 8), (8, 10)] {
        let start = Instant::now();
        let cfg = PqConfig::new(cols / sub, bits)
            .sharing(CodebookSharing::Shared)
            .max_iter(iters);
        let pq = ProductQuantizer::fit(w.view(), &cfg)?;
        let e = reconstruction_error(w.view(), pq.decode().view())?;
        println!(
            "| PQ, shared codebook | {sub} | {sub} | {} | {:.3} | {:.4} | {:.1} |",
            1 << bits,
            pq.bits_per_weight(),
            e.relative,
            start.elapsed().as_secs_f64()
        );
    }
    // LR²VQ: subvectors of m, clustered in d dimensions.
    for (m, d, k) in [
        (8usize, 2usize, 256usize),
        (8, 4, 256),
        (8, 6, 256),
        (8, 8, 256),
        (8, 6, 1024),
    ] {
        let start = Instant::now();
        let q = Lr2vq::fit(w.view(), &Lr2vqConfig::new(m, d, k).max_iter(iters))?;
        let e = reconstruction_error(w.view(), q.decode().view())?;
        println!(
            "| LR²VQ (kept variance {:.3}) | {m} | {d} | {k} | {:.3} | {:.4} | {:.1} |",
            q.retained_variance(),
            q.bits_per_weight(),
            e.relative,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
