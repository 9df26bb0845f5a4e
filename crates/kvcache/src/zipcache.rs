//! ZipCache: mixed-precision KV cache quantization by token saliency.
//!
//! He, Zhang, Wu, Liu, Zhou, Zhuang, *ZipCache: Accurate and Efficient KV
//! Cache Quantization with Salient Token Identification*, NeurIPS 2024,
//! arXiv:2405.14256.
//!
//! - **Saliency** is the *normalized attention score* of a token: the
//!   attention it received summed over the queries that could see it,
//!   divided by how many did (`p̃_i = Σ_k A_ki / nnz(A_:i)`). Plain
//!   accumulation (H2O) favours early tokens only because the causal mask
//!   lets more queries see them; the division removes that bias. The paper
//!   approximates the score from a few *probe* queries (recent and random
//!   ones) so the full attention matrix never has to be formed; with
//!   [`ZipConfig::probe`] below 1, each query is a probe with that
//!   probability (a seeded hash of its position), otherwise every query
//!   scores. With grouped-query attention a KV head's score sums its query
//!   heads.
//! - **Quantization** is *channel-separable tokenwise*, our reading of the
//!   paper: key channels have outliers, so each key channel `i` of a chunk
//!   is first divided by `c_i = √(max_t |K_ti|)` (f16, stored per chunk and
//!   head), and the normalized key of each token is then quantized as one
//!   group (asymmetric, f16 scale and minimum per token and head); values
//!   have no outlier channels and are quantized per token directly.
//! - **Mixed precision**: the salient share of the tokens gets
//!   [`ZipConfig::high_bits`], the rest [`ZipConfig::low_bits`].
//!
//! Streaming (our adaptation of the paper's decoding scheme, which
//! re-identifies salient tokens every 100 steps): new tokens stay in f32
//! while they collect attention; once more than `residual + chunk − 1`
//! tokens wait, the oldest `chunk` are quantized, the top
//! `round(salient · chunk)` of them per head by normalized score in high
//! precision. Every token has been seen by at least `residual` queries
//! when it is scored, and nothing quantized is ever quantized again.
//! Compression happens in [`KvCache::end_step`], after the step's
//! attention is known.

use std::collections::VecDeque;

use half::f16;
use ndarray::{Array3, ArrayView3};

use crate::cache::{check_append, KvCache};
use crate::kivi::Groups;
use crate::{Error, Result};

/// ZipCache's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZipConfig {
    /// Bits of salient tokens (2, 4 or 8).
    pub high_bits: u8,
    /// Bits of the other tokens (2, 4 or 8, at most `high_bits`).
    pub low_bits: u8,
    /// Share of each chunk's tokens kept in high precision, in [0, 1].
    pub salient: f32,
    /// Tokens quantized together (one key normalizer per chunk and head).
    pub chunk: usize,
    /// Most recent tokens kept in f32 (at least; up to `residual + chunk − 1`).
    pub residual: usize,
    /// Share of the queries that score tokens (the probe tokens), in (0, 1].
    pub probe: f32,
}

impl ZipConfig {
    /// `high_bits` for the `salient` share, `low_bits` for the rest; chunks
    /// of 64 tokens, a residual of 64, every query scoring.
    pub fn new(high_bits: u8, low_bits: u8, salient: f32) -> Self {
        ZipConfig {
            high_bits,
            low_bits,
            salient,
            chunk: 64,
            residual: 64,
            probe: 1.0,
        }
    }

