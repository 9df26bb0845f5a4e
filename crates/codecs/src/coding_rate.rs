//! Coding rate of a representation: the rate-distortion measure of
//! maximal coding rate reduction (MCR², Yu et al., 2020) that CRATE
//! (*White-Box Transformers via Sparse Rate Reduction: Compression Is All
//! There Is?*, `papers.txt`) optimises layer by layer.
//!
//! For `n` feature vectors of dimension `d`, the columns of `Z ∈ ℝ^{d×n}`,
//!
//! ```text
//! R(Z, ε) = ½ log det(I_d + d/(n ε²) Z Zᵀ)
//! ```
//!
//! in nats (divide by `ln 2` for bits): about the number of nats needed to
//! code the vectors up to a distortion `ε²`, for Gaussian data. Following
//! the workspace's `[tokens, features]` convention, the functions here take
//! the vectors as the **rows** of an `[n, d]` matrix `X = Zᵀ`, so
//! `Z Zᵀ = Xᵀ X`.
//!
//! The log-determinant is computed in f64 by Cholesky (`log det A = 2 Σ log
//! Lᵢᵢ`, exact for the symmetric positive definite `I + a XᵀX`), on the
//! smaller of the `d × d` and `n × n` Gram matrices (Sylvester's identity
//! `det(I + a XᵀX) = det(I + a XXᵀ)`).
//!
//! ```
//! use ndarray::Array2;
//! use tensorpress_codecs::coding_rate::coding_rate;
//!
//! // n = 4 orthonormal rows in d = 4: Z Zᵀ = I, R = d/2 · log(1 + d/(n ε²)).
//! let x = Array2::<f32>::eye(4);
//! let r = coding_rate(x.view(), 0.5)?;
//! assert!((r - 2.0 * (1.0f64 + 4.0).ln()).abs() < 1e-12);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

use ndarray::{Array2, ArrayView2};
use tensorpress_tensor::linalg::{cholesky, gram};

use crate::{Error, Result};

fn check(op: &'static str, x: &ArrayView2<'_, f32>, eps: f64) -> Result<()> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::ParameterOutOfRange {
            op,
            name: "eps",
            value: eps,
            range: "(0, ∞)".into(),
        });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { op, index });
    }
    Ok(())
}

/// `log det(I + a G)` for a symmetric positive semi-definite `G`, by Cholesky.
fn logdet_identity_plus(g: Array2<f64>, a: f64) -> Result<f64> {
    let mut m = g * a;
    for i in 0..m.nrows() {
        m[[i, i]] += 1.0;
    }
    let l = cholesky(m.view())?;
    Ok(2.0 * l.diag().iter().map(|v| v.ln()).sum::<f64>())
}

/// `½ log det(I + scale · XᵀX)` with the cheaper Gram matrix.
fn half_logdet(x: ArrayView2<'_, f32>, scale: f64) -> Result<f64> {
    let x64 = x.mapv(f64::from);
    let g = if x.nrows() < x.ncols() {
        gram(x64.t())
    } else {
        gram(x64.view())
    };
    Ok(0.5 * logdet_identity_plus(g, scale)?)
}

/// The coding rate `R(Z, ε)` of the rows of `x` (`[n, d]`), in nats; 0 for
/// no rows.
///
/// # Errors
/// [`Error::ParameterOutOfRange`] unless `ε` is positive and finite;
/// [`Error::NonFinite`]; [`Error::Tensor`] if the Cholesky factorization
/// fails (only for overflowing inputs).
pub fn coding_rate(x: ArrayView2<'_, f32>, eps: f64) -> Result<f64> {
    check("coding_rate", &x, eps)?;
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Ok(0.0);
    }
    half_logdet(x, d as f64 / (n as f64 * eps * eps))
}

