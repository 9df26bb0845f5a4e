//! KIVI: asymmetric 2/4-bit KV cache quantization, keys per channel and
//! values per token, with a full-precision residual window.
//!
//! Liu, Yuan, Jin, Zhong, Xu, Braverman, Chen, Hu, *KIVI: A Tuning-Free
//! Asymmetric 2bit Quantization for KV Cache*, ICML 2024, arXiv:2402.02750.
//!
//! Keys have outlier *channels*, so they are quantized per channel, with
//! groups of `G` consecutive tokens sharing a scale and a zero point per
//! channel; values are quantized per token, with groups of `G` consecutive
//! channels. Both keep the most recent tokens in f32:
//!
//! - keys collect in a residual buffer; when it holds `R` tokens, those `R`
//!   tokens are quantized (`R / G` token groups) and the buffer empties, so
//!   between 0 and `R − 1` key tokens are full precision;
//! - values keep a sliding window of the last `R` tokens; a token is
//!   quantized when it leaves the window.
//!
//! Nothing already quantized is ever quantized again (the failure of
//! transformers' `QuantizedCache`, which re-quantizes the whole history
//! whenever its buffer fills), and the result does not depend on how the
//! tokens were split across appends.
//!
//! Quantization of a group `x` (asymmetric, `b` bits): `m = min x`,
//! `s = (max x − m) / (2^b − 1)`, both stored as f16 (the reference code's
//! fp16), `q = clamp(round((x − m) / s), 0, 2^b − 1)`, `x̂ = q·s + m`.
//! Codes are packed `8 / b` to a byte, LSB first.

use half::f16;
use half::slice::HalfFloatSliceExt;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};
use std::collections::VecDeque;

use crate::attend::{check_queries, softmax};
use crate::cache::{check_append, KvCache};
use crate::kernels::{self, Level};
use crate::{Error, Result};

/// KIVI's settings: bits, group size `G` and residual length `R`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KiviConfig {
    /// Bits per code: 2, 4 or 8.
    pub bits: u8,
    /// Group size `G`: tokens per key group, channels per value group.
    pub group: usize,
    /// Residual length `R` (a positive multiple of `G`).
    pub residual: usize,
}

impl KiviConfig {
    /// `bits` bits with the paper's `G = 32`, `R = 128`.
    pub fn new(bits: u8) -> Self {
        KiviConfig {
            bits,
            group: 32,
            residual: 128,
        }
    }

    /// Sets the group size.
    pub fn group(mut self, group: usize) -> Self {
        self.group = group;
        self
    }

    /// Sets the residual length.
    pub fn residual(mut self, residual: usize) -> Self {
        self.residual = residual;
        self
    }

    /// Checks the settings against a head dimension.
    ///
    /// # Errors
    /// [`Error::Config`] for bits other than 2, 4, 8; a group of 0 or one
    /// that does not divide `head_dim`; a residual that is not a positive
    /// multiple of the group.
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        check_grouping(
            "KIVI",
            self.bits,
            self.group,
            head_dim,
            "residual",
            self.residual,
        )
    }
}

/// The checks KIVI-grouped caches share: `bits` of 2, 4 or 8; a group that
/// divides `head_dim` (value groups run along it); a window (`field`: the
/// residual or buffer length) that is a positive multiple of the group.
pub(crate) fn check_grouping(
    cache: &str,
    bits: u8,
    group: usize,
    head_dim: usize,
    field: &'static str,
    window: usize,
) -> Result<()> {
    let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
    if !matches!(bits, 2 | 4 | 8) {
        return bad(
            "bits",
            format!("{bits} bits: {cache} codes are 2, 4 or 8 bits"),
        );
    }
    if group == 0 || !head_dim.is_multiple_of(group) {
        return bad(
            "group",
            format!(
                "group size {group} must divide the head dimension {head_dim} (value groups \
                 run along it)"
            ),
        );
    }
    if window == 0 || !window.is_multiple_of(group) {
        return bad(
            field,
            format!(
                "{field} length {window} must be a positive multiple of the group size {group}"
            ),
        );
    }
    Ok(())
}

/// Codes of quantized groups with their f16 scale and minimum.
#[derive(Debug, Clone, Default)]
pub(crate) struct Groups {
    /// Packed codes, `8 / bits` per byte.
    pub(crate) codes: Vec<u8>,
    /// Codes stored (the last byte may be partly used).
    pub(crate) count: usize,
    /// Scale of each group.
    pub(crate) scales: Vec<f16>,
    /// Minimum of each group.
    pub(crate) mins: Vec<f16>,
}

