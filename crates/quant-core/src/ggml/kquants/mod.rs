//! GGML's k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and the activation type Q8_K).
//!
//! A k-quant stores 256 values (a super-block) as 16 sub-blocks of 16 values
//! (Q2_K, Q3_K, Q6_K) or 8 of 32 (Q4_K, Q5_K). Each sub-block has a small
//! integer scale (and for Q2_K, Q4_K and Q5_K a minimum), and those are in turn
//! quantized against one or two f16 super-block scales `d` and `dmin`. A value
//! decodes as `(d · sc) · q − (dmin · m)` (or `(d · sc) · q` for the symmetric
//! Q3_K and Q6_K).
//!
//! Each format lives in its own module with its decoder, its reference encoder
//! (llama.cpp's `quantize_row_qN_K_ref`, what `llama-quantize` writes without an
//! importance matrix) and its importance-weighted encoder (`quantize_row_qN_K_impl`,
//! what `llama-quantize --imatrix` writes). [`search`] holds the scale searches
//! the encoders share.
//!
//! Decoders follow the `gguf` Python package's numpy code operation by operation;
//! encoders follow `ggml-quants.c` operation by operation, in f32 without fused
//! multiply-adds (ggml-base is built without FMA), so that both match bit for bit.
//! Integer conversions mirror C's: `nearest_int` is ggml's magic-number rounding,
//! and stores into 8-bit fields wrap as C's do. NaN inputs give unspecified codes
//! but never panic.

pub(crate) mod q2k;
pub(crate) mod q3k;
pub(crate) mod q4k;
pub(crate) mod q5k;
pub(crate) mod q6k;
pub(crate) mod q8k;
pub(crate) mod search;

use half::f16;

pub(crate) use super::types::QK_K;

/// Sub-block magnitudes below this count as all zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: rounds to nearest, ties to even, by adding 1.5·2²³.
///
/// Exact for `|x| ≤ 2²²`; beyond that (and for NaN) it returns the same
/// meaningless value ggml does, without panicking.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// C's `MAX(a, b)` macro (`a > b ? a : b`), which treats NaN unlike `f32::max`.
#[inline]
pub(crate) fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// Reads the f16 at `b[at..at + 2]` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Writes `v` rounded to f16 at `b[at..at + 2]` and returns the rounded value.
#[inline]
pub(crate) fn put_f16(b: &mut [u8], at: usize, v: f32) -> f32 {
    let h = f16::from_f32(v);
    b[at..at + 2].copy_from_slice(&h.to_le_bytes());
    h.to_f32()
}

/// Packs 256 2-bit codes as Q2_K and Q3_K store them: byte `32·h + l` holds
/// elements `128·h + l + 32·s` in bits `2s..2s+2`. Codes are masked to 8 bits
/// first, as the C stores them into `uint8_t`.
#[inline]
pub(crate) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for h in 0..2 {
        for i in 0..32 {
            let j = 128 * h + i;
            qs[32 * h + i] = l[j] | (l[j + 32] << 2) | (l[j + 64] << 4) | (l[j + 96] << 6);
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K/Q5_K scale array
/// (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs eight 6-bit scales and minima into the 12 bytes of Q4_K/Q5_K, with
/// the same byte operations as the C (values above 63 wrap the same way).
#[inline]
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8], q: &mut [u8]) {
    for j in 0..8 {
        let (s, m) = (ls[j], lm[j]);
        if j < 4 {
            q[j] = s;
            q[j + 4] = m;
        } else {
            q[j + 4] = (s & 0x0f) | ((m & 0x0f) << 4);
            q[j - 4] |= (s >> 4) << 6;
            q[j] |= (m >> 4) << 6;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.49), 0);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
        // Out of range and NaN give ggml's values and do not panic.
        let _ = nearest_int(f32::NAN);
        assert_eq!(nearest_int(f32::INFINITY), -0x0040_0000);
    }

    #[test]
    fn scale_min_k4_round_trips() {
        let ls = [0, 1, 17, 63, 5, 33, 48, 63];
        let lm = [63, 2, 40, 0, 62, 16, 31, 1];
        let mut q = [0u8; 12];
        pack_scale_min_k4(&ls, &lm, &mut q);
        for j in 0..8 {
            assert_eq!(scale_min_k4(j, &q), (ls[j], lm[j]), "sub-block {j}");
        }
    }

    #[test]
    fn c_max_keeps_nan_semantics() {
        assert_eq!(c_max(1.0, 2.0), 2.0);
        assert!(c_max(1.0, f32::NAN).is_nan());
        assert_eq!(c_max(f32::NAN, 1.0), 1.0);
    }
}
