//! compressed-tensors beyond `pack-quantized`: export → import is the
//! identity for `int-quantized`, `float-quantized` / `naive-quantized` FP8,
//! NVFP4 (up to an f32 ulp of the tensor scale where no f32 inverts it),
//! MXFP4, MXFP6 and MXFP8, alone and mixed in one checkpoint; the configs
//! carry what compressed-tensors' presets write; and layers a format cannot
//! hold are typed errors.

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use serde_json::{json, Value};
use tensorpress_io::export::{
    ActivationDynamic, ActivationScheme, ActivationStrategy, ActivationType,
    CompressedTensorsWriter, CtFormat, CtPacking, FloatDType, QuantFormatError,
};
use tensorpress_io::import::QuantizedCheckpoint;
use tensorpress_io::Error;
use tensorpress_quant_core::formats::{FloatFormat, MxFormat};
use tensorpress_quant_core::{Granularity, QuantSpec, QuantizedTensor, Rtn, WeightQuantizer};
use tensorpress_tensor::SeededRng;

const M: &str = "model.layers.0.mlp.up_proj";

fn weight(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    SeededRng::new(seed).array_normal((rows, cols)) * 0.05
}

fn quantize(spec: QuantSpec, rows: usize, cols: usize, seed: u64) -> QuantizedTensor {
    Rtn::new(spec)
        .quantize(weight(rows, cols, seed).view(), None)
        .unwrap()
}

fn config(dir: &std::path::Path) -> Value {
    let text = std::fs::read(dir.join("config.json")).unwrap();
    serde_json::from_slice::<Value>(&text).unwrap()["quantization_config"].clone()
}

/// Writes one layer (and a bias) and reads it back.
fn round_trip(
    q: &QuantizedTensor,
    activations: Option<ActivationScheme>,
    dtype: FloatDType,
) -> (QuantizedCheckpoint, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = CompressedTensorsWriter::new().float_dtype(dtype);
    if let Some(a) = activations {
        w = w.input_activations(a);
    }
    let bias = Array1::from_shape_fn(q.shape()[0], |i| i as f32 * 0.5);
    w.add_quantized(M, q, Some(bias.view())).unwrap();
    w.write_dir(dir.path(), &json!({"model_type": "llama"}))
        .unwrap();
    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.modules(), [M]);
    assert_eq!(ckpt.bias(M).unwrap(), Some(bias));
    assert_eq!(ckpt.passthrough(), [format!("{M}.bias")]);
    assert_eq!(ckpt.input_activations(M), activations.as_ref());
    (ckpt, dir)
}

