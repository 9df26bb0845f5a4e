//! KVQuant's cache, its calibration and the rotary embedding it undoes
//! (see [`KvQuantCache`]).

use std::sync::Arc;

use half::f16;
use ndarray::{Array3, ArrayView3};

use crate::cache::{check_append, KvCache};
use crate::{Error, Result};

mod calibrate;
pub use calibrate::{KvQuantLayer, KvQuantSamples};

/// How a rotary embedding pairs the channels of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotaryLayout {
    /// Channels `2i` and `2i + 1` (GGUF / llama.cpp).
    Interleaved,
    /// Channels `i` and `i + head_dim / 2` (Hugging Face).
    Halves,
}

/// A rotary position embedding (RoPE): channel pair `i` of a head at
/// position `p` turns by `p · θ^(−2i / head_dim)`, computed in f32 as the
/// runner does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotary {
    /// The base `θ`.
    pub theta: f64,
    /// The channel pairing.
    pub layout: RotaryLayout,
}

impl Rotary {
    /// RoPE with base `theta`.
    pub fn new(theta: f64, layout: RotaryLayout) -> Self {
        Rotary { theta, layout }
    }

    /// Rotates one head vector `x` (even length) to position `pos`, or back
    /// from it when `inverse`.
    pub fn rotate(&self, x: &mut [f32], pos: usize, inverse: bool) {
        let d = x.len();
        let half = d / 2;
        for i in 0..half {
            let f = (1.0 / self.theta.powf(2.0 * i as f64 / d as f64)) as f32;
            let angle = pos as f32 * f;
            let (sin, cos) = angle.sin_cos();
            let sin = if inverse { -sin } else { sin };
            let (a, b) = match self.layout {
                RotaryLayout::Interleaved => (2 * i, 2 * i + 1),
                RotaryLayout::Halves => (i, i + half),
            };
            let (xa, xb) = (x[a], x[b]);
            x[a] = xa * cos - xb * sin;
            x[b] = xa * sin + xb * cos;
        }
    }
}

/// KVQuant's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvQuantConfig {
    /// Bits per coded entry: 2, 3 or 4.
    pub bits: u8,
    /// Share of entries kept exactly as outliers, in `[0, 0.5]` (the paper's
    /// 1 %).
    pub outliers: f32,
    /// Leading tokens kept in f16 (attention sinks).
    pub sinks: usize,
    /// Quantize keys before RoPE (the paper); `false` quantizes the rotated
    /// keys per channel (an ablation).
    pub pre_rope: bool,
    /// Levels from k-means (nuq); `false` spaces them evenly in `[-1, 1]`.
    pub nuq: bool,
    /// Q-Norm: match the dequantized calibration entries' mean and spread.
    pub qnorm: bool,
    /// Weigh the k-means by Fisher information (squared loss gradients)
    /// when the calibration has them (the paper); `false` weighs every
    /// entry the same.
    pub fisher: bool,
    /// One value range per token *and head* instead of per token (4 more
    /// bytes per head and token; helps when heads' values differ in scale).
    pub head_ranges: bool,
}

