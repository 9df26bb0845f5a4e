//! LR²VQ: vector quantization of low-rank projections of subvectors.

use ndarray::{Array1, Array2, ArrayView2};
use tensorpress_tensor::linalg::eigh;

use super::pq::subvectors;
use super::{code_bits, kmeans, Codes, KMeansConfig};
use crate::{Error, Result};

/// Settings of [`Lr2vq::fit`], named as in the LR²VQ paper.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Lr2vqConfig {
    /// Subvector size `m`: each row is cut into `cols / m` pieces of `m`
    /// consecutive weights (must divide the columns). Sets the compression
    /// ratio: about `log₂ k / m` bits per weight.
    pub subvector_len: usize,
    /// Clustering dimensionality `d` (`1..=m`): subvectors are projected onto
    /// `d` directions before clustering. `d = m` is plain VQ with one codebook.
    pub clustering_dim: usize,
    /// Number of clusters `k` (`1..=65536`).
    pub clusters: usize,
    /// Lloyd iterations.
    pub max_iter: usize,
    /// Seed of the k-means++ seeding.
    pub seed: u64,
}

impl Lr2vqConfig {
    /// Subvectors of `m`, clustered in `d` dimensions into `k` clusters; 25
    /// iterations, seed 0.
    pub fn new(subvector_len: usize, clustering_dim: usize, clusters: usize) -> Self {
        Lr2vqConfig {
            subvector_len,
            clustering_dim,
            clusters,
            max_iter: 25,
            seed: 0,
        }
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

/// A weight matrix quantized by LR²VQ (*Learning Low-Rank Representations
/// for Model Compression*, `papers.txt`).
///
/// The paper cuts the weights into subvectors of size `m`, maps them to a
/// `d`-dimensional space by a learned linear map, clusters there into `k`
/// centroids, maps the centroids back to `m` dimensions, and trains the
/// maps, the codebook and the assignments end to end on the task loss.
/// This is its post-training form, with no task loss to train on:
///
/// 1. the projection is the one that loses least energy, the top `d`
///    principal directions `P` (`[m, d]`, orthonormal columns) of the
///    centred subvectors (eigenvectors of their covariance, in f64);
/// 2. the projections `(x − μ) P` are clustered by k-means into `k` centroids
///    `c` (`[k, d]`);
/// 3. a subvector decodes to `μ + P c`.
///
/// The error splits exactly into the low-rank part (energy off the top `d`
/// directions, [`retained_variance`](Lr2vq::retained_variance) says how much
/// is kept) and the clustering error in the `d`-dimensional space, the
/// trade-off the paper tunes `d` for; `m` and `k` alone set the bits.
/// All subvectors share the codebook and the projection.
#[derive(Debug, Clone)]
pub struct Lr2vq {
    rows: usize,
    cols: usize,
    mean: Array1<f32>,
    projection: Array2<f32>,
    codebook: Array2<f32>,
    codes: Codes,
    retained_variance: f64,
}

impl Lr2vq {
    /// Fits the projection and the codebook to `w` and encodes it.
    ///
    /// ```
    /// use tensorpress_codecs::vq::{reconstruction_error, Lr2vq, Lr2vqConfig};
    /// use tensorpress_tensor::SeededRng;
    ///
    /// let w = SeededRng::new(2).array_normal((64, 64));
    /// let q = Lr2vq::fit(w.view(), &Lr2vqConfig::new(8, 4, 64))?;
    /// assert_eq!(q.codes().len(), 64 * 8);
    /// let err = reconstruction_error(w.view(), q.decode().view())?;
    /// assert!(err.relative < 0.95 && q.retained_variance() < 1.0);
    /// # Ok::<(), tensorpress_codecs::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] for `m` not dividing the columns, `d`
    /// outside `1..=m` or `k` above 65,536; [`Error::InvalidClusterCount`]
    /// for more clusters than subvectors; [`Error::NonFinite`].
    pub fn fit(w: ArrayView2<'_, f32>, cfg: &Lr2vqConfig) -> Result<Self> {
        let op = "lr2vq";
        let (rows, cols) = w.dim();
        let m = cfg.subvector_len;
        let bad = |name, value: usize, range: String| Error::ParameterOutOfRange {
            op,
            name,
            value: value as f64,
            range,
        };
        if m == 0 || !cols.is_multiple_of(m) {
            return Err(bad(
                "subvector_len",
                m,
                format!("a positive divisor of the {cols} columns"),
            ));
        }
        let d = cfg.clustering_dim;
        if d == 0 || d > m {
            return Err(bad("clustering_dim", d, format!("1..={m}")));
        }
        if cfg.clusters > 1 << 16 {
            return Err(bad("clusters", cfg.clusters, "1..=65536".into()));
        }
        if let Some(index) = w.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { op, index });
        }
        let x = subvectors(w, m);
        let n = x.nrows();
        if cfg.clusters == 0 || cfg.clusters > n {
            return Err(Error::InvalidClusterCount {
                op,
                k: cfg.clusters,
                n,
            });
        }
        // Mean and covariance in f64.
        let mut mean = Array1::<f64>::zeros(m);
        for row in x.outer_iter() {
            for (a, &v) in mean.iter_mut().zip(row) {
                *a += f64::from(v);
            }
        }
        mean /= n as f64;
        let mut centred = Array2::<f64>::zeros((n, m));
        for (mut dst, src) in centred.outer_iter_mut().zip(x.outer_iter()) {
            for ((o, &v), &mu) in dst.iter_mut().zip(src).zip(&mean) {
                *o = f64::from(v) - mu;
            }
        }
        let cov = centred.t().dot(&centred) / n as f64;
        let e = eigh(cov.view())?;
        // Ascending eigenvalues: the top d are the last d.
        let total: f64 = e.values.iter().map(|v| v.max(0.0)).sum();
        let kept: f64 = e.values.iter().rev().take(d).map(|v| v.max(0.0)).sum();
        let mut projection = Array2::<f32>::zeros((m, d));
        for j in 0..d {
            let col = e.vectors.column(m - 1 - j);
            for i in 0..m {
                projection[[i, j]] = col[i] as f32;
            }
        }
        let p64 = projection.mapv(f64::from);
        let y = centred.dot(&p64).mapv(|v| v as f32);
        let km = kmeans(
            y.view(),
            None,
            &KMeansConfig::new(cfg.clusters)
                .max_iter(cfg.max_iter)
                .seed(cfg.seed),
        )?;
        Ok(Lr2vq {
            rows,
            cols,
            mean: mean.mapv(|v| v as f32),
            projection,
            codebook: km.centroids,
            codes: Codes::from_u32(&km.assignments, cfg.clusters),
            retained_variance: if total > 0.0 { kept / total } else { 1.0 },
        })
    }

