//! FP8 (E4M3) caches: per-tensor static scales calibrated per layer, the
//! scheme vLLM runs (`kv_cache_scheme` of compressed-tensors, with
//! `self_attn.k_scale` / `v_scale` per layer), or a dynamic f32 scale per
//! token and head; and [`AmaxRecorder`], the f32 cache that measures the
//! largest magnitudes a calibration pass produces.

use std::sync::{Arc, Mutex};

use ndarray::{Array3, ArrayView3};
use tensorpress_quant_core::FloatFormat;

use crate::cache::{check_append, KvCache};
use crate::float::build;
use crate::{Error, F32Cache, Result};

/// Largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// How an [`Fp8Cache`] scales its values into E4M3's range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fp8Scales {
    /// One scale for all keys and one for all values of the layer
    /// (`x ≈ e4m3(x / scale) · scale`), calibrated ahead of time:
    /// `scale = amax / 448` ([`Fp8Scales::from_amax`]). Values beyond
    /// `448 · scale` saturate.
    Static {
        /// The key scale (vLLM's `k_scale`).
        key: f32,
        /// The value scale (`v_scale`).
        value: f32,
    },
    /// An f32 scale per token and head, `max|x| / 448`, computed as tokens
    /// arrive (no calibration; 4 more bytes per token and head).
    PerToken,
}

impl Fp8Scales {
    /// Static scales from calibrated largest magnitudes (`amax / 448`; an
    /// amax of 0 gives scale 1).
    pub fn from_amax(key_amax: f32, value_amax: f32) -> Self {
        let s = |a: f32| if a > 0.0 { a / E4M3_MAX } else { 1.0 };
        Fp8Scales::Static {
            key: s(key_amax),
            value: s(value_amax),
        }
    }

    /// The `(key, value)` scales of [`Fp8Scales::Static`]; `None` for
    /// [`Fp8Scales::PerToken`].
    pub fn as_static(&self) -> Option<(f32, f32)> {
        match *self {
            Fp8Scales::Static { key, value } => Some((key, value)),
            Fp8Scales::PerToken => None,
        }
    }

