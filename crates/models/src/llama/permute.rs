//! The Q/K row permutation between Hugging Face and GGUF checkpoints.
//!
//! Hugging Face Llama rotates pairs half a head apart (`rotate_half`); Meta's
//! original code and llama.cpp rotate adjacent pairs. llama.cpp's converter
//! therefore reorders the rows of `q_proj`/`k_proj` within each head: HF row
//! `s·(d/2) + j` becomes GGUF row `2j + s` (`s ∈ {0, 1}`, `j < d/2`).

use ndarray::{Array2, ArrayView2};

use crate::{Error, Result};

/// Which way to reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkPermutation {
    /// Hugging Face layout → GGUF layout.
    HfToGguf,
    /// GGUF layout → Hugging Face layout.
    GgufToHf,
}

/// Reorders the rows of a `[heads·head_dim, in]` query or key weight (or a
/// `[heads·head_dim]` bias viewed as one column) between the two layouts.
pub fn permute_qk(w: ArrayView2<'_, f32>, heads: usize, dir: QkPermutation) -> Result<Array2<f32>> {
    let rows = w.nrows();
    if heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(Error::Config {
            field: "heads",
            reason: format!("{rows} rows do not split into {heads} heads of even width"),
        });
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = Array2::<f32>::zeros(w.raw_dim());
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..half {
                let hf = h * hd + s * half + j;
                let gg = h * hd + 2 * j + s;
                let (src, dst) = match dir {
                    QkPermutation::HfToGguf => (hf, gg),
                    QkPermutation::GgufToHf => (gg, hf),
                };
                out.row_mut(dst).assign(&w.row(src));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_llama_cpp_converter_and_inverts() {
        // 2 heads of width 4, one column holding the row index.
        let w = Array2::from_shape_fn((8, 1), |(r, _)| r as f32);
        let g = permute_qk(w.view(), 2, QkPermutation::HfToGguf).unwrap();
        // numpy: w.reshape(2, 2, 2, 1).swapaxes(1, 2).reshape(8, 1)
        let expected = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(g.column(0).to_vec(), expected);
        let back = permute_qk(g.view(), 2, QkPermutation::GgufToHf).unwrap();
        assert_eq!(back, w);
        assert!(permute_qk(w.view(), 3, QkPermutation::HfToGguf).is_err());
    }
}
