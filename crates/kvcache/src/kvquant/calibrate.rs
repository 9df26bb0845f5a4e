//! KVQuant's calibration: per-channel key ranges and the k-means levels of
//! keys and values, from a layer's calibration entries (and their Fisher
//! weights).

use half::f16;
use ndarray::{Array2, ArrayView2};

use super::{nearest, range_f16, token_range, KvQuantConfig, Rotary};
use crate::{Error, Result};

/// Calibration entries of one layer: keys before RoPE and values, `[tokens,
/// heads · head_dim]`, each token's position in its window, and optionally
/// the loss gradients with respect to them (Fisher weights).
#[derive(Debug, Clone)]
pub struct KvQuantSamples<'a> {
    /// Keys before RoPE.
    pub keys: ArrayView2<'a, f32>,
    /// Values.
    pub values: ArrayView2<'a, f32>,
    /// Position of each token.
    pub positions: &'a [usize],
    /// `∂loss/∂keys` (before RoPE), same shape as `keys`.
    pub key_grads: Option<ArrayView2<'a, f32>>,
    /// `∂loss/∂values`.
    pub value_grads: Option<ArrayView2<'a, f32>>,
}

impl<'a> KvQuantSamples<'a> {
    /// Samples without gradients (every entry weighs the same).
    pub fn new(
        keys: ArrayView2<'a, f32>,
        values: ArrayView2<'a, f32>,
        positions: &'a [usize],
    ) -> Self {
        KvQuantSamples {
            keys,
            values,
            positions,
            key_grads: None,
            value_grads: None,
        }
    }

    /// Adds the loss gradients (Fisher weights are their squares).
    pub fn with_grads(
        mut self,
        key_grads: ArrayView2<'a, f32>,
        value_grads: ArrayView2<'a, f32>,
    ) -> Self {
        self.key_grads = Some(key_grads);
        self.value_grads = Some(value_grads);
        self
    }
}

/// One layer's calibrated datatype: per-channel key ranges and the key and
/// value levels.
#[derive(Debug, Clone, PartialEq)]
pub struct KvQuantLayer {
    /// Per channel (`heads · head_dim`): the middle of the key range.
    pub key_center: Vec<f16>,
    /// Per channel: half the key range (entries beyond are outliers).
    pub key_half: Vec<f16>,
    /// The `2^bits` key levels in `[-1, 1]` (ascending).
    pub key_levels: Vec<f32>,
    /// The `2^bits` value levels in `[-1, 1]` (ascending).
    pub value_levels: Vec<f32>,
}

/// Bins of the weighted histogram the k-means runs on.
const BINS: usize = 4096;

