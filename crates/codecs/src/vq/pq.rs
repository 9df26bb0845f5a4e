//! Product quantization of the rows of a weight matrix.

use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use super::{assign, kmeans, Codes, KMeansConfig};
use crate::{Error, Result};

/// Which subvectors share a codebook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CodebookSharing {
    /// Classic product quantization (Jégou et al., 2011): subspace `j` (columns
    /// `j·d .. (j+1)·d`) has its own codebook, trained on that slice of every
    /// row. `m` codebooks of `2^b × d` numbers.
    #[default]
    PerSubspace,
    /// One codebook of `2^b × d` numbers for every subvector of the matrix
    /// (the usual choice for weights, as in LR²VQ and "And the bit goes
    /// down"): the table is amortised over all `rows × m` subvectors.
    Shared,
}

/// Settings of [`ProductQuantizer::fit`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PqConfig {
    /// Number of subspaces `m` the columns are split into (must divide the
    /// number of columns); each subvector has `cols / m` entries.
    pub subspaces: usize,
    /// Bits per code `b`: codebooks of `2^b` centroids, `1..=16`.
    pub bits: u8,
    /// Codebook per subspace or one shared codebook.
    pub sharing: CodebookSharing,
    /// Lloyd iterations of each k-means.
    pub max_iter: usize,
    /// Seed of the k-means++ seeding (subspace `j` uses `seed + j`).
    pub seed: u64,
}

impl PqConfig {
    /// `subspaces` subspaces of `2^bits` centroids each, 25 iterations, seed 0.
    pub fn new(subspaces: usize, bits: u8) -> Self {
        PqConfig {
            subspaces,
            bits,
            sharing: CodebookSharing::PerSubspace,
            max_iter: 25,
            seed: 0,
        }
    }

    /// Sets the codebook sharing.
    pub fn sharing(mut self, sharing: CodebookSharing) -> Self {
        self.sharing = sharing;
        self
    }

