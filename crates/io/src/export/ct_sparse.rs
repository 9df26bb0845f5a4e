//! compressed-tensors' sparse layouts over the stored bytes of a weight.
//!
//! compressed-tensors (0.12.2, the last release with both sparse
//! compressors) composes sparsity with quantization by running the
//! quantization compressor first and then the sparsity compressor over
//! whatever `{module}.weight` tensor is left: float values for a pruned
//! float model, int8 / FP8 codes for `int-quantized`, `float-quantized` and
//! `naive-quantized` layers. The sparse compressors only look at which
//! elements are nonzero and copy the kept elements' bytes, so one byte-level
//! routine serves every element type here.

use tensorpress_tensor::DType;

use super::Staged;

/// The sparse layout of a pruned module in a compressed-tensors folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SparseLayout {
    /// `sparse-bitmask`: the nonzero values row by row, a bitmask and row
    /// offsets (any sparsity pattern).
    Bitmask,
    /// `sparse-24-bitmask`: exactly two values of every group of four along
    /// a row, and a bitmask (the layout vLLM's 2:4 kernels load).
    TwoFour,
}

impl SparseLayout {
    /// The `sparsity_config.format` name.
    pub fn name(self) -> &'static str {
        match self {
            SparseLayout::Bitmask => "sparse-bitmask",
            SparseLayout::TwoFour => "sparse-24-bitmask",
        }
    }
}

/// Whether one stored element is zero as compressed-tensors tests it
/// (`tensor != 0`): for floats any zero (the sign bit is ignored), for
/// integers all bits clear. `e` holds the element's little-endian bytes.
fn is_zero(dtype: DType, e: &[u8]) -> bool {
    let (last, rest) = e.split_last().expect("elements have at least one byte");
    let top = if dtype.is_float() { last & 0x7f } else { *last };
    top == 0 && rest.iter().all(|&b| b == 0)
}

