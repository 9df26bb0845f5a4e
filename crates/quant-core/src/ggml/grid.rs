//! The value grid of one encoded GGML block: which values each element can
//! take given the block's stored scales, and how to store a chosen code.
//!
//! Every supported block type decodes element `e` as `a · level(q) + b`, where
//! `q` is the element's code, `level` is a fixed table of the type (`q − 8`
//! for Q4_0, `q` for Q4_1, `KVALUES[q]` for IQ4_NL, …) and `(a, b)` come from
//! the stored scales of the element's sub-block, computed here with the same
//! f32 operations as the decoder. So a method that picks its own codes (GPTQ's
//! column sweep) can round onto a block's grid, store the codes with
//! [`set_code`], and the decoder gives back exactly the values it used.

use super::iquants::iq4::KVALUES;
use super::kquants::{f16_at, scale_min_k4};
use super::GgmlType;

/// The grid of a block type: element count per sub-block (elements that share
/// `(a, b)`) and the code levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GridKind {
    /// Elements sharing one `(a, b)`.
    pub sub_len: usize,
    /// Number of codes (`q ∈ 0..levels`).
    pub levels: usize,
    /// `level(q) = q − offset` for affine types; ignored for IQ4.
    pub offset: i32,
    /// The levels are IQ4's non-linear table.
    pub nonlinear: bool,
}

impl GridKind {
    /// The grid of `ty`, when GPTQ can sweep it.
    pub(crate) fn of(ty: GgmlType) -> Option<GridKind> {
        let affine = |sub_len, levels, offset| GridKind {
            sub_len,
            levels,
            offset,
            nonlinear: false,
        };
        Some(match ty {
            GgmlType::Q4_0 => affine(32, 16, 8),
            GgmlType::Q4_1 => affine(32, 16, 0),
            GgmlType::Q5_0 => affine(32, 32, 16),
            GgmlType::Q5_1 => affine(32, 32, 0),
            GgmlType::Q8_0 => affine(32, 256, 128),
            GgmlType::Q2K => affine(16, 4, 0),
            GgmlType::Q3K => affine(16, 8, 4),
            GgmlType::Q4K => affine(32, 16, 0),
            GgmlType::Q5K => affine(32, 32, 0),
            GgmlType::Q6K => affine(16, 64, 32),
            GgmlType::IQ4NL => GridKind {
                sub_len: 32,
                levels: 16,
                offset: 0,
                nonlinear: true,
            },
            GgmlType::IQ4XS => GridKind {
                sub_len: 32,
                levels: 16,
                offset: 0,
                nonlinear: true,
            },
            _ => return None,
        })
    }

    /// `level(q)` as the decoder converts it.
    #[inline]
    pub(crate) fn level(&self, q: u8) -> f32 {
        if self.nonlinear {
            KVALUES[q as usize] as f32
        } else {
            (q as i32 - self.offset) as f32
        }
    }

    /// The value code `q` decodes to against `(a, b)`, bit for bit as the decoder.
    #[inline]
    pub(crate) fn value(&self, (a, b): (f32, f32), q: u8) -> f32 {
        let l = self.level(q);
        if b == 0.0 {
            a * l
        } else {
            a * l + b
        }
    }

    /// The code whose value is nearest to `x` on the grid `(a, b)`.
    #[inline]
    pub(crate) fn nearest(&self, ab: (f32, f32), x: f32) -> u8 {
        let (a, b) = ab;
        if a == 0.0 || !a.is_finite() {
            // Every code decodes to b: keep the one at level 0 (or code 0).
            return if self.nonlinear { 8 } else { self.offset as u8 };
        }
        let t = (x - b) / a;
        let guess = if self.nonlinear {
            nearest_kvalue(t)
        } else {
            (t.round() as i32 + self.offset).clamp(0, self.levels as i32 - 1) as u8
        };
        // Float rounding of `t` can put the guess one level off: check neighbours.
        let mut best = guess;
        let mut best_err = (self.value(ab, guess) - x).abs();
        for q in [guess.wrapping_sub(1), guess.wrapping_add(1)] {
            if (q as usize) < self.levels {
                let e = (self.value(ab, q) - x).abs();
                if e < best_err {
                    best = q;
                    best_err = e;
                }
            }
        }
        best
    }
}

