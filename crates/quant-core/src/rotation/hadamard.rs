//! Hadamard matrices as Kronecker products of Sylvester and Paley factors,
//! and the fast transform that multiplies by one factor at a time.

use ndarray::{Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use tensorpress_tensor::linalg::Real;

use crate::{Error, Result};

/// One Kronecker factor of a [`Hadamard`] matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HadamardFactor {
    /// Sylvester's `H_{2^k} = H_2 ⊗ … ⊗ H_2` with `H_2 = [[1, 1], [1, −1]]`
    /// (symmetric), multiplied by the `k`-stage butterfly of the fast
    /// Walsh–Hadamard transform.
    Sylvester {
        /// `k`, the order's base-2 logarithm.
        log2: u32,
    },
    /// Paley's construction I of order `q + 1`, for a prime `q ≡ 3 (mod 4)`:
    /// `H = I + S` with `S = [[0, 1ᵀ], [−1, C]]` and `C[i][j] = χ(j − i)`, `χ`
    /// the quadratic character mod `q` (Paley, 1933). Orders 12, 20, 24, 44,
    /// 48, 60, 68, 72, 80, 84, …
    Paley {
        /// The prime `q`.
        q: usize,
    },
}

impl HadamardFactor {
    /// The factor's order.
    pub fn order(&self) -> usize {
        match *self {
            HadamardFactor::Sylvester { log2 } => 1usize << log2,
            HadamardFactor::Paley { q } => q + 1,
        }
    }

    /// What multiplying a row by this factor costs, in additions per element.
    fn cost(&self) -> usize {
        match *self {
            HadamardFactor::Sylvester { log2 } => log2 as usize,
            HadamardFactor::Paley { q } => q + 1,
        }
    }
}

/// A Hadamard matrix `H` of order `n` (entries ±1, `H Hᵀ = n I`), held as the
/// Kronecker product of its [`HadamardFactor`]s, so that `x ↦ x H` costs
/// `O(n · Σ factor costs)` instead of `O(n²)`.
///
/// [`Hadamard::new`] factors `n = 2^k · Π (q_i + 1)` with primes
/// `q_i ≡ 3 (mod 4)`, choosing among the factorizations the one with the
/// cheapest transform: `576 = 12 · 12 · 4`, `1536 = 12 · 128`,
/// `5120 = 20 · 256`.
///
/// ```
/// use tensorpress_quant_core::rotation::{Hadamard, HadamardFactor};
///
/// let h = Hadamard::new(576)?;
/// assert_eq!(
///     h.factors(),
///     &[
///         HadamardFactor::Paley { q: 11 },
///         HadamardFactor::Paley { q: 11 },
///         HadamardFactor::Sylvester { log2: 2 },
///     ]
/// );
/// let m = h.to_matrix::<f64>();
/// let g = m.dot(&m.t());
/// assert!(g.indexed_iter().all(|((i, j), &v)| v == if i == j { 576.0 } else { 0.0 }));
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hadamard {
    n: usize,
    factors: Vec<HadamardFactor>,
    /// Entries of each Paley factor, row-major, `±1`; empty for Sylvester ones.
    dense: Vec<Vec<i8>>,
}

impl Hadamard {
    /// The Hadamard matrix of order `n` built from the cheapest known
    /// factorization.
    ///
    /// # Errors
    /// [`Error::NoHadamard`] when `n` is not `2^k · Π (q_i + 1)` with primes
    /// `q_i ≡ 3 (mod 4)` (e.g. any `n` that is not 1, 2 or a multiple of 4;
    /// or 36, 52, 92: Hadamard matrices of those orders exist, but not from
    /// these constructions). [`random_orthogonal`](super::random_orthogonal)
    /// covers every order.
    pub fn new(n: usize) -> Result<Self> {
        let (_, factors) = cheapest(n).ok_or(Error::NoHadamard { n })?;
        let dense = factors
            .iter()
            .map(|f| match *f {
                HadamardFactor::Sylvester { .. } => Vec::new(),
                HadamardFactor::Paley { q } => paley(q),
            })
            .collect();
        Ok(Hadamard { n, factors, dense })
    }

    /// The order `n`.
    pub fn order(&self) -> usize {
        self.n
    }

    /// The Kronecker factors, outermost first: `H = F_0 ⊗ F_1 ⊗ …`. Order 1
    /// has none.
    pub fn factors(&self) -> &[HadamardFactor] {
        &self.factors
    }

    /// The dense `n × n` matrix of ±1 entries.
    pub fn to_matrix<T: Real>(&self) -> Array2<T> {
        let mut m = Array2::<T>::eye(self.n);
        let mut scratch = vec![T::zero(); self.n];
        for mut row in m.axis_iter_mut(Axis(0)) {
            if let Some(row) = row.as_slice_mut() {
                self.apply_row(row, &mut scratch, false);
            }
        }
        m
    }

