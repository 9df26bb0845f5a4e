//! GEAR: quantization, plus a low-rank approximation of its error, plus
//! sparse outliers.
//!
//! Kang, Zhang, Kundu, Jeong, Liu, Krishna, Zhao, *GEAR: An Efficient KV
//! Cache Compression Recipe for Near-Lossless Generative Inference of LLM*,
//! 2024, arXiv:2403.05527.
//!
//! Tokens collect in a full-precision buffer of `R` tokens (GEAR's streaming
//! buffer); when it fills, the chunk `X` of each head (`R × head_dim`, keys
//! and values alike) is compressed once and never touched again:
//!
//! 1. sparse outliers `S`: the largest-magnitude fraction `s` of `X`'s
//!    entries are kept exactly (f16 value and a 16-bit position) and left
//!    out of the quantization (set to zero there);
//! 2. quantization `D̂` of the rest with KIVI's grouping (keys per channel
//!    over groups of `G` tokens, values per token over groups of `G`
//!    channels; asymmetric, f16 scale and minimum, `b`-bit codes), the
//!    backbone GEAR pairs with KIVI;
//! 3. low rank `L = A·Bᵀ` (`A: R × r`, `B: head_dim × r`, f16) of the error
//!    `X − D̂ − S`, from a few steps of power (subspace) iteration as in the
//!    paper, with a fixed start so the cache is deterministic.
//!
//! Reading back gives `D̂ + L + S`. `s = 0` is the paper's GEAR-L (no
//! outliers), its cheapest variant.

use half::f16;
use ndarray::{Array2, Array3, ArrayView3};
use tensorpress_tensor::SeededRng;

use crate::cache::{check_append, KvCache};
use crate::kivi::{check_grouping, Groups};
use crate::{Error, Result};

/// GEAR's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GearConfig {
    /// Bits per code of the quantized backbone: 2, 4 or 8.
    pub bits: u8,
    /// Group size `G` (tokens per key group, channels per value group).
    pub group: usize,
    /// Streaming buffer `R`: tokens compressed together (a multiple of `G`).
    pub buffer: usize,
    /// Rank `r` of the error approximation per head and chunk (0: none).
    pub rank: usize,
    /// Fraction `s` of entries kept as sparse outliers (0: GEAR-L).
    pub outliers: f32,
}

impl GearConfig {
    /// `bits` bits, `G = 32`, `R = 128`, rank 2, no outliers (GEAR-L on
    /// KIVI's grouping).
    pub fn new(bits: u8) -> Self {
        GearConfig {
            bits,
            group: 32,
            buffer: 128,
            rank: 2,
            outliers: 0.0,
        }
    }

    /// Sets the group size.
    pub fn group(mut self, group: usize) -> Self {
        self.group = group;
        self
    }

    /// Sets the streaming buffer.
    pub fn buffer(mut self, buffer: usize) -> Self {
        self.buffer = buffer;
        self
    }

    /// Sets the rank.
    pub fn rank(mut self, rank: usize) -> Self {
        self.rank = rank;
        self
    }

    /// Sets the outlier fraction.
    pub fn outliers(mut self, outliers: f32) -> Self {
        self.outliers = outliers;
        self
    }

    /// Checks the settings against a head dimension.
    ///
    /// # Errors
    /// [`Error::Config`] for bits other than 2, 4, 8; a group that does not
    /// divide `head_dim`; a buffer that is not a positive multiple of the
    /// group or whose chunk (`R · head_dim`) outgrows 16-bit positions; a
    /// rank above `min(R, head_dim)`; an outlier fraction outside [0, 0.5).
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        check_grouping(
            "GEAR",
            self.bits,
            self.group,
            head_dim,
            "buffer",
            self.buffer,
        )?;
        if self.buffer * head_dim > 1 << 16 {
            return bad(
                "buffer",
                format!(
                    "a chunk of {} tokens × {head_dim} has more entries than 16-bit outlier \
                     positions address (65536)",
                    self.buffer
                ),
            );
        }
        if self.rank > self.buffer.min(head_dim) {
            return bad(
                "rank",
                format!(
                    "rank {} exceeds min(buffer {}, head dimension {head_dim})",
                    self.rank, self.buffer
                ),
            );
        }
        if !(0.0..0.5).contains(&self.outliers) {
            return bad(
                "outliers",
                format!("outlier fraction {} must lie in [0, 0.5)", self.outliers),
            );
        }
        Ok(())
    }
}

