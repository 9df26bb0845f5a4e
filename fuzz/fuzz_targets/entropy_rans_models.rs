//! Decodes arbitrary bytes with the general rANS path: serialized CDF tables
//! (as CompressAI stores them) chosen per element, then per-element quantized
//! Gaussians. Whatever decodes must re-encode to the same words.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_codecs::entropy::rans::DefaultRans;
use tensorpress_codecs::entropy::{CdfTables, Quantized};

fn words(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok((tables, used)) = CdfTables::read_from(data) {
        if !tables.is_empty() {
            let w = words(&data[used..]);
            let model_at = |i: usize| tables.table(i % tables.len());
            if let Ok(symbols) = DefaultRans::decode_with(&w, 64, model_at) {
                assert_eq!(DefaultRans::encode_with(&symbols, model_at).unwrap(), w);
            }
        }
    }
    let w = words(data);
    let model_at = |i: usize| Quantized::gaussian(i as f64 * 0.37 - 5.0, 0.2 + (i % 7) as f64, -32..=32, 16);
    if let Ok(symbols) = DefaultRans::decode_with(&w, 64, model_at) {
        assert_eq!(DefaultRans::encode_with(&symbols, model_at).unwrap(), w);
    }
});
