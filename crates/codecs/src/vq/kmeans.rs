//! Seeded k-means++ initialisation and Lloyd iterations on the rows of a matrix.

use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;
use tensorpress_tensor::SeededRng;

use crate::{Error, Result};

/// Settings of [`kmeans`].
///
/// ```
/// use tensorpress_codecs::vq::KMeansConfig;
///
/// let cfg = KMeansConfig::new(16).max_iter(50).seed(7);
/// assert_eq!(cfg.k, 16);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct KMeansConfig {
    /// Number of clusters (at least 1, at most the number of points).
    pub k: usize,
    /// Most Lloyd iterations after the k-means++ seeding (0: seeding only).
    pub max_iter: usize,
    /// Stop once an iteration lowers the inertia by less than this fraction
    /// of it (or no point changes cluster).
    pub tol: f64,
    /// Seed of the k-means++ sampling: the same data, weights and seed give
    /// bit-identical centroids and assignments.
    pub seed: u64,
}

impl KMeansConfig {
    /// `k` clusters, 25 iterations, tolerance `1e-6`, seed 0.
    pub fn new(k: usize) -> Self {
        KMeansConfig {
            k,
            max_iter: 25,
            tol: 1e-6,
            seed: 0,
        }
    }

    /// Sets the number of clusters.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Sets the most Lloyd iterations.
    pub fn max_iter(mut self, max_iter: usize) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Sets the relative inertia tolerance.
    pub fn tol(mut self, tol: f64) -> Self {
        self.tol = tol;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Default for KMeansConfig {
    /// 256 clusters (one byte per code).
    fn default() -> Self {
        KMeansConfig::new(256)
    }
}

/// The result of [`kmeans`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KMeans {
    /// Centroids, `[k, dim]`.
    pub centroids: Array2<f32>,
    /// Index of the nearest centroid of each point, `[n]`.
    pub assignments: Vec<u32>,
    /// Weighted sum of squared distances of the points to their centroids.
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
}

/// Checks the data and weights of a clustering; returns the total weight.
fn validate(
    op: &'static str,
    data: &ArrayView2<'_, f32>,
    weights: Option<&ArrayView1<'_, f32>>,
    k: usize,
) -> Result<f64> {
    let n = data.nrows();
    if k == 0 || k > n {
        return Err(Error::InvalidClusterCount { op, k, n });
    }
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { op, index });
    }
    match weights {
        None => Ok(n as f64),
        Some(w) => {
            if w.len() != n {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: vec![n],
                    rhs: vec![w.len()],
                });
            }
            if let Some((index, &weight)) = w
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite() || **v < 0.0)
            {
                return Err(Error::InvalidWeight { op, index, weight });
            }
            let total: f64 = w.iter().map(|&v| f64::from(v)).sum();
            if total <= 0.0 {
                return Err(Error::InvalidWeight {
                    op,
                    index: n,
                    weight: 0.0,
                });
            }
            Ok(total)
        }
    }
}

/// Samples an index with probability proportional to `mass` (total `total > 0`).
fn sample(rng: &mut SeededRng, mass: &[f64], total: f64) -> usize {
    let target = rng.uniform_f64() * total;
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (i, &m) in mass.iter().enumerate() {
        if m > 0.0 {
            acc += m;
            last_positive = i;
            if acc > target {
                return i;
            }
        }
    }
    // Rounding left `target` just above the running sum.
    last_positive
}

/// k-means++ seeding (Arthur & Vassilvitskii, 2007): the first centroid is a
/// point drawn with probability proportional to its weight, each next one a
/// point drawn proportionally to weight × squared distance to the nearest
/// centroid so far.
///
/// When the data hold fewer than `k` distinct points, the later centroids
/// repeat points already chosen.
///
/// # Errors
/// [`Error::InvalidClusterCount`] for `k = 0` or `k > n`,
/// [`Error::NonFinite`] for NaN or infinite data, [`Error::InvalidWeight`],
/// [`Error::ShapeMismatch`] when the weights do not match the rows.
pub fn kmeans_plus_plus(
    data: ArrayView2<'_, f32>,
    weights: Option<ArrayView1<'_, f32>>,
    k: usize,
    rng: &mut SeededRng,
) -> Result<Array2<f32>> {
    validate("kmeans++", &data, weights.as_ref(), k)?;
    Ok(seed_plus_plus(data, weights.as_ref(), k, rng))
}

