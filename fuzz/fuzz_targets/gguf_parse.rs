//! Parses arbitrary bytes as GGUF. Accepted files must be fully usable: every
//! tensor's bytes in range, every decodable tensor decodes, and writing the
//! file back and parsing it again is stable.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_io::gguf::{GgufFile, GgufWriter, GGML_MAX_NAME};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data.to_vec()) else {
        return;
    };
    for (key, value) in file.metadata().iter() {
        assert!(file.get(key).is_some());
        let _ = value.type_description();
        let _ = file.get_u32(key);
        let _ = file.get_f32(key);
        let _ = file.get_str_array(key);
        let _ = file.get_i32_array(key);
    }
    for info in file.tensors() {
        let bytes = file
            .tensor_bytes(info.name())
            .expect("listed tensor has bytes");
        assert_eq!(bytes.len(), info.n_bytes());
        if info.ggml_type().can_dequantize() {
            let values = file
                .dequantize(info.name())
                .expect("decodable type decodes");
            assert_eq!(values.shape(), info.shape());
        }
        let _ = file.tensor_view(info.name());
    }

    // Write back (names ggml would refuse are out of scope) and check stability.
    if file
        .tensors()
        .iter()
        .any(|t| t.name().len() >= GGML_MAX_NAME)
    {
        return;
    }
    let rewrite = |f: &GgufFile| {
        let mut w = GgufWriter::new();
        w.extend_metadata(f.metadata())
            .expect("metadata of a parsed file is valid");
        for t in f.tensors() {
            let bytes = f.tensor_bytes(t.name()).expect("bytes");
            w.add_tensor(t.name(), t.ggml_type(), t.shape(), bytes)
                .expect("tensor of a parsed file is valid");
        }
        w.to_bytes().expect("serializes")
    };
    let once = rewrite(&file);
    let again = GgufFile::parse(once.clone()).expect("our own output parses");
    assert_eq!(rewrite(&again), once);
});
