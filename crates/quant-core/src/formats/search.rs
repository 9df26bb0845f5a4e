//! LLM-FP4's search over float formats: see [`FpSearch`].

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::{CodeGrid, FloatFormat, Grid, Specials};
use crate::int::GroupParams;
use crate::qtensor::QuantizedTensor;
use crate::spec::{Format, Granularity, QuantSpec};
use crate::{check_finite, Calibration, Error, Result, WeightQuantizer};

/// Blocks at least this large search their clip candidates in parallel.
const PARALLEL_BLOCK: usize = 1 << 15;

/// What [`FpSearch`] minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchObjective {
    /// The weight's squared error (no calibration data needed).
    Weight,
    /// The layer output's squared error on calibration data (needs the
    /// Hessian in the [`Calibration`]).
    Output,
    /// `Output` when the calibration has a Hessian, `Weight` otherwise.
    #[default]
    Auto,
}

/// LLM-FP4's search over float formats (Liu, Oguz, Zhao, Chang, Stock,
/// Mehdad, Shi, Krishnamoorthi, Chandra, "LLM-FP4: 4-Bit Floating-Point
/// Quantized Transformers", EMNLP 2023).
///
/// The paper observes that a float quantizer's accuracy hinges on two
/// choices, the exponent/mantissa split of the fixed bit width and the
/// clipping range (its "maximum value", equivalently a real-valued exponent
/// bias), and builds its FP-PTQ baseline by searching both: for each layer the
/// format that minimises the error, with per-channel maximum values for
/// weights, on a grid of candidates (the reference code tries 100 candidates
/// per channel and minimises the layer output's squared error on calibration
/// data).
///
/// [`FpSearch`] does the same for a weight:
///
/// 1. for every candidate split (by default every split with at least one
///    exponent and one mantissa bit, as the reference code asserts) and every
///    scale group, the clipping maximum `r · amax` with the smallest error,
///    over `r = 1` (plain absmax scaling) and `r` on a linear grid from
///    `min_ratio` to `max_ratio`;
/// 2. the split whose result has the smallest error, per tensor.
///
/// With the weight objective the result is therefore never worse than
/// [`Rtn`](crate::Rtn)'s absmax scaling in any of the candidate formats (in
/// particular the default E2M1 at 4 bits), group by group.
///
/// The error is the weight's squared error ([`SearchObjective::Weight`]) or,
/// with a calibration Hessian `H`, the layer output's
/// ([`SearchObjective::Output`]): the split is chosen on the exact output error
/// `Σ_rows Δ H Δᵀ`, while the per-group clip search weighs each weight's
/// squared error by `H_jj`, its input's mean square (a diagonal approximation:
/// the exact objective per candidate would cost `cols²` per row).
///
/// The reference code parameterises the clip by the real-valued exponent bias
/// `b` (maximum value `(2 − 2^−m) · 2^(2^e − 1 − b)`) and tries 100 multiples
/// `0.01 b … 1.2 b` of the bias that maps the maximum to `amax`, a range whose
/// extent in maximum values depends on the weight's absolute scale. This
/// searches the maximum value itself, which gives the same family of
/// quantizers independent of scale; the defaults (0.3 to 1.2 times the group
/// maximum, 101 points) cover the clips that lower a weight's error. The
/// paper's activation-side contributions (per-channel activation scales folded
/// into the weights' exponent biases) are out of scope for a weight quantizer.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::formats::{FloatFormat, FpSearch};
/// use tensorpress_quant_core::{Format, QuantSpec, Rtn, WeightQuantizer};
/// use tensorpress_tensor::SeededRng;
///
/// // Heavy-tailed weights: a normal times a log-normal spread.
/// let mut rng = SeededRng::new(1);
/// let w = Array2::from_shape_fn((16, 128), |_| {
///     rng.normal_f32() * (1.5 * rng.normal_f32()).exp() * 0.02
/// });
/// let search = FpSearch::new(4).channel();
/// let (q, report) = search.quantize_with_report(w.view(), None)?;
/// assert_eq!(q.spec().format, Format::Float(report.format));
/// let err = |q: &tensorpress_quant_core::QuantizedTensor| {
///     (&q.dequantize() - &w).mapv(|e| e * e).sum()
/// };
/// // Searching the clip beats plain absmax scaling in the same format.
/// let plain = Rtn::new(QuantSpec::float(report.format)).quantize(w.view(), None)?;
/// assert!(err(&q) < err(&plain));
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FpSearch {
    /// Bits per code, sign included (3 to 8).
    pub bits: u8,
    /// Exponent widths to try; empty for every split with at least one
    /// exponent and one mantissa bit (LLM-FP4's reference code: E1M2 and E2M1
    /// at 4 bits, E1M6 to E6M1 at 8).
    pub exponent_bits: Vec<u8>,
    /// Scale sharing. The paper searches weights per channel.
    pub granularity: Granularity,
    /// Clip candidates past the first: `r = min_ratio + i · (max_ratio −
    /// min_ratio) / grid` for `i = 0 ..= grid` (the reference code: 100).
    pub grid: usize,
    /// Smallest clipping maximum, as a fraction of the group maximum.
    pub min_ratio: f32,
    /// Largest clipping maximum, as a fraction of the group maximum (the
    /// paper: 1.2).
    pub max_ratio: f32,
    /// Use the OCP format where a split has one (E4M3 with its NaN code, E5M2
    /// with ∞, the all-finite FP6/FP4 formats), so that hardware reads the
    /// result; otherwise every code is finite, as in the paper.
    pub ocp: bool,
    /// What the search minimises.
    pub objective: SearchObjective,
}

