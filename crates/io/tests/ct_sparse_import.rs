//! Reading compressed-tensors' sparse layouts back: `sparse-bitmask` and
//! `sparse-24-bitmask` folders (float weights, and int8 / FP8 codes under
//! a quantization scheme) open as dense weights equal to what was written,
//! and storage tensors that disagree with each other are typed errors.

use ndarray::Array2;
use proptest::prelude::*;
use serde_json::{json, Value};
use tensorpress_io::export::{
    ActivationScheme, CompressedTensorsWriter, FloatDType, QuantFormatError, SparseLayout,
};
use tensorpress_io::import::QuantizedCheckpoint;
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_io::Error;
use tensorpress_quant_core::formats::FloatFormat;
use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
use tensorpress_tensor::{DType, SeededRng};

const M: &str = "model.layers.0.mlp.up_proj";

/// A normal weight with the entries where `keep` is false set to zero.
fn pruned(rows: usize, cols: usize, seed: u64, keep: impl Fn(usize, usize) -> bool) -> Array2<f32> {
    let w = SeededRng::new(seed).array_normal((rows, cols)) * 0.05;
    Array2::from_shape_fn(
        (rows, cols),
        |(r, c)| if keep(r, c) { w[[r, c]] } else { 0.0 },
    )
}

/// Two kept entries in every group of four, chosen by `seed`.
fn two_of_four(seed: u64) -> impl Fn(usize, usize) -> bool {
    move |r, c| {
        let pick = (seed as usize).wrapping_add(r * 7 + c / 4) % 6;
        let pair = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)][pick];
        c % 4 == pair.0 || c % 4 == pair.1
    }
}

