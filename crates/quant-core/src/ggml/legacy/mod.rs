//! GGML's original 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! Every block stores an f16 scale `d` (and for the `_1` variants an f16 minimum
//! `m`) followed by the packed codes. In the 4- and 5-bit formats, byte `j` of
//! the nibble array holds element `j` in its low nibble and element `j + 16` in
//! its high nibble; the 5-bit formats keep the fifth bit of element `j` in bit `j`
//! of a little-endian `u32`.
//!
//! The arithmetic follows the `gguf` Python package's numpy codecs (themselves
//! bit-exact with `ggml-quants.c`) operation by operation, in f32, without fused
//! multiply-adds, so that results match bit for bit.

pub(crate) mod dequant;
pub(crate) mod quant;

/// Elements per block.
pub(crate) const QK: usize = 32;

/// Reads the f16 at `b[at..at + 2]` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}
