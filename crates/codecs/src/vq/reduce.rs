//! Codebook reduction: cluster a large codebook into a smaller one.

use ndarray::{Array1, Array2, ArrayView2};

use super::{kmeans, KMeansConfig};
use crate::{Error, Result};

/// A smaller codebook and the map from old codes to new ones.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReducedCodebook {
    /// The new codebook, `[k, dim]`.
    pub codebook: Array2<f32>,
    /// `remap[old] = new`: the new entry that replaces each old entry, `[K]`.
    pub remap: Vec<u32>,
}

/// Merges a codebook of `K` entries into `k` by weighted k-means on the
/// entries themselves, as *Extreme Image Compression using Fine-tuned
/// VQGANs* (`papers.txt`) derives smaller codebooks (lower bit rates) from a
/// pre-trained VQGAN codebook.
///
/// `usage` optionally weighs each old entry by how often it is used (its
/// code counts); the new entries are then the usage-weighted means of the
/// old entries they absorb, so they minimise the error of the re-mapped data
/// as seen through the old codebook. Re-map stored codes with [`remap_codes`].
///
/// ```
/// use ndarray::array;
/// use tensorpress_codecs::vq::{reduce_codebook, remap_codes};
///
/// let big = array![[0.0f32], [0.1], [5.0], [5.2]];
/// let r = reduce_codebook(big.view(), Some(&[1, 1, 3, 1]), 2, 0)?;
/// assert_eq!(r.remap[0], r.remap[1]);
/// let new = r.remap[2] as usize;
/// assert!((r.codebook[[new, 0]] - 5.05).abs() < 1e-6); // (3·5.0 + 5.2) / 4
/// assert_eq!(remap_codes(&[3, 0], &r.remap)?, vec![r.remap[3], r.remap[0]]);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidClusterCount`] for `k = 0` or `k > K`; [`Error::ShapeMismatch`]
/// when `usage` is not one count per entry; [`Error::InvalidWeight`] when every
/// count is zero; [`Error::NonFinite`].
pub fn reduce_codebook(
    codebook: ArrayView2<'_, f32>,
    usage: Option<&[u64]>,
    k: usize,
    seed: u64,
) -> Result<ReducedCodebook> {
    let weights = usage.map(|u| Array1::from_iter(u.iter().map(|&c| c as f32)));
    let km = kmeans(
        codebook,
        weights.as_ref().map(|w| w.view()),
        &KMeansConfig::new(k).max_iter(100).seed(seed),
    )?;
    Ok(ReducedCodebook {
        codebook: km.centroids,
        remap: km.assignments,
    })
}

/// Applies a code map: `out[i] = remap[codes[i]]`.
///
/// # Errors
/// [`Error::CodeOutOfRange`] for a code past the end of `remap`.
pub fn remap_codes(codes: &[u32], remap: &[u32]) -> Result<Vec<u32>> {
    codes
        .iter()
        .enumerate()
        .map(|(index, &code)| {
            remap
                .get(code as usize)
                .copied()
                .ok_or(Error::CodeOutOfRange {
                    index,
                    code,
                    size: remap.len(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vq::{assign, reconstruction_error};
    use tensorpress_tensor::SeededRng;

    /// Data coded with a 256-entry codebook, re-mapped to 16 entries, loses
    /// little against coding the data directly with a fresh 16-means, and
    /// less than the first 16 old entries kept as they are.
    #[test]
    fn reduced_codebook_is_close_to_direct_training() {
        let mut rng = SeededRng::new(12);
        let data = rng.array_normal((4000, 2));
        let big = kmeans(data.view(), None, &KMeansConfig::new(256).seed(1)).unwrap();
        let mut usage = vec![0u64; 256];
        for &a in &big.assignments {
            usage[a as usize] += 1;
        }
        let r = reduce_codebook(big.centroids.view(), Some(&usage), 16, 3).unwrap();
        let codes = remap_codes(&big.assignments, &r.remap).unwrap();
        let decode = |book: &Array2<f32>, codes: &[u32]| {
            let mut out = Array2::<f32>::zeros(data.dim());
            for (i, &c) in codes.iter().enumerate() {
                out.row_mut(i).assign(&book.row(c as usize));
            }
            out
        };
        let reduced = reconstruction_error(data.view(), decode(&r.codebook, &codes).view())
            .unwrap()
            .mse;
        let direct = kmeans(data.view(), None, &KMeansConfig::new(16).seed(1)).unwrap();
        let direct = direct.inertia / data.len() as f64;
        let subset = big.centroids.slice(ndarray::s![..16, ..]).to_owned();
        let mut nearest = vec![0u32; data.nrows()];
        assign(data.view(), subset.view(), &mut nearest).unwrap();
        let naive = reconstruction_error(data.view(), decode(&subset, &nearest).view())
            .unwrap()
            .mse;
        assert!(reduced < 1.15 * direct, "{reduced} vs {direct}");
        assert!(reduced < 0.8 * naive, "{reduced} vs {naive}");
    }

    #[test]
    fn errors() {
        let b = Array2::<f32>::zeros((4, 2));
        assert!(matches!(
            reduce_codebook(b.view(), None, 5, 0),
            Err(Error::InvalidClusterCount { k: 5, n: 4, .. })
        ));
        assert!(matches!(
            reduce_codebook(b.view(), Some(&[1, 2]), 2, 0),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            remap_codes(&[0, 7], &[1, 1, 0]),
            Err(Error::CodeOutOfRange {
                index: 1,
                code: 7,
                size: 3
            })
        ));
    }
}
