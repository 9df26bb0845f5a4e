//! Parses arbitrary bytes as safetensors. Accepted files must be fully usable:
//! every tensor views and converts to f32, and writing back round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = SafetensorsModel::from_bytes(data.to_vec()) else {
        return;
    };
    let mut w = SafetensorsWriter::new();
    for (k, v) in model.metadata() {
        w.add_metadata(k.clone(), v.clone()).expect("unique keys");
    }
    for name in model.names() {
        let info = model.info(name).expect("listed tensor has info");
        let view = model.view(name).expect("listed tensor has a view");
        let values = model.to_f32(name).expect("every dtype converts");
        assert_eq!(values.shape(), info.shape.as_slice());
        w.add_view(name, &view)
            .expect("tensor of a parsed file is valid");
    }
    let bytes = w.to_bytes().expect("serializes");
    let again = SafetensorsModel::from_bytes(bytes).expect("our own output parses");
    assert_eq!(again.names(), model.names());
    assert_eq!(again.metadata(), model.metadata());
    for name in model.names() {
        assert_eq!(again.info(name), model.info(name));
        assert_eq!(
            again.view(name).expect("view").data(),
            model.view(name).expect("view").data()
        );
    }
});
