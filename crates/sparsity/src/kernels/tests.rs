//! Every kernel level against the scalar reference and the dense product.

use super::*;
use crate::nm_magnitude;
use tensorpress_quant_core::kernels::F32Matrix;
use tensorpress_tensor::SeededRng;

fn dense(w: &ndarray::Array2<f32>, x: &[f32]) -> Vec<f32> {
    let (rows, cols) = w.dim();
    let m = F32Matrix::new(rows, cols, w.iter().copied().collect()).unwrap();
    let mut y = vec![0.0; rows];
    m.gemv_with(Isa::Scalar, x, &mut y).unwrap();
    y
}

fn close(a: &[f32], b: &[f32]) {
    for (i, (a, b)) in a.iter().zip(b).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{i}: {a} vs {b}");
    }
}

/// Activations with a fraction `zero` of exact zeros.
fn activations(rng: &mut SeededRng, cols: usize, zero: f64) -> Vec<f32> {
    let v = rng.array_normal((1, cols));
    v.iter()
        .map(|&x| {
            if (rng.next_u64() % 1000) as f64 / 1000.0 < zero {
                0.0
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn sparse_24_matches_dense_at_every_level_and_shape() {
    let mut rng = SeededRng::new(1);
    // 8 columns (one index byte, odd), 24 (odd bytes), large enough to go parallel.
    for (rows, cols) in [(3, 8), (5, 24), (17, 64), (600, 1536)] {
        let w = rng.array_normal((rows, cols));
        let w24 = nm_magnitude(w.view(), 2, 4)
            .unwrap()
            .applied(w.view())
            .unwrap();
        let m = Sparse24Matrix::from_dense(w24.view()).unwrap();
        assert_eq!(m.weight_bytes(), rows * cols * 2 + rows * cols / 8);
        let mut back = vec![0.0; rows * cols];
        m.dequantize_rows_with(Isa::Scalar, 0, &mut back).unwrap();
        assert_eq!(back, w24.iter().copied().collect::<Vec<_>>());
        let x = activations(&mut rng, cols, 0.0);
        let want = dense(&w24, &x);
        for isa in Isa::available() {
            let mut y = vec![0.0; rows];
            m.gemv_with(isa, &x, &mut y).unwrap();
            close(&y, &want);
        }
    }
}

#[test]
fn sparse_24_packs_groups_with_fewer_nonzeros_and_rejects_more() {
    let w = ndarray::array![[0.0f32, 0.0, 0.0, 5.0, 1.0, 0.0, 0.0, 0.0]];
    let m = Sparse24Matrix::from_dense(w.view()).unwrap();
    let mut back = vec![0.0; 8];
    m.dequantize_rows_with(Isa::Scalar, 0, &mut back).unwrap();
    assert_eq!(back, w.iter().copied().collect::<Vec<_>>());
    let bad = ndarray::array![[1.0f32, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]];
    assert!(matches!(
        Sparse24Matrix::from_dense(bad.view()),
        Err(Error::PatternViolation { kept: 3, .. })
    ));
    let narrow = ndarray::Array2::<f32>::zeros((2, 12));
    assert!(matches!(
        Sparse24Matrix::from_dense(narrow.view()),
        Err(Error::IndivisibleGroups { cols: 12, m: 8 })
    ));
    let mut y = vec![0.0; 1];
    assert!(m.gemv(&[0.0; 7], &mut y).is_err());
}

#[test]
fn activation_sparse_matches_dense_at_every_level_and_sparsity() {
    let mut rng = SeededRng::new(2);
    for (rows, cols) in [(7, 5), (33, 70), (576, 1536)] {
        let w = rng.array_normal((rows, cols));
        let m = ActivationSparseMatrix::from_dense(w.view());
        let mut back = vec![0.0; rows * cols];
        m.dequantize_rows_with(Isa::Scalar, 0, &mut back).unwrap();
        assert_eq!(back, w.iter().copied().collect::<Vec<_>>());
        for zero in [0.0, 0.5, 0.9, 1.0] {
            let x = activations(&mut rng, cols, zero);
            let want = dense(&w, &x);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; rows];
                m.gemv_with(isa, &x, &mut y).unwrap();
                close(&y, &want);
            }
        }
    }
}

#[test]
fn activation_sparse_rejects_bad_columns_and_lengths() {
    let w = ndarray::Array2::<f32>::ones((4, 6));
    let m = ActivationSparseMatrix::from_dense(w.view());
    let mut y = vec![0.0; 4];
    assert!(m
        .gemv_nonzeros_with(Isa::Scalar, &[(6, 1.0)], &mut y)
        .is_err());
    assert!(m.gemv(&[1.0; 5], &mut y).is_err());
    assert!(m.gemv(&[1.0; 6], &mut [0.0; 3]).is_err());
    m.gemv_nonzeros_with(Isa::Scalar, &[(5, 2.0), (0, 1.0)], &mut y)
        .unwrap();
    assert_eq!(y, vec![3.0; 4]);
}