impl KvQuantConfig {
    /// `bits` bits with the paper's choices: 1 % outliers, one sink, keys
    /// before RoPE, Fisher-weighted nuq levels, Q-Norm at 2 bits, a value
    /// range per token.
    pub fn new(bits: u8) -> Self {
        KvQuantConfig {
            bits,
            outliers: 0.01,
            sinks: 1,
            pre_rope: true,
            nuq: true,
            qnorm: bits == 2,
            fisher: true,
            head_ranges: false,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for bits other than 2–4 or an outlier share outside
    /// `[0, 0.5]`.
    pub fn validate(&self) -> Result<()> {
        if !(2..=4).contains(&self.bits) {
            return Err(Error::Config {
                field: "KVQuant bits",
                reason: format!("{}: KVQuant codes are 2, 3 or 4 bits", self.bits),
            });
        }
        if !(0.0..=0.5).contains(&self.outliers) {
            return Err(Error::Config {
                field: "KVQuant outliers",
                reason: format!(
                    "{}: the outlier share is in [0, 0.5] (the paper keeps 1 %)",
                    self.outliers
                ),
            });
        }
        Ok(())
    }

    fn levels(&self) -> usize {
        1 << self.bits
    }
}

/// Index of the level nearest `u` (levels ascending).
fn nearest(levels: &[f32], u: f32) -> usize {
    let mut lo = 0;
    let mut hi = levels.len() - 1;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if u > 0.5 * (levels[mid] + levels[mid + 1]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The value range of one vector (a token's values, or one head's): its
/// `outliers` share of entries, taken one at a time from whichever end lies
/// farther from the median, is left outside; `(center, half)` rounded to
/// f16.
fn token_range(v: &[f32], outliers: f32) -> (f16, f16) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len();
    let k = ((outliers * n as f32).round() as usize).min(n.saturating_sub(1));
    let median = sorted[n / 2];
    let (mut lo, mut hi) = (0, n - 1);
    for _ in 0..k {
        if sorted[hi] - median >= median - sorted[lo] {
            hi -= 1;
        } else {
            lo += 1;
        }
    }
    range_f16(sorted[lo], sorted[hi])
}

/// `(center, half)` of `[lo, hi]` in f16, with the half widened so the
/// rounded range still covers both ends.
fn range_f16(lo: f32, hi: f32) -> (f16, f16) {
    let center = f16::from_f32(0.5 * (lo + hi));
    let c = center.to_f32();
    let mut half = f16::from_f32(((hi - c).max(c - lo)).max(1e-6));
    if half.to_f32() < (hi - c).max(c - lo) {
        half = f16::from_bits(half.to_bits() + 1);
    }
    (center, half)
}

/// Cosine and sine of each position's rotation angles, grown as tokens
/// arrive (the runner keeps the same table; it is not counted as cache
/// memory).
#[derive(Debug, Clone, Default)]
struct AngleTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl AngleTable {
    fn ensure(&mut self, rotary: &Rotary, head_dim: usize, positions: usize) {
        let half = head_dim / 2;
        let have = self.cos.len() / half.max(1);
        for p in have..positions {
            for i in 0..half {
                let f = (1.0 / rotary.theta.powf(2.0 * i as f64 / head_dim as f64)) as f32;
                let (s, c) = (p as f32 * f).sin_cos();
                self.cos.push(c);
                self.sin.push(s);
            }
        }
    }

    /// Rotates one head vector to `pos` (or back when `inverse`); the table
    /// must cover `pos`.
    fn rotate(&self, layout: RotaryLayout, x: &mut [f32], pos: usize, inverse: bool) {
        let half = x.len() / 2;
        let (cos, sin) = (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        );
        for i in 0..half {
            let s = if inverse { -sin[i] } else { sin[i] };
            let (a, b) = match layout {
                RotaryLayout::Interleaved => (2 * i, 2 * i + 1),
                RotaryLayout::Halves => (i, i + half),
            };
            let (xa, xb) = (x[a], x[b]);
            x[a] = xa * cos[i] - xb * s;
            x[b] = xa * s + xb * cos[i];
        }
    }
}

/// One tensor's codes (one per entry, counted at `bits` each) and sparse
/// outliers (global entry index, exact value).
#[derive(Debug, Clone, Default)]
struct Coded {
    codes: Vec<u8>,
    outliers: Vec<(u32, f16)>,
}

/// KVQuant: per-channel pre-RoPE keys, non-uniform datatypes from
/// sensitivity-weighted k-means, per-vector dense-and-sparse outliers,
/// attention-sink tokens in full precision, and Q-Norm.
///
/// Hooper, Kim, Mohammadzadeh, Mahoney, Shao, Keutzer, Gholami, *KVQuant:
/// Towards 10 Million Context Length LLM Inference with KV Cache
/// Quantization*, NeurIPS 2024, arXiv:2401.18079.
///
/// - **Keys per channel, before RoPE.** Key outliers sit in fixed channels,
///   so keys are normalized per channel; the rotary embedding mixes channel
///   pairs by a position-dependent angle, which smears those channels, so
///   the cache quantizes the keys *before* RoPE and rotates them again after
///   dequantization. The runner hands over rotated keys; the cache rotates
///   each back by its position (an exact orthogonal map, [`Rotary`]) first.
/// - **Offline key ranges.** Each channel's range (its `outliers / 2` and
///   `1 − outliers / 2` quantiles) comes from calibration, so a token is
///   quantized the moment it arrives: no full-precision residual window and
///   no re-quantization. Values are normalized per token, online.
/// - **Dense-and-sparse.** Entries outside their range are outliers kept
///   exactly (f16 with a 16-bit channel index, as the paper's CSR/CSC
///   storage); the rest are normalized to `[-1, 1]` and coded.
/// - **Non-uniform datatype (nuq).** The `2^bits` levels in `[-1, 1]` of each
///   layer's keys and values are the centroids of a 1-D k-means of the
///   normalized calibration entries, each weighted by its Fisher information
///   (its squared loss gradient) when the calibration supplies gradients.
/// - **Attention sinks.** The first `sinks` tokens stay f16.
/// - **Q-Norm.** The levels are shifted and scaled so the dequantized
///   calibration entries keep their mean and standard deviation (the paper
///   uses it at 2 bits).
///
/// Calibration needs the model (its keys before RoPE and, for Fisher
/// weights, gradients): `tensorpress_models::eval::calibrate_kvquant` runs it
/// and `tensorpress eval --kv-cache kvquant-3 --kv-calib FILE` wires it up.
/// [`KvQuantLayer::calibrate`] takes the samples.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_kvcache::{
///     KvCache, KvQuantCache, KvQuantConfig, KvQuantLayer, KvQuantSamples, Rotary,
///     RotaryLayout,
/// };
/// use tensorpress_tensor::SeededRng;
///
/// let (heads, head_dim) = (2, 8);
/// let mut rng = SeededRng::new(3);
/// let keys: Array2<f32> = rng.array_normal((400, heads * head_dim));
/// let values: Array2<f32> = rng.array_normal((400, heads * head_dim));
/// let positions: Vec<usize> = (0..400).collect();
/// let config = KvQuantConfig::new(3);
/// let rotary = Rotary::new(10_000.0, RotaryLayout::Halves);
/// let samples = KvQuantSamples::new(keys.view(), values.view(), &positions);
/// let layer = KvQuantLayer::calibrate(&config, rotary, head_dim, &samples)?;
///
/// let mut cache = KvQuantCache::new(heads, head_dim, config, rotary, layer.into())?;
/// let mut k = rng.array_normal((5, heads, head_dim));
/// for t in 0..5 {
///     let mut row = k.slice_mut(ndarray::s![t, .., ..]);
///     for mut h in row.outer_iter_mut() {
///         rotary.rotate(h.as_slice_mut().unwrap(), t, false);
///     }
/// }
/// cache.append(k.view(), k.view())?;
/// let err = (&cache.keys() - &k).mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
/// assert!(err < 0.5, "{err}");
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
///
/// The cache of one layer holds the first [`sinks`](KvQuantConfig::sinks)
/// tokens in f16 and codes every later token the moment it arrives — keys per
/// channel against the layer's calibrated ranges (before RoPE unless
/// configured otherwise), values per token — with entries outside their
/// range kept exactly.
///
/// [`memory_bytes`](KvCache::memory_bytes) counts packed codes (`bits` per
/// entry), 4 bytes per outlier (f16 value and 16-bit channel, as CSR), a
/// 4-byte row pointer per token for each of keys and values, each token's
/// (or token and head's) f16 value range, the f16 sinks, and the layer's per-channel key ranges
/// and levels once.
#[derive(Debug, Clone)]
pub struct KvQuantCache {
    heads: usize,
    head_dim: usize,
    config: KvQuantConfig,
    rotary: Rotary,
    layer: Arc<KvQuantLayer>,
    tokens: usize,
    sink_keys: Vec<f16>,
    sink_values: Vec<f16>,
    keys: Coded,
    values: Coded,
    value_ranges: Vec<(f16, f16)>,
    angles: AngleTable,
}

impl KvQuantCache {
    /// An empty cache for `heads` heads of `head_dim` with `layer`'s
    /// calibration.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad config, an odd head dimension, or a
    /// calibration for another channel count or bit width.
    pub fn new(
        heads: usize,
        head_dim: usize,
        config: KvQuantConfig,
        rotary: Rotary,
        layer: Arc<KvQuantLayer>,
    ) -> Result<Self> {
        config.validate()?;
        let channels = heads * head_dim;
        if head_dim % 2 == 1
            || layer.key_center.len() != channels
            || layer.key_half.len() != channels
            || layer.key_levels.len() != config.levels()
            || layer.value_levels.len() != config.levels()
        {
            return Err(Error::Config {
                field: "KVQuant calibration",
                reason: format!(
                    "calibrated for {} channels and {} levels; the cache has {heads} heads of \
                     {head_dim} (even) and {} levels",
                    layer.key_center.len(),
                    layer.key_levels.len(),
                    config.levels()
                ),
            });
        }
        Ok(KvQuantCache {
            heads,
            head_dim,
            config,
            rotary,
            layer,
            tokens: 0,
            sink_keys: Vec::new(),
            sink_values: Vec::new(),
            keys: Coded::default(),
            values: Coded::default(),
            value_ranges: Vec::new(),
            angles: AngleTable::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> KvQuantConfig {
        self.config
    }

    /// Outliers stored (keys, values).
    pub fn outliers(&self) -> (usize, usize) {
        (self.keys.outliers.len(), self.values.outliers.len())
    }

    fn channels(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Codes one token's keys (`row`, before RoPE when so configured).
    fn code_keys(&mut self, row: &[f32], base: u32) {
        let layer = &self.layer;
        for (c, &x) in row.iter().enumerate() {
            let (center, half) = (layer.key_center[c].to_f32(), layer.key_half[c].to_f32());
            let u = (x - center) / half;
            if u.abs() <= 1.0 {
                self.keys.codes.push(nearest(&layer.key_levels, u) as u8);
            } else {
                self.keys.codes.push(0);
                self.keys.outliers.push((base + c as u32, f16::from_f32(x)));
            }
        }
    }

    /// Entries per value range: a token's values, or one head's.
    fn value_segment(&self) -> usize {
        if self.config.head_ranges {
            self.head_dim
        } else {
            self.channels()
        }
    }

    fn code_values(&mut self, row: &[f32], base: u32) {
        let segment = self.value_segment();
        for (s, part) in row.chunks(segment).enumerate() {
            let (center, half) = token_range(part, self.config.outliers);
            self.value_ranges.push((center, half));
            let (center, half) = (center.to_f32(), half.to_f32());
            for (i, &x) in part.iter().enumerate() {
                let u = (x - center) / half;
                if u.abs() <= 1.0 {
                    self.values
                        .codes
                        .push(nearest(&self.layer.value_levels, u) as u8);
                } else {
                    self.values.codes.push(0);
                    let c = (s * segment + i) as u32;
                    self.values.outliers.push((base + c, f16::from_f32(x)));
                }
            }
        }
    }

    /// Dequantizes keys or values: `[len, heads, head_dim]`.
    fn decode(&self, keys: bool) -> Array3<f32> {
        let (ch, d) = (self.channels(), self.head_dim);
        let sinks = self.sinks_held();
        let mut out = Array3::<f32>::zeros((self.tokens, self.heads, d));
        let flat = out.as_slice_mut().expect("fresh arrays are contiguous");
        let (sink, coded) = if keys {
            (&self.sink_keys, &self.keys)
        } else {
            (&self.sink_values, &self.values)
        };
        for (o, s) in flat[..sinks * ch].iter_mut().zip(sink) {
            *o = s.to_f32();
        }
        let body = &mut flat[sinks * ch..];
        if keys {
            let l = &self.layer;
            for (t, row) in body.chunks_mut(ch).enumerate() {
                let codes = &coded.codes[t * ch..(t + 1) * ch];
                for (c, (o, &q)) in row.iter_mut().zip(codes).enumerate() {
                    *o = l.key_center[c].to_f32()
                        + l.key_half[c].to_f32() * l.key_levels[usize::from(q)];
                }
            }
        } else {
            let levels = &self.layer.value_levels;
            let segment = self.value_segment();
            for (j, part) in body.chunks_mut(segment).enumerate() {
                let codes = &coded.codes[j * segment..(j + 1) * segment];
                let (center, half) = self.value_ranges[j];
                let (center, half) = (center.to_f32(), half.to_f32());
                for (o, &q) in part.iter_mut().zip(codes) {
                    *o = center + half * levels[usize::from(q)];
                }
            }
        }
        for &(i, v) in &coded.outliers {
            body[i as usize] = v.to_f32();
        }
        if keys && self.config.pre_rope {
            for (t, row) in body.chunks_mut(ch).enumerate() {
                for head in row.chunks_mut(d) {
                    self.angles
                        .rotate(self.rotary.layout, head, sinks + t, false);
                }
            }
        }
        out
    }

    fn sinks_held(&self) -> usize {
        self.tokens.min(self.config.sinks)
    }
}

impl KvCache for KvQuantCache {
    fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.tokens
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        let n = check_append(self.heads, self.head_dim, &keys, &values)?;
        let (ch, d) = (self.channels(), self.head_dim);
        self.angles.ensure(&self.rotary, d, self.tokens + n);
        let mut k_row = vec![0.0f32; ch];
        let mut v_row = vec![0.0f32; ch];
        for t in 0..n {
            let pos = self.tokens;
            for ((dst, src), (vd, vs)) in k_row
                .iter_mut()
                .zip(keys.slice(ndarray::s![t, .., ..]).iter())
                .zip(
                    v_row
                        .iter_mut()
                        .zip(values.slice(ndarray::s![t, .., ..]).iter()),
                )
            {
                *dst = *src;
                *vd = *vs;
            }
            if pos < self.config.sinks {
                self.sink_keys
                    .extend(k_row.iter().map(|&x| f16::from_f32(x)));
                self.sink_values
                    .extend(v_row.iter().map(|&x| f16::from_f32(x)));
            } else {
                if self.config.pre_rope {
                    for head in k_row.chunks_mut(d) {
                        self.angles.rotate(self.rotary.layout, head, pos, true);
                    }
                }
                let base = ((pos - self.config.sinks) * ch) as u32;
                self.code_keys(&k_row, base);
                self.code_values(&v_row, base);
            }
            self.tokens += 1;
        }
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.decode(true)
    }

    fn values(&self) -> Array3<f32> {
        self.decode(false)
    }

    fn memory_bytes(&self) -> usize {
        let coded = self.tokens - self.sinks_held();
        let codes = (coded * self.channels() * usize::from(self.config.bits)).div_ceil(8);
        let outliers = 4 * (self.keys.outliers.len() + self.values.outliers.len());
        let rows = 2 * 4 * coded;
        let ranges = 4 * self.value_ranges.len();
        let sinks = 2 * (self.sink_keys.len() + self.sink_values.len());
        let layer = 2 * 2 * self.channels() + 4 * 2 * self.config.levels();
        2 * codes + outliers + rows + ranges + sinks + layer
    }

    fn clear(&mut self) {
        self.tokens = 0;
        self.sink_keys.clear();
        self.sink_values.clear();
        self.keys = Coded::default();
        self.values = Coded::default();
        self.value_ranges.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests;