/// Coding rates of a representation partitioned into groups (classes,
/// clusters), the terms of the rate reduction.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GroupRates {
    /// `R(Z, ε)` of all rows together (the expansion term).
    pub total: f64,
    /// `R(Z_j, ε)` of each group's rows alone, by group id (0 for an empty group).
    pub per_group: Vec<f64>,
    /// Rows in each group.
    pub counts: Vec<usize>,
    /// The compression term `R_c = Σ_j (n_j / n) R(Z_j, ε)`: the rate of
    /// coding each group on its own, weighted by its share of the rows.
    pub compressed: f64,
    /// The rate reduction `ΔR = R − R_c` (MCR²'s objective; non-negative).
    pub reduction: f64,
}

/// Coding rate of all rows, of each group and the rate reduction, for the
/// hard partition `groups[i]` = group of row `i` (ids `0..max+1`).
///
/// This is MCR²'s `R_c(Z, ε | Π) = Σ_j tr(Π_j)/(2n) log det(I + d/(tr(Π_j) ε²)
/// Z Π_j Zᵀ)` with 0/1 memberships.
///
/// ```
/// use ndarray::array;
/// use tensorpress_codecs::coding_rate::coding_rate_groups;
///
/// // Two groups on orthogonal axes: coding them apart saves rate.
/// let x = array![[1.0f32, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, -1.5]];
/// let g = coding_rate_groups(x.view(), &[0, 0, 1, 1], 0.1)?;
/// assert_eq!(g.counts, vec![2, 2]);
/// assert!(g.reduction > 0.0);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
///
/// # Errors
/// As [`coding_rate`]; [`Error::ShapeMismatch`] when `groups` is not one id per row.
pub fn coding_rate_groups(
    x: ArrayView2<'_, f32>,
    groups: &[usize],
    eps: f64,
) -> Result<GroupRates> {
    check("coding_rate_groups", &x, eps)?;
    let (n, d) = x.dim();
    if groups.len() != n {
        return Err(Error::ShapeMismatch {
            op: "coding_rate_groups",
            lhs: vec![n],
            rhs: vec![groups.len()],
        });
    }
    let total = coding_rate(x, eps)?;
    let ngroups = groups.iter().max().map_or(0, |&g| g + 1);
    let mut counts = vec![0usize; ngroups];
    for &g in groups {
        counts[g] += 1;
    }
    let mut per_group = vec![0.0; ngroups];
    let mut compressed = 0.0;
    for (j, &nj) in counts.iter().enumerate() {
        if nj == 0 {
            continue;
        }
        let rows: Vec<usize> = (0..n).filter(|&i| groups[i] == j).collect();
        let xj = x.select(ndarray::Axis(0), &rows);
        // Each group is coded at the same per-vector distortion: d/(n_j ε²).
        let r = if d == 0 {
            0.0
        } else {
            half_logdet(xj.view(), d as f64 / (nj as f64 * eps * eps))?
        };
        per_group[j] = r;
        compressed += nj as f64 / n as f64 * r;
    }
    Ok(GroupRates {
        total,
        per_group,
        counts,
        compressed,
        reduction: total - compressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;
    use tensorpress_tensor::linalg::qr;
    use tensorpress_tensor::SeededRng;

    /// Rows `c·Q` with orthonormal columns of `Q` (`[n, d]`, n ≥ d):
    /// `XᵀX = c² I`, so `R = d/2 · log(1 + d c²/(n ε²))`.
    #[test]
    fn orthogonal_closed_form() {
        for (n, d) in [(8, 3), (20, 20), (50, 7)] {
            let g = SeededRng::new(n as u64)
                .array_normal((n, d))
                .mapv(f64::from);
            let q = qr(g.view()).unwrap().q;
            let c = 1.7f64;
            let x = q.mapv(|v| (c * v) as f32);
            let eps = 0.3;
            let want = d as f64 / 2.0 * (1.0 + d as f64 * c * c / (n as f64 * eps * eps)).ln();
            let got = coding_rate(x.view(), eps).unwrap();
            assert!((got - want).abs() < 1e-5 * want, "{n}×{d}: {got} vs {want}");
        }
    }

    #[test]
    fn rank_one_and_zero_and_empty() {
        // X = u vᵀ: one non-zero eigenvalue ‖X‖²_F.
        let u = SeededRng::new(1).array_normal((10, 1));
        let v = SeededRng::new(2).array_normal((1, 30));
        let x = u.dot(&v);
        let f2: f64 = x.iter().map(|&a| f64::from(a) * f64::from(a)).sum();
        let want = 0.5 * (1.0 + 30.0 / (10.0 * 0.01) * f2).ln();
        let got = coding_rate(x.view(), 0.1).unwrap();
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        assert_eq!(
            coding_rate(Array2::<f32>::zeros((5, 4)).view(), 1.0).unwrap(),
            0.0
        );
        assert_eq!(
            coding_rate(Array2::<f32>::zeros((0, 4)).view(), 1.0).unwrap(),
            0.0
        );
    }

    #[test]
    fn errors() {
        let x = Array2::<f32>::eye(3);
        for eps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                coding_rate(x.view(), eps),
                Err(Error::ParameterOutOfRange { name: "eps", .. })
            ));
        }
        let mut y = x.clone();
        y[[2, 1]] = f32::INFINITY;
        assert!(matches!(
            coding_rate(y.view(), 1.0),
            Err(Error::NonFinite { index: 7, .. })
        ));
        assert!(matches!(
            coding_rate_groups(x.view(), &[0, 1], 1.0),
            Err(Error::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn groups() {
        let x = SeededRng::new(3).array_normal((30, 6));
        // One group: no reduction.
        let one = coding_rate_groups(x.view(), &[0; 30], 0.5).unwrap();
        assert!((one.total - one.compressed).abs() < 1e-12 && one.reduction.abs() < 1e-12);
        // Two groups on orthogonal coordinate subspaces: a large reduction;
        // each group's rate is the rate of its rows alone.
        let mut y = Array2::<f32>::zeros((30, 6));
        let mut ids = vec![0usize; 30];
        for i in 0..30 {
            let g = i % 2;
            ids[i] = g;
            for j in 0..3 {
                y[[i, 3 * g + j]] = x[[i, j]];
            }
        }
        let two = coding_rate_groups(y.view(), &ids, 0.5).unwrap();
        assert_eq!(two.counts, vec![15, 15]);
        let rows0: Vec<usize> = (0..30).step_by(2).collect();
        let alone = coding_rate(y.select(ndarray::Axis(0), &rows0).view(), 0.5).unwrap();
        assert!((two.per_group[0] - alone).abs() < 1e-9);
        assert!(two.reduction > 0.2 * two.total, "{two:?}");
        // An unused id counts as an empty group.
        let gaps = coding_rate_groups(
            y.view(),
            &ids.iter().map(|g| 2 * g).collect::<Vec<_>>(),
            0.5,
        )
        .unwrap();
        assert_eq!(gaps.counts, vec![15, 0, 15]);
        assert!((gaps.reduction - two.reduction).abs() < 1e-12);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The n×n (Sylvester) and d×d paths agree; R grows as ε shrinks; the
        /// reduction of any partition is non-negative (concavity of log det).
        #[test]
        fn invariants(seed in 0u64..1000, n in 1usize..20, d in 1usize..20, parts in 1usize..4) {
            let x = SeededRng::new(seed).array_normal((n, d));
            let a = coding_rate(x.view(), 0.5).unwrap();
            // Same rate through the other Gram matrix, computed explicitly.
            let x64 = x.mapv(f64::from);
            let big = if n < d { gram(x64.view()) } else { gram(x64.t()) };
            let b = 0.5 * logdet_identity_plus(big, d as f64 / (n as f64 * 0.25)).unwrap();
            prop_assert!((a - b).abs() <= 1e-8 * (1.0 + a.abs()));
            prop_assert!(coding_rate(x.view(), 0.25).unwrap() > a);
            let ids: Vec<usize> = (0..n).map(|i| i % parts).collect();
            let g = coding_rate_groups(x.view(), &ids, 0.5).unwrap();
            prop_assert!(g.reduction >= -1e-9, "{:?}", g);
        }
    }
}
