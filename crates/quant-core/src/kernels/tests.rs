//! Every kernel at every level this CPU runs, against the scalar reference
//! and against products of the dequantized weights computed in f64.

use ndarray::Array2;
use tensorpress_tensor::SeededRng;

use super::*;
use crate::ggml::{self as codec, GgmlType};
use crate::{Gptq, QuantSpec, Rtn, WeightQuantizer};

fn randn(rng: &mut SeededRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal_f64() as f32).collect()
}

/// `Σ w x` in f64 with its magnitude `Σ |w x|` (the error scale).
fn ref_dot(w: &[f32], x: &[f32]) -> (f64, f64) {
    w.iter().zip(x).fold((0.0, 0.0), |(s, m), (&w, &x)| {
        let p = w as f64 * x as f64;
        (s + p, m + p.abs())
    })
}

/// Checks `y` against the f64 product of `w` (`[rows, cols]`) and `x`.
fn check_product(what: &str, w: &[f32], x: &[f32], y: &[f32]) {
    let cols = x.len();
    for (r, &y) in y.iter().enumerate() {
        let (want, mag) = ref_dot(&w[r * cols..(r + 1) * cols], x);
        let err = (y as f64 - want).abs();
        assert!(
            err <= 2e-6 * mag + 1e-6,
            "{what}: row {r}: {y} vs {want} (error {err:e}, scale {mag:e})"
        );
    }
}

/// Shapes with row counts around the rayon split and column counts from one
/// block to SmolLM2's widths.
const SHAPES: &[(usize, usize)] = &[
    (1, 32),
    (3, 64),
    (17, 96),
    (16, 128),
    (33, 256),
    (5, 576),
    (9, 448),
    (7, 1536),
];

fn int4_cases(rng: &mut SeededRng) -> Vec<(String, crate::QuantizedTensor)> {
    let mut out = Vec::new();
    for &(rows, cols) in SHAPES {
        let w = Array2::from_shape_vec((rows, cols), randn(rng, rows * cols)).unwrap();
        // 128 leaves a narrower last group at 96 and 576 columns; 256 at
        // 448 columns a last group of one 128-column unit and two blocks.
        for group in [32, 64, 128, 256, cols] {
            if group == 256 && cols < 256 {
                continue;
            }
            for sym in [true, false] {
                let mut spec = QuantSpec::int(4).group(group);
                if !sym {
                    spec = spec.asymmetric();
                }
                let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
                out.push((format!("rtn {rows}x{cols} g{group} sym={sym}"), q));
            }
        }
        // Act-order GPTQ (columns sorted by a Hessian diagonal), when groups fit.
        if cols % 32 == 0 && rows >= 2 {
            let x = Array2::from_shape_fn((64, cols), |(i, j)| {
                ((i * 7 + j * 13) % 23) as f32 * (1.0 + (j % 5) as f32) - 11.0
            });
            let mut h = tensorpress_tensor::Hessian::new(cols);
            h.update(x.view()).unwrap();
            let cal = crate::Calibration {
                hessian: Some(h.finalize(0.0).unwrap()),
                channel_stats: None,
            };
            for group in [32, 128] {
                let gptq = Gptq::new(QuantSpec::int(4).group(group)).act_order(true);
                let q = gptq.quantize(w.view(), Some(&cal)).unwrap();
                if q.g_idx().is_some() {
                    out.push((format!("gptq act-order {rows}x{cols} g{group}"), q));
                }
            }
        }
    }
    out
}

