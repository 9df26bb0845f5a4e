//! Tensor-train (matrix-product-operator) decomposition of a weight matrix.
//!
//! An `[out, in]` matrix with `out = Π o_k` and `in = Π i_k` is read as a tensor
//! with indices `(o_1, …, o_d, i_1, …, i_d)` (row-major: `o_1` and `i_1` are the
//! most significant digits of the row and column), regrouped as
//! `(o_1 i_1, o_2 i_2, …, o_d i_d)` and split into cores `G_k` of shape
//! `[r_{k−1}, o_k, i_k, r_k]` (`r_0 = r_d = 1`) so that
//!
//! `W[(o_1…o_d), (i_1…i_d)] = G_1[:, o_1, i_1, :] · G_2[:, o_2, i_2, :] ⋯ G_d[:, o_d, i_d, :]`.
//!
//! The cores come from sequential truncated SVDs (TT-SVD: I. V. Oseledets,
//! *Tensor-Train Decomposition*, SIAM J. Sci. Comput. 33(5), 2011), each bond
//! capped at `max_bond`. CompactifAI (Tomut et al., *CompactifAI: Extreme
//! Compression of Large Language Models using Quantum-Inspired Tensor
//! Networks*, arXiv:2401.14109, 2024) compresses LLM layers this way.

use ndarray::{Array2, Array4, ArrayView2, IxDyn};
use tensorpress_tensor::linalg;

use crate::error::check_finite;
use crate::{reconstruction_error, Error, Result};

/// A matrix-product operator: cores `[r_{k−1}, o_k, i_k, r_k]` whose
/// contraction approximates an `[out, in]` matrix. Built by [`tensor_train`].
#[derive(Debug, Clone)]
pub struct TensorTrain {
    cores: Vec<Array4<f32>>,
    out_modes: Vec<usize>,
    in_modes: Vec<usize>,
    /// Σ over the SVD steps of the squared singular values dropped, in f64.
    discarded: f64,
    /// `‖W‖_F²` of the decomposed matrix.
    total_energy: f64,
}