fn granularity(kind: u8, group: usize) -> Granularity {
    match kind {
        0 => Granularity::Tensor,
        1 => Granularity::Channel,
        _ => Granularity::Group(group),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn fp8_round_trips(
        kind in 0u8..3,
        rows in 1usize..12,
        groups in 1usize..4,
        acts in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut spec = QuantSpec::float(FloatFormat::E4M3);
        spec.granularity = granularity(kind, 16);
        let q = quantize(spec, rows, groups * 16, seed);
        let acts = acts.then(ActivationScheme::fp8_per_token);
        let (ckpt, dir) = round_trip(&q, acts, FloatDType::F32);
        let expect = if acts.is_some() { CtFormat::FloatQuantized } else { CtFormat::NaiveQuantized };
        prop_assert_eq!(ckpt.ct_format(M), Some(expect));
        let qc = config(dir.path());
        prop_assert_eq!(qc["format"].as_str(), Some(expect.name()));
        prop_assert_eq!(ckpt.layer(M).unwrap(), q);
    }

    #[test]
    fn int_quantized_round_trips(
        bits in prop::sample::select(vec![2u8, 4, 8]),
        symmetric in any::<bool>(),
        kind in 0u8..3,
        rows in 1usize..12,
        groups in 1usize..4,
        dtype in prop_oneof![Just(FloatDType::F32), Just(FloatDType::BF16)],
        seed in any::<u64>(),
    ) {
        let mut spec = QuantSpec::int(bits);
        spec.granularity = granularity(kind, 8);
        spec.symmetric = symmetric;
        let q = quantize(spec, rows, groups * 8, seed);
        // Scales exact in the stored dtype.
        let [r, c] = q.shape();
        let q = QuantizedTensor::new(
            spec, r, c, q.codes().to_vec(), q.scales().mapv(|s| dtype.round(s)),
            q.zeros().clone(), None,
        ).unwrap();
        let (ckpt, _dir) = round_trip(&q, Some(ActivationScheme::int8_per_token()), dtype);
        prop_assert_eq!(ckpt.ct_format(M), Some(CtFormat::IntQuantized));
        prop_assert_eq!(ckpt.layer(M).unwrap(), q);
    }

    #[test]
    fn mx_round_trips(
        format in prop_oneof![Just(MxFormat::Fp4), Just(MxFormat::Fp6E2M3), Just(MxFormat::Fp8E4M3)],
        rows in 1usize..10,
        blocks in 1usize..4,
        seed in any::<u64>(),
    ) {
        let q = quantize(QuantSpec::mx(format), rows, blocks * 32, seed);
        let (ckpt, _dir) = round_trip(&q, None, FloatDType::BF16);
        let expect = match format {
            MxFormat::Fp4 => CtFormat::Mxfp4PackQuantized,
            MxFormat::Fp6E2M3 => CtFormat::Mxfp6PackQuantized,
            _ => CtFormat::Mxfp8Quantized,
        };
        prop_assert_eq!(ckpt.ct_format(M), Some(expect));
        prop_assert_eq!(ckpt.layer(M).unwrap(), q);
    }

    #[test]
    fn nvfp4_round_trips(rows in 1usize..10, blocks in 1usize..5, amax in 1e-3f32..1e2, seed in any::<u64>()) {
        let mut w = weight(rows, blocks * 16, seed);
        w[[0, 0]] = amax;
        let q = Rtn::new(QuantSpec::nvfp4()).quantize(w.view(), None).unwrap();
        let (ckpt, _dir) = round_trip(&q, None, FloatDType::F32);
        prop_assert_eq!(ckpt.ct_format(M), Some(CtFormat::Nvfp4PackQuantized));
        let back = ckpt.layer(M).unwrap();
        prop_assert_eq!(back.codes(), q.codes());
        prop_assert_eq!(back.scales(), q.scales());
        let (g, h) = (q.global_scale().unwrap(), back.global_scale().unwrap());
        prop_assert!((g.to_bits() as i64 - h.to_bits() as i64).abs() <= 1, "{} vs {}", g, h);
        // Exact whenever some f32 has g as its reciprocal.
        let near = |d: i64| f32::from_bits(((1.0 / g).to_bits() as i64 + d) as u32);
        if (-4..=4).any(|d| 1.0 / near(d) == g) {
            prop_assert_eq!(back, q);
        }
    }
}

#[test]
fn a_mixed_model_gets_one_group_per_format() {
    let int4 = quantize(QuantSpec::int(4).group(32), 8, 64, 1);
    let nvfp4 = quantize(QuantSpec::nvfp4(), 8, 64, 2);
    let fp8 = quantize(QuantSpec::float(FloatFormat::E4M3), 8, 64, 3);
    let mxfp4 = quantize(QuantSpec::mxfp4(), 8, 64, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut w = CompressedTensorsWriter::new();
    w.add_quantized("a", &int4, None).unwrap();
    w.add_quantized("b", &nvfp4, None).unwrap();
    w.add_quantized("c", &fp8, None).unwrap();
    w.add_quantized("d", &mxfp4, None).unwrap();
    w.add_quantized("e", &int4, None).unwrap();
    w.write_dir(dir.path(), &json!({})).unwrap();
    let qc = config(dir.path());
    assert_eq!(qc["format"], "mixed-precision");
    let groups = qc["config_groups"].as_object().unwrap();
    assert_eq!(groups.len(), 4);
    assert_eq!(groups["group_0"]["targets"], json!(["a", "e"]));
    assert_eq!(groups["group_0"]["format"], "pack-quantized");
    assert_eq!(groups["group_1"]["format"], "nvfp4-pack-quantized");
    assert_eq!(groups["group_1"]["weights"]["strategy"], "tensor_group");
    assert_eq!(
        groups["group_1"]["weights"]["scale_dtype"],
        "torch.float8_e4m3fn"
    );
    assert_eq!(groups["group_2"]["format"], "naive-quantized");
    assert_eq!(groups["group_3"]["weights"]["scale_dtype"], "torch.uint8");

    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.modules(), ["a", "b", "c", "d", "e"]);
    assert!(ckpt.passthrough().is_empty());
    assert_eq!(ckpt.layer("a").unwrap(), int4);
    assert_eq!(ckpt.layer("c").unwrap(), fp8);
    assert_eq!(ckpt.layer("d").unwrap(), mxfp4);
    assert_eq!(ckpt.layer("b").unwrap().codes(), nvfp4.codes());
    assert_eq!(ckpt.ct_format("b"), Some(CtFormat::Nvfp4PackQuantized));
}

#[test]
fn configs_match_compressed_tensors_presets() {
    // compressed-tensors 0.20's W8A8 and FP8_DYNAMIC presets, as its
    // `QuantizationScheme.model_dump()` writes them.
    let presets = [
        (
            QuantSpec::int(8),
            ActivationScheme::int8_per_token(),
            json!({"num_bits": 8, "type": "int", "symmetric": true, "group_size": null,
                   "strategy": "token", "dynamic": true}),
            "int-quantized",
        ),
        (
            QuantSpec::float(FloatFormat::E4M3),
            ActivationScheme::fp8_per_token(),
            json!({"num_bits": 8, "type": "float", "symmetric": true, "group_size": null,
                   "strategy": "token", "dynamic": true}),
            "float-quantized",
        ),
    ];
    for (spec, acts, expect, format) in presets {
        let q = quantize(spec, 4, 32, 7);
        let mut w = CompressedTensorsWriter::new().input_activations(acts);
        w.add_quantized(M, &q, None).unwrap();
        let qc = w.quantization_config().unwrap();
        assert_eq!(qc["format"], format);
        let g = &qc["config_groups"]["group_0"];
        assert_eq!(g["input_activations"], expect);
        assert_eq!(g["weights"]["strategy"], "channel");
        assert_eq!(g["weights"]["num_bits"], 8);
        assert_eq!(g["weights"]["symmetric"], true);
    }
}

#[test]
fn imports_read_foreign_activation_schemes() {
    // An NVFP4 group as llm-compressor's NVFP4 preset writes it.
    let q = quantize(QuantSpec::nvfp4(), 4, 32, 9);
    let dir = tempfile::tempdir().unwrap();
    let mut w = CompressedTensorsWriter::new();
    w.add_quantized(M, &q, None).unwrap();
    w.write_dir(dir.path(), &json!({})).unwrap();
    let path = dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["quantization_config"]["config_groups"]["group_0"]["input_activations"] = json!({
        "num_bits": 4, "type": "float", "symmetric": true, "group_size": 16,
        "strategy": "tensor_group", "dynamic": "local",
        "scale_dtype": "torch.float8_e4m3fn", "observer": "static_minmax"
    });
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    assert_eq!(
        ckpt.input_activations(M),
        Some(&ActivationScheme {
            num_bits: 4,
            kind: ActivationType::Float,
            strategy: ActivationStrategy::TensorGroup(16),
            dynamic: ActivationDynamic::Local,
            symmetric: true,
        })
    );
}

fn add_err(w: &mut CompressedTensorsWriter<'_>, q: &QuantizedTensor) -> QuantFormatError {
    match w.add_quantized(M, q, None).unwrap_err() {
        Error::QuantFormat(e) => e,
        e => panic!("not a format error: {e}"),
    }
}

#[test]
fn layers_a_format_cannot_hold_are_typed_errors() {
    let mut w = CompressedTensorsWriter::new();
    for spec in [
        QuantSpec::nf4(),
        QuantSpec::float(FloatFormat::E5M2),
        QuantSpec::float(FloatFormat::E2M1).group(16),
        QuantSpec::mx(MxFormat::Fp6E3M2),
    ] {
        let e = add_err(&mut w, &quantize(spec, 2, 64, 0));
        assert!(
            matches!(e, QuantFormatError::UnsupportedFormat { .. }),
            "{spec:?}: {e}"
        );
    }
    // MX blocks must tile the columns.
    let e = add_err(&mut w, &quantize(QuantSpec::mxfp4(), 2, 48, 0));
    assert!(matches!(
        e,
        QuantFormatError::PartialGroup {
            cols: 48,
            group: 32,
            ..
        }
    ));
    // Act-order only in pack-quantized.
    let spec = QuantSpec::int(8).group(2);
    let q = QuantizedTensor::new(
        spec,
        1,
        4,
        vec![128; 4],
        Array2::ones((1, 2)),
        Array2::from_elem((1, 2), 128.0),
        Some(vec![1, 0, 1, 0]),
    )
    .unwrap();
    let mut w8 =
        CompressedTensorsWriter::new().input_activations(ActivationScheme::int8_per_token());
    let e = add_err(&mut w8, &q);
    assert!(
        matches!(
            e,
            QuantFormatError::UnsupportedLayout {
                format: "int-quantized",
                ..
            }
        ),
        "{e}"
    );
    // Static activations need input scales this writer does not write.
    let stat = ActivationScheme {
        dynamic: ActivationDynamic::Static,
        strategy: ActivationStrategy::Tensor,
        ..ActivationScheme::fp8_per_token()
    };
    let mut ws = CompressedTensorsWriter::new().input_activations(stat);
    ws.add_quantized(
        M,
        &quantize(QuantSpec::float(FloatFormat::E4M3), 2, 32, 0),
        None,
    )
    .unwrap();
    assert!(matches!(
        ws.quantization_config().unwrap_err(),
        Error::QuantFormat(QuantFormatError::StaticActivations)
    ));
}

#[test]
fn corrupt_float_checkpoints_are_typed_errors() {
    let q = quantize(QuantSpec::float(FloatFormat::E4M3), 2, 32, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut w = CompressedTensorsWriter::new();
    w.add_quantized(M, &q, None).unwrap();
    w.write_dir(dir.path(), &json!({})).unwrap();
    // A config that calls the FP8 weights int8.
    let path = dir.path().join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["type"] = json!("int");
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    let e = ckpt.layer(M).unwrap_err();
    assert!(
        matches!(
            e,
            Error::QuantFormat(QuantFormatError::TensorDType { expected: "I8", .. })
        ),
        "{e}"
    );
    // Float weights of a width compressed-tensors has no layout for.
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"] =
        json!({"num_bits": 4, "type": "float", "strategy": "channel"});
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let e = QuantizedCheckpoint::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, Error::QuantFormat(QuantFormatError::Config { .. })),
        "{e}"
    );
}

