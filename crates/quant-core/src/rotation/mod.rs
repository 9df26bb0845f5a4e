//! Random orthogonal rotations that make weights and activations easier to
//! quantize.
//!
//! Multiplying a layer's input space by an orthogonal `Q` changes nothing the
//! layer computes (`(x Q)(W Q)ᵀ = x Wᵀ`) but spreads every outlier channel
//! over all channels, so the rotated weights and activations have smaller
//! maxima relative to their norms ("incoherence", QuIP, Chee et al. 2023) and
//! round with less error. QuaRot (Ashkboos et al., 2024, arXiv:2404.00456)
//! and QuIP# use randomized Hadamard matrices `Q = D H / √n` (`D` a diagonal
//! of random signs), which are orthogonal, incoherent and applied in
//! `O(n log n)`-like time; SpinQuant (Liu et al., 2024, arXiv:2405.16406)
//! shows that random orthogonal matrices work too, if with more variance
//! across seeds.
//!
//! - [`Hadamard`]: the ±1 matrix of order `n`, a Kronecker product of
//!   Sylvester (`2^k`) and Paley I (`q + 1`, `q ≡ 3 mod 4` prime) factors,
//!   with a transform that never forms it.
//! - [`RandomHadamard`]: `Q = D H / √n` from a seed.
//! - [`random_orthogonal`]: a Haar-random orthogonal matrix of any order (QR
//!   of a Gaussian matrix through faer).
//! - [`Rotation`]: either, behind one interface ([`RotationKind`] chooses).
//!
//! Every rotation acts on the **rows** of a matrix: [`Rotation::apply`]
//! replaces each row `x` by `x Q`, [`Rotation::apply_transpose`] by `x Qᵀ`.
//! For a linear weight `W` (`[out, in]`) that reads a rotated input,
//! `apply(W)` gives `W Q`; for one that writes a rotated output, `Qᵀ W` is
//! `apply(Wᵀ)ᵀ`.
//!
//! ```
//! use ndarray::Array2;
//! use tensorpress_quant_core::rotation::RandomHadamard;
//!
//! let q = RandomHadamard::new(576, 7)?; // 576 = 12 · 12 · 4
//! // A weight with one outlier input channel, as LLM activations have.
//! let mut w = Array2::from_shape_fn((4, 576), |(i, j)| ((i * 576 + j) as f32 * 0.1).sin() * 0.01);
//! w.column_mut(5).fill(1.0);
//! let max = |w: &Array2<f32>| w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
//! let norm = |w: &Array2<f32>| w.iter().map(|v| v * v).sum::<f32>().sqrt();
//! let (before_max, before_norm) = (max(&w), norm(&w));
//! q.apply(w.view_mut())?;
//! // Norms are kept; the outlier is spread over all 576 channels.
//! assert!((norm(&w) - before_norm).abs() < 1e-4 * before_norm);
//! assert!(max(&w) < before_max / 10.0);
//! // Qᵀ undoes Q.
//! q.apply_transpose(w.view_mut())?;
//! assert!((w[[0, 5]] - 1.0).abs() < 1e-5);
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```

mod hadamard;

pub use hadamard::{Hadamard, HadamardFactor};

use ndarray::{Array2, ArrayViewMut2};
use tensorpress_tensor::linalg::{self, Real};
use tensorpress_tensor::SeededRng;

use crate::{Error, Result};

/// A randomized Hadamard rotation `Q = D H / √n`, `D = diag(s)` with random
/// signs `s_i = ±1`: orthogonal (`Q Qᵀ = I`), and every entry has magnitude
/// `1/√n`.
///
/// The signs come first, as in QuaRot's `random_hadamard_matrix`: `x Q =
/// ((x ⊙ s) H) / √n`. (With `H D` instead, the signs would only flip the
/// signs of the outputs, and no quantizer's error would depend on the seed.)
#[derive(Debug, Clone, PartialEq)]
pub struct RandomHadamard {
    hadamard: Hadamard,
    /// `true` where `s_i = −1`.
    negative: Vec<bool>,
    seed: u64,
}

impl RandomHadamard {
    /// The rotation of order `n` for `seed`: the signs are the low bits of
    /// [`SeededRng::new(seed)`](SeededRng::new)'s `u32`s, one per row.
    ///
    /// # Errors
    /// [`Error::NoHadamard`] when no Hadamard matrix of order `n` is known
    /// ([`Hadamard::new`]).
    pub fn new(n: usize, seed: u64) -> Result<Self> {
        let hadamard = Hadamard::new(n)?;
        let mut rng = SeededRng::new(seed);
        let negative = (0..n).map(|_| rng.next_u32() & 1 == 1).collect();
        Ok(RandomHadamard {
            hadamard,
            negative,
            seed,
        })
    }

