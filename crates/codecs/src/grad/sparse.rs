//! Sparsifiers: top-k, Deep Gradient Compression, random-k and threshold.

use ndarray::ArrayViewD;
use tensorpress_tensor::SeededRng;

use super::{check_fraction, check_rank, check_shape, GradCompressor, Payload};
use crate::{Error, Result};

/// Number of entries kept at `density` of `n`: `ceil(density · n)`, at least 1
/// (for `n > 0`) and at most `n`. A product within `1e-6` (relative) of an
/// integer counts as that integer, so that `0.1 × 100` is 10 despite `0.1f32`
/// being slightly above one tenth.
fn keep_count(n: usize, density: f32) -> usize {
    if n == 0 {
        return 0;
    }
    let x = f64::from(density) * n as f64;
    let near = x.round();
    let k = if (x - near).abs() <= 1e-6 * x.max(1.0) {
        near
    } else {
        x.ceil()
    };
    (k as usize).clamp(1, n)
}

/// Flat positions of the `k` entries of largest magnitude, ascending.
///
/// Selection by `select_nth_unstable` (linear time); ties are broken by
/// position, NaN counts as largest.
fn top_k_indices(values: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    if k < values.len() && k > 0 {
        let key = |i: &u32| values[*i as usize].abs();
        idx.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

fn sparse_payload(shape: &[usize], values: &[f32], indices: Vec<u32>) -> Payload {
    Payload::Sparse {
        shape: shape.to_vec(),
        values: indices.iter().map(|&i| values[i as usize]).collect(),
        indices,
    }
}

fn contiguous(grad: &ArrayViewD<'_, f32>) -> Vec<f32> {
    grad.iter().copied().collect()
}

/// Top-k sparsification: the `ceil(density · n)` entries of largest magnitude.
///
/// Stateless and biased; wrap it in [`ErrorFeedback`](super::ErrorFeedback)
/// (or use [`Dgc`]) to train with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopK {
    density: f32,
}

impl TopK {
    /// Keeps a fraction `density ∈ (0, 1]` of the entries.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside `(0, 1]`.
    pub fn new(density: f32) -> Result<Self> {
        check_fraction("density", density)?;
        Ok(TopK { density })
    }

    /// The fraction of entries kept.
    pub fn density(&self) -> f32 {
        self.density
    }
}

impl GradCompressor for TopK {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let v = contiguous(&grad);
        let idx = top_k_indices(&v, keep_count(v.len(), self.density));
        Ok(sparse_payload(grad.shape(), &v, idx))
    }
}

/// DGC's sparsity warm-up: the density falls exponentially from
/// `final_density^(1/stages)` to `final_density` over `stages` stages of
/// `steps_per_stage` steps.
///
/// Stage `s < stages` keeps `final_density^((s+1)/stages)`; from stage
/// `stages` on, `final_density`. With 99.9 % final sparsity and 5 stages this
/// is 74.9 %, 93.7 %, 98.4 %, 99.6 %, 99.9 %, about the paper's 75 %,
/// 93.75 %, 98.4 %, 99.6 %, 99.9 % (one epoch per stage in the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparsityWarmup {
    /// Number of stages (the last one reaches the final density).
    pub stages: u32,
    /// Steps per stage (an epoch in the paper).
    pub steps_per_stage: u64,
}

/// Configuration of [`Dgc`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DgcConfig {
    /// Final sparsity (fraction of entries not sent), in `[0, 1)`. Default 0.999.
    pub sparsity: f32,
    /// Momentum `m` of the local velocity `u ← m·u + g` (momentum correction;
    /// train with plain SGD on the averaged result). Default 0.9; 0 turns
    /// DGC into top-k with error feedback.
    pub momentum: f32,
    /// Local gradient clipping: the gradient is rescaled to this L2 norm when
    /// it is larger, before it enters the velocity. The paper clips each
    /// worker at `N^(-1/2)` times the global threshold for `N` workers.
    /// Default `None`.
    pub clip_norm: Option<f32>,
    /// Momentum factor masking: zero the velocity where entries were sent, so
    /// stale momentum does not push them again. Default `true`.
    pub momentum_masking: bool,
    /// Sparsity warm-up; `None` starts at the final sparsity. Default `None`.
    pub warmup: Option<SparsityWarmup>,
}

