//! PowerSGD: rank-r power iteration with warm start and error feedback.

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix2};
use tensorpress_tensor::SeededRng;

use super::{check_shape, check_workers, GradCompressor, Payload, Round};
use crate::{Error, Result};

/// Configuration of [`PowerSgd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerSgdConfig {
    /// Rank `r` of the approximation. Default 4.
    pub rank: usize,
    /// Seed of the initial `Q`: must be the same on every worker (the
    /// all-reduce of `P = M Q` is only meaningful for a shared `Q`). Default 0.
    pub seed: u64,
    /// Keep the local residual `M − P̂ P̂ᵀ M` and add it to the next gradient.
    /// Default `true`.
    pub error_feedback: bool,
    /// Start each step's power iteration from the previous step's averaged
    /// `Q` (one iteration per step then tracks the top subspace over time).
    /// Default `true`.
    pub warm_start: bool,
}

impl Default for PowerSgdConfig {
    fn default() -> Self {
        PowerSgdConfig {
            rank: 4,
            seed: 0,
            error_feedback: true,
            warm_start: true,
        }
    }
}

/// Where a worker is in the exchange of one step.
#[derive(Debug, Clone)]
enum Phase {
    /// No exchange in progress.
    Idle,
    /// Sent a dense payload (1-D gradient, or a matrix too small to factor).
    Dense,
    /// Sent `P = M Q`; holds `M`.
    SentP(Array2<f32>),
    /// Sent `Q = Mᵀ P̂`; holds `P̂`.
    SentQ(Array2<f32>),
}

/// PowerSGD (Vogels et al., NeurIPS 2019), rank `r`.
///
/// For a 2-D gradient `G` (`n × m`) with memory `E`, one step is:
///
/// 1. `M = G + E`, `P = M Q` (`Q` the previous step's, or Gaussian at first);
///    send `P` ([`Payload::Factor`], all-reduce).
/// 2. `P̂ = orthogonalize(mean P)` (Gram–Schmidt), `Q = Mᵀ P̂`,
///    `E ← M − P̂ Qᵀ` (local); send `Q` (all-reduce).
/// 3. The result is `P̂ (mean Q)ᵀ`; `mean Q` is kept as the next warm start.
///
/// Because `Q` is shared, `mean P = (mean M) Q`: both rounds are plain
/// all-reduces of `r (n + m)` floats in total. 1-D gradients, and matrices
/// with `r (n + m) ≥ n m`, are sent dense (as in the paper's code).
#[derive(Debug, Clone)]
pub struct PowerSgd {
    config: PowerSgdConfig,
    rng: SeededRng,
    shape: Option<Vec<usize>>,
    q: Option<Array2<f32>>,
    memory: Option<Array2<f32>>,
    phase: Phase,
}