    /// Replaces every row `x` of `m` by `x H` (`transpose == false`) or
    /// `x Hᵀ`, in parallel over rows.
    ///
    /// # Errors
    /// [`Error::Shape`] when `m` does not have `n` columns.
    pub fn apply_rows<T: Real>(&self, m: ArrayViewMut2<'_, T>, transpose: bool) -> Result<()> {
        self.for_each_row(m, |row, scratch| self.apply_row(row, scratch, transpose))
    }

    /// Runs `f(row, scratch)` on a contiguous copy of every row of `m`, in
    /// parallel, and writes the rows back.
    pub(super) fn for_each_row<T: Real>(
        &self,
        mut m: ArrayViewMut2<'_, T>,
        f: impl Fn(&mut [T], &mut [T]) + Sync,
    ) -> Result<()> {
        let n = self.n;
        if m.ncols() != n {
            return Err(Error::Shape {
                what: "rotated matrix",
                expected: vec![m.nrows(), n],
                actual: m.shape().to_vec(),
            });
        }
        m.axis_iter_mut(Axis(0)).into_par_iter().for_each_init(
            || (vec![T::zero(); n], vec![T::zero(); n]),
            |(buf, scratch), mut row| match row.as_slice_mut() {
                Some(slice) => f(slice, scratch),
                None => {
                    for (b, &v) in buf.iter_mut().zip(row.iter()) {
                        *b = v;
                    }
                    f(buf, scratch);
                    for (v, &b) in row.iter_mut().zip(buf.iter()) {
                        *v = b;
                    }
                }
            },
        );
        Ok(())
    }

    /// `x ← x H` (or `x Hᵀ`) for one row of length `n`; `scratch` is `n` long.
    pub(super) fn apply_row<T: Real>(&self, x: &mut [T], scratch: &mut [T], transpose: bool) {
        debug_assert_eq!(x.len(), self.n);
        // Row index i = (i_0, i_1, …) in row-major order: factor f acts on
        // digit i_f, whose stride is the product of the later factors' orders.
        let mut inner = self.n;
        for (factor, dense) in self.factors.iter().zip(&self.dense) {
            let m = factor.order();
            inner /= m;
            match *factor {
                HadamardFactor::Sylvester { .. } => butterfly(x, m, inner),
                HadamardFactor::Paley { .. } => {
                    dense_mode(x, scratch, dense, m, inner, transpose);
                    x.copy_from_slice(scratch);
                }
            }
        }
    }
}

/// The fast Walsh–Hadamard transform along a digit of order `m = 2^k` whose
/// stride is `inner`: `x[o, i, t] ← Σ_j x[o, j, t] H_m[j, i]`.
fn butterfly<T: Real>(x: &mut [T], m: usize, inner: usize) {
    let block = m * inner;
    let mut h = 1;
    while h < m {
        for outer in x.chunks_exact_mut(block) {
            for pair in outer.chunks_exact_mut(2 * h * inner) {
                let (lo, hi) = pair.split_at_mut(h * inner);
                for (a, b) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (u, v) = (*a, *b);
                    *a = u + v;
                    *b = u - v;
                }
            }
        }
        h *= 2;
    }
}

/// `out[o, j, t] = Σ_i x[o, i, t] F[i, j]` (or `F[j, i]` when transposed) for
/// a dense `±1` factor `F` of order `m` acting on a digit of stride `inner`.
fn dense_mode<T: Real>(x: &[T], out: &mut [T], f: &[i8], m: usize, inner: usize, transpose: bool) {
    let block = m * inner;
    for (src, dst) in x.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
        for (j, acc) in dst.chunks_exact_mut(inner).enumerate() {
            acc.fill(T::zero());
            for (i, s) in src.chunks_exact(inner).enumerate() {
                let sign = if transpose {
                    f[j * m + i]
                } else {
                    f[i * m + j]
                };
                if sign > 0 {
                    acc.iter_mut().zip(s).for_each(|(a, &v)| *a += v);
                } else {
                    acc.iter_mut().zip(s).for_each(|(a, &v)| *a -= v);
                }
            }
        }
    }
}

/// Paley I of order `q + 1` (`q` prime, `≡ 3 mod 4`), row-major ±1 entries.
fn paley(q: usize) -> Vec<i8> {
    let mut residue = vec![false; q];
    for x in 1..q {
        residue[x * x % q] = true;
    }
    let chi = |a: usize| -> i8 {
        match a % q {
            0 => 0,
            a if residue[a] => 1,
            _ => -1,
        }
    };
    let m = q + 1;
    let mut h = vec![0i8; m * m];
    for i in 0..m {
        for j in 0..m {
            // H = I + S, S = [[0, 1ᵀ], [−1, C]], C[i][j] = χ(j − i).
            h[i * m + j] = match (i, j) {
                (0, _) => 1,
                (_, 0) => -1,
                (i, j) if i == j => 1,
                (i, j) => chi(j + q - i),
            };
        }
    }
    h
}