impl Default for DgcConfig {
    fn default() -> Self {
        DgcConfig {
            sparsity: 0.999,
            momentum: 0.9,
            clip_norm: None,
            momentum_masking: true,
            warmup: None,
        }
    }
}

impl DgcConfig {
    /// Sets the final sparsity.
    pub fn with_sparsity(mut self, sparsity: f32) -> Self {
        self.sparsity = sparsity;
        self
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the local clipping norm.
    pub fn with_clip_norm(mut self, clip_norm: Option<f32>) -> Self {
        self.clip_norm = clip_norm;
        self
    }

    /// Turns momentum factor masking on or off.
    pub fn with_momentum_masking(mut self, on: bool) -> Self {
        self.momentum_masking = on;
        self
    }

    /// Sets the warm-up schedule.
    pub fn with_warmup(mut self, warmup: Option<SparsityWarmup>) -> Self {
        self.warmup = warmup;
        self
    }

    /// The density (fraction sent) at step `step` (0-based).
    ///
    /// ```
    /// use tensorpress_codecs::grad::{DgcConfig, SparsityWarmup};
    ///
    /// let c = DgcConfig::default().with_warmup(Some(SparsityWarmup { stages: 5, steps_per_stage: 10 }));
    /// let sparsity: Vec<f32> = (0..6).map(|e| 1.0 - c.density_at(10 * e)).collect();
    /// for (s, want) in sparsity.iter().zip([0.75, 0.9375, 0.984, 0.996, 0.999, 0.999]) {
    ///     assert!((s - want).abs() < 0.002, "{s} vs {want}");
    /// }
    /// ```
    pub fn density_at(&self, step: u64) -> f32 {
        let final_density = 1.0 - f64::from(self.sparsity);
        let d = match self.warmup {
            Some(w) if w.stages > 0 && w.steps_per_stage > 0 => {
                let stage = step / w.steps_per_stage;
                if stage < u64::from(w.stages) {
                    final_density.powf((stage + 1) as f64 / f64::from(w.stages))
                } else {
                    final_density
                }
            }
            _ => final_density,
        };
        d as f32
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.sparsity) {
            return Err(Error::InvalidConfig {
                param: "sparsity",
                value: self.sparsity.to_string(),
                expected: "in [0, 1)",
            });
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::InvalidConfig {
                param: "momentum",
                value: self.momentum.to_string(),
                expected: "in [0, 1)",
            });
        }
        if let Some(c) = self.clip_norm {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::InvalidConfig {
                    param: "clip_norm",
                    value: c.to_string(),
                    expected: "positive and finite",
                });
            }
        }
        Ok(())
    }
}

/// Deep Gradient Compression (Lin et al., ICLR 2018): top-k of a locally
/// accumulated velocity.
///
/// Each step, with gradient `g` (after optional local clipping):
/// `u ← m·u + g` (momentum correction), `v ← v + u` (accumulation), send the
/// top `density · n` entries of `v` by magnitude, zero them in `v` and, with
/// momentum factor masking, in `u`. The optimizer then applies plain SGD
/// (`w ← w − lr · mean`) to the averaged sparse result: the momentum lives in
/// the compressor. The density follows [`DgcConfig::density_at`] with the
/// number of calls to `compress` as the step.
///
/// The paper selects by sampling a threshold from 0.1–1 % of the entries; this
/// selects exactly, in linear time.
#[derive(Debug, Clone)]
pub struct Dgc {
    config: DgcConfig,
    step: u64,
    shape: Option<Vec<usize>>,
    velocity: Vec<f32>,
    accumulated: Vec<f32>,
}

