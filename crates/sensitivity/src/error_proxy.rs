//! Output-error proxies of a weight perturbation.

use ndarray::{ArrayView2, Zip};
use tensorpress_tensor::linalg;

use crate::{Error, Result};

/// The Hessian-weighted error `tr(ΔW H ΔWᵀ)` of a perturbation `ΔW` (`[out, in]`)
/// under a layer Hessian `H` (`[in, in]`, symmetric): the OBS/GPTQ proxy of the
/// change in the layer's output.
///
/// With `H = (2/n) Σ x xᵀ` (as `tensorpress_tensor::Hessian::finalize(0.0)`
/// builds it), this is `(2/n) Σ_tokens ‖ΔW x‖²`, i.e. twice the summed squared
/// output error per token. Computed in f64.
///
/// # Errors
/// [`Error::ShapeMismatch`] unless `h` is `[in, in]`; tensor errors for
/// non-finite input.
///
/// ```
/// use ndarray::array;
/// use tensorpress_sensitivity::hessian_weighted_error;
///
/// let dw = array![[1.0f32, -1.0]];
/// let h = array![[2.0, 1.0], [1.0, 2.0]];
/// // [1, -1] H [1, -1]ᵀ = 2 − 1 − 1 + 2
/// assert_eq!(hessian_weighted_error(dw.view(), h.view())?, 2.0);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn hessian_weighted_error(delta_w: ArrayView2<'_, f32>, h: ArrayView2<'_, f64>) -> Result<f64> {
    let n = delta_w.ncols();
    if h.dim() != (n, n) {
        return Err(Error::ShapeMismatch {
            op: "hessian_weighted_error",
            lhs: delta_w.shape().to_vec(),
            rhs: h.shape().to_vec(),
        });
    }
    let d = delta_w.mapv(f64::from);
    check_finite("hessian_weighted_error (ΔW)", d.view())?;
    check_finite("hessian_weighted_error (H)", h)?;
    let dh = linalg::matmul(d.view(), h)?;
    let mut total = 0.0;
    Zip::from(&dh).and(&d).for_each(|&a, &b| total += a * b);
    Ok(total)
}

fn check_finite(op: &'static str, a: ArrayView2<'_, f64>) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), &value)) => Err(tensorpress_tensor::Error::NonFinite {
            op,
            row,
            col,
            value,
        }
        .into()),
        None => Ok(()),
    }
}

/// Error of a layer's output under a weight change, on calibration inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct OutputError {
    /// Mean over tokens and output features of `((W − Ŵ) x)²`.
    pub mse: f64,
    /// `‖X (W − Ŵ)ᵀ‖_F / ‖X Wᵀ‖_F`.
    pub relative: f64,
}

/// The error of the layer `y = W x` when `W` is replaced by `w_hat`, measured on
/// calibration inputs `x` (`[tokens, in]`).
///
/// # Errors
/// [`Error::ShapeMismatch`]; [`Error::ZeroReference`] when `X Wᵀ` is zero (and
/// the error is not).
pub fn output_error(
    w: ArrayView2<'_, f32>,
    w_hat: ArrayView2<'_, f32>,
    x: ArrayView2<'_, f32>,
) -> Result<OutputError> {
    if w.dim() != w_hat.dim() || x.ncols() != w.ncols() {
        return Err(Error::ShapeMismatch {
            op: "output_error",
            lhs: w.shape().to_vec(),
            rhs: if w.dim() != w_hat.dim() {
                w_hat.shape().to_vec()
            } else {
                x.shape().to_vec()
            },
        });
    }
    let delta = &w - &w_hat;
    let e = linalg::matmul(x, delta.t())?;
    let y = linalg::matmul(x, w.t())?;
    let sq = |a: &ndarray::Array2<f32>| a.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    let (err, reference) = (sq(&e), sq(&y));
    let count = e.len().max(1) as f64;
    let relative = if err == 0.0 {
        0.0
    } else if reference == 0.0 {
        return Err(Error::ZeroReference);
    } else {
        (err / reference).sqrt()
    };
    Ok(OutputError {
        mse: err / count,
        relative,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};
    use tensorpress_tensor::{Hessian, SeededRng};

    #[test]
    fn hessian_proxy_equals_twice_the_output_mse() {
        let mut rng = SeededRng::new(1);
        let (tokens, n_in, out) = (200, 24, 10);
        let x = rng.array_normal((tokens, n_in));
        let w = rng.array_normal((out, n_in));
        let w_hat = &w + &(rng.array_normal((out, n_in)) * 0.05);
        let mut h = Hessian::new(n_in);
        h.update(x.view()).unwrap();
        let h = h.finalize(0.0).unwrap().h;
        let proxy = hessian_weighted_error((&w - &w_hat).view(), h.view()).unwrap();
        let oe = output_error(w.view(), w_hat.view(), x.view()).unwrap();
        // (2/n) Σ_t ‖ΔW x_t‖² = 2 · out · mse.
        let expect = 2.0 * out as f64 * oe.mse;
        assert!(
            (proxy - expect).abs() < 1e-4 * expect,
            "{proxy} vs {expect}"
        );
        assert!(oe.relative > 0.0 && oe.relative < 0.2);
    }

    #[test]
    fn exact_weights_have_zero_error() {
        let w = array![[1.0f32, 2.0], [3.0, 4.0]];
        let x = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
        let e = output_error(w.view(), w.view(), x.view()).unwrap();
        assert_eq!((e.mse, e.relative), (0.0, 0.0));
        let z = Array2::<f32>::zeros((2, 2));
        assert!(matches!(
            output_error(z.view(), w.view(), x.view()),
            Err(Error::ZeroReference)
        ));
        assert!(matches!(
            output_error(w.view(), w.view(), x.t()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            hessian_weighted_error(w.view(), Array2::<f64>::eye(3).view()),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut h = Array2::<f64>::eye(2);
        h[[1, 0]] = f64::NAN;
        assert!(matches!(
            hessian_weighted_error(w.view(), h.view()),
            Err(Error::Tensor(tensorpress_tensor::Error::NonFinite {
                row: 1,
                col: 0,
                ..
            }))
        ));
    }
}