impl PowerSgd {
    /// A PowerSGD compressor with empty state.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for rank 0.
    pub fn new(config: PowerSgdConfig) -> Result<Self> {
        if config.rank == 0 {
            return Err(Error::InvalidConfig {
                param: "rank",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        Ok(PowerSgd {
            rng: SeededRng::new(config.seed),
            config,
            shape: None,
            q: None,
            memory: None,
            phase: Phase::Idle,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PowerSgdConfig {
        &self.config
    }

    /// The error-feedback memory (`None` before the first matrix step or
    /// without error feedback).
    pub fn memory(&self) -> Option<&Array2<f32>> {
        self.memory.as_ref()
    }

    /// The `Q` the next step starts from.
    pub fn warm_start(&self) -> Option<&Array2<f32>> {
        self.q.as_ref()
    }

    /// Whether a gradient of this shape is factored (else sent dense).
    pub fn factors(&self, shape: &[usize]) -> bool {
        match *shape {
            [n, m] => self
                .config
                .rank
                .checked_mul(n + m)
                .is_some_and(|f| f < n.saturating_mul(m)),
            _ => false,
        }
    }

    /// A fresh Gaussian column into column `j` of `q`.
    fn redraw(&mut self, q: &mut Array2<f32>, j: usize) {
        for x in q.column_mut(j) {
            *x = self.rng.normal_f32();
        }
    }
}

fn factor(m: &Array2<f32>) -> Payload {
    Payload::Factor {
        rows: m.nrows(),
        cols: m.ncols(),
        values: m.iter().copied().collect(),
    }
}

/// The mean of an all-reduced factor of the expected shape.
fn mean_factor(sum: &Payload, rows: usize, cols: usize, workers: usize) -> Result<Array2<f32>> {
    match sum {
        Payload::Factor {
            rows: r,
            cols: c,
            values,
        } if (*r, *c) == (rows, cols) && values.len() == rows * cols => {
            let mut a = Array2::from_shape_vec((rows, cols), values.clone()).map_err(|_| {
                Error::Malformed {
                    what: "factor value count differs from rows × cols",
                }
            })?;
            a /= workers as f32;
            Ok(a)
        }
        Payload::Factor {
            rows: r, cols: c, ..
        } => Err(Error::ShapeMismatch {
            op: "PowerSgd::after_allreduce",
            lhs: vec![rows, cols],
            rhs: vec![*r, *c],
        }),
        other => Err(Error::PayloadKind {
            op: "PowerSgd::after_allreduce",
            expected: "factor",
            got: other.kind(),
        }),
    }
}

/// Orthonormalizes the columns of `p` in place by modified Gram–Schmidt (in
/// f64). A column whose remaining norm is below `1e-12` of its original norm
/// (dependent on earlier ones) or zero is set to zero.
pub(crate) fn gram_schmidt(p: &mut Array2<f32>) {
    let mut cols: Vec<Vec<f64>> = p
        .axis_iter(Axis(1))
        .map(|c| c.iter().map(|&x| f64::from(x)).collect())
        .collect();
    for j in 0..cols.len() {
        let (done, rest) = cols.split_at_mut(j);
        let col = &mut rest[0];
        let norm0 = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        for prev in done.iter() {
            let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(prev).for_each(|(c, a)| *c -= dot * a);
        }
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-12 * norm0 && norm > 0.0 && norm.is_finite() {
            col.iter_mut().for_each(|c| *c /= norm);
        } else {
            col.iter_mut().for_each(|c| *c = 0.0);
        }
    }
    for (j, col) in cols.iter().enumerate() {
        for (x, &v) in p.column_mut(j).iter_mut().zip(col) {
            *x = v as f32;
        }
    }
}

impl GradCompressor for PowerSgd {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_shape(&mut self.shape, &grad, "PowerSgd::compress")?;
        if !self.factors(grad.shape()) {
            self.phase = Phase::Dense;
            return Ok(Payload::Dense {
                shape: grad.shape().to_vec(),
                values: grad.iter().copied().collect(),
            });
        }
        let g = grad
            .into_dimensionality::<Ix2>()
            .map_err(|_| Error::UnsupportedRank {
                ndim: 1,
                expected: "2",
            })?;
        let mut m = g.to_owned();
        if let (true, Some(e)) = (self.config.error_feedback, &self.memory) {
            m += e;
        }
        let r = self.config.rank;
        let mut q = match (self.config.warm_start, self.q.take()) {
            (true, Some(q)) => q,
            _ => Array2::zeros((m.ncols(), r)),
        };
        // Draw a column wherever Q has none (first step, or a column that died
        // because the gradient had no energy there).
        for j in 0..r {
            let norm: f32 = q.column(j).iter().map(|x| x * x).sum();
            if !(norm > 0.0 && norm.is_finite()) {
                self.redraw(&mut q, j);
            }
        }
        let p = m.dot(&q);
        self.phase = Phase::SentP(m);
        Ok(factor(&p))
    }

    fn decompress(&self, payload: &Payload) -> Result<ArrayD<f32>> {
        match payload {
            Payload::Factor { .. } => Err(Error::PayloadKind {
                op: "PowerSgd::decompress",
                expected: "dense (factors are decoded by after_allreduce)",
                got: "factor",
            }),
            other => other.to_dense(),
        }
    }

    fn after_allreduce(&mut self, sum: &Payload, workers: usize) -> Result<Round> {
        check_workers(workers)?;
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Err(Error::Protocol {
                what: "PowerSgd::after_allreduce without a step in progress",
            }),
            Phase::Dense => {
                let mut d = sum.to_dense()?;
                if !matches!(sum, Payload::Dense { .. }) || Some(d.shape()) != self.shape.as_deref()
                {
                    return Err(Error::Protocol {
                        what: "PowerSgd expected the dense sum of its own round",
                    });
                }
                d /= workers as f32;
                Ok(Round::Done(d))
            }
            Phase::SentP(m) => {
                let mut p = mean_factor(sum, m.nrows(), self.config.rank, workers)?;
                gram_schmidt(&mut p);
                let q = m.t().dot(&p);
                if self.config.error_feedback {
                    self.memory = Some(&m - &p.dot(&q.t()));
                }
                let payload = factor(&q);
                self.phase = Phase::SentQ(p);
                Ok(Round::Next(payload))
            }
            Phase::SentQ(p) => {
                let cols = self.shape.as_ref().map_or(0, |s| s[1]);
                let q = mean_factor(sum, cols, self.config.rank, workers)?;
                let out = approx(p.view(), q.view());
                self.q = Some(q);
                Ok(Round::Done(out.into_dyn()))
            }
        }
    }
}

/// `P Qᵀ`.
fn approx(p: ArrayView2<'_, f32>, q: ArrayView2<'_, f32>) -> Array2<f32> {
    p.dot(&q.t())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::exchange;
    use ndarray::{Array1, Array2};

    fn low_rank(n: usize, m: usize, r: usize, seed: u64) -> Array2<f32> {
        let mut rng = SeededRng::new(seed);
        let a = rng.array_normal((n, r));
        let b = rng.array_normal((r, m));
        a.dot(&b)
    }

    #[test]
    fn gram_schmidt_orthonormalizes() {
        let mut rng = SeededRng::new(2);
        let mut p = rng.array_normal((20, 4));
        let dependent = p.column(1).to_owned();
        p.column_mut(3).assign(&dependent);
        gram_schmidt(&mut p);
        let g = p.t().dot(&p);
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j && i != 3 { 1.0 } else { 0.0 };
                assert!((g[[i, j]] - want).abs() < 1e-5, "{i} {j} {}", g[[i, j]]);
            }
        }
    }

    #[test]
    fn recovers_a_rank_r_average_with_warm_start() {
        // Two workers whose gradients share a rank-2 column space: after a
        // couple of warm-started steps the rank-2 result is the exact mean.
        let a = low_rank(30, 20, 2, 1);
        let b = &a * 0.5;
        let cfg = PowerSgdConfig {
            rank: 2,
            seed: 9,
            error_feedback: false,
            warm_start: true,
        };
        let mut w = vec![PowerSgd::new(cfg).unwrap(), PowerSgd::new(cfg).unwrap()];
        let grads = [a.view().into_dyn(), b.view().into_dyn()];
        let want = (&a + &b) / 2.0;
        for _ in 0..3 {
            let out = exchange(&mut w, &grads).unwrap();
            assert_eq!(out.rounds, 2);
            assert_eq!(out.bytes_sent[0], 2 * 9 + 4 * 2 * (30 + 20));
            let err = (&out.mean.into_dimensionality::<Ix2>().unwrap() - &want)
                .mapv(|x| x * x)
                .sum()
                .sqrt();
            let scale = want.mapv(|x| x * x).sum().sqrt();
            assert!(err < 1e-4 * scale, "{err} vs {scale}");
        }
    }

    #[test]
    fn error_feedback_sends_the_rest_later() {
        // A full-rank gradient on one worker with rank 1: the memory keeps the
        // residual, and the running sum of results tracks the running sum of
        // gradients up to the (bounded) memory.
        let mut rng = SeededRng::new(4);
        let g = rng.array_normal((8, 6));
        let mut w = vec![PowerSgd::new(PowerSgdConfig {
            rank: 1,
            ..Default::default()
        })
        .unwrap()];
        let mut total = Array2::<f32>::zeros((8, 6));
        let steps = 60;
        for _ in 0..steps {
            let out = exchange(&mut w, &[g.view().into_dyn()]).unwrap();
            total += &out.mean.into_dimensionality::<Ix2>().unwrap();
        }
        let mem = w[0].memory().unwrap().clone();
        let resid = (&(&g * steps as f32) - &total) - &mem;
        assert!(resid.iter().all(|x| x.abs() < 1e-2), "{resid}");
        assert!(mem.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn vectors_and_small_matrices_go_dense() {
        let mut w = vec![PowerSgd::new(PowerSgdConfig::default()).unwrap()];
        let v = Array1::from(vec![1.0f32, 2.0, 3.0]).into_dyn();
        let out = exchange(&mut w, &[v.view()]).unwrap();
        assert_eq!(out.mean, v);
        assert_eq!(out.rounds, 1);
        let p = w[0].clone();
        assert!(!p.factors(&[4, 4]));
        assert!(p.factors(&[100, 100]));
        assert!(PowerSgd::new(PowerSgdConfig {
            rank: 0,
            ..Default::default()
        })
        .is_err());
        // Shape changes are refused.
        let m = Array2::<f32>::zeros((2, 2)).into_dyn();
        assert!(matches!(
            w[0].compress(m.view()),
            Err(Error::ShapeMismatch { .. })
        ));
        let mut fresh = PowerSgd::new(PowerSgdConfig::default()).unwrap();
        assert!(matches!(
            fresh.after_allreduce(
                &Payload::Factor {
                    rows: 1,
                    cols: 1,
                    values: vec![0.0]
                },
                1
            ),
            Err(Error::Protocol { .. })
        ));
    }
}