impl Groups {
    /// Quantizes `x` (one group) and appends it.
    pub(crate) fn push(&mut self, x: &[f32], bits: u8) {
        let levels = ((1u32 << bits) - 1) as f32;
        let (lo, hi) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        let min = f16::from_f32(lo);
        let scale = f16::from_f32((hi - lo) / levels);
        let (m, s) = (min.to_f32(), scale.to_f32());
        for &v in x {
            let q = if s > 0.0 {
                ((v - m) / s).round().clamp(0.0, levels) as u8
            } else {
                0
            };
            self.put(q, bits);
        }
        self.scales.push(scale);
        self.mins.push(min);
    }

    fn put(&mut self, q: u8, bits: u8) {
        let per = 8 / bits as usize;
        let slot = self.count % per;
        if slot == 0 {
            self.codes.push(0);
        }
        if let Some(last) = self.codes.last_mut() {
            *last |= q << (slot * bits as usize);
        }
        self.count += 1;
    }

    /// Code `i`.
    fn code(&self, i: usize, bits: u8) -> u8 {
        let per = 8 / bits as usize;
        let mask = ((1u16 << bits) - 1) as u8;
        (self.codes[i / per] >> ((i % per) * bits as usize)) & mask
    }

    /// Dequantized code `i` of group `g`.
    pub(crate) fn value(&self, i: usize, g: usize, bits: u8) -> f32 {
        f32::from(self.code(i, bits)) * self.scales[g].to_f32() + self.mins[g].to_f32()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + 2 * (self.scales.len() + self.mins.len())
    }

    pub(crate) fn clear(&mut self) {
        *self = Groups::default();
    }
}

/// A KIVI cache (Liu et al., ICML 2024, arXiv:2402.02750): keys quantized
/// per channel over groups of `G` tokens once `R` of them have collected in
/// an f32 buffer, values per token over groups of `G` channels once they
/// leave a window of the last `R` tokens; asymmetric, f16 scale and minimum
/// per group, codes packed `8 / bits` per byte ([`KiviConfig`]). Nothing is
/// quantized twice, and how tokens are split across appends does not matter.
///
/// ```
/// use tensorpress_kvcache::{F32Cache, KiviCache, KiviConfig, KvCache};
/// use tensorpress_tensor::SeededRng;
///
/// let (heads, head_dim) = (3, 64);
/// let mut rng = SeededRng::new(0);
/// let (k, v) = (rng.array_normal((1000, heads, head_dim)), rng.array_normal((1000, heads, head_dim)));
/// let mut kivi = KiviCache::new(heads, head_dim, KiviConfig::new(2))?; // G 32, R 128
/// kivi.append(k.view(), v.view())?;
/// // 896 key tokens quantized, 104 in the residual; 872 values quantized, 128 kept.
/// assert_eq!((kivi.quantized_keys(), kivi.quantized_values()), (896, 872));
/// let mut exact = F32Cache::new(heads, head_dim);
/// exact.append(k.view(), v.view())?;
/// // 2-bit codes plus f16 scales and minima; the f32 residual windows dominate.
/// assert!(kivi.memory_bytes() * 4 < exact.memory_bytes());
/// // The residual tokens are exact.
/// assert_eq!(kivi.keys().slice(ndarray::s![896.., .., ..]), k.slice(ndarray::s![896.., .., ..]));
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KiviCache {
    heads: usize,
    head_dim: usize,
    config: KiviConfig,
    /// Quantized key tokens (a multiple of `G`).
    key_tokens: usize,
    /// Key groups in order: token group, then head, then channel; each group
    /// holds `G` tokens of one channel.
    keys: Groups,
    /// Full-precision keys not yet quantized, `[tokens, heads, head_dim]` flat.
    key_residual: Vec<f32>,
    /// Quantized value tokens.
    value_tokens: usize,
    /// Value groups in order: token, head, channel group.
    values: Groups,
    /// The last (up to `R`) value tokens, each `heads · head_dim` f32.
    value_residual: VecDeque<Vec<f32>>,
}