impl FpSearch {
    /// A search over the `bits`-bit splits, per channel, 101 clip candidates
    /// from 0.3 to 1.2 times each channel's maximum (plus the maximum itself), OCP formats where they
    /// exist, output error when calibration data is given.
    pub fn new(bits: u8) -> Self {
        FpSearch {
            bits,
            exponent_bits: Vec::new(),
            granularity: Granularity::Channel,
            grid: 100,
            min_ratio: 0.3,
            max_ratio: 1.2,
            ocp: true,
            objective: SearchObjective::Auto,
        }
    }

    /// One scale per output channel.
    pub fn channel(mut self) -> Self {
        self.granularity = Granularity::Channel;
        self
    }

    /// One scale for the whole tensor.
    pub fn tensor(mut self) -> Self {
        self.granularity = Granularity::Tensor;
        self
    }

    /// One scale per group of `size` input columns.
    pub fn group(mut self, size: usize) -> Self {
        self.granularity = Granularity::Group(size);
        self
    }

    /// Only these exponent widths.
    pub fn with_exponent_bits(mut self, exponent_bits: &[u8]) -> Self {
        self.exponent_bits = exponent_bits.to_vec();
        self
    }

    /// Minimises `objective`.
    pub fn objective(mut self, objective: SearchObjective) -> Self {
        self.objective = objective;
        self
    }

    /// The candidate formats, after checking the options.
    pub fn candidates(&self) -> Result<Vec<FloatFormat>> {
        let bad =
            |option: &'static str, value: String, expected: &'static str| Error::InvalidOption {
                option,
                value,
                expected,
            };
        if !(3..=8).contains(&self.bits) {
            return Err(bad("bits", self.bits.to_string(), "3 ..= 8"));
        }
        if self.grid == 0 {
            return Err(bad("grid", "0".into(), "at least 1"));
        }
        let ratios_ok =
            self.min_ratio > 0.0 && self.min_ratio <= self.max_ratio && self.max_ratio.is_finite();
        if !ratios_ok {
            return Err(bad(
                "min_ratio..max_ratio",
                format!("{}..{}", self.min_ratio, self.max_ratio),
                "0 < min_ratio <= max_ratio, finite",
            ));
        }
        let exps: Vec<u8> = if self.exponent_bits.is_empty() {
            (1..=self.bits - 2).collect()
        } else {
            self.exponent_bits.clone()
        };
        exps.into_iter()
            .map(|e| {
                if e == 0 || e >= self.bits {
                    return Err(bad("exponent_bits", e.to_string(), "1 ..= bits − 1"));
                }
                let m = self.bits - 1 - e;
                if self.ocp {
                    FloatFormat::standard(e, m)
                } else {
                    FloatFormat::new(e, m, Specials::AllFinite)
                }
            })
            .collect()
    }