    /// Sets the Lloyd iterations.
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// A weight matrix `[rows, cols]` product-quantized: codes `[rows, m]`
/// (row-major) into `m` codebooks `[2^b, cols/m]` (or one shared codebook).
#[derive(Debug, Clone)]
pub struct ProductQuantizer {
    rows: usize,
    cols: usize,
    sharing: CodebookSharing,
    codebooks: Vec<Array2<f32>>,
    codes: Codes,
}

fn check_config(cols: usize, cfg: &PqConfig) -> Result<usize> {
    if cfg.subspaces == 0 || !cols.is_multiple_of(cfg.subspaces) {
        return Err(Error::ParameterOutOfRange {
            op: "product quantization",
            name: "subspaces",
            value: cfg.subspaces as f64,
            range: format!("a positive divisor of the {cols} columns"),
        });
    }
    if !(1..=16).contains(&cfg.bits) {
        return Err(Error::ParameterOutOfRange {
            op: "product quantization",
            name: "bits",
            value: f64::from(cfg.bits),
            range: "1..=16".into(),
        });
    }
    Ok(cols / cfg.subspaces)
}

impl ProductQuantizer {
    /// Trains the codebooks on `w` with k-means and encodes `w`.
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] when `m` does not divide the columns or `b`
    /// is outside `1..=16`; [`Error::InvalidClusterCount`] when there are fewer
    /// subvectors to train a codebook on than `2^b`; [`Error::NonFinite`].
    pub fn fit(w: ArrayView2<'_, f32>, cfg: &PqConfig) -> Result<Self> {
        let (rows, cols) = w.dim();
        let d = check_config(cols, cfg)?;
        let m = cfg.subspaces;
        let k = 1usize << cfg.bits;
        let km = |data: ArrayView2<'_, f32>, seed: u64| {
            kmeans(
                data,
                None,
                &KMeansConfig::new(k).max_iter(cfg.max_iter).seed(seed),
            )
        };
        match cfg.sharing {
            CodebookSharing::PerSubspace => {
                let fits = (0..m)
                    .into_par_iter()
                    .map(|j| km(w.slice(s![.., j * d..(j + 1) * d]), cfg.seed + j as u64))
                    .collect::<Result<Vec<_>>>()?;
                let mut codes = vec![0u32; rows * m];
                for (j, f) in fits.iter().enumerate() {
                    for (r, &a) in f.assignments.iter().enumerate() {
                        codes[r * m + j] = a;
                    }
                }
                Ok(ProductQuantizer {
                    rows,
                    cols,
                    sharing: cfg.sharing,
                    codebooks: fits.into_iter().map(|f| f.centroids).collect(),
                    codes: Codes::from_u32(&codes, k),
                })
            }
            CodebookSharing::Shared => {
                let sub = subvectors(w, d);
                let f = km(sub.view(), cfg.seed)?;
                Ok(ProductQuantizer {
                    rows,
                    cols,
                    sharing: cfg.sharing,
                    codes: Codes::from_u32(&f.assignments, k),
                    codebooks: vec![f.centroids],
                })
            }
        }
    }

    /// Rebuilds a quantizer from stored parts, checking them (they may come
    /// from an untrusted file).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the codebooks or the number of codes do
    /// not fit `[rows, cols]`; [`Error::CodeOutOfRange`]; [`Error::ParameterOutOfRange`]
    /// for codebooks of more than 65,536 entries.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        sharing: CodebookSharing,
        codebooks: Vec<Array2<f32>>,
        codes: Codes,
    ) -> Result<Self> {
        let op = "ProductQuantizer::from_parts";
        let first = codebooks.first().map(|c| c.dim()).unwrap_or((0, 0));
        let (size, d) = first;
        let m = cols.checked_div(d).unwrap_or(0);
        let want_books = match sharing {
            CodebookSharing::PerSubspace => m,
            CodebookSharing::Shared => 1,
        };
        if d == 0
            || !cols.is_multiple_of(d)
            || codebooks.len() != want_books
            || codebooks.iter().any(|c| c.dim() != first)
            || Some(codes.len()) != rows.checked_mul(m)
        {
            return Err(Error::ShapeMismatch {
                op,
                lhs: vec![rows, cols],
                rhs: vec![codebooks.len(), size, d, codes.len()],
            });
        }
        if size > 1 << 16 {
            return Err(Error::ParameterOutOfRange {
                op,
                name: "codebook size",
                value: size as f64,
                range: "1..=65536".into(),
            });
        }
        codes.check(size)?;
        Ok(ProductQuantizer {
            rows,
            cols,
            sharing,
            codebooks,
            codes,
        })
    }

    /// Encodes `w` (same number of columns) with these codebooks: the
    /// nearest centroid of each subvector, as `[rows, m]` codes.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a different number of columns.
    pub fn encode(&self, w: ArrayView2<'_, f32>) -> Result<Codes> {
        if w.ncols() != self.cols {
            return Err(Error::ShapeMismatch {
                op: "ProductQuantizer::encode",
                lhs: vec![self.rows, self.cols],
                rhs: w.shape().to_vec(),
            });
        }
        let (m, d) = (self.subspaces(), self.subvector_len());
        let mut out = vec![0u32; w.nrows() * m];
        match self.sharing {
            CodebookSharing::Shared => {
                let sub = subvectors(w, d);
                assign(sub.view(), self.codebooks[0].view(), &mut out)?;
            }
            CodebookSharing::PerSubspace => {
                let mut col = vec![0u32; w.nrows()];
                for (j, book) in self.codebooks.iter().enumerate() {
                    assign(w.slice(s![.., j * d..(j + 1) * d]), book.view(), &mut col)?;
                    for (r, &c) in col.iter().enumerate() {
                        out[r * m + j] = c;
                    }
                }
            }
        }
        Ok(Codes::from_u32(&out, self.codebook_size()))
    }

    /// The reconstruction `Ŵ`, `[rows, cols]`.
    pub fn decode(&self) -> Array2<f32> {
        let (m, d) = (self.subspaces(), self.subvector_len());
        let mut out = Array2::<f32>::zeros((self.rows, self.cols));
        for r in 0..self.rows {
            for j in 0..m {
                let code = self.codes.get(r * m + j) as usize;
                let book = match self.sharing {
                    CodebookSharing::PerSubspace => &self.codebooks[j],
                    CodebookSharing::Shared => &self.codebooks[0],
                };
                out.slice_mut(s![r, j * d..(j + 1) * d])
                    .assign(&book.row(code));
            }
        }
        out
    }

    /// Shape `[rows, cols]` of the quantized matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Number of subspaces `m`.
    pub fn subspaces(&self) -> usize {
        self.cols / self.subvector_len()
    }

    /// Entries per subvector, `cols / m`.
    pub fn subvector_len(&self) -> usize {
        self.codebooks[0].ncols()
    }

    /// Entries per codebook, `2^b`.
    pub fn codebook_size(&self) -> usize {
        self.codebooks[0].nrows()
    }

    /// Codebook sharing.
    pub fn sharing(&self) -> CodebookSharing {
        self.sharing
    }

    /// The codebooks, `[2^b, cols/m]` each: `m` of them, or one when shared.
    pub fn codebooks(&self) -> &[Array2<f32>] {
        &self.codebooks
    }

    /// The codes, `[rows, m]` row-major.
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// Storage in bits per weight: `⌈log₂ 2^b⌉` bits per code plus 32 bits per
    /// codebook number, over `rows × cols`.
    pub fn bits_per_weight(&self) -> f64 {
        let code_bits = self.codes.len() as f64 * f64::from(super::code_bits(self.codebook_size()));
        let table_bits = 32.0 * self.codebooks.iter().map(|c| c.len()).sum::<usize>() as f64;
        (code_bits + table_bits) / (self.rows * self.cols).max(1) as f64
    }
}