#[test]
fn sparse_bitmask_layout_and_config() {
    use safetensors::SafeTensors;
    // Row 0: columns 1 and 9 kept (two bitmask bytes); row 1: column 0 only;
    // a value that rounds to 0 in bf16 counts as pruned.
    let mut w = Array2::<f32>::zeros((2, 10));
    w[[0, 1]] = 1.5;
    w[[0, 9]] = -2.0;
    w[[1, 0]] = 0.25;
    w[[1, 5]] = 1e-45;
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CompressedTensorsWriter::new()
        .float_dtype(FloatDType::BF16)
        .sparsity_structure("unstructured");
    writer.add_sparse_bitmask(M, w.view()).unwrap();
    assert!(writer.add_sparse_bitmask(M, w.view()).is_err());
    writer.write_dir(dir.path(), &json!({})).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = |part: &str| st.tensor(&format!("{M}.weight.{part}")).unwrap();
    assert_eq!(t("shape").shape(), [2]);
    assert_eq!(
        t("shape").data(),
        [2i64.to_le_bytes(), 10i64.to_le_bytes()].concat()
    );
    assert_eq!(t("bitmask").shape(), [2, 2]);
    assert_eq!(t("bitmask").data(), [0b10, 0b10, 0b1, 0]);
    assert_eq!(
        t("row_offsets").data(),
        [0i64.to_le_bytes(), 2i64.to_le_bytes()].concat()
    );
    assert_eq!(t("compressed").shape(), [3]);
    let values: Vec<f32> = t("compressed")
        .data()
        .chunks(2)
        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert_eq!(values, [1.5, -2.0, 0.25]);
    let c = config(dir.path());
    assert_eq!(c["quant_method"], "compressed-tensors");
    assert_eq!(c["sparsity_config"]["format"], "sparse-bitmask");
    assert_eq!(c["sparsity_config"]["targets"], json!([M]));
    assert_eq!(c["sparsity_config"]["global_sparsity"], json!(17.0 / 20.0));
    assert!(c.get("config_groups").is_none());
    // A sparse float module next to a pack-quantized one: the folder
    // declares compressed-tensors 0.12.2, so its int32 words must use that
    // release's packing.
    for (packing, ok) in [(CtPacking::Dense, false), (CtPacking::Aligned, true)] {
        let mut mixed = CompressedTensorsWriter::new().packing(packing);
        mixed.add_sparse_bitmask(M, w.view()).unwrap();
        mixed
            .add_quantized(
                "model.layers.0.mlp.down_proj",
                &quantize(QuantSpec::int(4).group(32), 4, 64, 1),
                None,
            )
            .unwrap();
        let c = mixed.quantization_config();
        assert_eq!(c.is_ok(), ok, "{packing:?}");
        if let Ok(c) = c {
            assert_eq!(c["sparsity_config"]["targets"], json!([M]));
            assert_eq!(
                c["config_groups"]["group_0"]["targets"],
                json!(["model.layers.0.mlp.down_proj"])
            );
            assert_eq!(c["version"], "0.12.2");
        }
    }
}

