//! scratch: in-cache vs streamed throughput of the kernels (not committed)
use ndarray::Array2;
use std::hint::black_box;
use std::time::Instant;
use tensorpress_quant_core::ggml::GgmlType;
use tensorpress_quant_core::kernels::{F32Matrix, GgmlMatrix, Int4Matrix, Isa, QuantMatrix};
use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
use tensorpress_tensor::SeededRng;

fn time<M: QuantMatrix + Clone>(m: &M, isa: Isa, q8: bool, x: &[f32], copies: usize) -> f64 {
    let cs: Vec<M> = (0..copies).map(|_| m.clone()).collect();
    let mut y = vec![0.0f32; m.rows()];
    let xq = m.quantize_input(x).unwrap();
    let mut run = |m: &M| {
        if q8 {
            m.gemv_q8_with(isa, &xq, &mut y).unwrap();
        } else {
            m.gemv_with(isa, x, &mut y).unwrap();
        }
        black_box(&y);
    };
    for c in &cs {
        run(c);
    }
    let n = 200.max(copies);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            run(&cs[i % cs.len()]);
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    m.weight_bytes() as f64 / best / 1e9
}

fn main() {
    let threads: usize = std::env::var("T")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    for &(rows, cols, copies) in &[(4096usize, 4096usize, 1usize), (4096, 4096, 120)] {
        let mut rng = SeededRng::new(1);
        let w: Array2<f32> = rng.array_normal((rows, cols));
        let x: Vec<f32> = (0..cols).map(|_| rng.normal_f64() as f32).collect();
        let flat: Vec<f32> = w.iter().copied().collect();
        let q = Rtn::new(QuantSpec::int(4).group(128))
            .quantize(w.view(), None)
            .unwrap();
        let int4 = Int4Matrix::from_quantized(&q).unwrap();
        let q4 = GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &flat).unwrap();
        let f = F32Matrix::new(rows, cols, flat.clone()).unwrap();
        let fcopies = if copies == 1 { 1 } else { 20 };
        println!(
            "{rows}x{cols} copies {copies}: f32 {:.1} GB/s",
            time(&f, Isa::Avx512, false, &x, fcopies)
        );
        for isa in [Isa::Avx2, Isa::Avx512] {
            println!(
                "  {isa:?}: int4 f32 {:.1} q8 {:.1} | q4_0 f32 {:.1} q8 {:.1} GB/s",
                time(&int4, isa, false, &x, copies),
                time(&int4, isa, true, &x, copies),
                time(&q4, isa, false, &x, copies),
                time(&q4, isa, true, &x, copies)
            );
        }
    }
}