/// The subvectors of `w` as rows `[rows · cols/d, d]`, row by row.
pub(super) fn subvectors(w: ArrayView2<'_, f32>, d: usize) -> Array2<f32> {
    let (rows, cols) = w.dim();
    let flat: Vec<f32> = w.iter().copied().collect();
    Array2::from_shape_vec((rows * cols / d, d), flat).expect("rows · cols elements")
}

#[cfg(test)]
mod tests {
    use super::super::reconstruction_error;
    use super::*;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn exact_when_every_subvector_is_a_centroid() {
        // 4 distinct rows, 2 subspaces, 4 centroids: lossless.
        let base = SeededRng::new(3).array_normal((4, 6));
        let mut w = Array2::<f32>::zeros((12, 6));
        for r in 0..12 {
            w.row_mut(r).assign(&base.row(r % 4));
        }
        for sharing in [CodebookSharing::PerSubspace, CodebookSharing::Shared] {
            let cfg = PqConfig::new(
                2,
                if sharing == CodebookSharing::Shared {
                    3
                } else {
                    2
                },
            )
            .sharing(sharing);
            let pq = ProductQuantizer::fit(w.view(), &cfg).unwrap();
            let back = pq.decode();
            assert_eq!(
                reconstruction_error(w.view(), back.view()).unwrap().mse,
                0.0
            );
            assert_eq!(pq.encode(w.view()).unwrap(), *pq.codes());
        }
    }

    #[test]
    fn more_bits_less_error_and_bits_per_weight() {
        let w = SeededRng::new(9).array_normal((256, 16));
        let mut last = f64::INFINITY;
        for bits in [1u8, 2, 4, 6] {
            let pq = ProductQuantizer::fit(w.view(), &PqConfig::new(4, bits)).unwrap();
            let e = reconstruction_error(w.view(), pq.decode().view()).unwrap();
            assert!(e.relative < last, "bits {bits}: {} ≥ {last}", e.relative);
            last = e.relative;
            let expect = (256.0 * 4.0 * f64::from(bits) + 32.0 * 4.0 * (1 << bits) as f64 * 4.0)
                / (256.0 * 16.0);
            assert!((pq.bits_per_weight() - expect).abs() < 1e-12);
        }
    }

    #[test]
    fn from_parts_rejects_bad_parts() {
        let w = SeededRng::new(1).array_normal((8, 4));
        let pq = ProductQuantizer::fit(w.view(), &PqConfig::new(2, 2)).unwrap();
        let ok = ProductQuantizer::from_parts(
            8,
            4,
            CodebookSharing::PerSubspace,
            pq.codebooks().to_vec(),
            pq.codes().clone(),
        )
        .unwrap();
        assert_eq!(ok.decode(), pq.decode());
        let mut bad = pq.codes().to_u32();
        bad[5] = 4;
        assert!(matches!(
            ProductQuantizer::from_parts(
                8,
                4,
                CodebookSharing::PerSubspace,
                pq.codebooks().to_vec(),
                Codes::U8(bad.iter().map(|&c| c as u8).collect())
            ),
            Err(Error::CodeOutOfRange { index: 5, .. })
        ));
        assert!(matches!(
            ProductQuantizer::from_parts(
                8,
                6,
                CodebookSharing::PerSubspace,
                pq.codebooks().to_vec(),
                pq.codes().clone()
            ),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            ProductQuantizer::fit(w.view(), &PqConfig::new(3, 2)),
            Err(Error::ParameterOutOfRange {
                name: "subspaces",
                ..
            })
        ));
        assert!(matches!(
            ProductQuantizer::fit(w.view(), &PqConfig::new(2, 17)),
            Err(Error::ParameterOutOfRange { name: "bits", .. })
        ));
        assert!(matches!(
            ProductQuantizer::fit(w.view(), &PqConfig::new(2, 4)),
            Err(Error::InvalidClusterCount { k: 16, n: 8, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Decoding gives each subvector its nearest centroid, so the error
        /// never exceeds that of coding every subvector as centroid 0.
        #[test]
        fn codes_are_nearest(seed in 0u64..500, rows in 4usize..40, m in 1usize..4, d in 1usize..4, shared: bool) {
            let w = SeededRng::new(seed).array_normal((rows, m * d));
            let sharing = if shared { CodebookSharing::Shared } else { CodebookSharing::PerSubspace };
            let pq = ProductQuantizer::fit(w.view(), &PqConfig::new(m, 2).sharing(sharing).seed(seed)).unwrap();
            prop_assert_eq!(pq.encode(w.view()).unwrap(), pq.codes().clone());
            let back = pq.decode();
            for r in 0..rows {
                for j in 0..m {
                    let book = &pq.codebooks()[if shared { 0 } else { j }];
                    let x = w.slice(s![r, j * d..(j + 1) * d]);
                    let got: f32 = x.iter().zip(back.slice(s![r, j * d..(j + 1) * d])).map(|(a, b)| (a - b) * (a - b)).sum();
                    for c in book.outer_iter() {
                        let dc: f32 = x.iter().zip(c.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
                        prop_assert!(got <= dc);
                    }
                }
            }
        }
    }
}