/// A histogram of normalized entries in `[-1, 1]`: weight, weighted sum and
/// count per bin.
struct Histogram {
    weight: Vec<f64>,
    sum: Vec<f64>,
    count: Vec<f64>,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            weight: vec![0.0; BINS],
            sum: vec![0.0; BINS],
            count: vec![0.0; BINS],
        }
    }

    fn add(&mut self, u: f32, w: f32) {
        let b = (((u + 1.0) * 0.5 * BINS as f32) as usize).min(BINS - 1);
        self.weight[b] += f64::from(w);
        self.sum[b] += f64::from(w) * f64::from(u);
        self.count[b] += 1.0;
    }

    fn center(&self, b: usize) -> f64 {
        (b as f64 + 0.5) / BINS as f64 * 2.0 - 1.0
    }

    /// Weighted 1-D k-means (Lloyd) of the entries, from the uniform grid.
    fn kmeans(&self, k: usize) -> Vec<f32> {
        let mut levels: Vec<f64> = uniform_levels(k).iter().map(|&l| f64::from(l)).collect();
        for _ in 0..100 {
            let mut w = vec![0.0; k];
            let mut s = vec![0.0; k];
            let mut j = 0;
            for b in 0..BINS {
                let x = self.center(b);
                while j + 1 < k && x > 0.5 * (levels[j] + levels[j + 1]) {
                    j += 1;
                }
                w[j] += self.weight[b];
                s[j] += if self.weight[b] > 0.0 {
                    self.sum[b]
                } else {
                    0.0
                };
            }
            let mut moved = 0.0f64;
            for i in 0..k {
                if w[i] > 0.0 {
                    let new = (s[i] / w[i]).clamp(-1.0, 1.0);
                    moved = moved.max((new - levels[i]).abs());
                    levels[i] = new;
                }
            }
            levels.sort_by(f64::total_cmp);
            if moved < 1e-7 {
                break;
            }
        }
        levels.iter().map(|&l| l as f32).collect()
    }

    /// Q-Norm: the levels shifted and scaled so the entries, coded, keep
    /// their (unweighted) mean and standard deviation.
    fn qnorm(&self, levels: &[f32]) -> Vec<f32> {
        let (mut n, mut m1, mut m2, mut q1, mut q2) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for b in 0..BINS {
            let c = self.count[b];
            if c == 0.0 {
                continue;
            }
            let x = self.center(b);
            let q = f64::from(levels[nearest(levels, x as f32)]);
            n += c;
            m1 += c * x;
            m2 += c * x * x;
            q1 += c * q;
            q2 += c * q * q;
        }
        if n == 0.0 {
            return levels.to_vec();
        }
        let (mu, mq) = (m1 / n, q1 / n);
        let sd = (m2 / n - mu * mu).max(0.0).sqrt();
        let sq = (q2 / n - mq * mq).max(0.0).sqrt();
        if sq <= 0.0 || sd <= 0.0 {
            return levels.to_vec();
        }
        levels
            .iter()
            .map(|&l| ((f64::from(l) - mq) * sd / sq + mu) as f32)
            .collect()
    }
}

/// `k` levels evenly spaced over `[-1, 1]`.
fn uniform_levels(k: usize) -> Vec<f32> {
    (0..k)
        .map(|i| -1.0 + 2.0 * i as f32 / (k - 1) as f32)
        .collect()
}