/// Keeps the two largest of every four entries of each row.
fn prune_24(w: &Array2<f32>) -> Array2<f32> {
    let mut w = w.clone();
    for mut row in w.rows_mut() {
        for g in 0..row.len() / 4 {
            let mut idx = [0usize, 1, 2, 3];
            idx.sort_by(|&a, &b| row[4 * g + b].abs().total_cmp(&row[4 * g + a].abs()));
            row[4 * g + idx[2]] = 0.0;
            row[4 * g + idx[3]] = 0.0;
        }
    }
    w
}

#[test]
fn pruned_int8_and_fp8_codes_are_stored_sparse_as_compressed_tensors_composes_them() {
    use safetensors::SafeTensors;
    use tensorpress_io::export::SparseLayout;
    let w = prune_24(&weight(8, 32, 21));
    for (spec, activations, code_dtype) in [
        (
            QuantSpec::int(8).channel(),
            Some(ActivationScheme::int8_per_token()),
            safetensors::Dtype::I8,
        ),
        (
            QuantSpec::float(FloatFormat::E4M3).channel(),
            None,
            safetensors::Dtype::F8_E4M3,
        ),
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
            let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let prefix = match layout {
                SparseLayout::TwoFour => M.to_string(),
                SparseLayout::Bitmask => format!("{M}.weight"),
            };
            let compressed = st.tensor(&format!("{prefix}.compressed")).unwrap();
            assert_eq!(compressed.dtype(), code_dtype);
            assert_eq!(compressed.data().len(), 8 * 16);
            assert!(st.tensor(&format!("{M}.weight")).is_err());
            assert!(st.tensor(&format!("{M}.weight_scale")).is_ok());
            // The kept codes, scattered back by the bitmask, are the codes.
            let mask = st.tensor(&format!("{prefix}.bitmask")).unwrap().data();
            let mut kept = compressed.data().iter();
            let want = q.codes_2d();
            let mid = if code_dtype == safetensors::Dtype::I8 {
                128u8
            } else {
                0
            };
            for r in 0..8 {
                for c in 0..32 {
                    let code = if mask[r * 4 + c / 8] >> (c % 8) & 1 == 1 {
                        *kept.next().unwrap()
                    } else {
                        0
                    };
                    assert_eq!(code.wrapping_add(mid), want[[r, c]], "({r}, {c})");
                }
            }
            let c = config(dir.path());
            assert_eq!(c["sparsity_config"]["format"], layout.name());
            assert_eq!(c["sparsity_config"]["targets"], json!([M]));
            assert_eq!(c["sparsity_config"]["global_sparsity"], json!(0.5));
            assert_eq!(c["config_groups"]["group_0"]["targets"], json!([M]));
            assert_eq!(c["version"], "0.12.2");
        }
    }
    // Packed codes (weight-only int4 is pack-quantized), asymmetric codes
    // and more than two nonzero codes per group are typed errors.
    let refuse = |q: &QuantizedTensor, a: Option<ActivationScheme>| {
        let mut writer = CompressedTensorsWriter::new();
        if let Some(a) = a {
            writer = writer.input_activations(a);
        }
        writer.add_sparse_quantized(M, q, None, SparseLayout::TwoFour)
    };
    let int4 = Rtn::new(QuantSpec::int(4).group(32))
        .quantize(w.view(), None)
        .unwrap();
    assert!(matches!(
        refuse(&int4, None),
        Err(Error::QuantFormat(
            QuantFormatError::UnsupportedLayout { .. }
        ))
    ));
    let a8 = Some(ActivationScheme::int8_per_token());
    let asym = Rtn::new(QuantSpec::int(8).channel().asymmetric())
        .quantize(w.view(), None)
        .unwrap();
    assert!(refuse(&asym, a8).is_err());
    let dense = Rtn::new(QuantSpec::int(8).channel())
        .quantize(weight(8, 32, 22).view(), None)
        .unwrap();
    assert!(refuse(&dense, a8).is_err());
}