#[test]
fn int4_kernels_match_the_dequantized_weights_at_every_level() {
    let mut rng = SeededRng::new(7);
    let cases = int4_cases(&mut rng);
    assert!(cases.iter().any(|(name, _)| name.contains("act-order")));
    for (name, q) in &cases {
        let m = Int4Matrix::from_quantized(q).unwrap();
        let [rows, cols] = q.shape();
        let dq: Vec<f32> = q.dequantize().iter().copied().collect();
        // `x` at an odd offset of a larger buffer: unaligned loads.
        let buf = randn(&mut rng, cols + 3);
        let x = &buf[1..1 + cols];
        let xq = m.quantize_input(x).unwrap();
        // The int8 product is exact for the quantized activations, in stored order.
        let x_hat_stored = xq.dequantize();
        let mut x_hat = vec![0.0f32; cols];
        match m.input_order() {
            Some(p) => {
                for (&c, &v) in p.iter().zip(&x_hat_stored) {
                    x_hat[c as usize] = v;
                }
            }
            None => x_hat.copy_from_slice(&x_hat_stored),
        }
        for isa in Isa::available() {
            let mut out = vec![0.0f32; rows * cols];
            m.dequantize_rows_with(isa, 0, &mut out).unwrap();
            for (i, (a, b)) in out.iter().zip(&dq).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{name} {isa:?} dequant [{i}]: {a} vs {b}"
                );
            }
            if rows > 2 {
                let mut part = vec![0.0f32; 2 * cols];
                m.dequantize_rows_with(isa, rows - 2, &mut part).unwrap();
                assert_eq!(
                    part,
                    out[(rows - 2) * cols..],
                    "{name} {isa:?}: rows from an offset"
                );
            }
            let mut y = vec![0.0f32; rows];
            m.gemv_with(isa, x, &mut y).unwrap();
            check_product(&format!("{name} {isa:?} gemv"), &dq, x, &y);
            m.gemv_q8_with(isa, &xq, &mut y).unwrap();
            check_product(&format!("{name} {isa:?} gemv_q8"), &dq, &x_hat, &y);
        }
    }
}

#[test]
fn ggml_kernels_match_the_codec_at_every_level() {
    let mut rng = SeededRng::new(11);
    for &ty in GgmlMatrix::TYPES {
        for &(rows, cols) in SHAPES {
            if !cols.is_multiple_of(ty.block_size()) {
                continue;
            }
            let w = randn(&mut rng, rows * cols);
            let m = GgmlMatrix::quantize(ty, rows, cols, &w).unwrap();
            let mut dq = vec![0.0f32; rows * cols];
            let bytes = m.to_bytes();
            let mut encoded = Vec::new();
            crate::ggml::quantize_par(ty, &w, &mut encoded).unwrap();
            assert_eq!(
                bytes, encoded,
                "{ty} {rows}x{cols}: the GGUF blocks come back"
            );
            codec::dequantize(ty, &bytes, &mut dq).unwrap();
            let buf = randn(&mut rng, cols + 1);
            let x = &buf[1..];
            let xq = m.quantize_input(x).unwrap();
            let x_hat = xq.dequantize();
            for isa in Isa::available() {
                let name = format!("{ty} {rows}x{cols} {isa:?}");
                let mut out = vec![0.0f32; rows * cols];
                m.dequantize_rows_with(isa, 0, &mut out).unwrap();
                assert_eq!(
                    out, dq,
                    "{name}: dequantization is the codec's, bit for bit"
                );
                let mut y = vec![0.0f32; rows];
                m.gemv_with(isa, x, &mut y).unwrap();
                check_product(&format!("{name} gemv"), &dq, x, &y);
                m.gemv_q8_with(isa, &xq, &mut y).unwrap();
                check_product(&format!("{name} gemv_q8"), &dq, &x_hat, &y);
            }
        }
    }
}

#[test]
fn round_away_is_f32_round_over_the_q8_range() {
    // Every multiple of 1/64 in [-127.5, 127.5] (ties included), then
    // values next to the ties.
    for i in -8160..=8160 {
        let v = i as f32 / 64.0;
        assert_eq!(scalar::round_away(v), v.round() as i32, "{v}");
        for w in [v.next_up(), v.next_down()] {
            if w.abs() <= 127.5 {
                assert_eq!(scalar::round_away(w), w.round() as i32, "{w}");
            }
        }
    }
}