    /// Runs the search and reports every candidate's error.
    pub fn quantize_with_report(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> Result<(QuantizedTensor, FpSearchReport)> {
        let formats = self.candidates()?;
        let cols = w.ncols();
        check_finite(w)?;
        let hessian = match self.objective {
            SearchObjective::Weight => None,
            SearchObjective::Output | SearchObjective::Auto => cal.and_then(|c| c.hessian.as_ref()),
        };
        if self.objective == SearchObjective::Output && hessian.is_none() {
            return Err(Error::MissingCalibration {
                method: "LLM-FP4 output-error search",
                what: "the layer Hessian",
            });
        }
        if let Some(h) = hessian {
            if h.h.dim() != (cols, cols) {
                return Err(Error::Shape {
                    what: "Hessian",
                    expected: vec![cols, cols],
                    actual: h.h.shape().to_vec(),
                });
            }
        }
        let col_weight: Option<Vec<f32>> =
            hessian.map(|h| h.h.diag().iter().map(|&v| v.max(0.0) as f32).collect());

        let mut best: Option<(QuantizedTensor, FloatFormat, f64)> = None;
        let mut errors = Vec::with_capacity(formats.len());
        for f in formats {
            let spec = QuantSpec {
                format: Format::Float(f),
                granularity: self.granularity,
                symmetric: true,
            };
            spec.validate(cols)?;
            let q = self.quantize_format(spec, f, w, col_weight.as_deref())?;
            let delta = (&q.dequantize() - &w).mapv(f64::from);
            let err = match hessian {
                Some(h) => {
                    let dh = tensorpress_tensor::linalg::matmul(delta.view(), h.h.view())?;
                    (&dh * &delta).sum()
                }
                None => delta.mapv(|d| d * d).sum(),
            };
            errors.push((f, err));
            if best.as_ref().is_none_or(|(_, _, e)| err < *e) {
                best = Some((q, f, err));
            }
        }
        let (q, format, error) = best.ok_or(Error::InvalidOption {
            option: "exponent_bits",
            value: "[]".into(),
            expected: "at least one candidate",
        })?;
        Ok((
            q,
            FpSearchReport {
                format,
                error,
                output_error: hessian.is_some(),
                candidates: errors,
            },
        ))
    }

    /// The per-group clip search in one format.
    fn quantize_format(
        &self,
        spec: QuantSpec,
        f: FloatFormat,
        w: ArrayView2<'_, f32>,
        col_weight: Option<&[f32]>,
    ) -> Result<QuantizedTensor> {
        let (rows, cols) = w.dim();
        let grid = Grid::Float(f);
        let gs = spec.group_size(cols);
        let groups = spec.n_groups(cols)?;
        let mut scales = Array2::<f32>::zeros((rows, groups));
        if self.granularity == Granularity::Tensor {
            let s = self.best_scale(f, w, 0, col_weight);
            scales.fill(s);
        } else {
            scales
                .axis_iter_mut(Axis(0))
                .into_par_iter()
                .enumerate()
                .for_each(|(r, mut s_row)| {
                    for g in 0..groups {
                        let (a, b) = (g * gs, ((g + 1) * gs).min(cols));
                        let block = w.slice(ndarray::s![r..r + 1, a..b]);
                        s_row[g] = self.best_scale(f, block, a, col_weight);
                    }
                });
        }
        let codes: Vec<u8> = w
            .indexed_iter()
            .map(|((r, c), &x)| {
                let p = GroupParams {
                    scale: scales[[r, c / gs]],
                    zero: 0.0,
                };
                grid.quantize(x, p)
            })
            .collect();
        let zeros = Array2::zeros((rows, groups));
        QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, None)
    }

    /// The scale of the clip candidate with the smallest (weighted) squared
    /// error over `block`, whose first column is column `col0` of the weight.
    fn best_scale(
        &self,
        f: FloatFormat,
        block: ArrayView2<'_, f32>,
        col0: usize,
        col_weight: Option<&[f32]>,
    ) -> f32 {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            return 0.0;
        }
        let grid = Grid::Float(f);
        let error = |scale: f32| {
            let p = GroupParams { scale, zero: 0.0 };
            let mut err = 0.0f64;
            for ((_, c), &x) in block.indexed_iter() {
                let d = f64::from(grid.round_trip(x, p) - x);
                let wgt = col_weight.map_or(1.0, |h| f64::from(h[col0 + c]));
                err += wgt * d * d;
            }
            err
        };
        // Plain absmax scaling first: the search never does worse than it.
        let scales: Vec<f32> = std::iter::once(1.0)
            .chain((0..=self.grid).map(|i| {
                self.min_ratio + i as f32 * (self.max_ratio - self.min_ratio) / self.grid as f32
            }))
            .map(|r| r * amax / f.max())
            .collect();
        // Large blocks (a per-tensor search) try the candidates in parallel.
        let errors: Vec<f64> = if block.len() >= PARALLEL_BLOCK {
            scales.par_iter().map(|&s| error(s)).collect()
        } else {
            scales.iter().map(|&s| error(s)).collect()
        };
        let mut best = (errors[0], scales[0]);
        for (&err, &scale) in errors.iter().zip(&scales) {
            if err < best.0 {
                best = (err, scale);
            }
        }
        best.1
    }
}

impl WeightQuantizer for FpSearch {
    fn quantize(
        &self,
        w: ArrayView2<'_, f32>,
        cal: Option<&Calibration>,
    ) -> Result<QuantizedTensor> {
        Ok(self.quantize_with_report(w, cal)?.0)
    }
}

