//! Decodes arbitrary bytes as a lossless float stream and as a `.tpz`
//! container; whatever decodes must re-encode to the same elements.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_codecs::lossless::{float, FloatCodecConfig, LosslessFile};

fuzz_target!(|data: &[u8]| {
    if let Ok((format, out)) = float::decode(data, 1 << 20) {
        let again = float::encode(format, &out, &FloatCodecConfig::default()).expect("re-encode");
        assert_eq!(float::decode(&again, out.len()).expect("decode").1, out);
    }
    if let Ok(file) = LosslessFile::parse(data) {
        let file = file.with_max_tensor_bytes(1 << 20);
        for e in file.tensors() {
            if let Ok(bytes) = file.decode(&e.name) {
                assert_eq!(bytes.len(), e.decoded_len());
            }
        }
    }
});