/// The IQ4 code whose level is nearest to `t`.
#[inline]
fn nearest_kvalue(t: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = f32::INFINITY;
    for (q, &k) in KVALUES.iter().enumerate() {
        let e = (k as f32 - t).abs();
        if e < best_err {
            best = q as u8;
            best_err = e;
        }
    }
    best
}

/// Writes `(a, b)` of every sub-block of one encoded block into `out`
/// (`block_size / sub_len` entries), as the decoder computes them.
///
/// # Panics
/// If `ty` has no [`GridKind`] or `b` is not one block (programmer error).
pub(crate) fn sub_block_params(ty: GgmlType, b: &[u8], out: &mut [(f32, f32)]) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4NL => {
            out[0] = (f16_at(b, 0), 0.0);
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => out[0] = (f16_at(b, 0), f16_at(b, 2)),
        GgmlType::Q2K => {
            let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
            for (g, o) in out.iter_mut().enumerate().take(16) {
                *o = (d * (b[g] & 0x0f) as f32, -(dmin * (b[g] >> 4) as f32));
            }
        }
        GgmlType::Q3K => {
            let d = f16_at(b, 108);
            let sc = &b[96..108];
            for (g, o) in out.iter_mut().enumerate().take(16) {
                let lo = (sc[g % 8] >> (4 * (g / 8))) & 0x0f;
                let hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
                *o = (d * ((lo | (hi << 4)) as i8 - 32) as f32, 0.0);
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            for (j, o) in out.iter_mut().enumerate().take(8) {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                *o = (d * sc as f32, -(dmin * m as f32));
            }
        }
        GgmlType::Q6K => {
            let d = f16_at(b, 208);
            for (g, o) in out.iter_mut().enumerate().take(16) {
                *o = (d * (b[192 + g] as i8) as f32, 0.0);
            }
        }
        GgmlType::IQ4XS => {
            let d = f16_at(b, 0);
            let scales_h = u16::from_le_bytes([b[2], b[3]]);
            for (ib, o) in out.iter_mut().enumerate().take(8) {
                let lo = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0f;
                let hi = ((scales_h >> (2 * ib)) & 3) as u8;
                *o = (d * ((lo | (hi << 4)) as i32 - 32) as f32, 0.0);
            }
        }
        _ => panic!("no grid for {ty}"),
    }
}

/// Sets a nibble: element `j` of a 32-element run stored as bytes of
/// (`j`, `j + 16`) pairs.
#[inline]
fn set_nibble_pair(qs: &mut [u8], j: usize, q: u8) {
    if j < 16 {
        qs[j] = (qs[j] & 0xf0) | (q & 0x0f);
    } else {
        qs[j - 16] = (qs[j - 16] & 0x0f) | ((q & 0x0f) << 4);
    }
}

/// Sets bit `bit` of `byte` to `on`.
#[inline]
fn set_bit(byte: &mut u8, bit: usize, on: bool) {
    if on {
        *byte |= 1 << bit;
    } else {
        *byte &= !(1 << bit);
    }
}

