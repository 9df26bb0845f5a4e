//! Quantizers: QSGD, TernGrad and scaled sign.

use ndarray::ArrayViewD;
use tensorpress_tensor::SeededRng;

use super::{bits_for_levels, check_rank, GradCompressor, Payload};
use crate::{Error, Result};

/// Which norm scales a bucket.
#[derive(Debug, Clone, Copy)]
enum Norm {
    L2,
    Max,
}

fn check_bucket(bucket: usize) -> Result<()> {
    if bucket == 0 || bucket > super::MAX_ELEMENTS {
        return Err(Error::InvalidConfig {
            param: "bucket",
            value: bucket.to_string(),
            expected: "in 1..=u32::MAX",
        });
    }
    Ok(())
}

/// Unbiased stochastic rounding of each bucket of `values` to
/// `scale · {−s, …, s} / s`: with `r = s·|x|/scale`, the level is
/// `⌊r⌋ + 1` with probability `r − ⌊r⌋`, else `⌊r⌋`.
fn stochastic_levels(
    shape: &[usize],
    values: &[f32],
    levels: u8,
    bucket: usize,
    norm: Norm,
    rng: &mut SeededRng,
) -> Payload {
    let s = f32::from(levels);
    let mut scales = Vec::with_capacity(values.len().div_ceil(bucket));
    let mut codes = Vec::with_capacity(values.len());
    for chunk in values.chunks(bucket) {
        let scale = match norm {
            Norm::L2 => chunk
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>()
                .sqrt() as f32,
            Norm::Max => chunk.iter().fold(0.0f32, |m, &x| m.max(x.abs())),
        };
        if !(scale > 0.0 && scale.is_finite()) {
            // All zero (or non-finite): nothing a level could express.
            scales.push(if scale.is_finite() { scale } else { 0.0 });
            codes.extend(std::iter::repeat_n(0i8, chunk.len()));
            continue;
        }
        scales.push(scale);
        let inv = s / scale;
        for &x in chunk {
            let r = (x.abs() * inv).min(s);
            let mut level = r.floor();
            if level < s && rng.uniform_f32() < r - level {
                level += 1.0;
            }
            let code = level as i8;
            codes.push(if x < 0.0 { -code } else { code });
        }
    }
    Payload::Quantized {
        shape: shape.to_vec(),
        levels,
        bucket,
        scales,
        codes,
    }
}

/// Configuration of [`Qsgd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QsgdConfig {
    /// Number of positive levels `s` (`1..=127`; codes take
    /// [`bits_for_levels`] bits). Default 4.
    pub levels: u8,
    /// Elements per L2 norm (the paper's bucket size `d`). Default 512.
    pub bucket: usize,
    /// Seed of the rounding (give each worker its own). Default 0.
    pub seed: u64,
}

impl Default for QsgdConfig {
    fn default() -> Self {
        QsgdConfig {
            levels: 4,
            bucket: 512,
            seed: 0,
        }
    }
}

/// QSGD (Alistarh et al., NeurIPS 2017): each bucket `v` is sent as its norm
/// `‖v‖₂` and, per element, a sign and a level `ξ ∈ {0, …, s}` stochastically
/// rounded so that `E[‖v‖₂ · sign(vᵢ) · ξᵢ / s] = vᵢ` (unbiased), with variance
/// at most `min(d/s², √d/s) · ‖v‖²` for buckets of `d` elements.
///
/// Codes are bit-packed at a fixed width ([`bits_for_levels`]); the paper's
/// Elias coding of the levels would shrink them further.
#[derive(Debug, Clone)]
pub struct Qsgd {
    config: QsgdConfig,
    rng: SeededRng,
}

impl Qsgd {
    /// A QSGD quantizer.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for levels outside `1..=127` or a zero bucket.
    pub fn new(config: QsgdConfig) -> Result<Self> {
        bits_for_levels(config.levels)?;
        check_bucket(config.bucket)?;
        Ok(Qsgd {
            rng: SeededRng::new(config.seed),
            config,
        })
    }
}

impl GradCompressor for Qsgd {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let v: Vec<f32> = grad.iter().copied().collect();
        Ok(stochastic_levels(
            grad.shape(),
            &v,
            self.config.levels,
            self.config.bucket,
            Norm::L2,
            &mut self.rng,
        ))
    }
}

/// Configuration of [`TernGrad`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TernGradConfig {
    /// Elements per scale (`1..=u32::MAX`); a bucket at least the layer size
    /// gives the paper's layer-wise scaling. Default 4096.
    pub bucket: usize,
    /// Gradient clipping at `c · σ` before ternarizing (`σ` the standard
    /// deviation of the gradient); the paper uses `c = 2.5`. Default
    /// `Some(2.5)`.
    pub clip_sigma: Option<f32>,
    /// Seed of the rounding (give each worker its own). Default 0.
    pub seed: u64,
}

impl Default for TernGradConfig {
    fn default() -> Self {
        TernGradConfig {
            bucket: 4096,
            clip_sigma: Some(2.5),
            seed: 0,
        }
    }
}

/// TernGrad (Wen et al., NeurIPS 2017): `sₜ · sign(g) ∘ b` with
/// `sₜ = max|g|` per bucket and `bᵢ ~ Bernoulli(|gᵢ| / sₜ)`, so unbiased (for
/// the clipped gradient); two bits per element.
#[derive(Debug, Clone)]
pub struct TernGrad {
    config: TernGradConfig,
    rng: SeededRng,
}

