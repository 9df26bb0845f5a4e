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

/// A weight with a fraction `zero` of exact zeros at random places, and
/// every third row empty when `empty_rows`.
fn unstructured(
    rng: &mut SeededRng,
    rows: usize,
    cols: usize,
    zero: f64,
    empty_rows: bool,
) -> ndarray::Array2<f32> {
    let mut w = rng.array_normal((rows, cols));
    for ((r, _), v) in w.indexed_iter_mut() {
        if (empty_rows && r % 3 == 1) || (rng.next_u64() % 1000) as f64 / 1000.0 < zero {
            *v = 0.0;
        }
    }
    w
}

/// Checks a sparse matrix of `w` against the dense product at every level,
/// and its row expansion.
fn check_against_dense(m: &dyn QuantMatrix, w: &ndarray::Array2<f32>, rng: &mut SeededRng) {
    let (rows, cols) = w.dim();
    if cols > 0 {
        let mut back = vec![f32::NAN; rows * cols];
        m.dequantize_rows_with(Isa::Scalar, 0, &mut back).unwrap();
        assert_eq!(back, w.iter().copied().collect::<Vec<_>>());
    }
    let x = activations(rng, cols, 0.0);
    let want = dense(w, &x);
    for isa in Isa::available() {
        let mut y = vec![f32::NAN; rows];
        m.gemv_with(isa, &x, &mut y).unwrap();
        close(&y, &want);
        // Int8 activations come in blocks of 32.
        if cols > 0 && cols.is_multiple_of(32) {
            let xq = m.quantize_input(&x).unwrap();
            let mut y8 = vec![f32::NAN; rows];
            m.gemv_q8_with(isa, &xq, &mut y8).unwrap();
            close(&y8, &dense(w, &xq.dequantize()));
        }
    }
}

/// Shapes with columns around the 8-, 16- and 64-column steps of the SIMD
/// kernels, rows above the parallel threshold, and more than 65,536 columns
/// (32-bit CSR indices).
const UNSTRUCTURED_SHAPES: [(usize, usize); 17] = [
    (1, 1),
    (3, 5),
    (4, 7),
    (5, 8),
    (6, 15),
    (7, 16),
    (9, 17),
    (5, 63),
    (3, 64),
    (4, 65),
    (2, 96),
    (17, 100),
    (33, 130),
    (2, 0),
    (0, 9),
    (700, 1536),
    (3, 70_001),
];

#[test]
fn csr_matches_dense_at_every_level_shape_and_sparsity() {
    let mut rng = SeededRng::new(3);
    for (rows, cols) in UNSTRUCTURED_SHAPES {
        for zero in [0.0, 0.5, 0.9, 1.0] {
            for empty_rows in [false, true] {
                let w = unstructured(&mut rng, rows, cols, zero, empty_rows);
                let m = CsrMatrix::from_dense(w.view()).unwrap();
                let nnz = w.iter().filter(|v| **v != 0.0).count();
                assert_eq!(m.nnz(), nnz);
                assert_eq!(m.to_dense(), w);
                assert_eq!(
                    m.col_indices().index_bytes(),
                    if cols <= 65_536 { 2 } else { 4 }
                );
                assert_eq!(
                    m.storage_bytes(),
                    8 * (rows + 1) + nnz * (4 + m.col_indices().index_bytes())
                );
                check_against_dense(&m, &w, &mut rng);
            }
        }
    }
}

#[test]
fn bitmask_matches_dense_at_every_level_shape_and_sparsity() {
    let mut rng = SeededRng::new(4);
    for (rows, cols) in UNSTRUCTURED_SHAPES {
        for zero in [0.0, 0.5, 0.9, 1.0] {
            for empty_rows in [false, true] {
                let w = unstructured(&mut rng, rows, cols, zero, empty_rows);
                let m = BitmaskMatrix::from_dense(w.view()).unwrap();
                let nnz = w.iter().filter(|v| **v != 0.0).count();
                assert_eq!(m.nnz(), nnz);
                assert_eq!(m.to_dense(), w);
                assert_eq!(m.bitmask().len(), rows * cols.div_ceil(8));
                assert_eq!(
                    m.storage_bytes(),
                    rows * cols.div_ceil(8) + 4 * nnz + 8 * rows
                );
                check_against_dense(&m, &w, &mut rng);
            }
        }
    }
}