#[test]
fn sparse_24_bitmask_layout_and_errors() {
    use safetensors::SafeTensors;
    // Group 0 keeps columns 1 and 3; group 1 has one nonzero (column 6), so
    // the first free position (4) is kept as an explicit zero.
    let w = ndarray::array![[0.0f32, 1.0, 0.0, -2.0, 0.0, 0.0, 3.0, 0.0]];
    let dir = tempfile::tempdir().unwrap();
    let mut writer = CompressedTensorsWriter::new();
    writer.add_sparse_24_bitmask(M, w.view()).unwrap();
    writer.write_dir(dir.path(), &json!({})).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = |part: &str| st.tensor(&format!("{M}.{part}")).unwrap();
    assert_eq!(t("shape").shape(), [2, 1]);
    assert_eq!(t("compressed").shape(), [1, 4]);
    let values: Vec<f32> = t("compressed")
        .data()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(values, [1.0, -2.0, 0.0, 3.0]);
    assert_eq!(t("bitmask").data(), [0b0101_1010]);
    let c = config(dir.path());
    assert_eq!(c["sparsity_config"]["format"], "sparse-24-bitmask");
    assert_eq!(c["sparsity_config"]["sparsity_structure"], "2:4");
    assert_eq!(c["sparsity_config"]["global_sparsity"], json!(5.0 / 8.0));
    // More than two nonzeros in a group, widths not a multiple of 4, and a
    // second sparse layout in the same folder are refused.
    let dense = ndarray::array![[1.0f32, 1.0, 1.0, 0.0]];
    assert!(CompressedTensorsWriter::new()
        .add_sparse_24_bitmask(M, dense.view())
        .is_err());
    let narrow = Array2::<f32>::zeros((1, 6));
    assert!(CompressedTensorsWriter::new()
        .add_sparse_24_bitmask(M, narrow.view())
        .is_err());
    assert!(writer
        .add_sparse_bitmask("model.layers.0.mlp.down_proj", w.view())
        .is_err());
}