impl TernGrad {
    /// A TernGrad quantizer.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero bucket or a clipping factor that
    /// is not positive and finite.
    pub fn new(config: TernGradConfig) -> Result<Self> {
        check_bucket(config.bucket)?;
        if let Some(c) = config.clip_sigma {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::InvalidConfig {
                    param: "clip_sigma",
                    value: c.to_string(),
                    expected: "positive and finite",
                });
            }
        }
        Ok(TernGrad {
            rng: SeededRng::new(config.seed),
            config,
        })
    }
}

impl GradCompressor for TernGrad {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let mut v: Vec<f32> = grad.iter().copied().collect();
        if let Some(c) = self.config.clip_sigma {
            let n = v.len().max(1) as f64;
            let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let var = v
                .iter()
                .map(|&x| (f64::from(x) - mean).powi(2))
                .sum::<f64>()
                / n;
            let limit = (f64::from(c) * var.sqrt()) as f32;
            if limit > 0.0 {
                v.iter_mut().for_each(|x| *x = x.clamp(-limit, limit));
            }
        }
        Ok(stochastic_levels(
            grad.shape(),
            &v,
            1,
            self.config.bucket,
            Norm::Max,
            &mut self.rng,
        ))
    }
}

/// Scaled sign (Karimireddy et al., ICML 2019): `(‖p‖₁ / n) · sign(p)`, one bit
/// per element and one scale per tensor (`sign(0) = +1`).
///
/// Biased: train with [`EfSignSgd`](super::EfSignSgd) (this inside
/// [`ErrorFeedback`](super::ErrorFeedback)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScaledSign;

impl GradCompressor for ScaledSign {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        let n = grad.len().max(1) as f64;
        let scale = (grad.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / n) as f32;
        Ok(Payload::Sign {
            shape: grad.shape().to_vec(),
            scale,
            negative: grad.iter().map(|&x| x < 0.0).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, ArrayD};

    fn sample(n: usize) -> ArrayD<f32> {
        let mut rng = SeededRng::new(11);
        Array1::from_iter((0..n).map(|_| rng.normal_f32())).into_dyn()
    }

    /// Mean over `trials` decodings against the input: every coordinate's
    /// average must lie within 5 standard errors of the truth.
    fn assert_unbiased<C: GradCompressor>(c: &mut C, g: &ArrayD<f32>, trials: usize) {
        let n = g.len();
        let mut sum = vec![0.0f64; n];
        let mut sum_sq = vec![0.0f64; n];
        for _ in 0..trials {
            let p = c.compress(g.view()).unwrap();
            let d = c.decompress(&p).unwrap();
            for (i, &x) in d.iter().enumerate() {
                sum[i] += f64::from(x);
                sum_sq[i] += f64::from(x) * f64::from(x);
            }
        }
        let t = trials as f64;
        let mut worst = 0.0f64;
        for i in 0..n {
            let mean = sum[i] / t;
            let var = (sum_sq[i] / t - mean * mean).max(0.0);
            let se = (var / t).sqrt().max(1e-9);
            worst = worst.max((mean - f64::from(g[i])).abs() / se);
        }
        // n = 64 coordinates: a 5σ deviation has probability ~4e-5 under the
        // null; with the fixed seed the result is deterministic anyway.
        assert!(worst < 5.0, "largest deviation {worst:.2} standard errors");
    }

    #[test]
    fn qsgd_is_unbiased() {
        let g = sample(64);
        let mut q = Qsgd::new(QsgdConfig {
            levels: 2,
            bucket: 16,
            seed: 5,
        })
        .unwrap();
        assert_unbiased(&mut q, &g, 4000);
    }

    #[test]
    fn terngrad_is_unbiased_without_clipping() {
        let g = sample(64);
        let mut q = TernGrad::new(TernGradConfig {
            bucket: 64,
            clip_sigma: None,
            seed: 5,
        })
        .unwrap();
        assert_unbiased(&mut q, &g, 4000);
        match q.compress(g.view()).unwrap() {
            Payload::Quantized { levels, codes, .. } => {
                assert_eq!(levels, 1);
                assert!(codes.iter().all(|c| (-1..=1).contains(c)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn qsgd_error_shrinks_with_levels() {
        let g = sample(1024);
        let err = |levels| {
            let mut q = Qsgd::new(QsgdConfig {
                levels,
                bucket: 128,
                seed: 1,
            })
            .unwrap();
            let p = q.compress(g.view()).unwrap();
            let d = q.decompress(&p).unwrap();
            (&d - &g).mapv(|x| x * x).sum()
        };
        let (e1, e4, e16) = (err(1), err(4), err(16));
        assert!(e1 > e4 && e4 > e16, "{e1} {e4} {e16}");
        assert!(Qsgd::new(QsgdConfig {
            levels: 0,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn qsgd_zero_bucket_and_bytes() {
        let g = Array1::<f32>::zeros(10).into_dyn();
        let mut q = Qsgd::new(QsgdConfig::default()).unwrap();
        let p = q.compress(g.view()).unwrap();
        assert_eq!(q.decompress(&p).unwrap(), g);
        // Tag, shape (5), levels, bucket (4), one scale (4), 10 4-bit codes in two words.
        assert_eq!(p.byte_len(), 1 + 5 + 1 + 4 + 4 + 8);
    }

    #[test]
    fn scaled_sign_keeps_l1_norm() {
        let g = Array1::from(vec![2.0f32, -1.0, 0.0, -1.0]).into_dyn();
        let p = ScaledSign.compress(g.view()).unwrap();
        let d = ScaledSign.decompress(&p).unwrap();
        assert_eq!(d.as_slice().unwrap(), &[1.0, -1.0, 1.0, -1.0]);
    }
}
