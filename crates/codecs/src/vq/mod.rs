//! Vector quantization of weight matrices.
//!
//! | item | what |
//! |---|---|
//! | [`kmeans`], [`kmeans_plus_plus`], [`assign`] | seeded, weighted k-means++ and Lloyd k-means on the rows of a matrix |
//! | [`ProductQuantizer`] | product quantization of weight rows: `m` subspaces of the columns, `2^b` centroids each (or one codebook shared by all) |
//! | [`Lr2vq`] | LR²VQ: subvectors projected to a low-rank space, clustered there, lifted back |
//! | [`reduce_codebook`] | merge a large codebook into a smaller one by clustering its entries, and re-map codes |
//! | [`reconstruction_error`] | MSE and relative Frobenius error of a reconstruction |
//!
//! Bits per weight always count the codebooks (and projections) as f32
//! numbers: a quantizer whose tables outweigh its codes says so.
//!
//! Papers (see `papers.txt`):
//! - *Learning Low-Rank Representations for Model Compression* (LR²VQ):
//!   subvectors of size `m`, clustering dimensionality `d`, `k` clusters; `m`
//!   sets the compression ratio and `d` trades low-rank error for clustering
//!   error. See [`Lr2vq`] for what is kept of it without training.
//! - *Extreme Image Compression using Fine-tuned VQGANs*: cluster a large
//!   pre-trained codebook into smaller ones with k-means for variable bit
//!   rates ([`reduce_codebook`]).
//!
//! ```
//! use tensorpress_codecs::vq::{reconstruction_error, PqConfig, ProductQuantizer};
//! use tensorpress_tensor::SeededRng;
//!
//! let w = SeededRng::new(1).array_normal((64, 32));
//! let pq = ProductQuantizer::fit(w.view(), &PqConfig::new(8, 4))?; // 8 subspaces, 16 centroids
//! let back = pq.decode();
//! let err = reconstruction_error(w.view(), back.view())?;
//! assert!(err.relative < 0.7);
//! assert!(pq.bits_per_weight() > 1.0); // 4 bits per 4 weights, plus the codebooks
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

mod kmeans;
mod lr2vq;
mod pq;
mod reduce;

pub use kmeans::{assign, kmeans, kmeans_plus_plus, KMeans, KMeansConfig};
pub use lr2vq::{Lr2vq, Lr2vqConfig};
pub use pq::{CodebookSharing, PqConfig, ProductQuantizer};
pub use reduce::{reduce_codebook, remap_codes, ReducedCodebook};

use ndarray::ArrayView2;

use crate::{Error, Result};

/// Codes of a vector quantizer, one byte each for codebooks of at most 256
/// entries, two bytes up to 65,536.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codes {
    /// Codes of codebooks with at most 256 entries.
    U8(Vec<u8>),
    /// Codes of codebooks with at most 65,536 entries.
    U16(Vec<u16>),
}

impl Codes {
    /// Narrowest storage for codes below `size` (`size ≤ 65,536`).
    fn from_u32(codes: &[u32], size: usize) -> Codes {
        if size <= 256 {
            Codes::U8(codes.iter().map(|&c| c as u8).collect())
        } else {
            Codes::U16(codes.iter().map(|&c| c as u16).collect())
        }
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        match self {
            Codes::U8(c) => c.len(),
            Codes::U16(c) => c.len(),
        }
    }

    /// Whether there are no codes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Code `i` (panics past the end).
    #[inline]
    #[track_caller]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Codes::U8(c) => u32::from(c[i]),
            Codes::U16(c) => u32::from(c[i]),
        }
    }

    /// The codes widened to `u32`.
    pub fn to_u32(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Checks that every code indexes a codebook of `size` entries.
    ///
    /// # Errors
    /// [`Error::CodeOutOfRange`] at the first code that does not.
    pub fn check(&self, size: usize) -> Result<()> {
        for i in 0..self.len() {
            let code = self.get(i);
            if code as usize >= size {
                return Err(Error::CodeOutOfRange {
                    index: i,
                    code,
                    size,
                });
            }
        }
        Ok(())
    }
}

/// How far a reconstruction is from the original.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReconstructionError {
    /// Mean squared error per element.
    pub mse: f64,
    /// `‖W − Ŵ‖_F / ‖W‖_F` (0 when both are zero, infinite when only `W` is).
    pub relative: f64,
}

/// MSE and relative Frobenius error of `approx` against `original` (in f64).
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes differ.
pub fn reconstruction_error(
    original: ArrayView2<'_, f32>,
    approx: ArrayView2<'_, f32>,
) -> Result<ReconstructionError> {
    if original.dim() != approx.dim() {
        return Err(Error::ShapeMismatch {
            op: "reconstruction_error",
            lhs: original.shape().to_vec(),
            rhs: approx.shape().to_vec(),
        });
    }
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&a, &b) in original.iter().zip(approx.iter()) {
        let (a, b) = (f64::from(a), f64::from(b));
        err += (a - b) * (a - b);
        norm += a * a;
    }
    let n = original.len().max(1) as f64;
    let relative = if err == 0.0 { 0.0 } else { (err / norm).sqrt() };
    Ok(ReconstructionError {
        mse: err / n,
        relative,
    })
}

/// Bits to store one code of a codebook of `size` entries (`⌈log₂ size⌉`).
pub(crate) fn code_bits(size: usize) -> u32 {
    usize::BITS - size.saturating_sub(1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn codes_and_errors() {
        assert_eq!(code_bits(1), 0);
        assert_eq!(code_bits(2), 1);
        assert_eq!(code_bits(256), 8);
        assert_eq!(code_bits(257), 9);
        let c = Codes::from_u32(&[1, 300], 301);
        assert_eq!(c, Codes::U16(vec![1, 300]));
        assert!(matches!(
            c.check(300),
            Err(Error::CodeOutOfRange {
                index: 1,
                code: 300,
                size: 300
            })
        ));
        let a = array![[3.0f32, 4.0]];
        let e = reconstruction_error(a.view(), array![[3.0f32, 3.0]].view()).unwrap();
        assert!((e.mse - 0.5).abs() < 1e-12 && (e.relative - 0.2).abs() < 1e-12);
        assert!(reconstruction_error(a.view(), array![[1.0f32]].view()).is_err());
    }
}