impl Dgc {
    /// A DGC compressor with empty state.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for sparsity or momentum outside `[0, 1)`,
    /// or a clipping norm that is not positive and finite.
    pub fn new(config: DgcConfig) -> Result<Self> {
        config.validate()?;
        Ok(Dgc {
            config,
            step: 0,
            shape: None,
            velocity: Vec::new(),
            accumulated: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DgcConfig {
        &self.config
    }

    /// The number of steps compressed so far (drives the warm-up).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the step counter (to resume a schedule).
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    /// The accumulated entries not yet sent (`v`), row-major.
    pub fn accumulated(&self) -> &[f32] {
        &self.accumulated
    }
}

impl GradCompressor for Dgc {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_shape(&mut self.shape, &grad, "Dgc::compress")?;
        let n = grad.len();
        if self.velocity.len() != n {
            self.velocity = vec![0.0; n];
            self.accumulated = vec![0.0; n];
        }
        let mut scale = 1.0f32;
        if let Some(c) = self.config.clip_norm {
            let norm = grad
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt();
            if norm > f64::from(c) {
                scale = (f64::from(c) / norm) as f32;
            }
        }
        let m = self.config.momentum;
        for ((u, v), &g) in self
            .velocity
            .iter_mut()
            .zip(&mut self.accumulated)
            .zip(grad.iter())
        {
            *u = m * *u + scale * g;
            *v += *u;
        }
        let k = keep_count(n, self.config.density_at(self.step));
        let idx = top_k_indices(&self.accumulated, k);
        let payload = sparse_payload(grad.shape(), &self.accumulated, idx);
        if let Payload::Sparse { indices, .. } = &payload {
            for &i in indices {
                self.accumulated[i as usize] = 0.0;
                if self.config.momentum_masking {
                    self.velocity[i as usize] = 0.0;
                }
            }
        }
        self.step += 1;
        Ok(payload)
    }
}

/// Random-k sparsification: `ceil(density · n)` entries chosen uniformly.
///
/// With `rescale` the kept values are multiplied by `n / k`, which makes the
/// estimate unbiased (at a large variance); without, use it with
/// [`ErrorFeedback`](super::ErrorFeedback) (Stich et al. 2018).
#[derive(Debug, Clone)]
pub struct RandomK {
    density: f32,
    rescale: bool,
    rng: SeededRng,
}

impl RandomK {
    /// Random-k keeping `density ∈ (0, 1]`, drawing from `seed` (give each
    /// worker its own).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] outside `(0, 1]`.
    pub fn new(density: f32, rescale: bool, seed: u64) -> Result<Self> {
        check_fraction("density", density)?;
        Ok(RandomK {
            density,
            rescale,
            rng: SeededRng::new(seed),
        })
    }
}

impl GradCompressor for RandomK {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let n = grad.len();
        let k = keep_count(n, self.density);
        let idx = self
            .rng
            .choose_indices(n, k)
            .map_err(|_| Error::InvalidConfig {
                param: "k",
                value: k.to_string(),
                expected: "at most the element count",
            })?;
        let v = contiguous(&grad);
        let factor = if self.rescale && k > 0 {
            n as f32 / k as f32
        } else {
            1.0
        };
        Ok(Payload::Sparse {
            shape: grad.shape().to_vec(),
            values: idx.iter().map(|&i| v[i] * factor).collect(),
            indices: idx.into_iter().map(|i| i as u32).collect(),
        })
    }
}

/// Threshold sparsification (Strom 2015): every entry with `|g| ≥ threshold`.
///
/// The payload size varies with the gradient; use with
/// [`ErrorFeedback`](super::ErrorFeedback), as Strom does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    threshold: f32,
}

impl Threshold {
    /// Sends entries of magnitude at least `threshold` (positive, finite).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] otherwise.
    pub fn new(threshold: f32) -> Result<Self> {
        if !(threshold > 0.0 && threshold.is_finite()) {
            return Err(Error::InvalidConfig {
                param: "threshold",
                value: threshold.to_string(),
                expected: "positive and finite",
            });
        }
        Ok(Threshold { threshold })
    }
}

