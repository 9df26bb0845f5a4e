//! Property tests: write → read is the identity, for safetensors (every dtype,
//! single files and shards) and GGUF (every metadata value type, every tensor type).

use std::collections::BTreeMap;

use proptest::prelude::*;
use tensorpress_io::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_quant_core::ggml;
use tensorpress_tensor::DType;

// ---- safetensors --------------------------------------------------------------

#[derive(Debug, Clone)]
struct StTensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn st_tensor() -> impl Strategy<Value = StTensor> {
    (0..DType::ALL.len(), prop::collection::vec(0usize..5, 0..4)).prop_flat_map(|(d, shape)| {
        let dtype = DType::ALL[d];
        let n = shape.iter().product::<usize>() * dtype.size_in_bytes();
        prop::collection::vec(any::<u8>(), n).prop_map(move |data| StTensor {
            dtype,
            shape: shape.clone(),
            data,
        })
    })
}

fn st_model() -> impl Strategy<Value = (BTreeMap<String, StTensor>, BTreeMap<String, String>)> {
    (
        prop::collection::btree_map("[a-z.]{1,12}|\\PC{1,6}", st_tensor(), 0..8),
        prop::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
    )
        .prop_filter("reserved name", |(t, _)| !t.contains_key("__metadata__"))
}

fn st_writer<'a>(
    tensors: &'a BTreeMap<String, StTensor>,
    metadata: &BTreeMap<String, String>,
) -> SafetensorsWriter<'a> {
    let mut w = SafetensorsWriter::new();
    for (k, v) in metadata {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    for (name, t) in tensors {
        w.add(name.clone(), t.dtype, &t.shape, t.data.as_slice())
            .unwrap();
    }
    w
}

fn st_check(
    m: &SafetensorsModel,
    tensors: &BTreeMap<String, StTensor>,
    metadata: &BTreeMap<String, String>,
) {
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(m.names(), names);
    for (name, t) in tensors {
        let info = m.info(name).unwrap();
        assert_eq!((info.dtype, &info.shape), (t.dtype, &t.shape), "{name}");
        assert_eq!(m.view(name).unwrap().data(), t.data.as_slice(), "{name}");
    }
    assert_eq!(m.metadata(), metadata);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn safetensors_bytes_round_trip((tensors, metadata) in st_model()) {
        let bytes = st_writer(&tensors, &metadata).to_bytes().unwrap();
        // The header is padded to a multiple of 8, as the reference writer does.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        prop_assert_eq!(n % 8, 0);
        let m = SafetensorsModel::from_bytes(bytes).unwrap();
        st_check(&m, &tensors, &metadata);
        // Every dtype converts to f32 without error.
        for name in tensors.keys() {
            prop_assert!(m.to_f32(name).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn safetensors_dir_round_trip((tensors, metadata) in st_model(), shard in 1u64..64) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = st_writer(&tensors, &metadata);
        w.max_shard_size(shard);
        let written = w.write_dir(dir.path()).unwrap();
        let m = SafetensorsModel::open(dir.path()).unwrap();
        st_check(&m, &tensors, &metadata);
        let shards = written.len().saturating_sub(1).max(1);
        prop_assert_eq!(m.files().len(), shards);
    }
}

// ---- GGUF -----------------------------------------------------------------------

fn float32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn float64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn leaf_array() -> impl Strategy<Value = GgufArray> {
    use prop::collection::vec;
    prop_oneof![
        vec(any::<u8>(), 0..6).prop_map(GgufArray::U8),
        vec(any::<i8>(), 0..6).prop_map(GgufArray::I8),
        vec(any::<u16>(), 0..6).prop_map(GgufArray::U16),
        vec(any::<i16>(), 0..6).prop_map(GgufArray::I16),
        vec(any::<u32>(), 0..6).prop_map(GgufArray::U32),
        vec(any::<i32>(), 0..6).prop_map(GgufArray::I32),
        vec(float32(), 0..6).prop_map(GgufArray::F32),
        vec(any::<bool>(), 0..6).prop_map(GgufArray::Bool),
        vec("\\PC{0,6}", 0..6).prop_map(GgufArray::String),
        vec(any::<u64>(), 0..6).prop_map(GgufArray::U64),
        vec(any::<i64>(), 0..6).prop_map(GgufArray::I64),
        vec(float64(), 0..6).prop_map(GgufArray::F64),
    ]
}

fn array() -> impl Strategy<Value = GgufArray> {
    leaf_array().prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(GgufArray::Array)
    })
}