    /// The order `n`.
    pub fn order(&self) -> usize {
        self.hadamard.order()
    }

    /// The seed it was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The unnormalized Hadamard matrix `H`.
    pub fn hadamard(&self) -> &Hadamard {
        &self.hadamard
    }

    /// The signs `s` (`±1`).
    pub fn signs(&self) -> Vec<i8> {
        self.negative
            .iter()
            .map(|&neg| if neg { -1 } else { 1 })
            .collect()
    }

    /// Replaces every row `x` of `m` by `x Q`, in parallel over rows, in
    /// `O(n · Σ factor costs)` per row (`n · 26` additions for `n = 576`).
    ///
    /// # Errors
    /// [`Error::Shape`] when `m` does not have `n` columns.
    pub fn apply<T: Real>(&self, m: ArrayViewMut2<'_, T>) -> Result<()> {
        let scale = T::of(1.0 / (self.order() as f64).sqrt());
        self.hadamard.for_each_row(m, |row, scratch| {
            for (x, &neg) in row.iter_mut().zip(&self.negative) {
                *x = if neg { -*x * scale } else { *x * scale };
            }
            self.hadamard.apply_row(row, scratch, false);
        })
    }

    /// Replaces every row `x` of `m` by `x Qᵀ = ((x Hᵀ) / √n) ⊙ s`, the
    /// inverse of [`apply`](Self::apply).
    ///
    /// # Errors
    /// [`Error::Shape`] when `m` does not have `n` columns.
    pub fn apply_transpose<T: Real>(&self, m: ArrayViewMut2<'_, T>) -> Result<()> {
        let scale = T::of(1.0 / (self.order() as f64).sqrt());
        self.hadamard.for_each_row(m, |row, scratch| {
            self.hadamard.apply_row(row, scratch, true);
            for (x, &neg) in row.iter_mut().zip(&self.negative) {
                *x = if neg { -*x * scale } else { *x * scale };
            }
        })
    }

    /// The dense `n × n` matrix `Q`.
    pub fn to_matrix<T: Real>(&self) -> Array2<T> {
        let mut q = Array2::<T>::eye(self.order());
        // Rows of I Q are the rows of Q; the shape is right by construction.
        let _ = self.apply(q.view_mut());
        q
    }
}