/// What [`FpSearch`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct FpSearchReport {
    /// The chosen format.
    pub format: FloatFormat,
    /// Its error (output or weight squared error, see `output_error`).
    pub error: f64,
    /// Whether errors are output errors `Σ Δ H Δᵀ` (else weight errors).
    pub output_error: bool,
    /// Every candidate with its error, in the order tried.
    pub candidates: Vec<(FloatFormat, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::{Hessian, SeededRng};

    #[test]
    fn candidates_and_bad_options() {
        let c = FpSearch::new(4).candidates().unwrap();
        assert_eq!(c, [FloatFormat::standard(1, 2).unwrap(), FloatFormat::E2M1]);
        let c = FpSearch::new(8).candidates().unwrap();
        assert_eq!(c.len(), 6);
        assert!(c.contains(&FloatFormat::E4M3) && c.contains(&FloatFormat::E5M2));
        let mut s = FpSearch::new(8);
        s.ocp = false;
        assert!(s
            .candidates()
            .unwrap()
            .iter()
            .all(|f| f.specials() == Specials::AllFinite));
        for bad in [
            FpSearch::new(2),
            FpSearch::new(9),
            FpSearch::new(4).with_exponent_bits(&[3, 4]),
            FpSearch {
                grid: 0,
                ..FpSearch::new(4)
            },
            FpSearch {
                min_ratio: 1.5,
                ..FpSearch::new(4)
            },
        ] {
            assert!(
                matches!(bad.candidates(), Err(Error::InvalidOption { .. })),
                "{bad:?}"
            );
        }
        let w = Array2::<f32>::zeros((2, 8));
        assert!(matches!(
            FpSearch::new(4)
                .objective(SearchObjective::Output)
                .quantize(w.view(), None),
            Err(Error::MissingCalibration { .. })
        ));
    }

    #[test]
    fn search_picks_the_better_split_and_clip() {
        let mut rng = SeededRng::new(3);
        // Uniform weights suit the uniform E1M2 grid; heavy tails suit E2M1.
        let uniform = rng.array_uniform((8, 256)).mapv(|u| u - 0.5);
        let heavy = Array2::from_shape_fn((8, 256), |_| {
            let z = rng.normal_f32();
            z * z * z
        });
        let (_, r) = FpSearch::new(4)
            .quantize_with_report(uniform.view(), None)
            .unwrap();
        assert_eq!(r.format, FloatFormat::standard(1, 2).unwrap());
        let (q, r) = FpSearch::new(4)
            .quantize_with_report(heavy.view(), None)
            .unwrap();
        assert_eq!(r.format, FloatFormat::E2M1);
        let err = (&q.dequantize() - &heavy).mapv(|e| f64::from(e * e)).sum();
        assert!((err - r.error).abs() <= 1e-6 * err.max(1.0));
        assert!(r.candidates.iter().all(|&(_, e)| e >= r.error));
    }

    #[test]
    fn absmax_is_always_a_candidate() {
        // Every row holds exactly the positive E2M1 values times a row
        // scale: absmax scaling is exact, and no other clip on the grid
        // (r = 1 is not one of 0.3 + 0.009 i) is.
        let vals = [0.0f32, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
        let w = |row_scale: fn(usize) -> f32| {
            Array2::from_shape_fn((4, 16), move |(r, c)| {
                let sign = if c % 2 == 0 { 1.0 } else { -1.0 };
                sign * vals[c / 2] * row_scale(r)
            })
        };
        // Per channel each row has its own scale; per tensor all share one.
        for (search, w) in [
            (FpSearch::new(4).channel(), w(|r| (r as f32 + 1.0) * 0.01)),
            (FpSearch::new(4).tensor(), w(|_| 0.03)),
        ] {
            let (q, rep) = search.quantize_with_report(w.view(), None).unwrap();
            assert_eq!(rep.format, FloatFormat::E2M1);
            assert_eq!(rep.error, 0.0, "{}", q.spec());
            assert_eq!(q.dequantize(), w);
        }
    }

    #[test]
    fn output_objective_uses_the_hessian() {
        let mut rng = SeededRng::new(4);
        let cols = 64;
        let mut x = rng.array_normal((512, cols));
        for (j, mut c) in x.columns_mut().into_iter().enumerate() {
            c *= if j % 8 == 0 { 10.0 } else { 0.1 };
        }
        let mut h = Hessian::new(cols);
        h.update(x.view()).unwrap();
        let cal = Calibration {
            hessian: Some(h.finalize(0.0).unwrap()),
            ..Default::default()
        };
        let w = rng.array_normal((16, cols));
        let out_err = |q: &QuantizedTensor| {
            x.dot(&(&q.dequantize() - &w).t())
                .mapv(|e| f64::from(e * e))
                .sum()
        };
        let by_weight = FpSearch::new(4)
            .objective(SearchObjective::Weight)
            .quantize(w.view(), Some(&cal))
            .unwrap();
        let (by_output, rep) = FpSearch::new(4)
            .quantize_with_report(w.view(), Some(&cal))
            .unwrap();
        assert!(rep.output_error);
        assert!(out_err(&by_output) < out_err(&by_weight));
    }
}