/// Decomposes the `[out, in]` matrix `w` into a tensor train with
/// `in_modes` (`Π = in`) and `out_modes` (`Π = out`), one core per mode pair,
/// every bond dimension at most `max_bond` (`usize::MAX` for none: then the
/// contraction reproduces `w` up to rounding).
///
/// Step `k` reshapes the remainder to `[r_{k−1} · o_k · i_k, rest]`, takes its
/// thin SVD, keeps `r_k = min(max_bond, rank bound)` triplets as core `G_k`
/// (`U`) and carries `Σ Vᵀ` on. The squared error is at most the sum of the
/// squared singular values dropped at every step (Oseledets 2011, Thm. 2.2),
/// see [`TensorTrain::error_bound`].
///
/// ```
/// use tensorpress_lowrank::tensor_train;
/// use tensorpress_tensor::SeededRng;
///
/// let w = SeededRng::new(0).array_normal((24, 30)); // 24 = 2·3·4, 30 = 5·3·2
/// let tt = tensor_train(w.view(), &[5, 3, 2], &[2, 3, 4], usize::MAX)?;
/// assert_eq!(tt.cores()[1].dim(), (10, 3, 3, 8));
/// assert!(tt.relative_error(w.view())? < 1e-5);
/// let small = tensor_train(w.view(), &[5, 3, 2], &[2, 3, 4], 4)?;
/// assert!(small.params() < w.len());
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::ZeroBond`] for `max_bond == 0`; [`Error::InvalidModes`] when the
/// mode lists differ in length, are empty, hold a 0, or their products are not
/// `in` and `out`; [`Error::NonFinite`] for a NaN or infinity in `w`; a
/// tensor-layer error when an SVD does not converge.
pub fn tensor_train(
    w: ArrayView2<'_, f32>,
    in_modes: &[usize],
    out_modes: &[usize],
    max_bond: usize,
) -> Result<TensorTrain> {
    if max_bond == 0 {
        return Err(Error::ZeroBond);
    }
    let (rows, cols) = w.dim();
    let product = |m: &[usize]| {
        m.iter()
            .try_fold(1usize, |acc, &x| acc.checked_mul(x))
            .unwrap_or(0)
    };
    if in_modes.len() != out_modes.len()
        || in_modes.is_empty()
        || in_modes.contains(&0)
        || out_modes.contains(&0)
        || product(out_modes) != rows
        || product(in_modes) != cols
    {
        return Err(Error::InvalidModes {
            out_modes: out_modes.to_vec(),
            in_modes: in_modes.to_vec(),
            rows,
            cols,
        });
    }
    check_finite("tensor_train", w)?;
    let d = in_modes.len();
    let total_energy = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();

    // (o_1…o_d, i_1…i_d) → (o_1, i_1, …, o_d, i_d), row-major.
    let mut dims = out_modes.to_vec();
    dims.extend_from_slice(in_modes);
    let perm: Vec<usize> = (0..d).flat_map(|k| [k, d + k]).collect();
    let standard = w.as_standard_layout();
    let tensor = standard
        .view()
        .into_shape_with_order(IxDyn(&dims))
        .expect("a standard-layout matrix reshapes to its mode product");
    let interleaved = tensor.permuted_axes(IxDyn(&perm));
    let mut rest: Vec<f32> = interleaved.iter().copied().collect();

    let mut cores = Vec::with_capacity(d);
    let mut discarded = 0.0f64;
    let mut bond = 1usize;
    for k in 0..d {
        let (o, i) = (out_modes[k], in_modes[k]);
        let m = bond * o * i;
        if k + 1 == d {
            let core = Array4::from_shape_vec((bond, o, i, 1), rest)
                .expect("the last remainder is [r, o_d·i_d]");
            cores.push(core);
            break;
        }
        let n = rest.len() / m;
        let mat = Array2::from_shape_vec((m, n), rest).expect("remainder is [r·o·i, rest]");
        let svd = linalg::svd(mat.view())?;
        let next = max_bond.min(svd.s.len());
        discarded += svd
            .s
            .iter()
            .skip(next)
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>();
        let u = svd.u.slice(ndarray::s![.., ..next]).to_owned();
        let core = u
            .into_shape_with_order((bond, o, i, next))
            .expect("U is [r·o·i, r']");
        cores.push(core);
        // Σ Vᵀ, [r', rest].
        let mut carry = svd.vt.slice(ndarray::s![..next, ..]).to_owned();
        for (mut row, &s) in carry.outer_iter_mut().zip(svd.s.iter()) {
            row *= s;
        }
        rest = carry.into_raw_vec_and_offset().0;
        bond = next;
    }
    Ok(TensorTrain {
        cores,
        out_modes: out_modes.to_vec(),
        in_modes: in_modes.to_vec(),
        discarded,
        total_energy,
    })
}

impl TensorTrain {
    /// The cores `G_k`, `[r_{k−1}, o_k, i_k, r_k]`.
    pub fn cores(&self) -> &[Array4<f32>] {
        &self.cores
    }

    /// The bond dimensions `r_0 = 1, r_1, …, r_d = 1`.
    pub fn bond_dims(&self) -> Vec<usize> {
        let mut dims = vec![1];
        dims.extend(self.cores.iter().map(|c| c.dim().3));
        dims
    }

    /// Factors of the output dimension, one per core.
    pub fn out_modes(&self) -> &[usize] {
        &self.out_modes
    }

    /// Factors of the input dimension, one per core.
    pub fn in_modes(&self) -> &[usize] {
        &self.in_modes
    }

    /// `(out, in)` of the represented matrix.
    pub fn dim(&self) -> (usize, usize) {
        (
            self.out_modes.iter().product(),
            self.in_modes.iter().product(),
        )
    }

    /// Parameters stored: `Σ_k r_{k−1} · o_k · i_k · r_k`.
    pub fn params(&self) -> usize {
        self.cores.iter().map(|c| c.len()).sum()
    }

    /// Dense parameters over stored parameters.
    pub fn compression_ratio(&self) -> f64 {
        let (out, inp) = self.dim();
        (out * inp) as f64 / self.params() as f64
    }

    /// The TT-SVD bound on `‖W − contract()‖_F / ‖W‖_F`: the square root of
    /// the dropped squared singular values over `‖W‖_F²` (0 for a zero matrix).
    pub fn error_bound(&self) -> f64 {
        if self.total_energy == 0.0 {
            return 0.0;
        }
        (self.discarded / self.total_energy).sqrt()
    }

    /// The dense `[out, in]` matrix: the cores contracted over their bonds.
    pub fn contract(&self) -> Array2<f32> {
        let d = self.cores.len();
        // acc: [o_1 i_1 … o_k i_k, r_k], row-major in the interleaved order.
        let mut acc = Array2::from_elem((1, 1), 1.0f32);
        for core in &self.cores {
            let (r0, o, i, r1) = core.dim();
            let g = core
                .view()
                .into_shape_with_order((r0, o * i * r1))
                .expect("cores are standard layout");
            let prod = linalg::matmul(acc.view(), g).unwrap_or_else(|_| acc.dot(&g));
            let rows = prod.nrows() * o * i;
            acc = prod
                .into_shape_with_order((rows, r1))
                .expect("[P, o·i·r] regroups as [P·o·i, r]");
        }
        let mut dims = Vec::with_capacity(2 * d);
        for k in 0..d {
            dims.extend([self.out_modes[k], self.in_modes[k]]);
        }
        // (o_1, i_1, …, o_d, i_d) → (o_1…o_d, i_1…i_d).
        let perm: Vec<usize> = (0..d)
            .map(|k| 2 * k)
            .chain((0..d).map(|k| 2 * k + 1))
            .collect();
        let tensor = acc
            .into_shape_with_order(IxDyn(&dims))
            .expect("the contraction has every mode");
        let dense: Vec<f32> = tensor.permuted_axes(IxDyn(&perm)).iter().copied().collect();
        Array2::from_shape_vec(self.dim(), dense).expect("out · in elements")
    }

    /// `‖W − contract()‖_F / ‖W‖_F` against the matrix `w` (see
    /// [`reconstruction_error`]).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `w` is not `[out, in]`.
    pub fn relative_error(&self, w: ArrayView2<'_, f32>) -> Result<f64> {
        Ok(reconstruction_error(w, self.contract().view())?.relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn unbounded_bond_contracts_exactly() {
        let mut rng = SeededRng::new(1);
        for (out_modes, in_modes) in [
            (vec![4, 6], vec![3, 5]),
            (vec![2, 3, 4], vec![5, 1, 2]),
            (vec![2, 2, 2, 2], vec![3, 2, 2, 2]),
            (vec![7], vec![9]),
        ] {
            let (out, inp) = (out_modes.iter().product(), in_modes.iter().product());
            let w = rng.array_normal((out, inp));
            let tt = tensor_train(w.view(), &in_modes, &out_modes, usize::MAX).unwrap();
            assert_eq!(tt.cores().len(), out_modes.len());
            assert_eq!(tt.dim(), (out, inp));
            let dense = tt.contract();
            let diff = dense
                .iter()
                .zip(w.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{out_modes:?} × {in_modes:?}: {diff}");
            assert!(tt.error_bound() < 1e-6);
            let bonds = tt.bond_dims();
            assert_eq!((bonds[0], *bonds.last().unwrap()), (1, 1));
            for (k, c) in tt.cores().iter().enumerate() {
                assert_eq!(c.dim(), (bonds[k], out_modes[k], in_modes[k], bonds[k + 1]));
            }
            assert_eq!(
                tt.params(),
                tt.cores().iter().map(|c| c.len()).sum::<usize>()
            );
        }
    }

    #[test]
    fn mode_order_is_row_major() {
        // W[o, i] = 10·o + i, out = 2·2, in = 3·1: the index mapping round-trips.
        let w = Array2::from_shape_fn((4, 3), |(o, i)| (10 * o + i) as f32);
        let tt = tensor_train(w.view(), &[3, 1], &[2, 2], usize::MAX).unwrap();
        let back = tt.contract();
        assert!(back.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() < 1e-4));
        // A Kronecker product A ⊗ B is bond dimension 1 with cores A and B.
        let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        let b = ndarray::array![[0.5f32, -1.0, 2.0], [1.5, 0.0, 1.0]];
        let kron = Array2::from_shape_fn((4, 6), |(r, c)| a[[r / 2, c / 3]] * b[[r % 2, c % 3]]);
        let tt = tensor_train(kron.view(), &[2, 3], &[2, 2], 1).unwrap();
        assert_eq!(tt.bond_dims(), vec![1, 1, 1]);
        assert!(tt.relative_error(kron.view()).unwrap() < 1e-6);
        assert_eq!(tt.params(), 4 + 6);
    }

    #[test]
    fn error_falls_as_the_bond_grows() {
        let w = SeededRng::new(2).array_normal((64, 48)); // 4·4·4, 4·3·4
        let (inm, outm) = ([4, 3, 4], [4, 4, 4]);
        let mut last = f64::INFINITY;
        let mut last_params = 0;
        for bond in [1, 2, 4, 8, 16, 32, 64, 256] {
            let tt = tensor_train(w.view(), &inm, &outm, bond).unwrap();
            let e = tt.relative_error(w.view()).unwrap();
            assert!(e <= last + 1e-6, "bond {bond}: {e} after {last}");
            assert!(e <= tt.error_bound() + 1e-5, "TT-SVD bound");
            assert!(tt.bond_dims().iter().all(|&r| r <= bond));
            assert!(tt.params() >= last_params);
            last = e;
            last_params = tt.params();
        }
        assert!(last < 1e-4);
        let strict = tensor_train(w.view(), &inm, &outm, 2)
            .unwrap()
            .relative_error(w.view())
            .unwrap();
        let loose = tensor_train(w.view(), &inm, &outm, 16)
            .unwrap()
            .relative_error(w.view())
            .unwrap();
        assert!(loose < strict - 0.05, "{loose} vs {strict}");
    }

    #[test]
    fn typed_errors() {
        let w = SeededRng::new(3).array_normal((6, 8));
        assert!(matches!(
            tensor_train(w.view(), &[2, 4], &[2, 3], 0),
            Err(Error::ZeroBond)
        ));
        for (inm, outm) in [
            (vec![2, 2], vec![2, 3]), // in product 4 ≠ 8
            (vec![2, 4], vec![3, 3]), // out product 9 ≠ 6
            (vec![8], vec![2, 3]),    // lengths differ
            (vec![], vec![]),         // no cores
            (vec![8, 1, 0], vec![6, 1, 1]),
        ] {
            assert!(
                matches!(
                    tensor_train(w.view(), &inm, &outm, 4),
                    Err(Error::InvalidModes {
                        rows: 6,
                        cols: 8,
                        ..
                    })
                ),
                "{inm:?} {outm:?}"
            );
        }
        let mut bad = w.clone();
        bad[[5, 7]] = f32::INFINITY;
        assert!(matches!(
            tensor_train(bad.view(), &[2, 4], &[2, 3], 4),
            Err(Error::NonFinite { row: 5, col: 7, .. })
        ));
        let tt = tensor_train(w.view(), &[2, 4], &[2, 3], 4).unwrap();
        assert!(matches!(
            tt.relative_error(w.t()),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