/// A Haar-random orthogonal matrix of order `n` for `seed`: the `Q` of the
/// QR decomposition of an `n × n` standard Gaussian matrix (filled row by row
/// from [`SeededRng::new(seed)`](SeededRng::new)), its columns' signs fixed
/// so that `R` has a positive diagonal (Mezzadri, 2007), which makes the
/// distribution uniform. Works for every `n`; applying it costs a dense
/// matrix product.
///
/// ```
/// let q = tensorpress_quant_core::rotation::random_orthogonal(5, 1)?;
/// let g = q.dot(&q.t());
/// assert!(g.indexed_iter().all(|((i, j), &v)| (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12));
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::Linalg`] if the factorization fails (it does not for finite
/// Gaussian input).
pub fn random_orthogonal(n: usize, seed: u64) -> Result<Array2<f64>> {
    let mut rng = SeededRng::new(seed);
    let g = Array2::from_shape_simple_fn((n, n), || rng.normal_f64());
    let qr = linalg::qr(g.view())?;
    let mut q = qr.q;
    for (j, mut col) in q.columns_mut().into_iter().enumerate() {
        if qr.r[[j, j]] < 0.0 {
            col.mapv_inplace(|v| -v);
        }
    }
    Ok(q)
}

/// Which random rotation to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum RotationKind {
    /// A [`RandomHadamard`] (QuaRot): fast, and the usual choice; fails with
    /// [`Error::NoHadamard`] for an order without a known construction.
    #[default]
    Hadamard,
    /// A dense [`random_orthogonal`] matrix (SpinQuant's random baseline):
    /// any order.
    Orthogonal,
}

impl std::str::FromStr for RotationKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "hadamard" => Ok(RotationKind::Hadamard),
            "orthogonal" | "random-orthogonal" => Ok(RotationKind::Orthogonal),
            other => Err(Error::InvalidOption {
                option: "rotation",
                value: other.to_string(),
                expected: "`hadamard` or `orthogonal`",
            }),
        }
    }
}

impl std::fmt::Display for RotationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RotationKind::Hadamard => "hadamard",
            RotationKind::Orthogonal => "orthogonal",
        })
    }
}

/// An orthogonal rotation `Q`: a [`RandomHadamard`] or a dense orthogonal
/// matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// `D H / √n`, applied by the fast transform.
    Hadamard(RandomHadamard),
    /// A dense orthogonal matrix, applied by a matrix product.
    Dense(Array2<f64>),
}

impl Rotation {
    /// The rotation of `kind` and order `n` for `seed`.
    ///
    /// # Errors
    /// [`Error::NoHadamard`] for [`RotationKind::Hadamard`] and an order
    /// without a construction.
    pub fn new(kind: RotationKind, n: usize, seed: u64) -> Result<Self> {
        Ok(match kind {
            RotationKind::Hadamard => Rotation::Hadamard(RandomHadamard::new(n, seed)?),
            RotationKind::Orthogonal => Rotation::Dense(random_orthogonal(n, seed)?),
        })
    }

    /// The order `n`.
    pub fn order(&self) -> usize {
        match self {
            Rotation::Hadamard(h) => h.order(),
            Rotation::Dense(q) => q.nrows(),
        }
    }

    /// Replaces every row `x` of `m` by `x Q`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `m` does not have `n` columns.
    pub fn apply<T: Real>(&self, m: ArrayViewMut2<'_, T>) -> Result<()> {
        match self {
            Rotation::Hadamard(h) => h.apply(m),
            Rotation::Dense(q) => dense_apply(q, m, false),
        }
    }

    /// Replaces every row `x` of `m` by `x Qᵀ`.
    ///
    /// # Errors
    /// [`Error::Shape`] when `m` does not have `n` columns.
    pub fn apply_transpose<T: Real>(&self, m: ArrayViewMut2<'_, T>) -> Result<()> {
        match self {
            Rotation::Hadamard(h) => h.apply_transpose(m),
            Rotation::Dense(q) => dense_apply(q, m, true),
        }
    }

    /// The dense `n × n` matrix `Q`.
    pub fn to_matrix<T: Real>(&self) -> Array2<T> {
        match self {
            Rotation::Hadamard(h) => h.to_matrix(),
            Rotation::Dense(q) => q.mapv(T::of),
        }
    }
}

/// `m ← m Q` (or `m Qᵀ`) through faer's GEMM.
fn dense_apply<T: Real>(
    q: &Array2<f64>,
    mut m: ArrayViewMut2<'_, T>,
    transpose: bool,
) -> Result<()> {
    let n = q.nrows();
    if m.ncols() != n {
        return Err(Error::Shape {
            what: "rotated matrix",
            expected: vec![m.nrows(), n],
            actual: m.shape().to_vec(),
        });
    }
    let qt = q.mapv(T::of);
    let rhs = if transpose { qt.t() } else { qt.view() };
    let out = linalg::matmul(m.view(), rhs)?;
    m.assign(&out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        (a - b).iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    fn identity_error(q: &Array2<f64>) -> f64 {
        max_abs_diff(&q.dot(&q.t()), &Array2::eye(q.nrows()))
    }

    #[test]
    fn random_hadamard_is_orthogonal_with_flat_entries() {
        for n in [1usize, 2, 12, 64, 576, 1536] {
            let q = RandomHadamard::new(n, 9).unwrap();
            let m = q.to_matrix::<f64>();
            assert!(identity_error(&m) < 1e-12, "n = {n}");
            let flat = 1.0 / (n as f64).sqrt();
            assert!(m.iter().all(|v| (v.abs() - flat).abs() < 1e-12));
            // f32 too, within 1e-5.
            let m32 = q.to_matrix::<f32>().mapv(f64::from);
            assert!(identity_error(&m32) < 1e-5, "n = {n}");
        }
    }

    #[test]
    fn signs_come_before_the_hadamard_matrix() {
        let q = RandomHadamard::new(12, 4).unwrap();
        let h = q.hadamard().to_matrix::<f64>();
        let d = Array2::from_diag(&ndarray::Array1::from_iter(
            q.signs().into_iter().map(f64::from),
        ));
        let want = d.dot(&h) / 12f64.sqrt();
        assert!(max_abs_diff(&q.to_matrix(), &want) < 1e-12);
    }

    #[test]
    fn same_seed_same_rotation_and_seeds_differ() {
        let a = RandomHadamard::new(576, 1).unwrap();
        assert_eq!(a, RandomHadamard::new(576, 1).unwrap());
        assert_eq!(a.seed(), 1);
        let b = RandomHadamard::new(576, 2).unwrap();
        assert_ne!(a.signs(), b.signs());
        let (x, y) = (
            random_orthogonal(20, 1).unwrap(),
            random_orthogonal(20, 1).unwrap(),
        );
        assert_eq!(x, y);
        assert_ne!(x, random_orthogonal(20, 2).unwrap());
    }

    #[test]
    fn random_orthogonal_is_orthogonal_at_every_order() {
        for n in [1usize, 3, 7, 36, 100] {
            let q = random_orthogonal(n, 5).unwrap();
            assert_eq!(q.dim(), (n, n));
            assert!(identity_error(&q) < 1e-12, "n = {n}");
        }
        // Haar with R's diagonal positive: no systematic sign on the diagonal.
        let q = random_orthogonal(200, 3).unwrap();
        let positive = q.diag().iter().filter(|&&v| v > 0.0).count();
        assert!((60..=140).contains(&positive), "{positive}");
    }

    #[test]
    fn kinds_parse_and_build() {
        assert_eq!(
            "hadamard".parse::<RotationKind>().unwrap(),
            RotationKind::Hadamard
        );
        assert_eq!(
            "orthogonal".parse::<RotationKind>().unwrap(),
            RotationKind::Orthogonal
        );
        assert!(matches!(
            "givens".parse::<RotationKind>(),
            Err(Error::InvalidOption {
                option: "rotation",
                ..
            })
        ));
        assert_eq!(RotationKind::Orthogonal.to_string(), "orthogonal");
        assert_eq!(
            Rotation::new(RotationKind::Hadamard, 36, 0).unwrap_err(),
            Error::NoHadamard { n: 36 }
        );
        let r = Rotation::new(RotationKind::Orthogonal, 36, 0).unwrap();
        assert_eq!(r.order(), 36);
        let mut rng = SeededRng::new(8);
        let x = rng.array_normal((5, 36));
        let mut y = x.clone();
        r.apply(y.view_mut()).unwrap();
        let q = r.to_matrix::<f32>();
        assert!((&y - &x.dot(&q)).iter().all(|d| d.abs() < 1e-5));
        r.apply_transpose(y.view_mut()).unwrap();
        assert!((&y - &x).iter().all(|d| d.abs() < 1e-5));
        let mut bad = Array2::<f64>::zeros((1, 35));
        assert!(matches!(r.apply(bad.view_mut()), Err(Error::Shape { .. })));
    }

    /// Orders `2^a · Π p_i` for up to two Paley orders `p_i`, at most 1536
    /// (the dense reference is `O(n²)` per row).
    fn order() -> impl Strategy<Value = usize> {
        let paley = prop::sample::select(vec![1usize, 12, 20, 24, 44]);
        (0u32..6, paley.clone(), paley)
            .prop_map(|(a, p, r)| (1usize << a) * p * r)
            .prop_filter("small enough for a dense reference", |&n| n <= 1536)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn fast_apply_matches_the_dense_product(
            n in order(),
            rows in 1usize..4,
            seed in any::<u64>(),
        ) {
            let q = RandomHadamard::new(n, seed).unwrap();
            let dense = q.to_matrix::<f64>();
            if n <= 256 {
                prop_assert!(identity_error(&dense) < 1e-10);
            }
            let mut rng = SeededRng::new(seed ^ 1);
            let x = rng.array_normal((rows, n)).mapv(f64::from);
            let mut y = x.clone();
            q.apply(y.view_mut()).unwrap();
            prop_assert!(max_abs_diff(&y, &x.dot(&dense)) < 1e-10);
            let mut z = x.clone();
            q.apply_transpose(z.view_mut()).unwrap();
            prop_assert!(max_abs_diff(&z, &x.dot(&dense.t())) < 1e-10);
            // f32 rows: norms kept within f32 rounding.
            let mut x32 = x.mapv(|v| v as f32);
            q.apply(x32.view_mut()).unwrap();
            prop_assert!(max_abs_diff(&x32.mapv(f64::from), &y) < 1e-4);
        }
    }
}
