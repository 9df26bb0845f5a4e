//! AWQ's GEMM layout (AutoAWQ's `WQLinear_GEMM`, loaded by transformers and
//! vLLM as `quant_method: "awq"`, `version: "gemm"`): 4-bit codes only.
//!
//! - `qweight`: `int32 [K, N/8]`, packed along the *output* dimension: nibble
//!   `i` of word `c` in row `k` holds the code of input `k` for output channel
//!   `8c + ORDER[i]`, with [`ORDER`] `= [0, 2, 4, 6, 1, 3, 5, 7]` (the order
//!   AWQ's dequantization kernel unpacks fastest);
//! - `qzeros`: `int32 [groups, N/8]`, zero points (stored as they are, no
//!   offset) interleaved the same way;
//! - `scales`: `f16 [groups, N]` (a plain tensor).
//!
//! A value is `(code − zero) · scale`, as in every integer layout here.

use ndarray::{Array2, ArrayView2};

use super::{check_bits, check_multiple, check_shape, pack_rows, unpack_rows, Fill, PackError};

const LAYOUT: &str = "AWQ";

/// The output channel (within a run of 8) that nibble `i` of a word holds.
pub const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

fn check(bits: u8, n: usize) -> Result<(), PackError> {
    check_bits(LAYOUT, bits, &[4], "4 bits")?;
    check_multiple(LAYOUT, "out_features", n, 8)
}

/// Packs codes `[N, K]` into `qweight` `[K, N/8]`.
///
/// # Errors
/// [`PackError::Bits`] unless `bits` is 4; [`PackError::NotMultiple`] unless 8
/// divides `N`; [`PackError::Code`] for a code above 15 (its index is in the
/// transposed, `[K, N]`, order).
pub fn pack_qweight(codes: ArrayView2<'_, u8>, bits: u8) -> Result<Array2<i32>, PackError> {
    check(bits, codes.nrows())?;
    pack_rows(LAYOUT, codes.t(), bits, Fill::Interleaved)
}

/// Unpacks `qweight` `[K, N/8]` into codes `[N, K]`.
///
/// # Errors
/// [`PackError::Bits`] unless `bits` is 4.
pub fn unpack_qweight(qweight: ArrayView2<'_, i32>, bits: u8) -> Result<Array2<u8>, PackError> {
    check(bits, 0)?;
    let n = qweight.ncols() * 8;
    let codes = unpack_rows(LAYOUT, "qweight", qweight, bits, n, Fill::Interleaved)?;
    Ok(codes.t().as_standard_layout().into_owned())
}

/// Packs zero points `[N, groups]` into `qzeros` `[groups, N/8]`.
///
/// # Errors
/// As [`pack_qweight`].
pub fn pack_qzeros(zeros: ArrayView2<'_, u8>, bits: u8) -> Result<Array2<i32>, PackError> {
    pack_qweight(zeros, bits)
}

/// Unpacks `qzeros` `[groups, N/8]` into zero points `[N, groups]`, checking
/// that `N` is `out_features`.
///
/// # Errors
/// As [`unpack_qweight`]; [`PackError::Shape`] for a wrong column count.
pub fn unpack_qzeros(
    qzeros: ArrayView2<'_, i32>,
    bits: u8,
    out_features: usize,
) -> Result<Array2<u8>, PackError> {
    check(bits, out_features)?;
    check_shape(
        LAYOUT,
        "qzeros",
        [qzeros.nrows(), out_features / 8],
        qzeros.shape(),
    )?;
    unpack_qweight(qzeros, bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn interleaves_as_autoawq() {
        // AutoAWQ: qweight[:, col] |= intweight[:, col·8 + order_map[i]] << 4i,
        // with intweight = codes transposed to [K, N].
        let codes = Array2::from_shape_fn((16, 2), |(n, k)| ((n + 5 * k) % 16) as u8);
        let q = pack_qweight(codes.view(), 4).unwrap();
        assert_eq!(q.dim(), (2, 2));
        for k in 0..2 {
            for col in 0..2 {
                let expect = (0..8).fold(0u32, |w, i| {
                    w | u32::from(codes[[col * 8 + ORDER[i], k]]) << (4 * i)
                });
                assert_eq!(q[[k, col]] as u32, expect);
            }
        }
        assert_eq!(q[[0, 0]] as u32, 0x7531_6420);
        assert_eq!(unpack_qweight(q.view(), 4).unwrap(), codes);
    }

    #[test]
    fn errors_are_typed() {
        let c = Array2::<u8>::zeros((12, 4));
        assert!(matches!(
            pack_qweight(c.view(), 4),
            Err(PackError::NotMultiple {
                what: "out_features",
                len: 12,
                multiple: 8,
                ..
            })
        ));
        let c = Array2::<u8>::zeros((8, 4));
        assert!(matches!(
            pack_qweight(c.view(), 3),
            Err(PackError::Bits { bits: 3, .. })
        ));
        assert!(matches!(
            unpack_qzeros(array![[0i32]].view(), 4, 16),
            Err(PackError::Shape { what: "qzeros", .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trips(n8 in 1usize..6, k in 0usize..40, seed in any::<u64>()) {
            let mut s = seed | 1;
            let codes = Array2::from_shape_fn((8 * n8, k), |_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 16) as u8
            });
            let q = pack_qweight(codes.view(), 4).unwrap();
            prop_assert_eq!(q.dim(), (k, n8));
            prop_assert_eq!(unpack_qweight(q.view(), 4).unwrap(), codes.clone());
            let z = pack_qzeros(codes.view(), 4).unwrap();
            prop_assert_eq!(unpack_qzeros(z.view(), 4, 8 * n8).unwrap(), codes);
        }
    }
}
