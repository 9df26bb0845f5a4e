//! The GGML kernels of every type in [`GgmlMatrix::TYPES`] at every level
//! this CPU runs, against the codec's dequantization, over row counts 1–9
//! and a few larger and several widths per block size.

use tensorpress_tensor::SeededRng;

use super::*;
use crate::ggml::{self as codec, GgmlType};

fn randn(rng: &mut SeededRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal_f64() as f32).collect()
}

/// `(Σ w x, Σ |w x|)` in f64 over row `r` of `w`.
fn ref_dot(w: &[f32], x: &[f32], r: usize) -> (f64, f64) {
    let cols = x.len();
    w[r * cols..(r + 1) * cols]
        .iter()
        .zip(x)
        .fold((0.0, 0.0), |(s, m), (&w, &x)| {
            let p = w as f64 * x as f64;
            (s + p, m + p.abs())
        })
}

/// Checks `y` against the f64 product of `w` and `x` within `rel` of the
/// products' magnitude.
fn check_product(what: &str, w: &[f32], x: &[f32], y: &[f32], rel: f64) {
    for (r, &y) in y.iter().enumerate() {
        let (want, mag) = ref_dot(w, x, r);
        let err = (y as f64 - want).abs();
        assert!(
            err <= rel * mag + 1e-6,
            "{what}: row {r}: {y} vs {want} (error {err:e}, scale {mag:e})"
        );
    }
}

/// Widths for a block size: several multiples, tails after the AVX-512
/// units of 128 included.
fn widths(ty: GgmlType) -> &'static [usize] {
    if ty.block_size() == 256 {
        &[256, 512, 768]
    } else {
        &[32, 64, 96, 288]
    }
}

const ROWS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 40];

#[test]
fn every_ggml_type_matches_the_codec_at_every_level() {
    let mut rng = SeededRng::new(21);
    for &ty in GgmlMatrix::TYPES {
        for &cols in widths(ty) {
            for &rows in ROWS {
                check_type(&mut rng, ty, rows, cols);
            }
        }
    }
}

fn check_type(rng: &mut SeededRng, ty: GgmlType, rows: usize, cols: usize) {
    let w = randn(rng, rows * cols);
    let mut bytes = Vec::new();
    codec::quantize_par(ty, &w, &mut bytes).unwrap();
    let m = GgmlMatrix::new(ty, rows, cols, bytes.clone()).unwrap();
    assert_eq!(m.to_bytes(), bytes, "{ty} {rows}x{cols}: GGUF bytes back");
    assert_eq!(m.ggml_type(), ty);
    let mut dq = vec![0.0f32; rows * cols];
    codec::dequantize(ty, &bytes, &mut dq).unwrap();
    // `x` at an odd offset of a larger buffer: unaligned loads.
    let buf = randn(rng, cols + 1);
    let x = &buf[1..];
    let xq = m.quantize_input(x).unwrap();
    let x_hat = xq.dequantize();
    let mut y_ref = vec![0.0f32; rows];
    m.gemv_q8_with(Isa::Scalar, &xq, &mut y_ref).unwrap();
    for isa in Isa::available() {
        let name = format!("{ty} {rows}x{cols} {isa:?}");
        let mut out = vec![0.0f32; rows * cols];
        m.dequantize_rows_with(isa, 0, &mut out).unwrap();
        assert_eq!(
            out, dq,
            "{name}: dequantization is the codec's, bit for bit"
        );
        if rows > 2 {
            let mut part = vec![0.0f32; 2 * cols];
            m.dequantize_rows_with(isa, rows - 2, &mut part).unwrap();
            assert_eq!(part, dq[(rows - 2) * cols..], "{name}: rows from an offset");
        }
        let mut y = vec![0.0f32; rows];
        m.gemv_with(isa, x, &mut y).unwrap();
        check_product(&format!("{name} gemv"), &dq, x, &y, 2e-6);
        m.gemv_q8_with(isa, &xq, &mut y).unwrap();
        // Exact for the quantized activations up to summation order ...
        check_product(&format!("{name} gemv_q8"), &dq, &x_hat, &y, 2e-6);
        // ... so close to the scalar int8 reference ...
        for (r, (a, b)) in y.iter().zip(&y_ref).enumerate() {
            let (_, mag) = ref_dot(&dq, &x_hat, r);
            assert!(
                ((a - b).abs() as f64) <= 4e-6 * mag + 1e-6,
                "{name} gemv_q8 row {r}: {a} vs scalar {b}"
            );
        }
        // ... and within the activation rounding of the f32 product.
        check_product(&format!("{name} gemv_q8 vs f32"), &dq, x, &y, 0.05);
    }
}