    /// The reconstruction `Ŵ`, `[rows, cols]`.
    pub fn decode(&self) -> Array2<f32> {
        // Lift the codebook once: [k, m].
        let lifted = self.codebook.dot(&self.projection.t()) + &self.mean;
        let m = self.mean.len();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for i in 0..self.codes.len() {
            out.extend(lifted.row(self.codes.get(i) as usize).iter().copied());
        }
        debug_assert_eq!(out.len(), self.codes.len() * m);
        Array2::from_shape_vec((self.rows, self.cols), out).expect("rows · cols elements")
    }

    /// Shape `[rows, cols]` of the quantized matrix.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Mean subvector `μ`, `[m]`.
    pub fn mean(&self) -> &Array1<f32> {
        &self.mean
    }

    /// Projection `P`, `[m, d]`, orthonormal columns.
    pub fn projection(&self) -> &Array2<f32> {
        &self.projection
    }

    /// Codebook in the projected space, `[k, d]`.
    pub fn codebook(&self) -> &Array2<f32> {
        &self.codebook
    }

    /// One code per subvector, row by row (`[rows, cols / m]`).
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// Fraction of the subvectors' variance on the `d` kept directions.
    pub fn retained_variance(&self) -> f64 {
        self.retained_variance
    }

    /// Storage in bits per weight: `⌈log₂ k⌉` bits per subvector plus 32 bits
    /// per number of the codebook, the projection and the mean.
    pub fn bits_per_weight(&self) -> f64 {
        let codes = self.codes.len() as f64 * f64::from(code_bits(self.codebook.nrows()));
        let tables = 32.0 * (self.codebook.len() + self.projection.len() + self.mean.len()) as f64;
        (codes + tables) / (self.rows * self.cols).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::super::reconstruction_error;
    use super::*;
    use tensorpress_tensor::SeededRng;

    /// Subvectors on a 2-D plane (plus an offset) lose nothing to a d = 2
    /// projection, and with as many clusters as points decode exactly.
    #[test]
    fn low_rank_subvectors_decode_exactly() {
        let mut rng = SeededRng::new(4);
        let basis = rng.array_normal((2, 6));
        let coef = rng.array_normal((40, 2));
        let x = coef.dot(&basis) + 0.5f32; // 40 subvectors of 6 on an affine plane
        let w = x.into_shape_with_order((10, 24)).unwrap();
        let q = Lr2vq::fit(w.view(), &Lr2vqConfig::new(6, 2, 40)).unwrap();
        assert!((q.retained_variance() - 1.0).abs() < 1e-9);
        let e = reconstruction_error(w.view(), q.decode().view()).unwrap();
        assert!(e.relative < 1e-5, "{}", e.relative);
        let p = q.projection();
        let gram = p.t().dot(p);
        for i in 0..2 {
            for j in 0..2 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[[i, j]] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn error_splits_into_low_rank_and_clustering() {
        let w = SeededRng::new(8).array_normal((64, 32));
        let mut errs = Vec::new();
        for d in [1, 2, 4, 8] {
            let q = Lr2vq::fit(w.view(), &Lr2vqConfig::new(8, d, 64)).unwrap();
            let e = reconstruction_error(w.view(), q.decode().view()).unwrap();
            // Never better than the projection alone allows.
            let floor = (1.0 - q.retained_variance()).sqrt();
            assert!(
                e.relative >= floor * 0.99,
                "d {d}: {} < {floor}",
                e.relative
            );
            errs.push(e.relative);
            let bpw =
                (256.0 * 6.0 + 32.0 * (64.0 * d as f64 + 8.0 * d as f64 + 8.0)) / (64.0 * 32.0);
            assert!((q.bits_per_weight() - bpw).abs() < 1e-12);
        }
        // d = 1 is all low-rank error: worst.
        assert!(errs[0] > errs[2], "{errs:?}");
    }

    #[test]
    fn typed_errors() {
        let w = SeededRng::new(1).array_normal((4, 8));
        let err = |cfg: Lr2vqConfig| Lr2vq::fit(w.view(), &cfg).unwrap_err();
        assert!(matches!(
            err(Lr2vqConfig::new(3, 2, 2)),
            Error::ParameterOutOfRange {
                name: "subvector_len",
                ..
            }
        ));
        assert!(matches!(
            err(Lr2vqConfig::new(4, 5, 2)),
            Error::ParameterOutOfRange {
                name: "clustering_dim",
                ..
            }
        ));
        assert!(matches!(
            err(Lr2vqConfig::new(4, 2, 9)),
            Error::InvalidClusterCount { k: 9, n: 8, .. }
        ));
        let mut nan = w.clone();
        nan[[1, 1]] = f32::NAN;
        assert!(matches!(
            Lr2vq::fit(nan.view(), &Lr2vqConfig::new(4, 2, 2)),
            Err(Error::NonFinite { index: 9, .. })
        ));
    }
}
