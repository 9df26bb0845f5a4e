//! Parses arbitrary bytes as a gradient payload; whatever parses serializes
//! to `byte_len` bytes that parse to the same payload, and expands to a dense
//! gradient without panicking (when the declared tensor is small enough to
//! allocate here: `to_dense` allocates what the shape declares, up to
//! `MAX_ELEMENTS`, by design — a peer's payload is trusted to that extent).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorpress_codecs::grad::Payload;

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = Payload::from_bytes(data) {
        let bytes = payload.to_bytes().expect("a parsed payload is valid");
        assert_eq!(bytes.len(), payload.byte_len());
        let again = Payload::from_bytes(&bytes).expect("re-serialized bytes parse");
        assert_eq!(again.to_bytes().expect("valid"), bytes, "serialization is stable");
        let numel = payload
            .shape()
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel.is_some_and(|n| n <= 1 << 22) {
            let _ = payload.to_dense();
        }
    }
});