#[test]
fn gemm_equals_one_gemv_per_token_for_every_ggml_type() {
    let mut rng = SeededRng::new(23);
    let tokens = 5;
    for &ty in GgmlMatrix::TYPES {
        let (rows, cols) = (70, widths(ty)[1]);
        let w = randn(&mut rng, rows * cols);
        let m = GgmlMatrix::quantize(ty, rows, cols, &w).unwrap();
        let x = randn(&mut rng, tokens * cols);
        let mut y = vec![0.0f32; tokens * rows];
        m.gemm(&x, tokens, &mut y).unwrap();
        let mut y8 = vec![0.0f32; tokens * rows];
        m.gemm_q8(&x, tokens, &mut y8).unwrap();
        for t in 0..tokens {
            let xt = &x[t * cols..(t + 1) * cols];
            let mut one = vec![0.0f32; rows];
            m.gemv(xt, &mut one).unwrap();
            for (a, b) in one.iter().zip(&y[t * rows..(t + 1) * rows]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{ty} gemm token {t}: {a} vs {b}"
                );
            }
            m.gemv_q8(&m.quantize_input(xt).unwrap(), &mut one).unwrap();
            for (a, b) in one.iter().zip(&y8[t * rows..(t + 1) * rows]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{ty} gemm_q8 token {t}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn large_q4_1_and_q6_k_products_split_across_threads_match() {
    let mut rng = SeededRng::new(29);
    let (rows, cols) = (2048, 1024);
    let w = randn(&mut rng, rows * cols);
    let x = randn(&mut rng, cols);
    for ty in [GgmlType::Q4_1, GgmlType::Q6K] {
        let m = GgmlMatrix::quantize(ty, rows, cols, &w).unwrap();
        assert!(m.weight_bytes() >= DEFAULT_SERIAL_BYTES);
        let dq = m.dequantize().unwrap();
        let xq = m.quantize_input(&x).unwrap();
        for isa in Isa::available() {
            let mut y = vec![0.0f32; rows];
            m.gemv_with(isa, &x, &mut y).unwrap();
            check_product(&format!("{ty} {isa:?} split gemv"), &dq, &x, &y, 2e-6);
            m.gemv_q8_with(isa, &xq, &mut y).unwrap();
            let name = format!("{ty} {isa:?} split gemv_q8");
            check_product(&name, &dq, &xq.dequantize(), &y, 2e-6);
        }
    }
}

#[test]
fn ggml_matrices_reject_bad_shapes_with_typed_errors() {
    for &ty in GgmlMatrix::TYPES {
        let bs = ty.block_size();
        let row = ty.row_bytes(2 * bs).unwrap();
        // Bytes one short and one long.
        for len in [3 * row - 1, 3 * row + 1] {
            assert!(
                matches!(
                    GgmlMatrix::new(ty, 3, 2 * bs, vec![0; len]),
                    Err(Error::Shape {
                        what: "GGML bytes",
                        ..
                    })
                ),
                "{ty}: {len} bytes"
            );
        }
        // Widths that are not whole blocks.
        for cols in [bs / 2, bs + 32 * usize::from(bs > 32) + 16] {
            assert!(
                matches!(
                    GgmlMatrix::new(ty, 1, cols, vec![0; row]),
                    Err(Error::NotBlockMultiple { block_size, .. }) if block_size == bs
                ),
                "{ty}: {cols} columns"
            );
        }
        let m = GgmlMatrix::new(ty, 3, 2 * bs, vec![0; 3 * row]).unwrap();
        let mut y = vec![0.0f32; 3];
        assert!(matches!(
            m.gemv(&vec![0.0; 2 * bs - 1], &mut y),
            Err(Error::Shape { what: "x", .. })
        ));
        assert!(matches!(
            m.gemv(&vec![0.0; 2 * bs], &mut y[..2]),
            Err(Error::Shape { what: "y", .. })
        ));
        let short = Q8Vector::quantize(&vec![0.5; bs]).unwrap();
        assert!(matches!(
            m.gemv_q8(&short, &mut y),
            Err(Error::Shape { what: "x", .. })
        ));
        assert!(matches!(
            m.dequantize_rows(2, &mut vec![0.0; 4 * bs]),
            Err(Error::Shape { .. })
        ));
    }
    // A K-quant width that is whole 32-blocks but not whole super-blocks.
    assert!(matches!(
        GgmlMatrix::new(GgmlType::Q4K, 1, 288, vec![0; 162]),
        Err(Error::NotBlockMultiple {
            block_size: 256,
            ..
        })
    ));
    assert!(matches!(
        GgmlMatrix::new(GgmlType::Q5_1, 1, 32, vec![0; 24]),
        Err(Error::Unsupported { .. })
    ));
}