impl GradCompressor for Threshold {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let v = contiguous(&grad);
        let idx = (0..v.len() as u32)
            .filter(|&i| v[i as usize].abs() >= self.threshold)
            .collect();
        Ok(sparse_payload(grad.shape(), &v, idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, ArrayD};

    fn dense(p: &Payload) -> ArrayD<f32> {
        p.to_dense().unwrap()
    }

    #[test]
    fn top_k_picks_largest_magnitudes() {
        let g = Array2::from_shape_vec((2, 3), vec![0.1f32, -5.0, 2.0, 3.0, 0.0, -0.5]).unwrap();
        let p = TopK::new(0.5)
            .unwrap()
            .compress(g.view().into_dyn())
            .unwrap();
        match &p {
            Payload::Sparse {
                indices,
                values,
                shape,
            } => {
                assert_eq!(shape, &vec![2, 3]);
                assert_eq!(indices, &vec![1, 2, 3]);
                assert_eq!(values, &vec![-5.0, 2.0, 3.0]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(top_k_indices(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert!(TopK::new(0.0).is_err());
    }

    #[test]
    fn dgc_accumulates_and_masks() {
        let cfg = DgcConfig::default().with_sparsity(0.5).with_momentum(0.5);
        let mut dgc = Dgc::new(cfg).unwrap();
        let g = Array1::from(vec![1.0f32, 0.25, -2.0, 0.5]).into_dyn();
        // u = g, v = g: sends -2 and 1.
        let d = dense(&dgc.compress(g.view()).unwrap());
        assert_eq!(d.as_slice().unwrap(), &[1.0, 0.0, -2.0, 0.0]);
        assert_eq!(dgc.accumulated(), &[0.0, 0.25, 0.0, 0.5]);
        // Masked entries restart from g alone.
        let d = dense(&dgc.compress(g.view()).unwrap());
        // u = [1, 0.375, -2, 0.75]; v = [1, 0.625, -2, 1.25]: sends -2 and 1.25.
        assert_eq!(d.as_slice().unwrap(), &[0.0, 0.0, -2.0, 1.25]);
        assert_eq!(dgc.accumulated(), &[1.0, 0.625, 0.0, 0.0]);
    }

    #[test]
    fn dgc_clips_locally() {
        let cfg = DgcConfig::default()
            .with_sparsity(0.0)
            .with_momentum(0.0)
            .with_clip_norm(Some(1.0));
        let mut dgc = Dgc::new(cfg).unwrap();
        let g = Array1::from(vec![3.0f32, 4.0]).into_dyn();
        let d = dense(&dgc.compress(g.view()).unwrap());
        assert!((d[[0]] - 0.6).abs() < 1e-6 && (d[[1]] - 0.8).abs() < 1e-6);
        assert!(Dgc::new(DgcConfig::default().with_sparsity(1.0)).is_err());
    }

    #[test]
    fn dgc_warmup_sends_fewer_entries_each_stage() {
        let cfg = DgcConfig::default().with_warmup(Some(SparsityWarmup {
            stages: 5,
            steps_per_stage: 1,
        }));
        let mut dgc = Dgc::new(cfg).unwrap();
        let g = Array1::from_iter((0..10_000).map(|i| (i as f32).sin())).into_dyn();
        let counts: Vec<usize> = (0..6)
            .map(|_| match dgc.compress(g.view()).unwrap() {
                Payload::Sparse { indices, .. } => indices.len(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(counts, vec![2512, 631, 159, 40, 10, 10]);
    }

    #[test]
    fn dgc_sends_every_entry_eventually() {
        // Without momentum, DGC is top-k with memory: the total sent plus what is
        // left in the accumulator equals the total of the gradients.
        let cfg = DgcConfig::default().with_sparsity(0.75).with_momentum(0.0);
        let mut dgc = Dgc::new(cfg).unwrap();
        let g = Array1::from(vec![1.0f32, 0.5, 0.25, 0.125, -1.0, 0.0, 2.0, 0.01]).into_dyn();
        let mut total = Array1::<f32>::zeros(8).into_dyn();
        for _ in 0..1000 {
            total += &dense(&dgc.compress(g.view()).unwrap());
        }
        for i in 0..8 {
            let want = 1000.0 * g[[i]];
            assert!((total[[i]] + dgc.accumulated()[i] - want).abs() < 1e-2);
        }
        assert!(
            total[[7]] != 0.0,
            "the smallest entry was sent at some point"
        );
    }

    #[test]
    fn random_k_is_seeded_and_rescaled() {
        let g = Array1::from_iter((0..100).map(|i| i as f32)).into_dyn();
        let a = RandomK::new(0.1, true, 3)
            .unwrap()
            .compress(g.view())
            .unwrap();
        let b = RandomK::new(0.1, true, 3)
            .unwrap()
            .compress(g.view())
            .unwrap();
        assert_eq!(a, b);
        match a {
            Payload::Sparse {
                indices, values, ..
            } => {
                assert_eq!(indices.len(), 10);
                for (i, v) in indices.iter().zip(values) {
                    assert_eq!(v, *i as f32 * 10.0);
                }
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn threshold_keeps_large_entries() {
        let g = Array1::from(vec![0.5f32, -1.0, 2.0, -0.1]).into_dyn();
        let d = dense(&Threshold::new(1.0).unwrap().compress(g.view()).unwrap());
        assert_eq!(d.as_slice().unwrap(), &[0.0, -1.0, 2.0, 0.0]);
        assert!(Threshold::new(f32::NAN).is_err());
    }
}
