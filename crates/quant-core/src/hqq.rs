//! HQQ: Half-Quadratic Quantization (Badri & Shaji, 2023, "Half-Quadratic
//! Quantization of Large Machine Learning Models").
//!
//! No calibration data: for each group, starting from the min–max
//! parameters, HQQ minimises a sparsity-promoting `ℓp` norm (`p < 1`) of the
//! weight error `W − s·(Q − z)` over the zero point `z` by half-quadratic
//! splitting. An auxiliary error variable `E` takes the outliers: it is the
//! generalized soft-thresholding of the current error (the proximal step of
//! `‖·‖_p^p`), and `z` then has the closed form
//! `z = mean(Q − (W − E)/s)`; the penalty weight `β` grows by `κ` every
//! iteration, and the loop stops as soon as the mean absolute error stops
//! falling. Scales stay at their min–max values, as in the reference
//! implementation's default.
//!
//! HQQ's zero points are real numbers, which [`QuantizedTensor`] holds and
//! `tensorpress eval` runs; compressed-tensors and GPTQ checkpoints store
//! integer zero points, so set [`Hqq::round_zero`] to export to them.

use ndarray::ArrayView2;

use crate::int::min_max;
use crate::qtensor::QuantizedTensor;
use crate::rtn::quantize_groups;
use crate::spec::{Format, Granularity, QuantSpec};
use crate::{check_finite, Calibration, Error, Result, WeightQuantizer};

/// HQQ's optimiser settings (the reference defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HqqParams {
    /// The exponent `p` of the error norm (0.7).
    pub lp_norm: f32,
    /// The initial penalty weight `β` (10).
    pub beta: f32,
    /// The growth factor of `β` per iteration (1.01).
    pub kappa: f32,
    /// The most iterations (20).
    pub iters: usize,
}

impl Default for HqqParams {
    fn default() -> Self {
        HqqParams {
            lp_norm: 0.7,
            beta: 10.0,
            kappa: 1.01,
            iters: 20,
        }
    }
}

/// Half-quadratic optimisation of each group's zero point.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::{Hqq, QuantSpec, Rtn, WeightQuantizer};
///
/// // Heavy-tailed weights: a few large values per row.
/// let w = Array2::from_shape_fn((8, 128), |(i, j)| {
///     let x = ((i * 128 + j) as f32 * 0.731).sin() * 0.02;
///     if j % 41 == 7 { x * 12.0 } else { x }
/// });
/// let spec = QuantSpec::int(4).group(64).asymmetric();
/// let hqq = Hqq::new(spec).quantize(w.view(), None)?;
/// let rtn = Rtn::new(spec).quantize(w.view(), None)?;
/// let mae = |q: &tensorpress_quant_core::QuantizedTensor| {
///     (&q.dequantize() - &w).mapv(f32::abs).mean().unwrap()
/// };
/// assert!(mae(&hqq) < mae(&rtn));
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hqq {
    /// The target: an asymmetric integer spec.
    pub spec: QuantSpec,
    /// The optimiser settings.
    pub params: HqqParams,
    /// Keep zero points on integers (for compressed-tensors and GPTQ exports).
    pub round_zero: bool,
}

impl Hqq {
    /// HQQ to `spec` with the reference settings and real-valued zero points.
    pub fn new(spec: QuantSpec) -> Self {
        Hqq {
            spec,
            params: HqqParams::default(),
            round_zero: false,
        }
    }

    /// Keeps zero points on integers.
    pub fn round_zero(mut self, round: bool) -> Self {
        self.round_zero = round;
        self
    }

    fn check(&self, cols: usize) -> Result<u8> {
        self.spec.validate(cols)?;
        let bits = match self.spec.format {
            Format::Int { bits } if !self.spec.symmetric => bits,
            _ => {
                return Err(Error::InvalidOption {
                    option: "HQQ spec",
                    value: self.spec.to_string(),
                    expected: "an asymmetric integer format (HQQ optimises the zero point)",
                })
            }
        };
        let p = &self.params;
        if !(p.lp_norm > 0.0 && p.lp_norm <= 1.0) {
            return Err(Error::InvalidOption {
                option: "HQQ lp_norm",
                value: p.lp_norm.to_string(),
                expected: "0 < p ≤ 1",
            });
        }
        if !(p.beta > 0.0 && p.beta.is_finite() && p.kappa >= 1.0 && p.kappa.is_finite()) {
            return Err(Error::InvalidOption {
                option: "HQQ beta/kappa",
                value: format!("{}/{}", p.beta, p.kappa),
                expected: "beta > 0 and kappa ≥ 1, finite",
            });
        }
        Ok(bits)
    }

