//! Export → import is the identity for every integer layout: compressed-tensors
//! (dense and aligned packing, f32/f16/bf16 scales), GPTQ (v1 and v2 zero
//! points) and dequantized safetensors, over shapes, bits 2/3/4/8, symmetric
//! and asymmetric grids, per-tensor, per-channel and per-group scales, and
//! act-order group indices.

use ndarray::{Array1, Array2};
use proptest::prelude::*;
use serde_json::json;
use tensorpress_io::export::{
    CompressedTensorsWriter, CtPacking, DequantizedWriter, FloatDType, GptqOptions, GptqWriter,
    ZeroFormat,
};
use tensorpress_io::import::{QuantizedCheckpoint, QuantizedFormat};
use tensorpress_io::safetensors::SafetensorsModel;
use tensorpress_quant_core::{Granularity, QuantSpec, QuantizedTensor};

/// A small xorshift stream, so a case is reproducible from its seed.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random quantized tensor whose scales are exact in `scale_dtype`.
fn random_layer(
    rows: usize,
    cols: usize,
    spec: QuantSpec,
    act_order: bool,
    scale_dtype: FloatDType,
    seed: u64,
) -> QuantizedTensor {
    let mut s = Stream(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let bits = spec.bits();
    let maxq = (1u64 << bits) - 1;
    let groups = spec.n_groups(cols).unwrap();
    let codes: Vec<u8> = (0..rows * cols).map(|_| s.below(maxq + 1) as u8).collect();
    let scale = |s: &mut Stream| scale_dtype.round((s.below(1000) as f32 + 1.0) * 1e-4);
    let (scales, zeros) = if spec.granularity == Granularity::Tensor {
        let sc = scale(&mut s);
        let z = if spec.symmetric {
            (1u64 << (bits - 1)) as f32
        } else {
            s.below(maxq + 1) as f32
        };
        (
            Array2::from_elem((rows, 1), sc),
            Array2::from_elem((rows, 1), z),
        )
    } else {
        let scales = Array2::from_shape_fn((rows, groups), |_| scale(&mut s));
        let zeros = Array2::from_shape_fn((rows, groups), |_| {
            if spec.symmetric {
                (1u64 << (bits - 1)) as f32
            } else {
                s.below(maxq + 1) as f32
            }
        });
        (scales, zeros)
    };
    let g_idx = act_order.then(|| {
        // GPTQ's act-order: columns in a permuted order, groups of
        // `group_size` consecutive positions in that order.
        let gs = spec.group_size(cols);
        let mut perm: Vec<usize> = (0..cols).collect();
        for i in (1..cols).rev() {
            perm.swap(i, s.below(i as u64 + 1) as usize);
        }
        let mut g = vec![0u32; cols];
        for (pos, &c) in perm.iter().enumerate() {
            g[c] = (pos / gs) as u32;
        }
        g
    });
    QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, g_idx).unwrap()
}

fn spec(bits: u8, symmetric: bool, granularity: Granularity) -> QuantSpec {
    let mut s = QuantSpec::int(bits);
    s.symmetric = symmetric;
    s.granularity = granularity;
    s
}

fn bits() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![2u8, 3, 4, 8])
}

