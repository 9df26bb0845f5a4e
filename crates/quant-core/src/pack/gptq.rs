//! GPTQ's packed layout, as AutoGPTQ writes it (`QuantLinear.pack` in
//! `qlinear_cuda_old.py`) and transformers, optimum and GPTQModel load it.
//!
//! - `qweight`: `int32 [K·b/32, N]`. Column `n` holds the `K` codes of output
//!   channel `n` as one dense bit stream, least significant bits first, so
//!   3-bit codes straddle words exactly as AutoGPTQ's 3-bit packer places them
//!   (32 codes in 3 words). `K` must be a multiple of 32: AutoGPTQ sizes the
//!   buffer as `K // 32 · b` words.
//! - `qzeros`: `int32 [groups, N·b/32]`, the zero point of each group and
//!   channel packed the same way along `N` (a multiple of 32 for the same reason).
//! - `scales` `f16 [groups, N]` and `g_idx` `int32 [K]` are plain tensors (the
//!   exporter in `tensorpress-io` writes them).
//!
//! Version 1 checkpoints (`checkpoint_format: "gptq"`, [`ZeroFormat::V1`])
//! store `zero − 1`; GPTQModel's `gptq_v2` ([`ZeroFormat::V2`]) stores the zero
//! itself. A zero point of 0 has no `zero − 1` field: GPTQModel's v1 writer,
//! whose conversion transformers uses, subtracts 1 from every field in one
//! word-wide subtraction (`0x11111111` for 4 bits), letting the borrow run into
//! the next field, and its reader adds the constant back, which restores every
//! field. This module does the same for 2, 4 and 8 bits, and for 3 bits
//! (where GPTQModel shifts each decoded field modulo 8) shifts each field.
//! Readers that add 1 to each masked field (AutoGPTQ's CUDA kernels, vLLM's
//! `gptq` kernel) see 0 as `2^b`: asymmetric quantizers that target them
//! should keep zero points at 1 or above.

use ndarray::{Array2, ArrayView2};

use super::{
    check_bits, check_codes, check_multiple, check_shape, pack_rows, unpack_rows, Fill, PackError,
};

const LAYOUT: &str = "GPTQ";
const BITS: &[u8] = &[2, 3, 4, 8];
const BITS_TEXT: &str = "2, 3, 4 or 8 bits";

/// How `qzeros` stores a zero point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ZeroFormat {
    /// `zero − 1` (AutoGPTQ, `checkpoint_format: "gptq"`).
    #[default]
    V1,
    /// `zero` (GPTQModel's `checkpoint_format: "gptq_v2"`).
    V2,
}

/// The word with a 1 in the lowest bit of every `bits`-bit field.
fn ones(bits: u8) -> u32 {
    (0..32 / u32::from(bits)).fold(0, |w, k| w | 1 << (k * u32::from(bits)))
}

fn check(bits: u8, k: usize, n: usize) -> Result<(), PackError> {
    check_bits(LAYOUT, bits, BITS, BITS_TEXT)?;
    check_multiple(LAYOUT, "in_features", k, 32)?;
    check_multiple(LAYOUT, "out_features", n, 32)
}

/// Packs codes `[N, K]` into `qweight` `[K·bits/32, N]`.
///
/// # Errors
/// [`PackError::Bits`] unless `bits` is 2, 3, 4 or 8; [`PackError::NotMultiple`]
/// unless 32 divides `K` and `N`; [`PackError::Code`] for a code `≥ 2^bits`.
pub fn pack_qweight(codes: ArrayView2<'_, u8>, bits: u8) -> Result<Array2<i32>, PackError> {
    let (n, k) = codes.dim();
    check(bits, k, n)?;
    let packed = pack_rows(LAYOUT, codes, bits, Fill::Dense)?;
    Ok(packed.t().as_standard_layout().into_owned())
}

/// Unpacks `qweight` `[K·bits/32, N]` into codes `[N, K]`.
///
/// # Errors
/// As [`pack_qweight`]; [`PackError::Shape`] when `qweight` has the wrong
/// number of rows for `in_features`.
pub fn unpack_qweight(
    qweight: ArrayView2<'_, i32>,
    bits: u8,
    in_features: usize,
) -> Result<Array2<u8>, PackError> {
    let n = qweight.ncols();
    check(bits, in_features, n)?;
    check_shape(
        LAYOUT,
        "qweight",
        [in_features / 32 * bits as usize, n],
        qweight.shape(),
    )?;
    unpack_rows(
        LAYOUT,
        "qweight",
        qweight.t(),
        bits,
        in_features,
        Fill::Dense,
    )
}