/// One compressed chunk of one head (keys or values): the low-rank factors
/// and the outliers; the codes live in the cache's [`Groups`].
#[derive(Debug, Clone, Default)]
struct Extras {
    /// `A`, `R × r` row-major.
    a: Vec<f16>,
    /// `B`, `head_dim × r` row-major.
    b: Vec<f16>,
    /// Outliers: position in the `R × head_dim` chunk and value.
    outliers: Vec<(u16, f16)>,
}

impl Extras {
    fn bytes(&self) -> usize {
        2 * (self.a.len() + self.b.len()) + 4 * self.outliers.len()
    }

    /// Adds `A·Bᵀ` and puts the outliers into `x` (`R × d`).
    fn apply(&self, x: &mut [f32], d: usize, rank: usize) {
        if rank > 0 {
            for (t, row) in x.chunks_mut(d).enumerate() {
                let a = &self.a[t * rank..(t + 1) * rank];
                for (c, v) in row.iter_mut().enumerate() {
                    let b = &self.b[c * rank..(c + 1) * rank];
                    *v += a
                        .iter()
                        .zip(b)
                        .map(|(p, q)| p.to_f32() * q.to_f32())
                        .sum::<f32>();
                }
            }
        }
        for &(i, v) in &self.outliers {
            x[i as usize] = v.to_f32();
        }
    }
}

/// A GEAR cache (Kang et al., 2024, arXiv:2403.05527): KIVI-grouped `b`-bit
/// quantization of each chunk of `R` tokens, plus a rank-`r` approximation of
/// the quantization error and sparse f16 outliers per head ([`GearConfig`]).
///
/// ```
/// use tensorpress_kvcache::{F32Cache, GearCache, GearConfig, KiviCache, KiviConfig, KvCache};
/// use tensorpress_tensor::SeededRng;
///
/// let mut rng = SeededRng::new(0);
/// let (k, v) = (rng.array_normal((512, 2, 64)), rng.array_normal((512, 2, 64)));
/// let err = |c: &dyn KvCache| (&c.keys() - &k).mapv(|e| e * e).sum();
/// let mut kivi = KiviCache::new(2, 64, KiviConfig::new(2))?;
/// let mut gear = GearCache::new(2, 64, GearConfig::new(2).rank(4))?;
/// kivi.append(k.view(), v.view())?;
/// gear.append(k.view(), v.view())?;
/// assert_eq!(gear.len(), 512);
/// // The low-rank part takes some of the 2-bit error away.
/// assert!(err(&gear) < err(&kivi));
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct GearCache {
    heads: usize,
    head_dim: usize,
    config: GearConfig,
    /// Tokens compressed (a multiple of `R`).
    compressed: usize,
    /// Key codes, KIVI's order: token group, head, channel.
    keys: Groups,
    /// Value codes: token, head, channel group.
    values: Groups,
    /// Per chunk, then head: keys' and values' extras.
    key_extras: Vec<Extras>,
    value_extras: Vec<Extras>,
    /// Full-precision tokens not yet compressed, `[tokens, heads, head_dim]` flat.
    key_buffer: Vec<f32>,
    value_buffer: Vec<f32>,
}