/// The stored dequantized weight, as f32.
fn dequantized_file(q: &QuantizedTensor, dtype: FloatDType) -> Array2<f32> {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DequantizedWriter::new(dtype);
    w.add_quantized("m", q, None).unwrap();
    w.write_dir(dir.path(), &json!({})).unwrap();
    let m = SafetensorsModel::open(dir.path()).unwrap();
    m.to_f32("m.weight").unwrap().into_dimensionality().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn compressed_tensors_round_trips(
        bits in bits(),
        symmetric in any::<bool>(),
        kind in 0u8..4,
        rows in 1usize..24,
        groups in 1usize..5,
        group in prop::sample::select(vec![1usize, 8, 16, 24]),
        packing in prop_oneof![Just(CtPacking::Dense), Just(CtPacking::Aligned)],
        dtype in prop_oneof![Just(FloatDType::F32), Just(FloatDType::F16), Just(FloatDType::BF16)],
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let cols = groups * group;
        let (granularity, act_order) = match kind {
            0 => (Granularity::Tensor, false),
            1 => (Granularity::Channel, false),
            2 => (Granularity::Group(group), false),
            _ => (Granularity::Group(group), true),
        };
        let q = random_layer(rows, cols, spec(bits, symmetric, granularity), act_order, dtype, seed);
        let bias = Array1::from_shape_fn(rows, |i| dtype.round(i as f32 * 0.25 - 1.0));
        let dir = tempfile::tempdir().unwrap();
        let mut w = CompressedTensorsWriter::new().float_dtype(dtype).packing(packing);
        w.add_quantized("model.layers.0.mlp.up_proj", &q, with_bias.then(|| bias.view())).unwrap();
        w.add_array("model.norm.weight", Array1::<f32>::ones(3).into_dyn().view()).unwrap();
        w.write_dir(dir.path(), &json!({"model_type": "llama"})).unwrap();

        let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
        prop_assert_eq!(ckpt.format(), QuantizedFormat::CompressedTensors(packing));
        prop_assert_eq!(ckpt.modules(), ["model.layers.0.mlp.up_proj"]);
        let back = ckpt.layer("model.layers.0.mlp.up_proj").unwrap();
        prop_assert_eq!(&back, &q);
        prop_assert_eq!(back.dequantize(), q.dequantize());
        let b = ckpt.bias("model.layers.0.mlp.up_proj").unwrap();
        prop_assert_eq!(b, with_bias.then_some(bias));
        let mut expect = vec!["model.norm.weight"];
        if with_bias {
            expect.insert(0, "model.layers.0.mlp.up_proj.bias");
        }
        prop_assert_eq!(ckpt.passthrough(), expect);
    }

    #[test]
    fn gptq_round_trips(
        bits in bits(),
        symmetric in any::<bool>(),
        kind in 0u8..4,
        n32 in 1usize..3,
        k32 in 1usize..4,
        group in prop::sample::select(vec![16usize, 32, 48, 128]),
        v2 in any::<bool>(),
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (rows, cols) = (32 * n32, 32 * k32);
        let (granularity, act_order) = match kind {
            0 => (Granularity::Tensor, false),
            1 => (Granularity::Channel, false),
            2 => (Granularity::Group(group), false),
            _ => (Granularity::Group(group), true),
        };
        let q = random_layer(rows, cols, spec(bits, symmetric, granularity), act_order, FloatDType::F16, seed);
        let bias = Array1::from_shape_fn(rows, |i| FloatDType::F16.round(i as f32 / 3.0));
        let zero_format = if v2 { ZeroFormat::V2 } else { ZeroFormat::V1 };
        let dir = tempfile::tempdir().unwrap();
        let mut w = GptqWriter::new().options(GptqOptions { zero_format, ..GptqOptions::default() });
        w.add_quantized("model.layers.3.self_attn.o_proj", &q, with_bias.then(|| bias.view())).unwrap();
        w.write_dir(dir.path(), &json!({"model_type": "llama"})).unwrap();

        let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
        prop_assert_eq!(ckpt.format(), QuantizedFormat::Gptq(zero_format));
        let back = ckpt.layer("model.layers.3.self_attn.o_proj").unwrap();
        if granularity == Granularity::Tensor {
            // Written per channel: the same weights, a per-channel spec.
            prop_assert_eq!(back.spec().granularity, Granularity::Channel);
            prop_assert_eq!(back.codes(), q.codes());
            prop_assert_eq!(back.dequantize(), q.dequantize());
        } else {
            // A random act-order permutation can happen to be the identity.
            let trivial = q.g_idx().is_some_and(|g| {
                g.iter().enumerate().all(|(k, &x)| x as usize == k / q.group_size())
            });
            if trivial {
                prop_assert_eq!(back.g_idx(), None);
                prop_assert_eq!(back.dequantize(), q.dequantize());
            } else {
                prop_assert_eq!(&back, &q);
            }
        }
        let b = ckpt.bias("model.layers.3.self_attn.o_proj").unwrap();
        prop_assert_eq!(b, with_bias.then_some(bias));
        let cfg = ckpt.config();
        prop_assert_eq!(&cfg["quantization_config"]["desc_act"], &json!(back.g_idx().is_some()));
    }

    #[test]
    fn dequantized_export_is_the_dequantized_weight(
        bits in bits(),
        symmetric in any::<bool>(),
        rows in 1usize..10,
        cols in 1usize..70,
        seed in any::<u64>(),
    ) {
        let q = random_layer(rows, cols, spec(bits, symmetric, Granularity::Group(16)), false, FloatDType::F32, seed);
        let d = q.dequantize();
        prop_assert_eq!(dequantized_file(&q, FloatDType::F32), d.clone());
        let h = dequantized_file(&q, FloatDType::BF16);
        prop_assert_eq!(h, d.mapv(|x| FloatDType::BF16.round(x)));
    }
}

#[test]
fn several_schemes_get_several_config_groups() {
    let dir = tempfile::tempdir().unwrap();
    let a = random_layer(
        8,
        64,
        QuantSpec::int(4).group(32),
        false,
        FloatDType::F32,
        1,
    );
    let b = random_layer(
        8,
        64,
        QuantSpec::int(8).channel(),
        false,
        FloatDType::F32,
        2,
    );
    let c = random_layer(
        4,
        64,
        QuantSpec::int(4).group(32),
        false,
        FloatDType::F32,
        3,
    );
    let mut w = CompressedTensorsWriter::new();
    w.add_quantized("l.0.q", &a, None).unwrap();
    w.add_quantized("l.0.k", &b, None).unwrap();
    w.add_quantized("l.1.q", &c, None).unwrap();
    w.write_dir(dir.path(), &json!({})).unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let groups = &cfg["quantization_config"]["config_groups"];
    assert_eq!(groups["group_0"]["targets"], json!(["l.0.q", "l.1.q"]));
    assert_eq!(groups["group_0"]["weights"]["strategy"], "group");
    assert_eq!(groups["group_0"]["weights"]["group_size"], 32);
    assert_eq!(groups["group_1"]["targets"], json!(["l.0.k"]));
    assert_eq!(groups["group_1"]["weights"]["num_bits"], 8);
    assert_eq!(groups["group_1"]["weights"]["strategy"], "channel");
    let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.layer("l.0.q").unwrap(), a);
    assert_eq!(ckpt.layer("l.0.k").unwrap(), b);
    assert_eq!(ckpt.layer("l.1.q").unwrap(), c);
}