fn seed_plus_plus(
    data: ArrayView2<'_, f32>,
    weights: Option<&ArrayView1<'_, f32>>,
    k: usize,
    rng: &mut SeededRng,
) -> Array2<f32> {
    let n = data.nrows();
    let w = |i: usize| weights.map_or(1.0, |w| f64::from(w[i]));
    let mut centroids = Array2::<f32>::zeros((k, data.ncols()));
    let base: Vec<f64> = (0..n).map(w).collect();
    let total: f64 = base.iter().sum();
    let first = sample(rng, &base, total);
    let dim = data.ncols();
    let data = data.as_standard_layout();
    let x = data.as_slice().expect("standard layout");
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    centroids.row_mut(0).assign(&data.row(first));
    let mut nearest: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| sq_dist_slice(row(i), row(first)))
        .collect();
    let mut mass = vec![0.0f64; n];
    for c in 1..k {
        for (i, m) in mass.iter_mut().enumerate() {
            *m = w(i) * f64::from(nearest[i]);
        }
        let total: f64 = mass.iter().sum();
        let pick = if total > 0.0 {
            sample(rng, &mass, total)
        } else {
            // Every point coincides with a centroid already: repeat one.
            sample(rng, &base, base.iter().sum())
        };
        centroids.row_mut(c).assign(&data.row(pick));
        let cent = row(pick);
        nearest.par_iter_mut().enumerate().for_each(|(i, d)| {
            let nd = sq_dist_slice(row(i), cent);
            if nd < *d {
                *d = nd;
            }
        });
    }
    centroids
}

/// Writes the nearest centroid of each row of `data` into `out` (ties go to
/// the lower index) and returns the squared distances.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the widths differ or `out` is not one entry
/// per row; [`Error::InvalidClusterCount`] for an empty codebook.
pub fn assign(
    data: ArrayView2<'_, f32>,
    centroids: ArrayView2<'_, f32>,
    out: &mut [u32],
) -> Result<Vec<f32>> {
    if data.ncols() != centroids.ncols() || out.len() != data.nrows() {
        return Err(Error::ShapeMismatch {
            op: "assign",
            lhs: vec![data.nrows(), data.ncols()],
            rhs: vec![out.len(), centroids.ncols()],
        });
    }
    if centroids.nrows() == 0 {
        return Err(Error::InvalidClusterCount {
            op: "assign",
            k: 0,
            n: data.nrows(),
        });
    }
    let mut dist = vec![0.0f32; data.nrows()];
    assign_into(data, centroids, out, &mut dist);
    Ok(dist)
}

fn assign_into(
    data: ArrayView2<'_, f32>,
    centroids: ArrayView2<'_, f32>,
    out: &mut [u32],
    dist: &mut [f32],
) {
    const CHUNK: usize = 256;
    // Contiguous rows: the inner loop runs over plain slices.
    let data = data.as_standard_layout();
    let centroids = centroids.as_standard_layout();
    let dim = data.ncols();
    let (x, c) = (
        data.as_slice().expect("standard layout"),
        centroids.as_slice().expect("standard layout"),
    );
    out.par_chunks_mut(CHUNK)
        .zip(dist.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, (codes, ds))| {
            for (j, (code, d)) in codes.iter_mut().zip(ds.iter_mut()).enumerate() {
                let i = chunk * CHUNK + j;
                let xi = &x[i * dim..(i + 1) * dim];
                let mut best = (0u32, f32::INFINITY);
                for (ci, cent) in c.chunks_exact(dim.max(1)).enumerate() {
                    let dd = sq_dist_slice(xi, cent);
                    if dd < best.1 {
                        best = (ci as u32, dd);
                    }
                }
                *code = best.0;
                *d = if dim == 0 { 0.0 } else { best.1 };
            }
        });
}

