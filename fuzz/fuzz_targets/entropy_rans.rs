//! Decodes arbitrary bytes as a `rans::compress` stream (the table-driven fast
//! path); a stream `u8` accepts decodes to the same symbols as `u16`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_codecs::entropy::rans;

fuzz_target!(|data: &[u8]| {
    if let Ok(symbols) = rans::decompress::<u8>(data, 1 << 20) {
        let again = rans::decompress::<u16>(data, 1 << 20).expect("u16 accepts what u8 does");
        assert!(symbols.iter().zip(&again).all(|(&a, &b)| u16::from(a) == b));
    }
    let _ = rans::decompress::<u16>(data, 1 << 20);
});