impl GearCache {
    /// An empty cache for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// Those of [`GearConfig::validate`].
    pub fn new(heads: usize, head_dim: usize, config: GearConfig) -> Result<Self> {
        config.validate(head_dim)?;
        Ok(GearCache {
            heads,
            head_dim,
            config,
            compressed: 0,
            keys: Groups::default(),
            values: Groups::default(),
            key_extras: Vec::new(),
            value_extras: Vec::new(),
            key_buffer: Vec::new(),
            value_buffer: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> GearConfig {
        self.config
    }

    /// Tokens stored compressed (the rest are in the buffer).
    pub fn compressed_tokens(&self) -> usize {
        self.compressed
    }

    fn row(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Compresses the full buffers (`R` tokens).
    fn flush(&mut self) {
        let (row, d, r) = (self.row(), self.head_dim, self.config.buffer);
        let (g, bits) = (self.config.group, self.config.bits);
        let mut kx = std::mem::take(&mut self.key_buffer);
        let mut vx = std::mem::take(&mut self.value_buffer);
        let k_out = self.take_outliers(&mut kx);
        let v_out = self.take_outliers(&mut vx);
        // Quantize, then read the codes back for the error.
        let mut kq = vec![0f32; r * row];
        let mut column = vec![0f32; g];
        for tg in 0..r / g {
            for c in 0..row {
                for (t, x) in column.iter_mut().enumerate() {
                    *x = kx[(tg * g + t) * row + c];
                }
                self.keys.push(&column, bits);
                let group = self.keys.scales.len() - 1;
                for t in 0..g {
                    kq[(tg * g + t) * row + c] = self.keys.value(group * g + t, group, bits);
                }
            }
        }
        let mut vq = vec![0f32; r * row];
        let first = self.values.count;
        for (i, chunk) in vx.chunks(g).enumerate() {
            self.values.push(chunk, bits);
            let group = self.values.scales.len() - 1;
            for j in 0..g {
                vq[i * g + j] = self.values.value(first + i * g + j, group, bits);
            }
        }
        for (x, q, out, extras) in [
            (&kx, &kq, k_out, &mut self.key_extras),
            (&vx, &vq, v_out, &mut self.value_extras),
        ] {
            for (h, outliers) in out.into_iter().enumerate() {
                let mut error = Array2::<f32>::zeros((r, d));
                for t in 0..r {
                    for c in 0..d {
                        let i = t * row + h * d + c;
                        error[[t, c]] = x[i] - q[i];
                    }
                }
                for &(i, _) in &outliers {
                    error[[i as usize / d, i as usize % d]] = 0.0;
                }
                let (a, b) = low_rank(&error, self.config.rank);
                extras.push(Extras {
                    a: a.iter().map(|&v| f16::from_f32(v)).collect(),
                    b: b.iter().map(|&v| f16::from_f32(v)).collect(),
                    outliers,
                });
            }
        }
        self.compressed += r;
    }

    /// Per head, the largest-magnitude `s` fraction of the chunk's entries
    /// (positions within the head's `R × d` chunk), zeroed in `x`.
    fn take_outliers(&self, x: &mut [f32]) -> Vec<Vec<(u16, f16)>> {
        let (row, d, r) = (self.row(), self.head_dim, self.config.buffer);
        let n = (self.config.outliers as f64 * (r * d) as f64).round() as usize;
        (0..self.heads)
            .map(|h| {
                if n == 0 {
                    return Vec::new();
                }
                let at = |i: usize| (i / d) * row + h * d + i % d;
                let mut order: Vec<usize> = (0..r * d).collect();
                order.select_nth_unstable_by(n - 1, |&a, &b| {
                    x[at(b)].abs().total_cmp(&x[at(a)].abs())
                });
                let mut picked: Vec<usize> = order[..n].to_vec();
                picked.sort_unstable();
                picked
                    .into_iter()
                    .map(|i| {
                        let v = std::mem::take(&mut x[at(i)]);
                        (i as u16, f16::from_f32(v))
                    })
                    .collect()
            })
            .collect()
    }

    fn read(&self, codes: &Groups, extras: &[Extras], buffer: &[f32], keys: bool) -> Array3<f32> {
        let (row, d, r) = (self.row(), self.head_dim, self.config.buffer);
        let (g, bits) = (self.config.group, self.config.bits);
        let mut out = Array3::zeros((self.len(), self.heads, d));
        let Some(flat) = out.as_slice_mut() else {
            return out;
        };
        let n = self.compressed * row;
        if keys {
            for tg in 0..self.compressed / g {
                for c in 0..row {
                    let group = tg * row + c;
                    for t in 0..g {
                        flat[(tg * g + t) * row + c] = codes.value(group * g + t, group, bits);
                    }
                }
            }
        } else {
            for (i, x) in flat[..n].iter_mut().enumerate() {
                *x = codes.value(i, i / g, bits);
            }
        }
        let mut chunk = vec![0f32; r * d];
        for (j, e) in extras.iter().enumerate() {
            let (c, h) = (j / self.heads, j % self.heads);
            for t in 0..r {
                let at = (c * r + t) * row + h * d;
                chunk[t * d..(t + 1) * d].copy_from_slice(&flat[at..at + d]);
            }
            e.apply(&mut chunk, d, self.config.rank);
            for t in 0..r {
                let at = (c * r + t) * row + h * d;
                flat[at..at + d].copy_from_slice(&chunk[t * d..(t + 1) * d]);
            }
        }
        flat[n..].copy_from_slice(buffer);
        out
    }
}

/// `E ≈ A·Bᵀ` with `A = Q` (`R × r`, orthonormal columns) and `B = EᵀQ`,
/// `Q` from two steps of subspace iteration started from a fixed Gaussian
/// sketch (the paper's power iteration).
fn low_rank(e: &Array2<f32>, rank: usize) -> (Array2<f32>, Array2<f32>) {
    let (m, n) = e.dim();
    if rank == 0 {
        return (Array2::zeros((m, 0)), Array2::zeros((n, 0)));
    }
    let omega: Array2<f32> = SeededRng::new(0x6ea2).array_normal((n, rank));
    let mut q = orthonormalize(e.dot(&omega));
    for _ in 0..2 {
        let z = orthonormalize(e.t().dot(&q));
        q = orthonormalize(e.dot(&z));
    }
    let b = e.t().dot(&q);
    (q, b)
}

/// Modified Gram–Schmidt on the columns; a column that vanishes stays zero.
fn orthonormalize(mut y: Array2<f32>) -> Array2<f32> {
    for j in 0..y.ncols() {
        for i in 0..j {
            let dot = y.column(i).dot(&y.column(j));
            let prev = y.column(i).to_owned();
            y.column_mut(j).scaled_add(-dot, &prev);
        }
        let norm = y.column(j).dot(&y.column(j)).sqrt();
        if norm > 1e-20 {
            y.column_mut(j).mapv_inplace(|v| v / norm);
        } else {
            y.column_mut(j).fill(0.0);
        }
    }
    y
}

impl KvCache for GearCache {
    fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.compressed + self.key_buffer.len() / self.row().max(1)
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        check_append(self.heads, self.head_dim, &keys, &values)?;
        let full = self.config.buffer * self.row();
        for (k, v) in keys.outer_iter().zip(values.outer_iter()) {
            self.key_buffer.extend(k.iter());
            self.value_buffer.extend(v.iter());
            if self.key_buffer.len() == full {
                self.flush();
            }
        }
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.read(&self.keys, &self.key_extras, &self.key_buffer, true)
    }

    fn values(&self) -> Array3<f32> {
        self.read(&self.values, &self.value_extras, &self.value_buffer, false)
    }

    fn memory_bytes(&self) -> usize {
        self.keys.bytes()
            + self.values.bytes()
            + self
                .key_extras
                .iter()
                .chain(&self.value_extras)
                .map(Extras::bytes)
                .sum::<usize>()
            + 4 * (self.key_buffer.len() + self.value_buffer.len())
    }

    fn clear(&mut self) {
        self.compressed = 0;
        self.keys.clear();
        self.values.clear();
        self.key_extras.clear();
        self.value_extras.clear();
        self.key_buffer.clear();
        self.value_buffer.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KiviCache, KiviConfig};
    use ndarray::{s, Axis};

    fn data(tokens: usize, heads: usize, d: usize, seed: u64) -> (Array3<f32>, Array3<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut k = rng.array_normal((tokens, heads, d));
        k.slice_mut(s![.., .., 3]).mapv_inplace(|x| 10.0 * x + 5.0);
        // A few spikes for the outliers to catch.
        for t in (0..tokens).step_by(7) {
            k[[t, 0, (t * 5) % d]] += 40.0;
        }
        (k, rng.array_normal((tokens, heads, d)))
    }

    fn sq_err(a: &Array3<f32>, b: &Array3<f32>) -> f32 {
        (a - b).mapv(|e| e * e).sum()
    }

    #[test]
    fn rank_and_outliers_each_lower_the_error_of_the_quantized_backbone() {
        let (k, v) = data(96, 2, 16, 1);
        let base = GearConfig::new(2).group(8).buffer(32);
        let run = |config: GearConfig| {
            let mut c = GearCache::new(2, 16, config).unwrap();
            c.append(k.view(), v.view()).unwrap();
            (
                sq_err(&c.keys(), &k),
                sq_err(&c.values(), &v),
                c.memory_bytes(),
            )
        };
        let (k0, v0, m0) = run(base.rank(0));
        // Rank 0, no outliers: exactly KIVI's quantization of every chunk.
        let mut kivi = KiviCache::new(2, 16, KiviConfig::new(2).group(8).residual(32)).unwrap();
        kivi.append(k.view(), v.view()).unwrap();
        assert_eq!(sq_err(&kivi.keys(), &k), k0);
        let (k2, v2, m2) = run(base.rank(2));
        let (k8, v8, _) = run(base.rank(8));
        assert!(k2 < k0 && v2 < v0, "{k2} {k0} {v2} {v0}");
        assert!(k8 < k2 && v8 < v2);
        // Rank 2 adds 2 × (32 + 16) f16 per chunk, head, keys and values.
        assert_eq!(m2 - m0, 3 * 2 * 2 * 2 * 2 * (32 + 16));
        let (ko, _, mo) = run(base.rank(2).outliers(0.02));
        assert!(ko < k2, "{ko} vs {k2}");
        // round(0.02 · 512) = 10 outliers of 4 bytes per chunk, head, K and V.
        assert_eq!(mo - m2, 3 * 2 * 2 * 10 * 4);
        // Full rank leaves only the f16 rounding of the factors.
        let (kf, _, _) = run(base.rank(16));
        assert!(kf < 1e-3 * k0, "{kf} vs {k0}");
    }

    #[test]
    fn appends_in_any_split_give_the_same_cache() {
        let (k, v) = data(75, 3, 8, 2);
        let config = GearConfig::new(4)
            .group(4)
            .buffer(16)
            .rank(2)
            .outliers(0.05);
        let mut whole = GearCache::new(3, 8, config).unwrap();
        whole.append(k.view(), v.view()).unwrap();
        let mut parts = GearCache::new(3, 8, config).unwrap();
        for (kc, vc) in k
            .axis_chunks_iter(Axis(0), 7)
            .zip(v.axis_chunks_iter(Axis(0), 7))
        {
            parts.append(kc, vc).unwrap();
        }
        assert_eq!(whole.compressed_tokens(), 64);
        assert_eq!(parts.keys(), whole.keys());
        assert_eq!(parts.values(), whole.values());
        assert_eq!(parts.memory_bytes(), whole.memory_bytes());
        // The buffer is exact.
        assert_eq!(
            whole.keys().slice(s![64.., .., ..]),
            k.slice(s![64.., .., ..])
        );
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let field = |c: GearConfig, d| match c.validate(d) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(GearConfig::new(3), 64), "bits");
        assert_eq!(field(GearConfig::new(2).group(48), 64), "group");
        assert_eq!(field(GearConfig::new(2).buffer(40), 64), "buffer");
        assert_eq!(field(GearConfig::new(2).buffer(2048), 64), "buffer");
        assert_eq!(field(GearConfig::new(2).rank(65), 64), "rank");
        assert_eq!(field(GearConfig::new(2).outliers(0.5), 64), "outliers");
        assert!(GearConfig::new(2).validate(64).is_ok());
    }
}