fn is_prime(p: usize) -> bool {
    if p < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= p {
        if p.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The cheapest factorization of `n` into a power of two and Paley orders,
/// with its transform cost, or `None` when there is none.
fn cheapest(n: usize) -> Option<(usize, Vec<HadamardFactor>)> {
    if n == 0 {
        return None;
    }
    if n.is_power_of_two() {
        let log2 = n.trailing_zeros();
        let factors = if log2 == 0 {
            Vec::new()
        } else {
            vec![HadamardFactor::Sylvester { log2 }]
        };
        return Some((log2 as usize, factors));
    }
    let mut best: Option<(usize, Vec<HadamardFactor>)> = None;
    // Paley orders q + 1 are multiples of 4; the powers of two among them are
    // left to Sylvester, which is cheaper.
    for p in (12..=n).step_by(4) {
        if !n.is_multiple_of(p) || p.is_power_of_two() || !is_prime(p - 1) {
            continue;
        }
        if let Some((cost, rest)) = cheapest(n / p) {
            let factor = HadamardFactor::Paley { q: p - 1 };
            let cost = cost + factor.cost();
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                let mut factors = vec![factor];
                factors.extend(rest);
                best = Some((cost, factors));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gram_is_n_identity(h: &Hadamard) -> bool {
        let m = h.to_matrix::<f64>();
        let n = h.order() as f64;
        m.iter().all(|&v| v == 1.0 || v == -1.0)
            && m.dot(&m.t())
                .indexed_iter()
                .all(|((i, j), &v)| v == if i == j { n } else { 0.0 })
    }

    #[test]
    fn paley_factors_are_hadamard() {
        for q in [3usize, 7, 11, 19, 23, 31, 43, 47, 59, 67, 71, 79, 83] {
            let m = q + 1;
            let h = paley(q);
            for a in 0..m {
                for b in 0..m {
                    let dot: i64 = (0..m)
                        .map(|k| i64::from(h[a * m + k]) * i64::from(h[b * m + k]))
                        .sum();
                    assert_eq!(dot, if a == b { m as i64 } else { 0 }, "q {q}");
                }
            }
        }
    }

    #[test]
    fn orders_with_a_construction_are_hadamard() {
        for n in [
            1usize, 2, 4, 8, 12, 20, 24, 40, 44, 48, 96, 144, 240, 288, 576,
        ] {
            let h = Hadamard::new(n).unwrap();
            assert_eq!(h.factors().iter().map(|f| f.order()).product::<usize>(), n);
            assert!(gram_is_n_identity(&h), "n = {n}");
        }
    }

    #[test]
    fn smollm2_sizes_factor_cheaply() {
        let h = Hadamard::new(1536).unwrap();
        assert_eq!(
            h.factors(),
            &[
                HadamardFactor::Paley { q: 11 },
                HadamardFactor::Sylvester { log2: 7 }
            ]
        );
        assert!(gram_is_n_identity(&h));
        assert_eq!(
            Hadamard::new(5120).unwrap().factors(),
            &[
                HadamardFactor::Paley { q: 19 },
                HadamardFactor::Sylvester { log2: 8 }
            ]
        );
    }

    #[test]
    fn orders_without_a_construction_are_typed_errors() {
        for n in [0usize, 3, 6, 10, 36, 52, 92, 100] {
            assert_eq!(Hadamard::new(n).unwrap_err(), Error::NoHadamard { n });
        }
    }

    #[test]
    fn transpose_applies_the_transposed_matrix() {
        let h = Hadamard::new(48).unwrap();
        let dense = h.to_matrix::<f64>();
        let mut rng = tensorpress_tensor::SeededRng::new(3);
        let x = rng.array_normal((3, 48)).mapv(f64::from);
        let mut y = x.clone();
        h.apply_rows(y.view_mut(), true).unwrap();
        let want = x.dot(&dense.t());
        assert!((&y - &want).iter().all(|d| d.abs() < 1e-9));
        // Column views (strided rows) go through a copy.
        let mut t = x.t().to_owned();
        let mut tv = t.view_mut().reversed_axes();
        h.apply_rows(tv.view_mut(), false).unwrap();
        assert!((&tv.to_owned() - &x.dot(&dense))
            .iter()
            .all(|d| d.abs() < 1e-9));
        let mut bad = Array2::<f32>::zeros((2, 47));
        assert!(matches!(
            h.apply_rows(bad.view_mut(), false),
            Err(Error::Shape { .. })
        ));
    }
}