#[test]
fn fp8_kv_cache_scales_are_a_kv_cache_scheme_and_read_back() {
    let int4 = quantize(QuantSpec::int(4).group(32), 8, 64, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut w = CompressedTensorsWriter::new().float_dtype(FloatDType::BF16);
    w.add_quantized(M, &int4, None).unwrap();
    let attn = |i: usize| format!("model.layers.{i}.self_attn");
    w.add_kv_cache_scales(&attn(0), 0.0625, 0.5).unwrap();
    w.add_kv_cache_scales(&attn(1), 0.125, 0.25).unwrap();
    // Bad scales and a second pair for one module are typed errors that add nothing.
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-45] {
        let err = w.add_kv_cache_scales(&attn(2), bad, 1.0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::QuantFormat(QuantFormatError::KvCacheScale { .. })
            ),
            "{bad}: {err}"
        );
    }
    assert!(matches!(
        w.add_kv_cache_scales(&attn(0), 1.0, 1.0).unwrap_err(),
        Error::QuantFormat(QuantFormatError::DuplicateModule { .. })
    ));
    w.write_dir(dir.path(), &json!({})).unwrap();
    let qc = config(dir.path());
    let scheme = &qc["kv_cache_scheme"];
    assert_eq!(scheme["num_bits"], 8);
    assert_eq!(scheme["type"], "float");
    assert_eq!(scheme["strategy"], "tensor");
    assert_eq!(scheme["dynamic"], false);
    assert_eq!(scheme["symmetric"], true);

    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    let scales = ckpt.kv_cache_scales();
    assert_eq!(scales.len(), 2);
    assert_eq!(scales[&attn(0)], (0.0625, 0.5));
    assert_eq!(scales[&attn(1)], (0.125, 0.25));
    assert!(ckpt.passthrough().is_empty(), "{:?}", ckpt.passthrough());
    let info = ckpt.model().info(&format!("{}.k_scale", attn(0))).unwrap();
    assert_eq!(info.shape, vec![1]);
}