    /// Checks the settings against a head dimension.
    ///
    /// # Errors
    /// [`Error::Config`] for bits other than 2, 4, 8 (or low above high), a
    /// salient share outside [0, 1], a chunk of 0, a probe share outside
    /// (0, 1], or a head dimension whose codes do not fill whole bytes.
    pub fn validate(&self, head_dim: usize) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        for bits in [self.high_bits, self.low_bits] {
            if !matches!(bits, 2 | 4 | 8) {
                return bad(
                    "bits",
                    format!("{bits} bits: ZipCache codes are 2, 4 or 8 bits"),
                );
            }
        }
        if self.low_bits > self.high_bits {
            return bad(
                "bits",
                format!(
                    "low bits {} above high bits {}: salient tokens get the higher precision",
                    self.low_bits, self.high_bits
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.salient) {
            return bad(
                "salient",
                format!("{}: the salient share is in [0, 1]", self.salient),
            );
        }
        if self.chunk == 0 {
            return bad("chunk", "chunks hold at least one token".into());
        }
        if !(self.probe > 0.0 && self.probe <= 1.0) {
            return bad(
                "probe",
                format!("{}: the probe share is in (0, 1]", self.probe),
            );
        }
        if head_dim == 0 || !(head_dim * usize::from(self.low_bits)).is_multiple_of(8) {
            return bad(
                "head_dim",
                format!("head dimension {head_dim}: each token's codes must fill whole bytes"),
            );
        }
        Ok(())
    }

    /// Salient tokens per full chunk.
    fn high_per_chunk(&self) -> usize {
        ((self.salient as f64) * self.chunk as f64).round() as usize
    }
}

/// One KV head's quantized tokens.
#[derive(Debug, Clone, Default)]
struct HeadStore {
    /// Key channel normalizers `c_i`, `head_dim` per chunk.
    norms: Vec<f16>,
    /// Normalized keys: low-precision tokens, then high-precision ones.
    keys: [Groups; 2],
    /// Values, the same split.
    values: [Groups; 2],
    /// For each quantized token: high precision or not, and its group index
    /// in that precision.
    place: Vec<(bool, u32)>,
}

/// A ZipCache (He et al., NeurIPS 2024, arXiv:2405.14256): tokens wait in
/// f32 while they collect attention, then are quantized chunk by chunk with
/// channel-separable tokenwise quantization, the most salient by normalized
/// attention score in high precision ([`ZipConfig`]).
///
/// ```
/// use ndarray::Array3;
/// use tensorpress_kvcache::{KvCache, ZipCache, ZipConfig};
/// use tensorpress_tensor::SeededRng;
///
/// let (heads, d) = (2, 64);
/// let mut rng = SeededRng::new(0);
/// // 4-bit for the 25 % most attended tokens of each chunk, 2-bit for the rest.
/// let mut zip = ZipCache::new(heads, d, ZipConfig::new(4, 2, 0.25))?;
/// for step in 0..200 {
///     let (k, v) = (rng.array_normal((1, heads, d)), rng.array_normal((1, heads, d)));
///     zip.append(k.view(), v.view())?;
///     // The runner hands back the step's attention: [query heads, new tokens, len].
///     let n = zip.len();
///     let mut probs = Array3::<f32>::from_elem((heads, 1, n), 1.0 / n as f32);
///     probs[[0, 0, step / 2]] += 1.0; // head 0 keeps coming back to some tokens
///     zip.end_step(Some(probs.view()))?;
/// }
/// // 128 tokens quantized (two chunks of 64), 72 still in f32.
/// assert_eq!((zip.quantized(), zip.len()), (128, 200));
/// assert_eq!(zip.salient_tokens(), 2 * 2 * 16);
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ZipCache {
    heads: usize,
    head_dim: usize,
    config: ZipConfig,
    store: Vec<HeadStore>,
    /// Tokens quantized.
    quantized: usize,
    /// Tokens waiting in f32, each `heads · head_dim` keys then as many values.
    waiting: VecDeque<(Vec<f32>, Vec<f32>)>,
    /// Attention received by each waiting token, per KV head.
    score: VecDeque<Vec<f32>>,
    /// Probe queries that could see each waiting token.
    hits: VecDeque<u32>,
    /// Tokens appended since the last step ended.
    pending: usize,
}

impl ZipCache {
    /// An empty cache for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// Those of [`ZipConfig::validate`].
    pub fn new(heads: usize, head_dim: usize, config: ZipConfig) -> Result<Self> {
        config.validate(head_dim)?;
        Ok(ZipCache {
            heads,
            head_dim,
            config,
            store: vec![HeadStore::default(); heads],
            quantized: 0,
            waiting: VecDeque::new(),
            score: VecDeque::new(),
            hits: VecDeque::new(),
            pending: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> ZipConfig {
        self.config
    }

    /// Tokens stored quantized (the rest wait in f32).
    pub fn quantized(&self) -> usize {
        self.quantized
    }

    /// Quantized (token, head) pairs stored in high precision.
    pub fn salient_tokens(&self) -> usize {
        self.store
            .iter()
            .map(|s| s.place.iter().filter(|p| p.0).count())
            .sum()
    }

    /// Whether the query at absolute position `pos` is a probe.
    fn is_probe(&self, pos: usize) -> bool {
        if self.config.probe >= 1.0 {
            return true;
        }
        // SplitMix64 of the position: a fixed pseudo-random choice.
        let mut z = (pos as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.config.probe as f64
    }

    /// Quantizes the oldest `chunk` waiting tokens.
    fn compress_chunk(&mut self) {
        let (c, d, cfg) = (self.config.chunk, self.head_dim, self.config);
        let tokens: Vec<(Vec<f32>, Vec<f32>)> = self.waiting.drain(..c).collect();
        let scores: Vec<Vec<f32>> = self.score.drain(..c).collect();
        let hits: Vec<u32> = self.hits.drain(..c).collect();
        let high = cfg.high_per_chunk().min(c);
        for (h, store) in self.store.iter_mut().enumerate() {
            // The top `high` tokens by normalized score (ties: the earlier).
            let mut order: Vec<usize> = (0..c).collect();
            let norm = |t: usize| scores[t][h] / hits[t].max(1) as f32;
            order.sort_by(|&a, &b| norm(b).total_cmp(&norm(a)).then(a.cmp(&b)));
            let mut salient = vec![false; c];
            for &t in &order[..high] {
                salient[t] = true;
            }
            // Channel normalizers √max|K| of this chunk and head.
            let key = |t: usize| &tokens[t].0[h * d..(h + 1) * d];
            let mut norms = vec![0f32; d];
            for t in 0..c {
                for (n, &x) in norms.iter_mut().zip(key(t)) {
                    *n = n.max(x.abs());
                }
            }
            let norms: Vec<f16> = norms
                .iter()
                .map(|&m| {
                    let n = f16::from_f32(m.sqrt());
                    if n.to_f32() > 0.0 && n.is_finite() {
                        n
                    } else {
                        f16::ONE
                    }
                })
                .collect();
            let mut scaled = vec![0f32; d];
            for (t, &high) in salient.iter().enumerate() {
                let (which, bits) = if high {
                    (1, cfg.high_bits)
                } else {
                    (0, cfg.low_bits)
                };
                for ((s, &x), n) in scaled.iter_mut().zip(key(t)).zip(&norms) {
                    *s = x / n.to_f32();
                }
                let index = store.keys[which].scales.len() as u32;
                store.keys[which].push(&scaled, bits);
                store.values[which].push(&tokens[t].1[h * d..(h + 1) * d], bits);
                store.place.push((high, index));
            }
            store.norms.extend(norms);
        }
        self.quantized += c;
    }

    /// Dequantized key and value of quantized token `t`, head `h`, into `k`, `v`.
    fn dequantize(&self, t: usize, h: usize, k: &mut [f32], v: &mut [f32]) {
        let (d, cfg) = (self.head_dim, self.config);
        let store = &self.store[h];
        let (high, g) = store.place[t];
        let (which, bits) = if high {
            (1, cfg.high_bits)
        } else {
            (0, cfg.low_bits)
        };
        let g = g as usize;
        let norms = &store.norms[(t / cfg.chunk) * d..(t / cfg.chunk + 1) * d];
        for i in 0..d {
            k[i] = store.keys[which].value(g * d + i, g, bits) * norms[i].to_f32();
            v[i] = store.values[which].value(g * d + i, g, bits);
        }
    }

    fn read(&self, keys: bool) -> Array3<f32> {
        let (heads, d) = (self.heads, self.head_dim);
        let mut out = Array3::<f32>::zeros((self.len(), heads, d));
        let (mut k, mut v) = (vec![0f32; d], vec![0f32; d]);
        for t in 0..self.quantized {
            for h in 0..heads {
                self.dequantize(t, h, &mut k, &mut v);
                let src = if keys { &k } else { &v };
                for (o, &x) in out.slice_mut(ndarray::s![t, h, ..]).iter_mut().zip(src) {
                    *o = x;
                }
            }
        }
        for (i, (kw, vw)) in self.waiting.iter().enumerate() {
            let src = if keys { kw } else { vw };
            for (o, &x) in out
                .slice_mut(ndarray::s![self.quantized + i, .., ..])
                .iter_mut()
                .zip(src)
            {
                *o = x;
            }
        }
        out
    }
}

impl KvCache for ZipCache {
    fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.quantized + self.waiting.len()
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        let n = check_append(self.heads, self.head_dim, &keys, &values)?;
        for (k, v) in keys.outer_iter().zip(values.outer_iter()) {
            self.waiting
                .push_back((k.iter().copied().collect(), v.iter().copied().collect()));
            self.score.push_back(vec![0.0; self.heads]);
            self.hits.push_back(0);
        }
        self.pending += n;
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.read(true)
    }

    fn values(&self) -> Array3<f32> {
        self.read(false)
    }

    fn memory_bytes(&self) -> usize {
        let quantized: usize = self
            .store
            .iter()
            .map(|s| {
                s.keys
                    .iter()
                    .chain(&s.values)
                    .map(Groups::bytes)
                    .sum::<usize>()
                    + 2 * s.norms.len()
            })
            .sum();
        // One precision bit per quantized token and head.
        let flags = (self.quantized * self.heads).div_ceil(8);
        // f32 keys and values of the waiting tokens, with their f32 scores and u32 counts.
        let waiting =
            self.waiting.len() * (2 * self.heads * self.head_dim * 4 + self.heads * 4 + 4);
        quantized + flags + waiting
    }

    fn clear(&mut self) {
        self.store = vec![HeadStore::default(); self.heads];
        self.quantized = 0;
        self.waiting.clear();
        self.score.clear();
        self.hits.clear();
        self.pending = 0;
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }

    fn wants_attention(&self) -> bool {
        true
    }

    fn end_step(&mut self, attention: Option<ArrayView3<'_, f32>>) -> Result<()> {
        if let Some(p) = attention {
            let (qh, t, n) = p.dim();
            let heads = self.heads;
            if qh == 0 || !qh.is_multiple_of(heads) || n != self.len() || t != self.pending {
                return Err(Error::Config {
                    field: "attention",
                    reason: format!(
                        "probabilities of shape {:?}; expected [query heads (a multiple of \
                         {heads}), {} new tokens, {}]",
                        p.shape(),
                        self.pending,
                        self.len()
                    ),
                });
            }
            let groups = qh / heads;
            let first = self.quantized;
            for q in 0..t {
                let pos = n - t + q;
                if !self.is_probe(pos) {
                    continue;
                }
                // Waiting tokens this query could see: absolute first..=pos.
                for (j, (score, hits)) in self
                    .score
                    .iter_mut()
                    .zip(self.hits.iter_mut())
                    .enumerate()
                    .take(pos + 1 - first)
                {
                    for (h, s) in score.iter_mut().enumerate() {
                        for g in 0..groups {
                            *s += p[[h * groups + g, q, first + j]];
                        }
                    }
                    *hits += 1;
                }
            }
        }
        self.pending = 0;
        while self.waiting.len() >= self.config.residual + self.config.chunk {
            self.compress_chunk();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::SeededRng;

    /// One-token steps over `k`, `v`; every query (two per KV head) attends
    /// uniformly, plus `bonus` on the tokens `hot` picks per KV head.
    fn run(
        cache: &mut ZipCache,
        k: &Array3<f32>,
        v: &Array3<f32>,
        bonus: f32,
        hot: impl Fn(usize, usize) -> bool,
    ) {
        let heads = cache.heads();
        for t in 0..k.dim().0 {
            cache
                .append(
                    k.slice(ndarray::s![t..t + 1, .., ..]),
                    v.slice(ndarray::s![t..t + 1, .., ..]),
                )
                .unwrap();
            let n = cache.len();
            let probs = Array3::from_shape_fn((2 * heads, 1, n), |(q, _, j)| {
                let base = 1.0 / n as f32;
                if hot(q / 2, j) {
                    base + bonus
                } else {
                    base
                }
            });
            cache.end_step(Some(probs.view())).unwrap();
        }
    }

    #[test]
    fn salient_tokens_are_the_attended_ones_and_come_back_closer() {
        let (heads, d) = (2, 32);
        let mut rng = SeededRng::new(7);
        let k = rng.array_normal((300, heads, d)) * 2.0;
        let v = rng.array_normal((300, heads, d));
        let mut cache = ZipCache::new(heads, d, ZipConfig::new(8, 2, 0.125)).unwrap();
        // Head 0 attends every 8th token, head 1 every 8th shifted by 3.
        let hot = |h: usize, j: usize| j % 8 == 3 * h;
        run(&mut cache, &k, &v, 1.0, hot);
        assert_eq!(cache.quantized(), 192);
        for (h, store) in cache.store.iter().enumerate() {
            for (t, &(high, _)) in store.place.iter().enumerate() {
                assert_eq!(high, hot(h, t), "head {h}, token {t}");
            }
        }
        let (kq, vq) = (cache.keys(), cache.values());
        let err = |a: &Array3<f32>, b: &Array3<f32>, t: usize, h: usize| {
            (0..d)
                .map(|i| (a[[t, h, i]] - b[[t, h, i]]).abs())
                .fold(0.0f32, f32::max)
        };
        for h in 0..heads {
            let (mut high, mut low) = (0.0f32, 0.0f32);
            for t in 0..192 {
                let e = err(&kq, &k, t, h) + err(&vq, &v, t, h);
                if hot(h, t) {
                    high = high.max(e);
                } else {
                    low = low.max(e);
                }
            }
            assert!(high * 10.0 < low, "head {h}: 8-bit {high} vs 2-bit {low}");
        }
        // Waiting tokens are exact.
        assert_eq!(
            kq.slice(ndarray::s![192.., .., ..]),
            k.slice(ndarray::s![192.., .., ..])
        );
    }

    #[test]
    fn normalized_scores_do_not_favour_early_tokens() {
        // Every query attends uniformly; token 50 gets 0.05 more from each
        // query after it. Accumulated over the 128 queries before the first
        // chunk is quantized, token 0 has 2·H(128) ≈ 10.9 against token 50's
        // ≈ 9.6, so plain accumulation (H2O) would pick token 0; divided by
        // the 128 and 78 queries that saw them, token 50 leads (0.12 vs 0.085).
        let (heads, d) = (1, 16);
        let mut rng = SeededRng::new(8);
        let k = rng.array_normal((128, heads, d));
        let v = rng.array_normal((128, heads, d));
        let mut cache = ZipCache::new(heads, d, ZipConfig::new(4, 2, 1.0 / 64.0)).unwrap();
        run(&mut cache, &k, &v, 0.05, |_, j| j == 50);
        let place = &cache.store[0].place;
        assert_eq!(place.len(), 64);
        let salient: Vec<usize> = (0..64).filter(|&t| place[t].0).collect();
        assert_eq!(salient, [50]);
    }

    #[test]
    fn channel_normalization_bounds_the_key_error_by_channel() {
        // An outlier channel (×100) does not swamp the other channels' codes.
        let (heads, d) = (1, 16);
        let mut rng = SeededRng::new(9);
        let mut k = rng.array_normal((64, heads, d));
        for t in 0..64 {
            k[[t, 0, 5]] *= 100.0;
        }
        let v = rng.array_normal((64, heads, d));
        let mut config = ZipConfig::new(4, 4, 0.0);
        config.residual = 0;
        let mut cache = ZipCache::new(heads, d, config).unwrap();
        cache.append(k.view(), v.view()).unwrap();
        cache.end_step(None).unwrap();
        assert_eq!(cache.quantized(), 64);
        let kq = cache.keys();
        let mut worst = 0.0f32;
        for t in 0..64 {
            for i in (0..d).filter(|&i| i != 5) {
                worst = worst.max((kq[[t, 0, i]] - k[[t, 0, i]]).abs());
            }
        }
        // Without the normalization a 4-bit step would be ~2·300/15 = 40.
        assert!(worst < 4.0, "{worst}");
    }

    #[test]
    fn bad_settings_and_attention_are_typed_errors() {
        for (c, field) in [
            (ZipConfig::new(3, 2, 0.5), "bits"),
            (ZipConfig::new(2, 4, 0.5), "bits"),
            (ZipConfig::new(4, 2, 1.5), "salient"),
            (ZipConfig::new(4, 2, f32::NAN), "salient"),
            (
                ZipConfig {
                    chunk: 0,
                    ..ZipConfig::new(4, 2, 0.5)
                },
                "chunk",
            ),
            (
                ZipConfig {
                    probe: 0.0,
                    ..ZipConfig::new(4, 2, 0.5)
                },
                "probe",
            ),
        ] {
            match ZipCache::new(2, 64, c) {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field, "{c:?}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
        assert!(ZipCache::new(2, 3, ZipConfig::new(4, 2, 0.5)).is_err());
        let mut cache = ZipCache::new(2, 8, ZipConfig::new(4, 2, 0.5)).unwrap();
        let x = Array3::<f32>::ones((3, 2, 8));
        cache.append(x.view(), x.view()).unwrap();
        let wrong = Array3::<f32>::zeros((4, 2, 3));
        assert!(cache.end_step(Some(wrong.view())).is_err());
        let short = Array3::<f32>::zeros((4, 1, 3));
        assert!(cache.end_step(Some(short.view())).is_err());
        let right = Array3::<f32>::zeros((4, 3, 3));
        cache.end_step(Some(right.view())).unwrap();
    }

    #[test]
    fn probes_score_a_share_of_the_queries() {
        let (heads, d) = (1, 16);
        let mut rng = SeededRng::new(10);
        let k = rng.array_normal((200, heads, d));
        let v = rng.array_normal((200, heads, d));
        let config = ZipConfig {
            probe: 0.1,
            ..ZipConfig::new(4, 2, 0.25)
        };
        let mut cache = ZipCache::new(heads, d, config).unwrap();
        run(&mut cache, &k, &v, 1.0, |_, j| j % 4 == 1);
        let probes = (0..200).filter(|&p| cache.is_probe(p)).count();
        assert!((10..=35).contains(&probes), "{probes}");
        // With fewer probes, the hot tokens still stand out.
        let place = &cache.store[0].place;
        let hot = (0..place.len())
            .filter(|&t| place[t].0 && t % 4 == 1)
            .count();
        assert!(hot * 10 >= place.len() * 2, "{hot} of {}", place.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Over steps of any size with any attention: the waiting window
        /// stays below `residual + chunk`, every chunk has its salient count
        /// per head, waiting tokens are exact, and a quantized token never
        /// changes again.
        #[test]
        fn streaming_invariants(
            steps in proptest::collection::vec(1usize..40, 1..12),
            chunk in 1usize..24,
            residual in 0usize..24,
            salient in 0.0f32..1.0,
            bits in proptest::sample::select(vec![(2u8, 2u8), (4, 2), (8, 4), (8, 8)]),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let (heads, d) = (2, 8);
            let config = ZipConfig { chunk, residual, ..ZipConfig::new(bits.0, bits.1, salient) };
            let mut cache = ZipCache::new(heads, d, config).unwrap();
            let mut rng = SeededRng::new(seed);
            let total: usize = steps.iter().sum();
            let k = rng.array_normal((total, heads, d));
            let v = rng.array_normal((total, heads, d));
            let mut at = 0;
            let mut before: Option<(Array3<f32>, Array3<f32>)> = None;
            for &t in &steps {
                cache.append(k.slice(ndarray::s![at..at + t, .., ..]), v.slice(ndarray::s![at..at + t, .., ..])).unwrap();
                at += t;
                let n = cache.len();
                let probs = rng.array_normal((3 * heads, t, n)).mapv(f32::abs);
                cache.end_step(Some(probs.view())).unwrap();
                proptest::prop_assert!(cache.waiting.len() < residual + chunk);
                proptest::prop_assert_eq!(cache.quantized % chunk, 0);
                proptest::prop_assert_eq!(cache.len(), at);
                let (kq, vq) = (cache.keys(), cache.values());
                let q = cache.quantized;
                proptest::prop_assert_eq!(kq.slice(ndarray::s![q.., .., ..]), k.slice(ndarray::s![q..at, .., ..]));
                proptest::prop_assert_eq!(vq.slice(ndarray::s![q.., .., ..]), v.slice(ndarray::s![q..at, .., ..]));
                if let Some((kb, vb)) = &before {
                    let old = kb.dim().0;
                    proptest::prop_assert_eq!(kq.slice(ndarray::s![..old, .., ..]), kb.slice(ndarray::s![..old, .., ..]));
                    proptest::prop_assert_eq!(vq.slice(ndarray::s![..old, .., ..]), vb.slice(ndarray::s![..old, .., ..]));
                }
                before = Some((kq.slice(ndarray::s![..q, .., ..]).to_owned(), vq.slice(ndarray::s![..q, .., ..]).to_owned()));
                let per_chunk = config.high_per_chunk().min(chunk);
                proptest::prop_assert_eq!(cache.salient_tokens(), heads * per_chunk * (q / chunk));
            }
        }
    }
}