/// Stores code `q` (`0..levels`) of element `e` in one encoded block.
///
/// # Panics
/// If `ty` has no [`GridKind`] (programmer error).
pub(crate) fn set_code(ty: GgmlType, b: &mut [u8], e: usize, q: u8) {
    match ty {
        GgmlType::Q4_0 | GgmlType::IQ4NL => set_nibble_pair(&mut b[2..18], e, q),
        GgmlType::Q4_1 => set_nibble_pair(&mut b[4..20], e, q),
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (qh, qs) = if ty == GgmlType::Q5_0 { (2, 6) } else { (4, 8) };
            set_nibble_pair(&mut b[qs..qs + 16], e, q);
            set_bit(&mut b[qh + e / 8], e % 8, q & 0x10 != 0);
        }
        GgmlType::Q8_0 => b[2 + e] = (q as i32 - 128) as i8 as u8,
        GgmlType::Q2K | GgmlType::Q3K => {
            // Element e = 128h + 32s + l lives in bits 2s..2s+2 of qs[32h + l].
            let qs = if ty == GgmlType::Q2K { 16 } else { 32 };
            let (h, s, l) = (e / 128, (e % 128) / 32, e % 32);
            let byte = &mut b[qs + 32 * h + l];
            *byte = (*byte & !(3 << (2 * s))) | ((q & 3) << (2 * s));
            if ty == GgmlType::Q3K {
                // hmask: bit e / 32 of hmask[e % 32], set when the code is not negative.
                set_bit(&mut b[e % 32], e / 32, q >= 4);
            }
        }
        GgmlType::Q4K | GgmlType::Q5K => {
            // Element 64c + 32u + l: nibble u of qs[32c + l].
            let qs = if ty == GgmlType::Q4K { 16 } else { 48 };
            let (c, u, l) = (e / 64, (e % 64) / 32, e % 32);
            let byte = &mut b[qs + 32 * c + l];
            *byte = if u == 0 {
                (*byte & 0xf0) | (q & 0x0f)
            } else {
                (*byte & 0x0f) | ((q & 0x0f) << 4)
            };
            if ty == GgmlType::Q5K {
                set_bit(&mut b[16 + e % 32], e / 32, q & 0x10 != 0);
            }
        }
        GgmlType::Q6K => {
            // Element 128h + 32k + l: low nibble in ql[64h + 32(k % 2) + l] at
            // bits 4(k / 2), high bits in bits 2k of qh[128 + 32h + l].
            let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let lo = &mut b[64 * h + 32 * (k % 2) + l];
            let shift = 4 * (k / 2);
            *lo = (*lo & !(0x0f << shift)) | ((q & 0x0f) << shift);
            let hi = &mut b[128 + 32 * h + l];
            *hi = (*hi & !(3 << (2 * k))) | (((q >> 4) & 3) << (2 * k));
        }
        GgmlType::IQ4XS => set_nibble_pair(&mut b[8 + 16 * (e / 32)..][..16], e % 32, q),
        _ => panic!("no grid for {ty}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml::{dequantize, quantize};
    use tensorpress_tensor::SeededRng;

    const TYPES: [GgmlType; 12] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
    ];

    /// Random codes written with `set_code` decode to exactly the grid values.
    #[test]
    fn set_codes_decode_to_the_grid_values() {
        let mut rng = SeededRng::new(17);
        for ty in TYPES {
            let g = GridKind::of(ty).unwrap();
            let bs = ty.block_size();
            for trial in 0..20 {
                let x: Vec<f32> = (0..bs)
                    .map(|i| rng.normal_f32() * (1.0 + (i % 5) as f32) + 0.3 * trial as f32)
                    .collect();
                let mut bytes = Vec::new();
                quantize(ty, &x, &mut bytes).unwrap();
                let mut ab = vec![(0.0, 0.0); bs / g.sub_len];
                sub_block_params(ty, &bytes, &mut ab);
                let codes: Vec<u8> = (0..bs)
                    .map(|_| (rng.next_u64() % g.levels as u64) as u8)
                    .collect();
                for (e, &q) in codes.iter().enumerate() {
                    set_code(ty, &mut bytes, e, q);
                }
                let mut out = vec![0.0f32; bs];
                dequantize(ty, &bytes, &mut out).unwrap();
                for (e, (&q, &o)) in codes.iter().zip(&out).enumerate() {
                    let v = g.value(ab[e / g.sub_len], q);
                    assert!(
                        v == o,
                        "{ty} trial {trial} element {e}: code {q} {v} vs {o}"
                    );
                }
            }
        }
    }

    /// Rounding the encoder's own input onto its grid is never worse than the
    /// encoder's codes.
    #[test]
    fn nearest_is_at_least_as_close_as_the_encoder() {
        let mut rng = SeededRng::new(5);
        for ty in TYPES {
            let g = GridKind::of(ty).unwrap();
            let bs = ty.block_size();
            let x: Vec<f32> = (0..bs).map(|_| rng.normal_f32()).collect();
            let mut bytes = Vec::new();
            quantize(ty, &x, &mut bytes).unwrap();
            let mut enc = vec![0.0f32; bs];
            dequantize(ty, &bytes, &mut enc).unwrap();
            let mut ab = vec![(0.0, 0.0); bs / g.sub_len];
            sub_block_params(ty, &bytes, &mut ab);
            for e in 0..bs {
                let p = ab[e / g.sub_len];
                let v = g.value(p, g.nearest(p, x[e]));
                assert!((v - x[e]).abs() <= (enc[e] - x[e]).abs() + 1e-6, "{ty} {e}");
            }
        }
    }
}