#[inline]
fn sq_dist_slice(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Weighted k-means: k-means++ seeding, then Lloyd iterations (assign each
/// point to its nearest centroid in parallel, move each centroid to the
/// weighted mean of its points, in f64).
///
/// A cluster left empty takes the point that is currently worst served (the
/// largest weight × squared distance), so no centroid is wasted while the
/// data hold at least `k` distinct points. The result depends only on the
/// data, the weights and `cfg` (the parallel assignment step is exact).
///
/// ```
/// use ndarray::array;
/// use tensorpress_codecs::vq::{kmeans, KMeansConfig};
///
/// let x = array![[0.0f32, 0.0], [0.1, 0.0], [10.0, 10.0], [10.0, 10.2]];
/// let km = kmeans(x.view(), None, &KMeansConfig::new(2).seed(1))?;
/// assert_eq!(km.assignments[0], km.assignments[1]);
/// assert_ne!(km.assignments[0], km.assignments[2]);
/// assert!(km.inertia < 0.1);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
///
/// # Errors
/// As [`kmeans_plus_plus`].
pub fn kmeans(
    data: ArrayView2<'_, f32>,
    weights: Option<ArrayView1<'_, f32>>,
    cfg: &KMeansConfig,
) -> Result<KMeans> {
    validate("kmeans", &data, weights.as_ref(), cfg.k)?;
    if cfg.tol.is_nan() || cfg.tol < 0.0 {
        return Err(Error::ParameterOutOfRange {
            op: "kmeans",
            name: "tol",
            value: cfg.tol,
            range: "[0, ∞)".into(),
        });
    }
    let (n, dim, k) = (data.nrows(), data.ncols(), cfg.k);
    let w = |i: usize| weights.as_ref().map_or(1.0, |w| f64::from(w[i]));
    let mut rng = SeededRng::new(cfg.seed);
    let mut centroids = seed_plus_plus(data, weights.as_ref(), k, &mut rng);
    let mut assignments = vec![0u32; n];
    let mut dist = vec![0.0f32; n];
    assign_into(data, centroids.view(), &mut assignments, &mut dist);
    let mut inertia = weighted_inertia(&dist, &w);
    let mut iterations = 0;
    let mut sums = Array2::<f64>::zeros((k, dim));
    let mut mass = vec![0.0f64; k];
    let mut count = vec![0usize; k];
    let mut previous = assignments.clone();
    while iterations < cfg.max_iter {
        iterations += 1;
        sums.fill(0.0);
        mass.fill(0.0);
        count.fill(0);
        for (i, &a) in assignments.iter().enumerate() {
            let a = a as usize;
            let wi = w(i);
            mass[a] += wi;
            count[a] += 1;
            for (s, &x) in sums.row_mut(a).iter_mut().zip(data.row(i)) {
                *s += wi * f64::from(x);
            }
        }
        for c in 0..k {
            if mass[c] > 0.0 {
                for (dst, &s) in centroids.row_mut(c).iter_mut().zip(sums.row(c)) {
                    *dst = (s / mass[c]) as f32;
                }
            } else if count[c] == 0 {
                // Empty: take the worst-served point (ties to the lowest index).
                let mut worst = (usize::MAX, 0.0f64);
                for (i, &d) in dist.iter().enumerate() {
                    let cost = w(i) * f64::from(d);
                    if cost > worst.1 {
                        worst = (i, cost);
                    }
                }
                if worst.0 != usize::MAX {
                    centroids.row_mut(c).assign(&data.row(worst.0));
                    dist[worst.0] = 0.0;
                }
            }
            // Points of zero weight only: the centroid stays where it is.
        }
        previous.copy_from_slice(&assignments);
        assign_into(data, centroids.view(), &mut assignments, &mut dist);
        let next = weighted_inertia(&dist, &w);
        let improvement = inertia - next;
        inertia = next;
        if previous == assignments || improvement <= cfg.tol * inertia.max(f64::MIN_POSITIVE) {
            break;
        }
    }
    Ok(KMeans {
        centroids,
        assignments,
        inertia,
        iterations,
    })
}

fn weighted_inertia(dist: &[f32], w: &impl Fn(usize) -> f64) -> f64 {
    dist.iter()
        .enumerate()
        .map(|(i, &d)| w(i) * f64::from(d))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};
    use proptest::prelude::*;

    fn sq_dist(a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f32 {
        a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    fn blobs(seed: u64, per: usize) -> (Array2<f32>, Vec<usize>) {
        let centers = [[0.0f32, 0.0, 0.0], [5.0, 5.0, 0.0], [-5.0, 5.0, 5.0]];
        let mut rng = SeededRng::new(seed);
        let mut x = Array2::<f32>::zeros((3 * per, 3));
        let mut label = Vec::new();
        for (c, center) in centers.iter().enumerate() {
            for p in 0..per {
                for j in 0..3 {
                    x[[c * per + p, j]] = center[j] + 0.3 * rng.normal_f32();
                }
                label.push(c);
            }
        }
        (x, label)
    }

    #[test]
    fn recovers_separated_blobs() {
        let (x, label) = blobs(3, 50);
        let km = kmeans(x.view(), None, &KMeansConfig::new(3).seed(11)).unwrap();
        for i in 0..x.nrows() {
            for j in 0..x.nrows() {
                assert_eq!(
                    label[i] == label[j],
                    km.assignments[i] == km.assignments[j],
                    "points {i} and {j}"
                );
            }
        }
        // Every centroid within 0.15 of a true centre.
        for c in km.centroids.outer_iter() {
            let near = [[0.0f32, 0.0, 0.0], [5.0, 5.0, 0.0], [-5.0, 5.0, 5.0]]
                .iter()
                .map(|t| sq_dist(c, ArrayView1::from(&t[..])).sqrt())
                .fold(f32::INFINITY, f32::min);
            assert!(near < 0.15, "{near}");
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (x, _) = blobs(5, 40);
        let cfg = KMeansConfig::new(7).seed(42);
        let a = kmeans(x.view(), None, &cfg).unwrap();
        let b = kmeans(x.view(), None, &cfg).unwrap();
        assert_eq!(a.assignments, b.assignments);
        let bits = |m: &Array2<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.centroids), bits(&b.centroids));
    }

    #[test]
    fn weights_pull_the_centroid() {
        let x = array![[0.0f32], [1.0], [2.0], [3.0]];
        let w = Array1::from(vec![1.0f32, 0.0, 0.0, 3.0]);
        let km = kmeans(x.view(), Some(w.view()), &KMeansConfig::new(1)).unwrap();
        assert!((km.centroids[[0, 0]] - 2.25).abs() < 1e-6);
        assert!((km.inertia - (2.25f64.powi(2) + 3.0 * 0.75f64.powi(2))).abs() < 1e-5);
        // Zero-weight points are never picked as seeds.
        let mut rng = SeededRng::new(0);
        for _ in 0..20 {
            let c = kmeans_plus_plus(x.view(), Some(w.view()), 2, &mut rng).unwrap();
            for v in c.iter() {
                assert!(*v == 0.0 || *v == 3.0);
            }
        }
    }

    #[test]
    fn k_equals_n_is_exact_and_duplicates_do_not_break() {
        let x = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
        let km = kmeans(x.view(), None, &KMeansConfig::new(3)).unwrap();
        assert_eq!(km.inertia, 0.0);
        let mut a = km.assignments.clone();
        a.sort();
        assert_eq!(a, vec![0, 1, 2]);
        // Fewer distinct points than clusters: centroids repeat, no error.
        let d = array![[1.0f32], [1.0], [1.0], [2.0]];
        let km = kmeans(d.view(), None, &KMeansConfig::new(3)).unwrap();
        assert_eq!(km.inertia, 0.0);
    }

    #[test]
    fn typed_errors() {
        let x = array![[1.0f32], [2.0]];
        assert!(matches!(
            kmeans(x.view(), None, &KMeansConfig::new(3)),
            Err(Error::InvalidClusterCount { k: 3, n: 2, .. })
        ));
        assert!(matches!(
            kmeans(x.view(), None, &KMeansConfig::new(0)),
            Err(Error::InvalidClusterCount { k: 0, .. })
        ));
        let nan = array![[1.0f32], [f32::NAN]];
        assert!(matches!(
            kmeans(nan.view(), None, &KMeansConfig::new(1)),
            Err(Error::NonFinite { index: 1, .. })
        ));
        let w = Array1::from(vec![1.0f32, -1.0]);
        assert!(matches!(
            kmeans(x.view(), Some(w.view()), &KMeansConfig::new(1)),
            Err(Error::InvalidWeight { index: 1, .. })
        ));
        let z = Array1::from(vec![0.0f32, 0.0]);
        assert!(matches!(
            kmeans(x.view(), Some(z.view()), &KMeansConfig::new(1)),
            Err(Error::InvalidWeight { index: 2, .. })
        ));
        let short = Array1::from(vec![1.0f32]);
        assert!(matches!(
            kmeans(x.view(), Some(short.view()), &KMeansConfig::new(1)),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Lloyd never ends worse than its seeding, assignments are nearest
        /// centroids, and inertia matches the assignments.
        #[test]
        fn lloyd_invariants(seed in 0u64..1000, n in 1usize..60, dim in 1usize..5, k in 1usize..8) {
            let k = k.min(n);
            let mut rng = SeededRng::new(seed);
            let x = rng.array_normal((n, dim));
            let seeded = kmeans(x.view(), None, &KMeansConfig::new(k).seed(seed).max_iter(0)).unwrap();
            let km = kmeans(x.view(), None, &KMeansConfig::new(k).seed(seed)).unwrap();
            prop_assert!(km.inertia <= seeded.inertia * (1.0 + 1e-5) + 1e-6);
            let mut total = 0.0f64;
            for i in 0..n {
                let a = km.assignments[i] as usize;
                let d = sq_dist(x.row(i), km.centroids.row(a));
                for c in km.centroids.outer_iter() {
                    prop_assert!(d <= sq_dist(x.row(i), c));
                }
                total += f64::from(d);
            }
            prop_assert!((total - km.inertia).abs() <= 1e-4 * (1.0 + total));
        }
    }
}