/// Packs zero points `[N, groups]` (code units) into `qzeros` `[groups, N·bits/32]`.
///
/// # Errors
/// As [`pack_qweight`] (`K` is not involved).
pub fn pack_qzeros(
    zeros: ArrayView2<'_, u8>,
    bits: u8,
    format: ZeroFormat,
) -> Result<Array2<i32>, PackError> {
    let (n, _) = zeros.dim();
    check(bits, 32, n)?;
    match (format, bits) {
        (ZeroFormat::V2, _) => pack_rows(LAYOUT, zeros.t(), bits, Fill::Dense),
        (ZeroFormat::V1, 3) => {
            // Range-check before shifting, so an error reports the caller's code.
            check_codes(zeros.t(), bits)?;
            let shifted = zeros.t().mapv(|z| z.wrapping_sub(1) & 7);
            pack_rows(LAYOUT, shifted.view(), bits, Fill::Dense)
        }
        (ZeroFormat::V1, _) => {
            let c = ones(bits);
            let packed = pack_rows(LAYOUT, zeros.t(), bits, Fill::Dense)?;
            Ok(packed.mapv(|w| (w as u32).wrapping_sub(c) as i32))
        }
    }
}

/// Unpacks `qzeros` `[groups, N·bits/32]` into zero points `[N, groups]`.
///
/// # Errors
/// As [`pack_qzeros`]; [`PackError::Shape`] for a wrong column count.
pub fn unpack_qzeros(
    qzeros: ArrayView2<'_, i32>,
    bits: u8,
    out_features: usize,
    format: ZeroFormat,
) -> Result<Array2<u8>, PackError> {
    check(bits, 32, out_features)?;
    let groups = qzeros.nrows();
    check_shape(
        LAYOUT,
        "qzeros",
        [groups, out_features / 32 * bits as usize],
        qzeros.shape(),
    )?;
    let zeros = match (format, bits) {
        (ZeroFormat::V2, _) => {
            unpack_rows(LAYOUT, "qzeros", qzeros, bits, out_features, Fill::Dense)?
        }
        (ZeroFormat::V1, 3) => {
            unpack_rows(LAYOUT, "qzeros", qzeros, bits, out_features, Fill::Dense)?
                .mapv(|z| (z + 1) & 7)
        }
        (ZeroFormat::V1, _) => {
            let c = ones(bits);
            let restored = qzeros.mapv(|w| (w as u32).wrapping_add(c) as i32);
            unpack_rows(
                LAYOUT,
                "qzeros",
                restored.view(),
                bits,
                out_features,
                Fill::Dense,
            )?
        }
    };
    Ok(zeros.t().as_standard_layout().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// AutoGPTQ's packing loop for 2, 4 and 8 bits, transcribed from its formula:
    /// word `row` of column `n` ORs code `j` of its run shifted by `bits·(j − i)`.
    fn autogptq_qweight(codes: &Array2<u8>, bits: u8) -> Array2<i32> {
        let (n, k) = codes.dim();
        let per = 32 / bits as usize;
        Array2::from_shape_fn((k / per, n), |(row, col)| {
            (0..per).fold(0u32, |w, j| {
                w | u32::from(codes[[col, row * per + j]]) << (bits as usize * j)
            }) as i32
        })
    }

    fn codes(n: usize, k: usize, bits: u8, seed: u64) -> Array2<u8> {
        let mut s = seed | 1;
        Array2::from_shape_fn((n, k), |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % (1u64 << bits)) as u8
        })
    }

    #[test]
    fn qweight_matches_autogptq_for_whole_word_widths() {
        for bits in [2u8, 4, 8] {
            let c = codes(32, 64, bits, u64::from(bits));
            let q = pack_qweight(c.view(), bits).unwrap();
            assert_eq!(q.dim(), (64 * bits as usize / 32, 32));
            assert_eq!(q, autogptq_qweight(&c, bits), "bits {bits}");
        }
    }

    #[test]
    fn v1_zeros_store_zero_minus_one() {
        // Symmetric 4-bit: zero 8 is stored as 7 in every nibble.
        let z = Array2::from_elem((32, 2), 8u8);
        let q = pack_qzeros(z.view(), 4, ZeroFormat::V1).unwrap();
        assert_eq!(q.dim(), (2, 4));
        assert!(q.iter().all(|&w| w as u32 == 0x7777_7777));
        // 3 bits: zero 4 stored as 3 in each field of the 96-bit stream.
        let z = Array2::from_elem((32, 1), 4u8);
        let q = pack_qzeros(z.view(), 3, ZeroFormat::V1).unwrap();
        let mut expect = [0u32; 3];
        super::super::bitstream::pack_dense(&[3; 32], 3, &mut expect).unwrap();
        assert_eq!(q.row(0).to_vec(), expect.map(|w| w as i32).to_vec());
        // V2 stores the zero itself.
        let z = Array2::from_elem((32, 1), 8u8);
        let q = pack_qzeros(z.view(), 4, ZeroFormat::V2).unwrap();
        assert!(q.iter().all(|&w| w as u32 == 0x8888_8888));
    }

    #[test]
    fn zero_point_zero_survives_gptqmodel_arithmetic() {
        // Field 0 is zero: the word-wide subtraction borrows from field 1, and
        // GPTQModel's word-wide addition on load gives both back.
        let mut z = Array2::from_elem((32, 1), 5u8);
        z[[0, 0]] = 0;
        z[[31, 0]] = 0;
        let q = pack_qzeros(z.view(), 4, ZeroFormat::V1).unwrap();
        assert_eq!(q[[0, 0]] as u32, 0x5555_5550u32 - 0x1111_1111);
        assert_eq!(q[[0, 0]] as u32, 0x4444_443f);
        assert_eq!(unpack_qzeros(q.view(), 4, 32, ZeroFormat::V1).unwrap(), z);
        for bits in [2u8, 3, 8] {
            let mut z = Array2::from_elem((32, 3), 1u8);
            z[[5, 1]] = 0;
            let q = pack_qzeros(z.view(), bits, ZeroFormat::V1).unwrap();
            assert_eq!(
                unpack_qzeros(q.view(), bits, 32, ZeroFormat::V1).unwrap(),
                z
            );
        }
    }

    #[test]
    fn errors_are_typed() {
        let c = Array2::<u8>::zeros((32, 48));
        assert!(matches!(
            pack_qweight(c.view(), 4),
            Err(PackError::NotMultiple {
                what: "in_features",
                len: 48,
                multiple: 32,
                ..
            })
        ));
        let c = Array2::<u8>::zeros((40, 32));
        assert!(matches!(
            pack_qweight(c.view(), 4),
            Err(PackError::NotMultiple {
                what: "out_features",
                ..
            })
        ));
        let c = Array2::<u8>::zeros((32, 32));
        assert!(matches!(
            pack_qweight(c.view(), 5),
            Err(PackError::Bits { bits: 5, .. })
        ));
        let q = pack_qweight(c.view(), 4).unwrap();
        assert!(matches!(
            unpack_qweight(q.view(), 4, 64),
            Err(PackError::Shape {
                what: "qweight",
                ..
            })
        ));
        let z = Array2::from_elem((32, 1), 16u8);
        assert!(matches!(
            pack_qzeros(z.view(), 4, ZeroFormat::V1),
            Err(PackError::Code { code: 16, .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(
            bits in prop::sample::select(vec![2u8, 3, 4, 8]),
            n32 in 1usize..4,
            k32 in 1usize..5,
            groups in 1usize..4,
            v2 in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (n, k) = (32 * n32, 32 * k32);
            let c = codes(n, k, bits, seed);
            let q = pack_qweight(c.view(), bits).unwrap();
            prop_assert_eq!(q.dim(), (k / 32 * bits as usize, n));
            prop_assert_eq!(unpack_qweight(q.view(), bits, k).unwrap(), c);
            let format = if v2 { ZeroFormat::V2 } else { ZeroFormat::V1 };
            let z = codes(n, groups, bits, seed ^ 0x5555);
            let qz = pack_qzeros(z.view(), bits, format).unwrap();
            prop_assert_eq!(qz.dim(), (groups, n / 32 * bits as usize));
            prop_assert_eq!(unpack_qzeros(qz.view(), bits, n, format).unwrap(), z);
        }
    }
}
