//! Cross-checks with the reference `safetensors` crate (the implementation
//! behind the Python package): each side reads what the other writes.

use std::collections::HashMap;

use safetensors::tensor::TensorView as RefView;
use safetensors::{Dtype, SafeTensors};
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_tensor::DType;

const REF_DTYPES: [Dtype; 15] = [
    Dtype::BOOL,
    Dtype::U8,
    Dtype::I8,
    Dtype::U16,
    Dtype::I16,
    Dtype::U32,
    Dtype::I32,
    Dtype::U64,
    Dtype::I64,
    Dtype::F16,
    Dtype::BF16,
    Dtype::F32,
    Dtype::F64,
    Dtype::F8_E4M3,
    Dtype::F8_E5M2,
];

fn to_ref(d: DType) -> Dtype {
    REF_DTYPES
        .into_iter()
        .find(|r| format!("{r:?}") == d.safetensors_name())
        .expect("every DType has a reference dtype")
}

/// One tensor of every dtype, with distinct bytes and shapes (a scalar, an empty one).
fn samples() -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
    DType::ALL
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let shape = match i % 4 {
                0 => vec![],
                1 => vec![3],
                2 => vec![2, 0, 5],
                _ => vec![2, 3],
            };
            let n = shape.iter().product::<usize>() * d.size_in_bytes();
            let bytes = (0..n)
                .map(|j| {
                    if d == DType::Bool {
                        (j % 2) as u8
                    } else {
                        (i * 31 + j) as u8
                    }
                })
                .collect();
            (format!("t{i}.{d}"), d, shape, bytes)
        })
        .collect()
}

#[test]
fn reference_reads_ours() {
    let samples = samples();
    let mut w = SafetensorsWriter::new();
    w.add_metadata("format", "pt").unwrap();
    for (name, d, shape, bytes) in &samples {
        w.add(name.clone(), *d, shape, bytes.as_slice()).unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let st = SafeTensors::deserialize(&bytes).expect("reference accepts our file");
    assert_eq!(st.len(), samples.len());
    for (name, d, shape, data) in &samples {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), to_ref(*d), "{name}");
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        assert_eq!(t.data(), data.as_slice(), "{name}");
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
}

#[test]
fn we_read_the_reference() {
    let samples = samples();
    let views: Vec<(String, RefView<'_>)> = samples
        .iter()
        .map(|(name, d, shape, bytes)| {
            (
                name.clone(),
                RefView::new(to_ref(*d), shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    // One key, as Hugging Face writes: the reference serializes a HashMap, whose
    // order is random with more keys.
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta)).unwrap();
    let m = SafetensorsModel::from_bytes(bytes.clone()).unwrap();
    assert_eq!(m.len(), samples.len());
    assert_eq!(m.metadata()["format"], "pt");
    for (name, d, shape, data) in &samples {
        let info = m.info(name).unwrap();
        assert_eq!((info.dtype, &info.shape), (*d, shape), "{name}");
        assert_eq!(m.view(name).unwrap().data(), data.as_slice(), "{name}");
    }
    // Writing the same tensors gives the reference's file byte for byte.
    let mut w = SafetensorsWriter::new();
    for (k, v) in m.metadata() {
        w.add_metadata(k.clone(), v.clone()).unwrap();
    }
    for name in m.names() {
        w.add_view(name, &m.view(name).unwrap()).unwrap();
    }
    let ours = w.to_bytes().unwrap();
    assert!(
        ours == bytes,
        "our serialization differs from the reference's"
    );
}