#[test]
fn bitmask_bit_order_is_compressed_tensors() {
    // Column j is bit j % 8 of byte j / 8, as tensorpress-io's
    // sparse-bitmask export writes it.
    let w = ndarray::array![
        [0.0f32, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0],
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 5.0],
    ];
    let m = BitmaskMatrix::from_dense(w.view()).unwrap();
    assert_eq!(m.bitmask(), &[0b10, 0b1, 0b1000_0001, 0b10]);
    assert_eq!(m.values(), &[2.0, 3.0, 1.0, 4.0, 5.0]);
    assert_eq!(m.row_offsets(), &[0, 2]);
    assert!((m.density() - 0.25).abs() < 1e-12);
    let again = BitmaskMatrix::from_parts(
        2,
        10,
        m.bitmask().to_vec(),
        m.values().to_vec(),
        m.row_offsets().to_vec(),
    )
    .unwrap();
    assert_eq!(again, m);
}

#[test]
fn csr_from_parts_reports_each_defect() {
    use crate::SparseDefect as D;
    let parts = |row_ptr: &[usize], cols: &[u32], values: &[f32]| {
        CsrMatrix::from_parts(2, 4, row_ptr.to_vec(), cols.to_vec(), values.to_vec())
    };
    let defect = |r: Result<CsrMatrix>| match r {
        Err(Error::InvalidSparseParts {
            format: "CSR",
            defect,
        }) => defect,
        other => panic!("expected a CSR defect, got {other:?}"),
    };
    let ok = parts(&[0, 1, 3], &[2, 0, 3], &[1.0, 2.0, 0.0]).unwrap();
    assert_eq!(ok.nnz(), 3);
    assert_eq!(
        ok.to_dense(),
        ndarray::array![[0.0f32, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    );
    assert!(matches!(
        defect(parts(&[0, 1], &[2], &[1.0])),
        D::Length {
            what: "row_ptr",
            expected: 3,
            actual: 2
        }
    ));
    assert!(matches!(
        defect(parts(&[0, 1, 2], &[2], &[1.0, 2.0])),
        D::Length {
            what: "col_idx",
            ..
        }
    ));
    assert!(matches!(
        defect(parts(&[1, 1, 2], &[2, 0], &[1.0, 2.0])),
        D::RowPointerStart { first: 1 }
    ));
    assert!(matches!(
        defect(parts(&[0, 2, 1], &[2, 3], &[1.0, 2.0])),
        D::RowPointerDecreasing { row: 2, .. }
    ));
    assert!(matches!(
        defect(parts(&[0, 1, 1], &[2, 3], &[1.0, 2.0])),
        D::RowPointerEnd { end: 1, nnz: 2 }
    ));
    assert!(matches!(
        defect(parts(&[0, 3, 3], &[2, 3], &[1.0, 2.0])),
        D::RowPointerEnd { end: 3, nnz: 2 }
    ));
    assert!(matches!(
        defect(parts(&[0, 1, 2], &[4, 0], &[1.0, 2.0])),
        D::ColumnOutOfRange {
            row: 0,
            col: 4,
            cols: 4
        }
    ));
    assert!(matches!(
        defect(parts(&[0, 0, 2], &[3, 1], &[1.0, 2.0])),
        D::ColumnsNotIncreasing {
            row: 1,
            col: 1,
            previous: 3
        }
    ));
    assert!(matches!(
        defect(parts(&[0, 0, 2], &[1, 1], &[1.0, 2.0])),
        D::ColumnsNotIncreasing { row: 1, .. }
    ));
    assert!(matches!(
        parts(&[0, 0, 2], &[1, 2], &[1.0, f32::NAN]),
        Err(Error::NonFinite { row: 1, col: 2 })
    ));
    assert!(matches!(
        defect(CsrMatrix::from_parts(
            1,
            (1 << 32) + 1,
            vec![0, 0],
            vec![],
            vec![]
        )),
        D::TooLarge { .. }
    ));
    assert!(matches!(
        defect(CsrMatrix::from_parts(
            usize::MAX,
            0,
            vec![0],
            vec![],
            vec![]
        )),
        D::TooLarge { .. }
    ));
    let inf = ndarray::array![[0.0f32, f32::INFINITY]];
    assert!(matches!(
        CsrMatrix::from_dense(inf.view()),
        Err(Error::NonFinite { row: 0, col: 1 })
    ));
    // Wrong lengths in the products.
    let mut y = vec![0.0; 2];
    assert!(ok.gemv(&[0.0; 3], &mut y).is_err());
    assert!(ok.gemv(&[0.0; 4], &mut [0.0; 3]).is_err());
    assert!(ok.dequantize_rows(1, &mut [0.0; 8]).is_err());
}

#[test]
fn bitmask_from_parts_reports_each_defect() {
    use crate::SparseDefect as D;
    // 2 rows of 10 columns: 2 mask bytes per row, 6 padding bits in the second.
    let parts = |mask: &[u8], values: &[f32], offsets: &[usize]| {
        BitmaskMatrix::from_parts(2, 10, mask.to_vec(), values.to_vec(), offsets.to_vec())
    };
    let defect = |r: Result<BitmaskMatrix>| match r {
        Err(Error::InvalidSparseParts {
            format: "bitmask",
            defect,
        }) => defect,
        other => panic!("expected a bitmask defect, got {other:?}"),
    };
    let ok = parts(&[1, 2, 0, 0], &[1.0, 2.0], &[0, 2]).unwrap();
    assert_eq!(ok.to_dense()[[0, 9]], 2.0);
    assert!(matches!(
        defect(parts(&[1, 2, 0], &[1.0, 2.0], &[0, 2])),
        D::Length {
            what: "bitmask",
            expected: 4,
            actual: 3
        }
    ));
    assert!(matches!(
        defect(parts(&[1, 2, 0, 0], &[1.0, 2.0], &[0])),
        D::Length {
            what: "row_offsets",
            ..
        }
    ));
    assert!(matches!(
        defect(parts(&[1, 4, 0, 0], &[1.0, 2.0], &[0, 2])),
        D::PaddingBits { row: 0, cols: 10 }
    ));
    assert!(matches!(
        defect(parts(&[1, 2, 0, 0], &[1.0, 2.0], &[1, 2])),
        D::RowOffset {
            row: 0,
            expected: 0,
            actual: 1
        }
    ));
    assert!(matches!(
        defect(parts(&[1, 2, 0, 0], &[1.0, 2.0], &[0, 1])),
        D::RowOffset {
            row: 1,
            expected: 2,
            actual: 1
        }
    ));
    assert!(matches!(
        defect(parts(&[1, 2, 0, 0], &[1.0], &[0, 2])),
        D::KeptCount { kept: 2, stored: 1 }
    ));
    assert!(matches!(
        parts(&[1, 0, 0, 2], &[1.0, f32::INFINITY], &[0, 1]),
        Err(Error::NonFinite { row: 1, col: 9 })
    ));
    assert!(matches!(
        defect(BitmaskMatrix::from_parts(
            0,
            usize::MAX,
            vec![],
            vec![],
            vec![]
        )),
        D::TooLarge { .. }
    ));
    let mut y = vec![0.0; 2];
    assert!(ok.gemv(&[0.0; 9], &mut y).is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Values as hostile input may hold them.
    fn any_value() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -4.0f32..4.0,
            1 => Just(0.0f32),
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
        ]
    }

    /// A weight with about `zero` of its entries zero.
    fn sparse_weight() -> impl Strategy<Value = ndarray::Array2<f32>> {
        (0usize..7, 0usize..80, 0.0f64..=1.0, any::<u64>()).prop_map(|(rows, cols, zero, seed)| {
            unstructured(&mut SeededRng::new(seed), rows, cols, zero, seed % 2 == 0)
        })
    }

    /// Runs every product of an accepted matrix: nothing may panic or read
    /// out of bounds, and every level agrees with the dense product.
    fn exercise(m: &dyn QuantMatrix, dense_w: ndarray::Array2<f32>) {
        let x: Vec<f32> = (0..m.cols()).map(|j| (j as f32 * 0.7).sin()).collect();
        let want = dense(&dense_w, &x);
        for isa in Isa::available() {
            let mut y = vec![0.0; m.rows()];
            m.gemv_with(isa, &x, &mut y).unwrap();
            close(&y, &want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn csr_round_trips(w in sparse_weight()) {
            let m = CsrMatrix::from_dense(w.view()).unwrap();
            prop_assert_eq!(m.to_dense(), w.clone());
            let again = CsrMatrix::from_parts(
                w.nrows(), w.ncols(), m.row_ptr().to_vec(), m.col_indices().to_u32(), m.values().to_vec(),
            ).unwrap();
            prop_assert_eq!(&again, &m);
            exercise(&m, w);
        }

        #[test]
        fn bitmask_round_trips(w in sparse_weight()) {
            let m = BitmaskMatrix::from_dense(w.view()).unwrap();
            prop_assert_eq!(m.to_dense(), w.clone());
            let again = BitmaskMatrix::from_parts(
                w.nrows(), w.ncols(), m.bitmask().to_vec(), m.values().to_vec(), m.row_offsets().to_vec(),
            ).unwrap();
            prop_assert_eq!(&again, &m);
            exercise(&m, w);
        }

        #[test]
        fn csr_from_garbage_never_panics(
            rows in 0usize..5,
            cols in prop_oneof![0usize..20, Just(usize::MAX), Just((1usize << 32) + 1)],
            row_ptr in prop::collection::vec(0usize..8, 0..7),
            sort in any::<bool>(),
            col_idx in prop::collection::vec(0u32..24, 0..9),
            values in prop::collection::vec(any_value(), 0..9),
        ) {
            let mut row_ptr = row_ptr;
            if sort {
                row_ptr.sort_unstable();
            }
            if let Ok(m) = CsrMatrix::from_parts(rows, cols, row_ptr, col_idx, values) {
                let w = m.to_dense();
                exercise(&m, w);
            }
        }

        #[test]
        fn csr_from_one_corrupted_part_never_panics(
            w in sparse_weight(),
            part in 0usize..3,
            at in any::<prop::sample::Index>(),
            value in any::<u32>(),
            bad in any_value(),
        ) {
            let m = CsrMatrix::from_dense(w.view()).unwrap();
            let (mut row_ptr, mut cols, mut values) =
                (m.row_ptr().to_vec(), m.col_indices().to_u32(), m.values().to_vec());
            match part {
                0 => { let i = at.index(row_ptr.len()); row_ptr[i] = value as usize % (values.len() + 3); }
                1 if !cols.is_empty() => { let i = at.index(cols.len()); cols[i] = value % (w.ncols() as u32 + 3); }
                _ if !values.is_empty() => { let i = at.index(values.len()); values[i] = bad; }
                _ => {}
            }
            if let Ok(m) = CsrMatrix::from_parts(w.nrows(), w.ncols(), row_ptr, cols, values) {
                let w = m.to_dense();
                exercise(&m, w);
            }
        }

        #[test]
        fn bitmask_from_garbage_never_panics(
            rows in 0usize..5,
            cols in prop_oneof![0usize..20, Just(usize::MAX), Just((1usize << 32) + 1)],
            mask in prop::collection::vec(any::<u8>(), 0..12),
            values in prop::collection::vec(any_value(), 0..20),
            row_offsets in prop::collection::vec(0usize..20, 0..6),
        ) {
            if let Ok(m) = BitmaskMatrix::from_parts(rows, cols, mask, values, row_offsets) {
                let w = m.to_dense();
                exercise(&m, w);
            }
        }

        #[test]
        fn bitmask_from_one_corrupted_part_never_panics(
            w in sparse_weight(),
            part in 0usize..3,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            offset in 0usize..40,
            bad in any_value(),
        ) {
            let m = BitmaskMatrix::from_dense(w.view()).unwrap();
            let (mut mask, mut values, mut offsets) =
                (m.bitmask().to_vec(), m.values().to_vec(), m.row_offsets().to_vec());
            match part {
                0 if !mask.is_empty() => { let i = at.index(mask.len()); mask[i] = byte; }
                1 if !offsets.is_empty() => { let i = at.index(offsets.len()); offsets[i] = offset; }
                _ if !values.is_empty() => { let i = at.index(values.len()); values[i] = bad; }
                _ => {}
            }
            if let Ok(m) = BitmaskMatrix::from_parts(w.nrows(), w.ncols(), mask, values, offsets) {
                let w = m.to_dense();
                exercise(&m, w);
            }
        }
    }
}