    fn validate(&self) -> Result<()> {
        if let Fp8Scales::Static { key, value } = *self {
            for (what, s) in [("key", key), ("value", value)] {
                if !(s.is_finite() && s > 0.0) {
                    return Err(Error::Config {
                        field: "fp8 scale",
                        reason: format!("{what} scale {s}: give a positive finite number"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Keys and values as FP8 E4M3 codes (round to nearest even, saturating at
/// ±448) with [`Fp8Scales`]: one byte per element, plus 4 per token and head
/// with per-token scales.
///
/// ```
/// use tensorpress_kvcache::{Fp8Cache, Fp8Scales, KvCache};
/// use tensorpress_tensor::SeededRng;
///
/// let mut rng = SeededRng::new(0);
/// let k = rng.array_normal((10, 2, 64));
/// let mut cache = Fp8Cache::new(2, 64, Fp8Scales::from_amax(4.0, 4.0))?;
/// cache.append(k.view(), k.view())?;
/// assert_eq!(cache.memory_bytes(), 2 * 10 * 2 * 64);
/// // E4M3 keeps 3 mantissa bits: relative error at most 1/16 in range.
/// let rel = (&cache.keys() - &k).iter().zip(&k).map(|(e, x)| e.abs() / x.abs().max(0.1)).fold(0.0f32, f32::max);
/// assert!(rel <= 1.0 / 16.0 + 1e-3, "{rel}");
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fp8Cache {
    heads: usize,
    head_dim: usize,
    scales: Fp8Scales,
    tokens: usize,
    key_codes: Vec<u8>,
    value_codes: Vec<u8>,
    /// Per-token scales, `[tokens, heads]` (empty with static scales).
    key_scales: Vec<f32>,
    value_scales: Vec<f32>,
}

impl Fp8Cache {
    /// An empty cache for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// [`Error::Config`] for a static scale that is not positive and finite.
    pub fn new(heads: usize, head_dim: usize, scales: Fp8Scales) -> Result<Self> {
        scales.validate()?;
        Ok(Fp8Cache {
            heads,
            head_dim,
            scales,
            tokens: 0,
            key_codes: Vec::new(),
            value_codes: Vec::new(),
            key_scales: Vec::new(),
            value_scales: Vec::new(),
        })
    }

    /// The scales.
    pub fn scales(&self) -> Fp8Scales {
        self.scales
    }

    fn read(&self, codes: &[u8], per_token: &[f32], fixed: f32) -> Array3<f32> {
        let d = self.head_dim.max(1);
        build((self.tokens, self.heads, self.head_dim), |i| {
            let s = if per_token.is_empty() {
                fixed
            } else {
                per_token[i / d]
            };
            FloatFormat::E4M3.decode(codes[i]) * s
        })
    }
}

/// Encodes `x` into `codes` with the fixed `scale`, or per (token, head)
/// scales pushed to `scales` when `scale` is `None`.
fn encode(
    x: &ArrayView3<'_, f32>,
    d: usize,
    scale: Option<f32>,
    codes: &mut Vec<u8>,
    scales: &mut Vec<f32>,
) {
    for token in x.outer_iter() {
        for vector in token.outer_iter() {
            debug_assert_eq!(vector.len(), d);
            let s = scale.unwrap_or_else(|| {
                let amax = vector.iter().fold(0f32, |m, v| m.max(v.abs()));
                let s = if amax > 0.0 { amax / E4M3_MAX } else { 1.0 };
                scales.push(s);
                s
            });
            codes.extend(
                vector
                    .iter()
                    .map(|&v| FloatFormat::E4M3.encode_saturating(v / s)),
            );
        }
    }
}

impl KvCache for Fp8Cache {
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
        let t = check_append(self.heads, self.head_dim, &keys, &values)?;
        let (ks, vs) = match self.scales {
            Fp8Scales::Static { key, value } => (Some(key), Some(value)),
            Fp8Scales::PerToken => (None, None),
        };
        let d = self.head_dim;
        encode(&keys, d, ks, &mut self.key_codes, &mut self.key_scales);
        encode(
            &values,
            d,
            vs,
            &mut self.value_codes,
            &mut self.value_scales,
        );
        self.tokens += t;
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        let fixed = match self.scales {
            Fp8Scales::Static { key, .. } => key,
            Fp8Scales::PerToken => 1.0,
        };
        self.read(&self.key_codes, &self.key_scales, fixed)
    }

    fn values(&self) -> Array3<f32> {
        let fixed = match self.scales {
            Fp8Scales::Static { value, .. } => value,
            Fp8Scales::PerToken => 1.0,
        };
        self.read(&self.value_codes, &self.value_scales, fixed)
    }

    fn memory_bytes(&self) -> usize {
        self.key_codes.len()
            + self.value_codes.len()
            + 4 * (self.key_scales.len() + self.value_scales.len())
    }

    fn clear(&mut self) {
        self.tokens = 0;
        self.key_codes.clear();
        self.value_codes.clear();
        self.key_scales.clear();
        self.value_scales.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}

/// Largest magnitudes of the keys and values one layer produced.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Amax {
    /// Over every key element appended.
    pub key: f32,
    /// Over every value element appended.
    pub value: f32,
}

/// An exact (f32) cache that records the largest key and value magnitudes
/// appended into a shared [`Amax`]: run a calibration text through the model
/// with one per layer, then build [`Fp8Scales::from_amax`] from the records.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use ndarray::Array3;
/// use tensorpress_kvcache::{Amax, AmaxRecorder, KvCache};
///
/// let record = Arc::new(Mutex::new(Amax::default()));
/// let mut cache = AmaxRecorder::new(1, 2, record.clone());
/// let k = Array3::from_shape_vec((1, 1, 2), vec![3.0f32, -5.0]).unwrap();
/// cache.append(k.view(), (&k * 0.5).view())?;
/// assert_eq!(*record.lock().unwrap(), Amax { key: 5.0, value: 2.5 });
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AmaxRecorder {
    inner: F32Cache,
    record: Arc<Mutex<Amax>>,
}

impl AmaxRecorder {
    /// An empty cache for `heads` heads of `head_dim` that records into `record`.
    pub fn new(heads: usize, head_dim: usize, record: Arc<Mutex<Amax>>) -> Self {
        AmaxRecorder {
            inner: F32Cache::new(heads, head_dim),
            record,
        }
    }
}

impl KvCache for AmaxRecorder {
    fn heads(&self) -> usize {
        self.inner.heads()
    }

    fn head_dim(&self) -> usize {
        self.inner.head_dim()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        self.inner.append(keys, values)?;
        let amax = |x: &ArrayView3<'_, f32>| x.iter().fold(0f32, |m, v| m.max(v.abs()));
        // A poisoned lock only means another recorder panicked; the maxima
        // stay meaningful.
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        r.key = r.key.max(amax(&keys));
        r.value = r.value.max(amax(&values));
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.inner.keys()
    }

    fn values(&self) -> Array3<f32> {
        self.inner.values()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    fn clear(&mut self) {
        self.inner.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }

    fn attend(&self, queries: ndarray::ArrayView2<'_, f32>) -> Result<ndarray::Array2<f32>> {
        self.inner.attend(queries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::SeededRng;

    #[test]
    fn static_scales_round_within_e4m3_steps_and_saturate() {
        let mut rng = SeededRng::new(4);
        let k = rng.array_normal((20, 3, 16)) * 2.0;
        let amax = k.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut c = Fp8Cache::new(3, 16, Fp8Scales::from_amax(amax, amax)).unwrap();
        c.append(k.view(), k.view()).unwrap();
        let scale = amax / E4M3_MAX;
        for (x, y) in k.iter().zip(c.keys().iter()) {
            // Normal range: relative 1/16; subnormals: absolute 2^-10 · scale.
            assert!(
                (x - y).abs() <= x.abs() / 16.0 + scale * 2f32.powi(-10),
                "{x} → {y}"
            );
        }
        // Beyond amax saturates at ±448 · scale.
        let big = Array3::from_elem((1, 3, 16), 10.0 * amax);
        c.append(big.view(), big.view()).unwrap();
        let back = c.keys();
        assert!((back[[20, 0, 0]] - amax).abs() < 1e-4 * amax);
        assert_eq!(c.memory_bytes(), 2 * 21 * 3 * 16);
    }

    #[test]
    fn per_token_scales_follow_each_vector() {
        let mut rng = SeededRng::new(5);
        let mut k = rng.array_normal((4, 2, 8));
        k.slice_mut(ndarray::s![1, 1, ..])
            .mapv_inplace(|x| x * 1000.0);
        let mut c = Fp8Cache::new(2, 8, Fp8Scales::PerToken).unwrap();
        c.append(k.view(), k.view()).unwrap();
        for (x, y) in k.iter().zip(c.keys().iter()) {
            assert!((x - y).abs() <= x.abs() / 16.0 + 1e-3, "{x} → {y}");
        }
        assert_eq!(c.memory_bytes(), 2 * (4 * 2 * 8 + 4 * 4 * 2));
        assert!(Fp8Cache::new(
            2,
            8,
            Fp8Scales::Static {
                key: 0.0,
                value: 1.0
            }
        )
        .is_err());
        assert!(Fp8Cache::new(
            2,
            8,
            Fp8Scales::Static {
                key: 1.0,
                value: f32::NAN
            }
        )
        .is_err());
    }
}