impl KiviCache {
    /// An empty cache for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// Those of [`KiviConfig::validate`].
    pub fn new(heads: usize, head_dim: usize, config: KiviConfig) -> Result<Self> {
        config.validate(head_dim)?;
        Ok(KiviCache {
            heads,
            head_dim,
            config,
            key_tokens: 0,
            keys: Groups::default(),
            key_residual: Vec::new(),
            value_tokens: 0,
            values: Groups::default(),
            value_residual: VecDeque::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> KiviConfig {
        self.config
    }

    /// Key tokens stored quantized (the rest are in the residual).
    pub fn quantized_keys(&self) -> usize {
        self.key_tokens
    }

    /// Value tokens stored quantized.
    pub fn quantized_values(&self) -> usize {
        self.value_tokens
    }

    fn row(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Quantizes the full key residual (`R` tokens) per channel.
    fn flush_keys(&mut self) {
        let (row, g, bits) = (self.row(), self.config.group, self.config.bits);
        let tokens = self.key_residual.len() / row.max(1);
        let mut column = vec![0.0f32; g];
        for start in (0..tokens).step_by(g) {
            for c in 0..row {
                for (t, x) in column.iter_mut().enumerate() {
                    *x = self.key_residual[(start + t) * row + c];
                }
                self.keys.push(&column, bits);
            }
        }
        self.key_tokens += tokens;
        self.key_residual.clear();
    }

    /// Quantizes one value token per token and channel group.
    fn quantize_value(&mut self, token: &[f32]) {
        for group in token.chunks(self.config.group) {
            self.values.push(group, self.config.bits);
        }
        self.value_tokens += 1;
    }
}

impl KvCache for KiviCache {
    fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.value_tokens + self.value_residual.len()
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        check_append(self.heads, self.head_dim, &keys, &values)?;
        let row = self.row();
        let residual = self.config.residual;
        for (k, v) in keys.outer_iter().zip(values.outer_iter()) {
            self.key_residual.extend(k.iter());
            if self.key_residual.len() == residual * row {
                self.flush_keys();
            }
            self.value_residual.push_back(v.iter().copied().collect());
            if self.value_residual.len() > residual {
                if let Some(old) = self.value_residual.pop_front() {
                    self.quantize_value(&old);
                }
            }
        }
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        let (row, g, bits) = (self.row(), self.config.group, self.config.bits);
        let mut out = Array3::zeros((self.len(), self.heads, self.head_dim));
        if let Some(flat) = out.as_slice_mut() {
            // Quantized groups: group index = (token group · row + channel).
            for tg in 0..self.key_tokens / g.max(1) {
                for c in 0..row {
                    let group = tg * row + c;
                    for t in 0..g {
                        flat[(tg * g + t) * row + c] = self.keys.value(group * g + t, group, bits);
                    }
                }
            }
            flat[self.key_tokens * row..].copy_from_slice(&self.key_residual);
        }
        out
    }

    fn values(&self) -> Array3<f32> {
        let (row, g, bits) = (self.row(), self.config.group, self.config.bits);
        let mut out = Array3::zeros((self.len(), self.heads, self.head_dim));
        if let Some(flat) = out.as_slice_mut() {
            for (i, x) in flat[..self.value_tokens * row].iter_mut().enumerate() {
                *x = self.values.value(i, i / g.max(1), bits);
            }
            for (t, token) in self.value_residual.iter().enumerate() {
                let at = (self.value_tokens + t) * row;
                flat[at..at + row].copy_from_slice(token);
            }
        }
        out
    }

    fn memory_bytes(&self) -> usize {
        self.keys.bytes()
            + self.values.bytes()
            + 4 * (self.key_residual.len() + self.value_residual.len() * self.row())
    }

    fn clear(&mut self) {
        self.key_tokens = 0;
        self.value_tokens = 0;
        self.keys.clear();
        self.values.clear();
        self.key_residual.clear();
        self.value_residual.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }

    /// Attention on the packed codes, nothing dequantized to memory: with a
    /// per-channel key group `(s_c, m_c)`, `q·k = Σ_c (q_c s_c)·code_c + Σ_c
    /// q_c m_c`, so each group of `G` token codes is unpacked once and
    /// accumulated into the scores of every query head that reads it; values
    /// (per token) add `(p_t s)·code + p_t m` into the output. The f32
    /// residuals go straight through.
    // Token, channel and query-head indices address several buffers at once.
    #[allow(clippy::needless_range_loop)]
    fn attend(&self, queries: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (heads, d, g, bits) = (
            self.heads,
            self.head_dim,
            self.config.group,
            self.config.bits,
        );
        let level = Level::detect();
        let groups = check_queries(&queries, heads, d)?;
        let (row, n) = (self.row(), self.len());
        let (nk, nv) = (self.key_tokens, self.value_tokens);
        let code_bytes = |codes: usize| codes * bits as usize / 8;
        let per_token = d / g;
        let mut out = Array2::zeros(queries.dim());
        let mut scores = vec![vec![0f32; n]; groups];
        let mut w = vec![0f32; groups * d];
        let mut group_scores = vec![0f32; groups * g];
        let mut ws = vec![0f32; groups * nv * per_token];
        let mut acc = vec![0f32; groups * d];
        // Scales and minima in f32 once (F16C converts 8 at a time).
        let widen = |x: &[f16]| {
            let mut out = vec![0f32; x.len()];
            x.convert_to_f32_slice(&mut out);
            out
        };
        let (key_scales, key_mins) = (widen(&self.keys.scales), widen(&self.keys.mins));
        let (value_scales, value_mins) = (widen(&self.values.scales), widen(&self.values.mins));
        for h in 0..heads {
            let qs: Vec<Vec<f32>> = (0..groups)
                .map(|j| queries.row(h * groups + j).to_vec())
                .collect();
            // Keys, quantized per channel over groups of g tokens: token group
            // tg, channel c → group tg·row + h·d + c, whose g codes follow
            // those of channel c − 1. Scale folded into the query, minimum
            // into one bias per group.
            for tg in 0..nk / g {
                let first = tg * row + h * d;
                let mut bias = vec![0f32; groups];
                for c in 0..d {
                    let (sc, mn) = (key_scales[first + c], key_mins[first + c]);
                    for j in 0..groups {
                        let x = qs[j][c];
                        bias[j] += x * mn;
                        w[j * d + c] = x * sc;
                    }
                }
                let bytes = &self.keys.codes[code_bytes(first * g)..code_bytes((first + d) * g)];
                kernels::key_scores(level, bytes, bits, g, &w, groups, &mut group_scores);
                for j in 0..groups {
                    let dst = &mut scores[j][tg * g..(tg + 1) * g];
                    for (s, &x) in dst.iter_mut().zip(&group_scores[j * g..(j + 1) * g]) {
                        *s = x + bias[j];
                    }
                }
            }
            // Keys still in the f32 residual.
            for t in nk..n {
                let k = &self.key_residual[(t - nk) * row + h * d..(t - nk) * row + (h + 1) * d];
                for j in 0..groups {
                    scores[j][t] = kernels::dot(level, k, &qs[j]);
                }
            }
            for p in scores.iter_mut() {
                softmax(p);
            }
            acc.fill(0.0);
            // Values, quantized per token: group (t·row + h·d) / G + cg. The
            // probability times the scale weighs the codes; the minima add
            // one constant per channel group.
            let mut minima = vec![0f32; groups * per_token];
            let (row_groups, head_group) = (row / g, h * d / g);
            for t in 0..nv {
                let first = t * row_groups + head_group;
                for cg in 0..per_token {
                    let (sc, mn) = (value_scales[first + cg], value_mins[first + cg]);
                    for j in 0..groups {
                        let p = scores[j][t];
                        ws[(t * per_token + cg) * groups + j] = p * sc;
                        minima[j * per_token + cg] += p * mn;
                    }
                }
            }
            kernels::value_sums(
                level,
                &self.values.codes,
                bits,
                code_bytes(h * d),
                code_bytes(row),
                g,
                &ws[..groups * nv * per_token],
                groups,
                &mut acc,
            );
            for j in 0..groups {
                for (c, a) in acc[j * d..(j + 1) * d].iter_mut().enumerate() {
                    *a += minima[j * per_token + c / g];
                }
            }
            for (r, token) in self.value_residual.iter().enumerate() {
                let v = &token[h * d..(h + 1) * d];
                for j in 0..groups {
                    let p = scores[j][nv + r];
                    kernels::axpy(level, &mut acc[j * d..(j + 1) * d], p, v);
                }
            }
            for j in 0..groups {
                out.row_mut(h * groups + j)
                    .assign(&ndarray::ArrayView1::from(&acc[j * d..(j + 1) * d]));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Axis};
    use tensorpress_tensor::SeededRng;

    fn data(tokens: usize, heads: usize, d: usize, seed: u64) -> (Array3<f32>, Array3<f32>) {
        let mut rng = SeededRng::new(seed);
        let mut k = rng.array_normal((tokens, heads, d));
        // Outlier channels in the keys, as KIVI observes.
        k.slice_mut(s![.., .., 3]).mapv_inplace(|x| 10.0 * x + 5.0);
        (k, rng.array_normal((tokens, heads, d)))
    }

    #[test]
    fn errors_stay_within_half_a_step_and_residuals_are_exact() {
        let (heads, d) = (2, 16);
        for bits in [2u8, 4, 8] {
            let config = KiviConfig::new(bits).group(8).residual(16);
            let (k, v) = data(61, heads, d, u64::from(bits));
            let mut c = KiviCache::new(heads, d, config).unwrap();
            c.append(k.view(), v.view()).unwrap();
            assert_eq!(c.len(), 61);
            assert_eq!((c.quantized_keys(), c.quantized_values()), (48, 45));
            let (kq, vq) = (c.keys(), c.values());
            assert_eq!(kq.slice(s![48.., .., ..]), k.slice(s![48.., .., ..]));
            assert_eq!(vq.slice(s![45.., .., ..]), v.slice(s![45.., .., ..]));
            let levels = ((1u32 << bits) - 1) as f32;
            // Keys: per channel over groups of 8 tokens.
            for tg in 0..6 {
                let block = k.slice(s![tg * 8..tg * 8 + 8, .., ..]);
                for h in 0..heads {
                    for ch in 0..d {
                        let col = block.slice(s![.., h, ch]);
                        let (lo, hi) =
                            col.fold((f32::MAX, f32::MIN), |(l, u), &x| (l.min(x), u.max(x)));
                        let step = (hi - lo) / levels;
                        for t in 0..8 {
                            let e = (kq[[tg * 8 + t, h, ch]] - k[[tg * 8 + t, h, ch]]).abs();
                            // Half a step, plus the f16 rounding of min and scale.
                            assert!(
                                e <= 0.5 * step * 1.01 + 2e-3 * (hi.abs() + lo.abs()),
                                "bits {bits}: {e} vs step {step}"
                            );
                        }
                    }
                }
            }
            // Values: per token over groups of 8 channels.
            for t in 0..45 {
                for h in 0..heads {
                    for g in 0..2 {
                        let grp = v.slice(s![t, h, g * 8..g * 8 + 8]);
                        let (lo, hi) =
                            grp.fold((f32::MAX, f32::MIN), |(l, u), &x| (l.min(x), u.max(x)));
                        let step = (hi - lo) / levels;
                        for ch in 0..8 {
                            let e = (vq[[t, h, g * 8 + ch]] - v[[t, h, g * 8 + ch]]).abs();
                            assert!(
                                e <= 0.5 * step * 1.01 + 2e-3 * (hi.abs() + lo.abs()),
                                "bits {bits}: {e} vs step {step}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn splits_do_not_change_anything_and_memory_is_counted() {
        let (heads, d) = (3, 32);
        let config = KiviConfig::new(2).group(32).residual(64);
        let (k, v) = data(200, heads, d, 9);
        let mut whole = KiviCache::new(heads, d, config).unwrap();
        whole.append(k.view(), v.view()).unwrap();
        let mut steps = KiviCache::new(heads, d, config).unwrap();
        for (kc, vc) in k
            .axis_chunks_iter(Axis(0), 7)
            .zip(v.axis_chunks_iter(Axis(0), 7))
        {
            steps.append(kc, vc).unwrap();
        }
        assert_eq!(steps.keys(), whole.keys());
        assert_eq!(steps.values(), whole.values());
        assert_eq!(steps.memory_bytes(), whole.memory_bytes());
        // 192 key tokens quantized: per (token group, channel) 32 codes of 2
        // bits = 8 bytes plus f16 scale and min; 8 residual tokens in f32.
        let row = heads * d;
        let keys = 6 * row * (8 + 4) + 8 * row * 4;
        // 136 value tokens quantized, one group of 32 channels per head; 64 kept.
        let values = 136 * heads * (8 + 4) + 64 * row * 4;
        assert_eq!(whole.memory_bytes(), keys + values);
        whole.clear();
        assert!(whole.is_empty() && whole.memory_bytes() == 0);
        assert_eq!(whole.keys().dim(), (0, heads, d));
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let err = |c: KiviConfig| KiviCache::new(2, 64, c).unwrap_err();
        assert!(matches!(
            err(KiviConfig::new(3)),
            Error::Config { field: "bits", .. }
        ));
        assert!(matches!(
            err(KiviConfig::new(2).group(0)),
            Error::Config { field: "group", .. }
        ));
        assert!(matches!(
            err(KiviConfig::new(2).group(48)),
            Error::Config { field: "group", .. }
        ));
        let e = err(KiviConfig::new(2).group(32).residual(48));
        assert!(
            matches!(
                e,
                Error::Config {
                    field: "residual",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("multiple of the group size 32"));
        assert!(matches!(
            err(KiviConfig::new(4).residual(0)),
            Error::Config {
                field: "residual",
                ..
            }
        ));
        // Appends are checked like every cache's.
        let mut c = KiviCache::new(2, 64, KiviConfig::new(4)).unwrap();
        let bad = Array3::<f32>::from_elem((1, 2, 64), f32::NAN);
        assert!(c.append(bad.view(), bad.view()).is_err());
        assert!(c.is_empty());
    }
}