/// The tensors of `module`'s weight (`rows × cols` elements of `dtype`,
/// little-endian `bytes`) in `layout`, and the number of zero elements.
///
/// # Errors
/// A reason string: for [`SparseLayout::TwoFour`], columns not a multiple
/// of 4 or a group with more than two nonzeros.
pub(crate) fn stage_sparse(
    module: &str,
    layout: SparseLayout,
    dtype: DType,
    (rows, cols): (usize, usize),
    bytes: &[u8],
) -> Result<(Vec<Staged>, u64), String> {
    let size = dtype.size_in_bytes();
    debug_assert_eq!(bytes.len(), rows * cols * size);
    if layout == SparseLayout::TwoFour && !cols.is_multiple_of(4) {
        return Err(format!("{cols} columns are not a multiple of 4"));
    }
    let row_bytes = cols.div_ceil(8);
    let mut bitmask = vec![0u8; rows * row_bytes];
    let mut values = Vec::new();
    let mut offsets: Vec<u8> = Vec::with_capacity(rows * 8);
    let mut kept = 0usize;
    let mut zeros = 0u64;
    for r in 0..rows {
        offsets.extend_from_slice(&(kept as i64).to_le_bytes());
        let row = &bytes[r * cols * size..(r + 1) * cols * size];
        let mut keep = |c: usize, values: &mut Vec<u8>| {
            bitmask[r * row_bytes + c / 8] |= 1 << (c % 8);
            values.extend_from_slice(&row[c * size..(c + 1) * size]);
            kept += 1;
        };
        match layout {
            SparseLayout::Bitmask => {
                for c in 0..cols {
                    if is_zero(dtype, &row[c * size..(c + 1) * size]) {
                        zeros += 1;
                    } else {
                        keep(c, &mut values);
                    }
                }
            }
            SparseLayout::TwoFour => {
                for g in 0..cols / 4 {
                    let nonzero: [bool; 4] = std::array::from_fn(|k| {
                        let c = 4 * g + k;
                        !is_zero(dtype, &row[c * size..(c + 1) * size])
                    });
                    let count = nonzero.iter().filter(|&&n| n).count();
                    if count > 2 {
                        return Err(format!("row {r}, group {g} keeps {count} of 4 values"));
                    }
                    zeros += (4 - count) as u64;
                    // The nonzeros, then the first free positions, in column order.
                    let mut pad = 2 - count;
                    for (k, &n) in nonzero.iter().enumerate() {
                        let take = n
                            || (pad > 0 && {
                                pad -= 1;
                                true
                            });
                        if take {
                            keep(4 * g + k, &mut values);
                        }
                    }
                }
            }
        }
    }
    let dims = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let staged = match layout {
        SparseLayout::Bitmask => vec![
            (
                format!("{module}.weight.compressed"),
                dtype,
                vec![kept],
                values,
            ),
            (
                format!("{module}.weight.shape"),
                DType::I64,
                vec![2],
                dims(&[rows as i64, cols as i64]),
            ),
            (
                format!("{module}.weight.bitmask"),
                DType::U8,
                vec![rows, row_bytes],
                bitmask,
            ),
            (
                format!("{module}.weight.row_offsets"),
                DType::I64,
                vec![rows],
                offsets,
            ),
        ],
        SparseLayout::TwoFour => vec![
            (
                format!("{module}.compressed"),
                dtype,
                vec![rows, cols / 2],
                values,
            ),
            (
                format!("{module}.shape"),
                DType::I64,
                vec![2, 1],
                dims(&[rows as i64, cols as i64]),
            ),
            (
                format!("{module}.bitmask"),
                DType::U8,
                vec![rows, row_bytes],
                bitmask,
            ),
        ],
    };
    Ok((staged, zeros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_tests_follow_the_element_type() {
        // -0.0 is zero for floats (f32, bf16, FP8 E4M3); 0x80 is -128 for int8.
        assert!(is_zero(DType::F32, &(-0.0f32).to_le_bytes()));
        assert!(!is_zero(DType::F32, &f32::MIN_POSITIVE.to_le_bytes()));
        assert!(is_zero(DType::BF16, &[0x00, 0x80]));
        assert!(is_zero(DType::F8E4M3, &[0x80]));
        assert!(!is_zero(DType::I8, &[0x80]));
        assert!(is_zero(DType::I8, &[0]));
    }

    #[test]
    fn two_four_keeps_two_per_group_and_pads_sparser_groups() {
        // int8 codes: group 0 has two nonzeros, group 1 one, group 2 none.
        let codes: Vec<u8> = vec![0, 5, 0, 0xf0, 0, 0, 7, 0, 0, 0, 0, 0];
        let (staged, zeros) =
            stage_sparse("m", SparseLayout::TwoFour, DType::I8, (1, 12), &codes).unwrap();
        assert_eq!(zeros, 9);
        assert_eq!(staged[0].3, vec![5, 0xf0, 0, 7, 0, 0]);
        // Bits: cols 1, 3 | 4, 6 | 8, 9.
        assert_eq!(staged[2].3, vec![0b0101_1010, 0b0000_0011]);
        let three = [1u8, 1, 1, 0];
        let err = stage_sparse("m", SparseLayout::TwoFour, DType::I8, (1, 4), &three);
        assert!(err.unwrap_err().contains("keeps 3 of 4"));
        assert!(stage_sparse("m", SparseLayout::TwoFour, DType::I8, (1, 3), &three[..3]).is_err());
    }

    #[test]
    fn bitmask_stores_nonzeros_row_by_row_with_offsets() {
        let w: Vec<u8> = [0.0f32, 2.0, -0.0, 3.0, 0.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let (staged, zeros) =
            stage_sparse("m", SparseLayout::Bitmask, DType::F32, (2, 3), &w).unwrap();
        assert_eq!(zeros, 3);
        assert_eq!(staged[0].2, vec![3]);
        assert_eq!(staged[2].3, vec![0b010, 0b101]);
        let offsets: Vec<i64> = staged[3]
            .3
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(offsets, vec![0, 1]);
    }
}