fn value() -> impl Strategy<Value = GgufValue> {
    prop_oneof![
        any::<u8>().prop_map(GgufValue::U8),
        any::<i8>().prop_map(GgufValue::I8),
        any::<u16>().prop_map(GgufValue::U16),
        any::<i16>().prop_map(GgufValue::I16),
        any::<u32>().prop_map(GgufValue::U32),
        any::<i32>().prop_map(GgufValue::I32),
        float32().prop_map(GgufValue::F32),
        any::<bool>().prop_map(GgufValue::Bool),
        "\\PC{0,12}".prop_map(GgufValue::String),
        array().prop_map(GgufValue::Array),
        any::<u64>().prop_map(GgufValue::U64),
        any::<i64>().prop_map(GgufValue::I64),
        float64().prop_map(GgufValue::F64),
    ]
}

#[derive(Debug, Clone)]
struct GgTensor {
    ty: GgmlType,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// A tensor of any GGML type with random bytes: 1–4 dims, the innermost a
/// whole number of blocks.
fn gg_tensor() -> impl Strategy<Value = GgTensor> {
    (
        0..GgmlType::ALL.len(),
        0usize..3,
        prop::collection::vec(0usize..3, 0..3),
    )
        .prop_flat_map(|(t, blocks, outer)| {
            let ty = GgmlType::ALL[t];
            let mut shape = outer;
            shape.push(blocks * ty.block_size());
            let n = ty.row_bytes(shape[shape.len() - 1]).unwrap()
                * shape[..shape.len() - 1].iter().product::<usize>();
            prop::collection::vec(any::<u8>(), n).prop_map(move |data| GgTensor {
                ty,
                shape: shape.clone(),
                data,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn gguf_round_trip(
        values in prop::collection::vec(("[a-z_.]{0,10}", value()), 0..10),
        tensors in prop::collection::vec(gg_tensor(), 0..6),
        align_log2 in 0u32..9,
    ) {
        let mut w = GgufWriter::new();
        w.set_alignment(1 << align_log2).unwrap();
        let mut expected = Vec::new();
        for (i, (key, v)) in values.into_iter().enumerate() {
            let key = format!("{key}#{i}");
            w.add_metadata(key.clone(), v.clone()).unwrap();
            expected.push((key, v));
        }
        for (i, t) in tensors.iter().enumerate() {
            w.add_tensor(format!("t{i}"), t.ty, &t.shape, t.data.as_slice()).unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::parse(bytes.clone()).unwrap();
        prop_assert_eq!(f.version(), 3);
        prop_assert_eq!(f.alignment(), 1u64 << align_log2);
        // general.alignment first (set_alignment), then the pairs in order.
        let got: Vec<_> = f.metadata().iter().skip(1).map(|(k, v)| (k.to_owned(), v.clone())).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let info = &f.tensors()[i];
            prop_assert_eq!(info.name(), format!("t{i}"));
            prop_assert_eq!(info.ggml_type(), t.ty);
            prop_assert_eq!(info.shape(), t.shape.as_slice());
            prop_assert_eq!(info.offset() % f.alignment(), 0);
            prop_assert_eq!(f.tensor_bytes(info.name()).unwrap(), t.data.as_slice());
        }
        // Reading and writing again reproduces the file byte for byte.
        let mut again = GgufWriter::new();
        again.extend_metadata(f.metadata()).unwrap();
        for info in f.tensors() {
            again.add_tensor(info.name(), info.ggml_type(), info.shape(), f.tensor_bytes(info.name()).unwrap()).unwrap();
        }
        prop_assert_eq!(again.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn gguf_f32_tensors_encode_like_the_codecs(
        rows in 1usize..4,
        blocks in 1usize..4,
        seed in any::<u64>(),
    ) {
        for &ty in GgmlType::ALL.iter().filter(|t| t.can_quantize()) {
            let cols = ty.block_size() * blocks;
            let mut s = seed | 1;
            let x = ndarray::Array2::from_shape_fn((rows, cols), |_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                (s % 20001) as f32 / 1000.0 - 10.0
            });
            let mut w = GgufWriter::new();
            w.add_f32("x", ty, x.view().into_dyn()).unwrap();
            let f = GgufFile::parse(w.to_bytes().unwrap()).unwrap();
            let mut want = Vec::new();
            ggml::quantize(ty, x.as_slice().unwrap(), &mut want).unwrap();
            prop_assert_eq!(f.tensor_bytes("x").unwrap(), want.as_slice());
            let mut dq = vec![0.0f32; rows * cols];
            ggml::dequantize(ty, &want, &mut dq).unwrap();
            let got = f.dequantize("x").unwrap();
            prop_assert_eq!(got.shape(), &[rows, cols]);
            prop_assert!(got.iter().zip(&dq).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
