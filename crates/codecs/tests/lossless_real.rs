//! The lossless float codec on all-MiniLM-L6-v2's f32 weights (and its one i64 buffer): every tensor
//! round-trips bit-exactly through the `.tpz` container, which must come out
//! below 90% of the original bytes (measured: about 84%; f32 keeps 3 of its 4
//! bytes raw, so ~75% is the floor).

use tensorpress_codecs::lossless::{LosslessFile, LosslessWriter, TensorCodec};
use tensorpress_io::safetensors::SafetensorsModel;
use tensorpress_io::testdata;
use tensorpress_tensor::DType;

#[test]
fn minilm_round_trips_bit_exactly_and_shrinks() {
    let dir = testdata::minilm_dir().unwrap_or_else(|e| panic!("{e}"));
    let model = SafetensorsModel::open(dir.join("model.safetensors")).expect("open MiniLM");
    let mut w = LosslessWriter::new();
    for name in model.names() {
        let view = model.view(name).expect("view");
        let info = model.info(name).expect("info");
        w.add(name, info.dtype, &info.shape, view.data())
            .expect("add");
    }
    let container = w.to_bytes().expect("container");
    let file = LosslessFile::parse(&container).expect("parse");
    assert_eq!(file.tensors().len(), model.len());
    let mut original = 0usize;
    for name in model.names() {
        let view = model.view(name).expect("view");
        let entry = file.entry(name).expect("entry");
        let want = if entry.dtype == DType::F32 {
            TensorCodec::LosslessFloat
        } else {
            TensorCodec::Raw // `embeddings.position_ids`, i64
        };
        assert_eq!(entry.codec, want, "{name}");
        assert_eq!(entry.shape, model.info(name).expect("info").shape);
        assert!(
            file.decode(name).expect("decode") == view.data(),
            "{name} differs"
        );
        original += view.data().len();
    }
    assert_eq!(original, w.original_bytes());
    let ratio = container.len() as f64 / original as f64;
    eprintln!(
        "MiniLM f32: {original} → {} bytes ({:.2}%)",
        container.len(),
        100.0 * ratio
    );
    assert!(ratio < 0.90, "ratio {ratio}");
}