fn write_float(w: &Array2<f32>, layout: SparseLayout) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CompressedTensorsWriter::new().float_dtype(FloatDType::F32);
    match layout {
        SparseLayout::Bitmask => writer.add_sparse_bitmask(M, w.view()).unwrap(),
        SparseLayout::TwoFour => writer.add_sparse_24_bitmask(M, w.view()).unwrap(),
    }
    writer
        .add_array(
            "model.norm.weight",
            ndarray::Array1::<f32>::ones(4).into_dyn().view(),
        )
        .unwrap();
    writer
        .write_dir(dir.path(), &json!({"model_type": "llama"}))
        .unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pruned_float_weights_read_back_dense(
        rows in 1usize..9,
        groups in 1usize..12,
        density in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let cols = 4 * groups;
        for layout in [SparseLayout::Bitmask, SparseLayout::TwoFour] {
            let w = match layout {
                SparseLayout::Bitmask => pruned(rows, cols, seed, |r, c| {
                    ((r * 31 + c * 17) as u64 ^ seed) % 1000 < (density * 1000.0) as u64
                }),
                SparseLayout::TwoFour => pruned(rows, cols, seed, two_of_four(seed)),
            };
            let dir = write_float(&w, layout);
            let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
            let name = format!("{M}.weight");
            prop_assert_eq!(ckpt.sparse_weights().get(&name), Some(&layout));
            prop_assert!(ckpt.modules().is_empty());
            prop_assert!(ckpt.passthrough().contains(&name.as_str()));
            let back = ckpt.model().to_f32(&name).unwrap();
            prop_assert_eq!(back.shape(), &[rows, cols]);
            prop_assert!(back.iter().zip(w.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
            // Nothing of the sparse storage is left as a tensor of its own.
            prop_assert!(ckpt.model().names().iter().all(|n| !n.ends_with("bitmask")));
        }
    }
}

#[test]
fn sparse_int8_and_fp8_codes_read_back_through_their_scheme() {
    let w = pruned(8, 32, 5, two_of_four(3));
    for (spec, activations) in [
        (
            QuantSpec::int(8).channel(),
            Some(ActivationScheme::int8_per_token()),
        ),
        (QuantSpec::float(FloatFormat::E4M3).channel(), None),
    ] {
        let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
        for layout in [SparseLayout::TwoFour, SparseLayout::Bitmask] {
            let dir = tempfile::tempdir().unwrap();
            let mut writer = CompressedTensorsWriter::new().float_dtype(FloatDType::F32);
            if let Some(a) = activations {
                writer = writer.input_activations(a);
            }
            writer.add_sparse_quantized(M, &q, None, layout).unwrap();
            writer.write_dir(dir.path(), &json!({})).unwrap();
            let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
            assert_eq!(ckpt.modules(), [M], "{spec} {layout:?}");
            assert_eq!(ckpt.input_activations(M), activations.as_ref());
            let back = ckpt.layer(M).unwrap();
            assert_eq!(back.codes(), q.codes(), "{spec} {layout:?}");
            assert_eq!(back.dequantize(), q.dequantize());
            assert!(ckpt.passthrough().is_empty(), "{:?}", ckpt.passthrough());
        }
    }
}

/// A sparse-only config of `format`.
fn sparse_config(format: &str) -> Value {
    json!({"quantization_config": {
        "quant_method": "compressed-tensors",
        "sparsity_config": {"format": format, "targets": [M]},
        "version": "0.12.2",
    }})
}

/// A model with the given storage tensors of `prefix` (each `None` left out).
fn model_of(prefix: &str, parts: &[(&str, DType, Vec<usize>, Vec<u8>)]) -> SafetensorsModel {
    let mut writer = SafetensorsWriter::new();
    for (suffix, dtype, shape, bytes) in parts {
        writer
            .add(format!("{prefix}.{suffix}"), *dtype, shape, bytes.clone())
            .unwrap();
    }
    SafetensorsModel::from_bytes(writer.to_bytes().unwrap()).unwrap()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn open(format: &str, prefix: &str, parts: &[(&str, DType, Vec<usize>, Vec<u8>)]) -> Error {
    QuantizedCheckpoint::from_parts(model_of(prefix, parts), sparse_config(format), None)
        .unwrap_err()
}

#[test]
fn inconsistent_sparse_storage_is_a_typed_error() {
    let p = format!("{M}.weight");
    // One row of 10 columns: columns 1 and 9 kept.
    let good = || -> Vec<(&str, DType, Vec<usize>, Vec<u8>)> {
        vec![
            ("shape", DType::I64, vec![2], i64s(&[1, 10])),
            ("bitmask", DType::U8, vec![1, 2], vec![0b10, 0b10]),
            ("row_offsets", DType::I64, vec![1], i64s(&[0])),
            (
                "compressed",
                DType::F32,
                vec![2],
                [1.5f32, -2.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            ),
        ]
    };
    let ok = QuantizedCheckpoint::from_parts(
        model_of(&p, &good()),
        sparse_config("sparse-bitmask"),
        None,
    )
    .unwrap();
    let dense = ok.model().to_f32(&p).unwrap();
    assert_eq!(
        dense.iter().copied().collect::<Vec<_>>(),
        [0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0]
    );

    let with = |i: usize, part: (&'static str, DType, Vec<usize>, Vec<u8>)| {
        let mut parts = good();
        parts[i] = part;
        parts
    };
    let shape_error =
        |e: &Error| matches!(e, Error::QuantFormat(QuantFormatError::TensorShape { .. }));
    let value_error =
        |e: &Error| matches!(e, Error::QuantFormat(QuantFormatError::TensorValue { .. }));
    // A third set bit with two values stored (a bit past the last column is ignored).
    let e = open(
        "sparse-bitmask",
        &p,
        &with(1, ("bitmask", DType::U8, vec![1, 2], vec![0b110, 0b10])),
    );
    assert!(
        matches!(
            e,
            Error::QuantFormat(QuantFormatError::SparseMask {
                kept: 3,
                stored: 2,
                ..
            })
        ),
        "{e}"
    );
    assert!(QuantizedCheckpoint::from_parts(
        model_of(
            &p,
            &with(1, ("bitmask", DType::U8, vec![1, 2], vec![0b10, 0b1110]))
        ),
        sparse_config("sparse-bitmask"),
        None
    )
    .is_ok());
    // A bitmask of the wrong size, a negative or missing dimension, bad row offsets.
    let e = open(
        "sparse-bitmask",
        &p,
        &with(1, ("bitmask", DType::U8, vec![1, 1], vec![0b10])),
    );
    assert!(shape_error(&e), "{e}");
    let e = open(
        "sparse-bitmask",
        &p,
        &with(0, ("shape", DType::I64, vec![2], i64s(&[1, -10]))),
    );
    assert!(value_error(&e), "{e}");
    let e = open(
        "sparse-bitmask",
        &p,
        &with(0, ("shape", DType::I64, vec![1], i64s(&[10]))),
    );
    assert!(shape_error(&e), "{e}");
    let e = open(
        "sparse-bitmask",
        &p,
        &with(0, ("shape", DType::F32, vec![2], vec![0; 8])),
    );
    assert!(
        matches!(e, Error::QuantFormat(QuantFormatError::TensorDType { .. })),
        "{e}"
    );
    let e = open(
        "sparse-bitmask",
        &p,
        &with(2, ("row_offsets", DType::I64, vec![1], i64s(&[1]))),
    );
    assert!(value_error(&e), "{e}");
    // A huge declared shape is refused by the bitmask's size, not allocated.
    let e = open(
        "sparse-bitmask",
        &p,
        &with(0, ("shape", DType::I64, vec![2], i64s(&[1 << 30, 1 << 30]))),
    );
    assert!(shape_error(&e), "{e}");
    // A missing part names the tensor.
    let mut parts = good();
    parts.remove(0);
    let e = open("sparse-bitmask", &p, &parts);
    assert!(matches!(e, Error::TensorNotFound { .. }), "{e}");

    // 2:4: a group keeping three, and values not [rows, cols / 2].
    let f32s = |n: usize| vec![0u8; 4 * n];
    let two_four = |mask: u8, values: Vec<usize>| {
        vec![
            ("shape", DType::I64, vec![2, 1], i64s(&[1, 8])),
            ("bitmask", DType::U8, vec![1, 1], vec![mask]),
            (
                "compressed",
                DType::F32,
                values.clone(),
                f32s(values.iter().product()),
            ),
        ]
    };
    assert!(QuantizedCheckpoint::from_parts(
        model_of(M, &two_four(0b0101_1010, vec![1, 4])),
        sparse_config("sparse-24-bitmask"),
        None
    )
    .is_ok());
    let e = open("sparse-24-bitmask", M, &two_four(0b0111_1000, vec![1, 4]));
    assert!(value_error(&e), "{e}");
    let e = open("sparse-24-bitmask", M, &two_four(0b0101_1010, vec![4]));
    assert!(shape_error(&e), "{e}");
    // A weight stored both ways, and a sparse format this crate does not read.
    let mut parts = two_four(0b0101_1010, vec![1, 4]);
    parts.push(("weight", DType::F32, vec![1, 8], f32s(8)));
    let e = open("sparse-24-bitmask", M, &parts);
    assert!(
        matches!(e, Error::QuantFormat(QuantFormatError::Config { .. })),
        "{e}"
    );
    let e = open("marlin-24", M, &two_four(0b0101_1010, vec![1, 4]));
    assert!(
        matches!(e, Error::QuantFormat(QuantFormatError::Config { .. })),
        "{e}"
    );
}