impl KvQuantLayer {
    /// Calibrates one layer whose heads have `head_dim` channels: key ranges
    /// per channel (quantiles), value ranges per token as the cache will
    /// compute them, and the levels of each (k-means weighted by squared
    /// gradients when given); tokens at sink positions are left out. With [`KvQuantConfig::pre_rope`] off, the keys
    /// (and their gradients) are first rotated to their positions.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config, no samples, shapes that disagree
    /// (keys, values, positions, gradients), a head dimension that is odd or
    /// does not divide the channels; [`Error::NonFinite`] for NaN or
    /// infinite samples.
    pub fn calibrate(
        config: &KvQuantConfig,
        rotary: Rotary,
        head_dim: usize,
        samples: &KvQuantSamples<'_>,
    ) -> Result<Self> {
        config.validate()?;
        let (n, channels) = samples.keys.dim();
        let bad = |reason: String| Error::Config {
            field: "KVQuant calibration",
            reason,
        };
        if n == 0 || channels == 0 {
            return Err(bad("no calibration tokens".into()));
        }
        if head_dim == 0 || head_dim % 2 == 1 || channels % head_dim != 0 {
            return Err(bad(format!(
                "head dimension {head_dim}: even and dividing the {channels} channels"
            )));
        }
        if samples.values.dim() != (n, channels) || samples.positions.len() != n {
            return Err(bad(format!(
                "keys {:?}, values {:?} and {} positions disagree",
                samples.keys.dim(),
                samples.values.dim(),
                samples.positions.len()
            )));
        }
        for g in [samples.key_grads, samples.value_grads].iter().flatten() {
            if g.dim() != (n, channels) {
                return Err(bad(format!(
                    "gradients {:?} for samples {:?}",
                    g.dim(),
                    (n, channels)
                )));
            }
        }
        let arrays = [
            ("keys", Some(samples.keys)),
            ("values", Some(samples.values)),
            ("key gradients", samples.key_grads),
            ("value gradients", samples.value_grads),
        ];
        for (what, a) in arrays {
            let Some(a) = a else { continue };
            if let Some(((token, c), _)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    token,
                    head: c / head_dim,
                    dim: c % head_dim,
                });
            }
        }
        let mut keys = samples.keys.to_owned();
        let mut key_grads = samples.key_grads.map(|g| g.to_owned());
        if !config.pre_rope {
            // Keys as this cache stores them: rotated, gradients alike (the
            // rotation is orthogonal, so ∂L/∂(Rk) = R ∂L/∂k).
            for (t, &pos) in samples.positions.iter().enumerate() {
                for a in std::iter::once(&mut keys).chain(key_grads.as_mut()) {
                    let mut row = a.row_mut(t);
                    let row = row.as_slice_mut().expect("owned rows are contiguous");
                    for head in row.chunks_mut(head_dim) {
                        rotary.rotate(head, pos, false);
                    }
                }
            }
        }
        Self::from_keys(config, head_dim, &keys, key_grads.as_ref(), samples)
    }

    fn from_keys(
        config: &KvQuantConfig,
        head_dim: usize,
        keys: &Array2<f32>,
        key_grads: Option<&Array2<f32>>,
        samples: &KvQuantSamples<'_>,
    ) -> Result<Self> {
        let channels = keys.ncols();
        let k = config.levels();
        let tail = config.outliers / 2.0;
        // Sink positions stay f16 in the cache, so they do not shape the
        // datatype.
        let rows: Vec<usize> = (0..keys.nrows())
            .filter(|&t| samples.positions[t] >= config.sinks)
            .collect();
        let n = rows.len();
        if n == 0 {
            return Err(Error::Config {
                field: "KVQuant calibration",
                reason: format!(
                    "every calibration token is one of the first {} (the f16 sinks)",
                    config.sinks
                ),
            });
        }
        let mut key_center = Vec::with_capacity(channels);
        let mut key_half = Vec::with_capacity(channels);
        let mut column = Vec::with_capacity(n);
        for c in 0..channels {
            column.clear();
            column.extend(rows.iter().map(|&t| keys[[t, c]]));
            column.sort_by(f32::total_cmp);
            let at = |q: f32| column[((q * (n - 1) as f32).round() as usize).min(n - 1)];
            let (center, half) = range_f16(at(tail), at(1.0 - tail));
            key_center.push(center);
            key_half.push(half);
        }
        let mut key_hist = Histogram::new();
        for &t in &rows {
            for c in 0..channels {
                let (center, half) = (key_center[c].to_f32(), key_half[c].to_f32());
                let u = (keys[[t, c]] - center) / half;
                if u.abs() <= 1.0 {
                    let w = key_grads
                        .filter(|_| config.fisher)
                        .map_or(1.0, |g| g[[t, c]] * g[[t, c]]);
                    key_hist.add(u, w);
                }
            }
        }
        let mut value_hist = Histogram::new();
        let segment = if config.head_ranges {
            head_dim
        } else {
            channels
        };
        let value_grads = samples.value_grads.filter(|_| config.fisher);
        for &t in &rows {
            let row = samples.values.row(t);
            let row: Vec<f32> = row.iter().copied().collect();
            for (s, part) in row.chunks(segment).enumerate() {
                let (center, half) = token_range(part, config.outliers);
                let (center, half) = (center.to_f32(), half.to_f32());
                for (i, &x) in part.iter().enumerate() {
                    let u = (x - center) / half;
                    if u.abs() <= 1.0 {
                        let c = s * segment + i;
                        let w = value_grads.map_or(1.0, |g| g[[t, c]] * g[[t, c]]);
                        value_hist.add(u, w);
                    }
                }
            }
        }
        let levels = |h: &Histogram| {
            let l = if config.nuq {
                h.kmeans(k)
            } else {
                uniform_levels(k)
            };
            if config.qnorm {
                h.qnorm(&l)
            } else {
                l
            }
        };
        Ok(KvQuantLayer {
            key_levels: levels(&key_hist),
            value_levels: levels(&value_hist),
            key_center,
            key_half,
        })
    }
}