#[test]
fn q8_activations_are_ggml_q8_0_codes() {
    let mut rng = SeededRng::new(3);
    let mut x = randn(&mut rng, 32 * 9);
    x[64..96].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
    x[100] = 1e-30;
    let q = Q8Vector::quantize(&x).unwrap();
    let mut ggml = Vec::new();
    codec::quantize(GgmlType::Q8_0, &x, &mut ggml).unwrap();
    for (b, blk) in ggml.chunks_exact(34).enumerate() {
        let codes: Vec<i8> = blk[2..].iter().map(|&c| c as i8).collect();
        assert_eq!(codes, q.codes()[b * 32..(b + 1) * 32], "block {b}");
        assert_eq!(
            q.block_sums()[b],
            codes.iter().map(|&c| c as i32).sum::<i32>()
        );
    }
    assert_eq!(q.scales()[2], 0.0);
    // Every level gives the same bytes, ties included (k + 0.5 steps).
    let mut ties: Vec<f32> = (0..32 * 8).map(|i| (i as f32 - 128.0) * 0.5).collect();
    ties[5] = 127.0; // block 0's maximum: the scale is 1, the x are the ties
    for isa in Isa::available() {
        for v in [&x, &ties] {
            assert_eq!(
                Q8Vector::quantize_with(isa, v).unwrap(),
                Q8Vector::quantize_with(Isa::Scalar, v).unwrap(),
                "{isa:?}"
            );
        }
    }
}