    /// The scale and zero of one group, and its codes written into `codes`.
    fn group(&self, values: &[f32], maxq: f32, codes: &mut [u8]) -> (f32, f32) {
        let (lo, hi) = min_max(values);
        let range = hi - lo;
        // The reference clamps 1/s at 2·10⁴; a constant group gets s = 1.
        let inv = if range > 0.0 {
            (maxq / range).min(2e4)
        } else {
            1.0
        };
        let round = |z: f32| if self.round_zero { z.round() } else { z };
        let quant = |x: f32, z: f32| (x * inv + z).round_ties_even().clamp(0.0, maxq);
        // Start from RTN's (integer) zero point: HQQ never ends worse than RTN.
        let mut zero = (-lo * inv).round_ties_even();
        let p = self.params;
        let mut beta = p.beta;
        let mut best = (zero, f32::INFINITY);
        let n = values.len().max(1) as f32;
        for _ in 0..p.iters {
            let mut err = 0.0f32;
            let mut acc = 0.0f32;
            for &x in values {
                let q = quant(x, zero);
                let r = (q - zero) / inv;
                let d = x - r;
                err += d.abs();
                // Generalized soft-thresholding: the proximal step of |·|^p.
                let a = d.abs();
                let shrunk = (a - (1.0 / beta) * (a + 1e-8).powf(p.lp_norm - 1.0)).max(0.0);
                let e = d.signum() * shrunk;
                acc += q - (x - e) * inv;
            }
            let err = err / n;
            if err < best.1 {
                best = (zero, err);
            } else {
                break;
            }
            zero = round(acc / n);
            beta *= p.kappa;
        }
        let zero = best.0;
        for (c, &x) in codes.iter_mut().zip(values) {
            *c = quant(x, zero) as u8;
        }
        (1.0 / inv, zero)
    }
}

impl WeightQuantizer for Hqq {
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        _cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor> {
        let (rows, cols) = w.dim();
        let bits = self.check(cols)?;
        check_finite(w)?;
        if self.spec.granularity == Granularity::Tensor {
            return Err(Error::InvalidOption {
                option: "HQQ granularity",
                value: "per-tensor".into(),
                expected: "groups or channels (HQQ fits one zero point per group)",
            });
        }
        let maxq = ((1u32 << bits) - 1) as f32;
        let gs = self.spec.group_size(cols);
        let groups = self.spec.n_groups(cols)?;
        let (codes, scales, zeros) = quantize_groups(w, gs, groups, |_, values, codes| {
            self.group(values, maxq, codes)
        });
        QuantizedTensor::new(self.spec, rows, cols, codes, scales, zeros, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rtn;
    use ndarray::Array2;
    use tensorpress_tensor::SeededRng;

    fn heavy_tailed(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = SeededRng::new(seed);
        let mut w: Array2<f32> = rng.array_normal((rows, cols));
        w.mapv_inplace(|x| 0.02 * x * x * x.signum() + 0.01 * x);
        w
    }

    #[test]
    fn lowers_the_mean_absolute_error_of_min_max_rtn() {
        let w = heavy_tailed(16, 256, 1);
        for bits in [2u8, 3, 4] {
            let spec = QuantSpec::int(bits).group(64).asymmetric();
            let mae = |q: &QuantizedTensor| (&q.dequantize() - &w).mapv(f32::abs).mean().unwrap();
            let rtn = Rtn::new(spec).quantize(w.view(), None).unwrap();
            let hqq = Hqq::new(spec).quantize(w.view(), None).unwrap();
            assert!(
                mae(&hqq) < mae(&rtn),
                "bits {bits}: {} vs {}",
                mae(&hqq),
                mae(&rtn)
            );
            let rounded = Hqq::new(spec)
                .round_zero(true)
                .quantize(w.view(), None)
                .unwrap();
            assert!(rounded.zeros().iter().all(|z| z.fract() == 0.0));
            assert!(mae(&rounded) <= mae(&rtn) * 1.0001, "bits {bits}");
        }
    }

    #[test]
    fn bad_specs_are_typed_errors() {
        let w = heavy_tailed(2, 64, 2);
        for spec in [
            QuantSpec::int(4).group(32),
            QuantSpec::nf4(),
            QuantSpec::int(4).tensor().asymmetric(),
        ] {
            assert!(matches!(
                Hqq::new(spec).quantize(w.view(), None),
                Err(Error::InvalidOption { .. })
            ));
        }
        let mut h = Hqq::new(QuantSpec::int(4).group(32).asymmetric());
        h.params.lp_norm = 1.5;
        assert!(matches!(
            h.quantize(w.view(), None),
            Err(Error::InvalidOption { .. })
        ));
        let mut bad = w.clone();
        bad[[0, 3]] = f32::NAN;
        assert!(matches!(
            Hqq::new(QuantSpec::int(4).group(32).asymmetric()).quantize(bad.view(), None),
            Err(Error::NonFinite { .. })
        ));
    }
}