#[test]
fn gemm_equals_one_gemv_per_token() {
    let mut rng = SeededRng::new(5);
    let (rows, cols, tokens) = (100, 256, 7);
    let w = randn(&mut rng, rows * cols);
    let q4 = GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &w).unwrap();
    let act_order = int4_cases(&mut rng)
        .into_iter()
        .find(|(name, _)| name.contains("act-order"))
        .map(|(_, q)| Int4Matrix::from_quantized(&q).unwrap())
        .unwrap();
    assert!(act_order.input_order().is_some());
    let matrices: [&dyn QuantMatrix; 2] = [&q4, &act_order];
    for m in matrices {
        let (rows, cols) = (m.rows(), m.cols());
        let x = randn(&mut rng, tokens * cols);
        let dq = m.dequantize().unwrap();
        let mut y = vec![0.0f32; tokens * rows];
        m.gemm(&x, tokens, &mut y).unwrap();
        let mut y8 = vec![0.0f32; tokens * rows];
        m.gemm_q8(&x, tokens, &mut y8).unwrap();
        for t in 0..tokens {
            let xt = &x[t * cols..(t + 1) * cols];
            check_product(
                &format!("{m:?} gemm token {t}"),
                &dq,
                xt,
                &y[t * rows..(t + 1) * rows],
            );
            let mut one = vec![0.0f32; rows];
            m.gemv_q8(&m.quantize_input(xt).unwrap(), &mut one).unwrap();
            for (a, b) in one.iter().zip(&y8[t * rows..(t + 1) * rows]) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{m:?} gemm_q8 token {t}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn products_large_enough_to_split_across_threads_match() {
    // Above `DEFAULT_SERIAL_BYTES` of weights, rows go to rayon's pool.
    let mut rng = SeededRng::new(13);
    let (rows, cols) = (2048, 1024);
    let w = randn(&mut rng, rows * cols);
    let x = randn(&mut rng, cols);
    let q = Rtn::new(QuantSpec::int(4).group(128))
        .quantize(
            Array2::from_shape_vec((rows, cols), w.clone())
                .unwrap()
                .view(),
            None,
        )
        .unwrap();
    let int4 = Int4Matrix::from_quantized(&q).unwrap();
    let q4 = GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &w).unwrap();
    let matrices: [(&dyn QuantMatrix, Vec<f32>); 2] = [
        (&int4, q.dequantize().iter().copied().collect()),
        (&q4, q4.dequantize().unwrap()),
    ];
    for (m, dq) in matrices {
        assert!(m.weight_bytes() >= DEFAULT_SERIAL_BYTES);
        let xq = m.quantize_input(&x).unwrap();
        for isa in Isa::available() {
            let mut y = vec![0.0f32; rows];
            m.gemv_with(isa, &x, &mut y).unwrap();
            check_product(&format!("{isa:?} split gemv"), &dq, &x, &y);
            m.gemv_q8_with(isa, &xq, &mut y).unwrap();
            check_product(&format!("{isa:?} split gemv_q8"), &dq, &xq.dequantize(), &y);
        }
    }
}

#[test]
fn f32_baseline_matches_the_reference() {
    let mut rng = SeededRng::new(9);
    let (rows, cols) = (19, 100); // a length with a tail after the SIMD chunks
    let w = randn(&mut rng, rows * cols);
    let m = F32Matrix::new(rows, cols, w.clone()).unwrap();
    let x = randn(&mut rng, cols);
    for isa in Isa::available() {
        let mut y = vec![0.0f32; rows];
        m.gemv_with(isa, &x, &mut y).unwrap();
        check_product(&format!("f32 {isa:?}"), &w, &x, &y);
    }
}

#[test]
fn bad_input_gets_typed_errors() {
    let codes = vec![0u8; 4 * 64];
    let s = vec![1.0f32; 4 * 2];
    assert!(matches!(
        Int4Matrix::from_codes(4, 64, 48, &codes, &s, &s, None),
        Err(Error::InvalidGroupSize {
            group: 48,
            cols: 64
        })
    ));
    let mut bad = codes.clone();
    bad[5] = 16;
    assert!(matches!(
        Int4Matrix::from_codes(4, 64, 32, &bad, &s, &s, None),
        Err(Error::CodeRange { code: 16, bits: 4 })
    ));
    let mut nan = s.clone();
    nan[3] = f32::NAN;
    assert!(matches!(
        Int4Matrix::from_codes(4, 64, 32, &codes, &nan, &s, None),
        Err(Error::NonFinite {
            what: "scales",
            row: 1,
            col: 1,
            ..
        })
    ));
    // Act-order with a group of the wrong width.
    let g_idx: Vec<u32> = (0..64).map(|c| u32::from(c >= 40)).collect();
    assert!(matches!(
        Int4Matrix::from_codes(4, 64, 32, &codes, &s, &s, Some(&g_idx)),
        Err(Error::GroupIndex { .. })
    ));
    let m = Int4Matrix::from_codes(4, 64, 32, &codes, &s, &s, None).unwrap();
    let mut y = vec![0.0f32; 4];
    assert!(matches!(
        m.gemv(&[0.0; 63], &mut y),
        Err(Error::Shape { what: "x", .. })
    ));
    assert!(matches!(
        m.gemv(&[0.0; 64], &mut y[..3]),
        Err(Error::Shape { what: "y", .. })
    ));
    let mut out = vec![0.0f32; 64 * 2];
    assert!(matches!(
        m.dequantize_rows(3, &mut out),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        m.dequantize_rows(0, &mut out[..70]),
        Err(Error::RowLength { .. })
    ));
    let mut x = vec![0.5f32; 64];
    x[9] = f32::INFINITY;
    assert!(matches!(
        Q8Vector::quantize(&x),
        Err(Error::NonFinite {
            what: "activation",
            col: 9,
            ..
        })
    ));
    assert!(matches!(
        Q8Vector::quantize(&x[..40]),
        Err(Error::InvalidGroupSize { .. })
    ));
    assert!(matches!(
        GgmlMatrix::new(GgmlType::Q5_1, 1, 32, vec![0; 24]),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        GgmlMatrix::new(GgmlType::Q4_0, 2, 32, vec![0; 35]),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn isa_names_parse_and_scalar_is_always_there() {
    assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
    assert_eq!(Isa::from_name("neon"), None);
    assert_eq!(Isa::available()[0], Isa::Scalar);
    assert!(Isa::detect().is_available());
}
