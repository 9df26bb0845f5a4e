//! Token eviction under a budget: StreamingLLM, H2O, SnapKV and an
//! EMS-style evict-then-merge.
//!
//! - StreamingLLM (Xiao, Tian, Chen, Han, Lewis, *Efficient Streaming
//!   Language Models with Attention Sinks*, ICLR 2024, arXiv:2309.17453):
//!   keep the first `sinks` tokens (the attention sinks) and the most recent
//!   ones.
//! - H2O (Zhang, Sheng, Zhou, Chen, Zheng, Cai, Song, Tian, Ré, Barrett,
//!   Wang, Chen, *H2O: Heavy-Hitter Oracle for Efficient Generative
//!   Inference of Large Language Models*, NeurIPS 2023, arXiv:2306.14048):
//!   each token's attention received, accumulated over every query so far;
//!   keep the most recent tokens (half the budget by default) and the heavy
//!   hitters, the highest accumulated scores among the rest.
//! - SnapKV (Li, Huang, Yang, Venkitesh, Locatelli, Ye, Cai, Lewis, Chen,
//!   *SnapKV: LLM Knows What You are Looking for Before Generation*, 2024,
//!   arXiv:2404.14469): the last `window` queries (the observation window)
//!   vote with their attention, the votes are max-pooled over neighbouring
//!   positions (kernel `k`, so clusters of tokens survive together), and the
//!   top-voted tokens are kept with the window itself. The paper compresses
//!   the prompt once after prefill; here the vote runs at every step over
//!   the last `window` queries seen (a rolling window), so a long text
//!   decoded in chunks stays within the budget throughout.
//! - EMS (Li, Li, Meng, Ma, Geng, Xia, Wang, *EMS: Adaptive Evict-then-Merge
//!   Strategy for Head-wise KV Cache Compression Based on Global-Local
//!   Importance*, 2024, arXiv:2412.08521), as its abstract describes it (the
//!   paper's exact formulas were not available here; this is our reading):
//!   a *global-local* score — the mean attention a token received from every
//!   query that could see it (dividing by that count removes the causal
//!   mask's bias towards early tokens that plain accumulation has), plus its
//!   attention from the last `window` queries, each normalized to sum to one
//!   over the candidates — chooses the kept tokens per head; then each
//!   evicted token is *merged* into the kept token whose key is most similar
//!   (cosine): the kept value becomes the score-weighted mean of both, the
//!   key stays (it carries the kept token's RoPE position), and the scores
//!   add up. An evicted token whose best cosine is below the threshold falls
//!   into the "zero class" and is dropped, as plain eviction would.
//!
//! Each KV head chooses its own tokens (the papers select per head); every
//! head keeps the same number, so the cache still reads back as `[len,
//! heads, head_dim]`, with each head's tokens in their original order and the
//! newest tokens last. With grouped-query attention a KV head's score sums
//! the attention of the query heads that share it.
//!
//! The cache learns attention through [`KvCache::end_step`]: the runner
//! appends a step's keys and values, attends, hands the probabilities back,
//! and the cache then evicts down to its budget. Between steps the cache
//! never holds more than its budget; during a step it also holds the new
//! tokens (which the step's queries must see). Keys are stored after RoPE,
//! so kept tokens keep their original positions (new tokens continue from
//! the number of tokens seen, not the number kept).

use ndarray::{Array3, ArrayView3};

use crate::cache::{check_append, KvCache};

mod ems;
use crate::{Error, Result};
use ems::{ems_scores, merge_evicted};

/// How many tokens a cache may keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most this many tokens.
    Tokens(usize),
    /// At most `ceil(ratio · seen)` tokens, `seen` the tokens appended so far
    /// (a 50 % budget keeps half of the context at every step).
    Ratio(f32),
    /// ZipVL's dynamic ratio (He et al. 2024, arXiv:2410.08584): after each
    /// step, as many tokens as the head that needs the most takes to cover
    /// this share of the step's attention (its queries' probabilities,
    /// averaged), so each layer finds its own ratio: a layer whose attention
    /// is concentrated keeps few tokens, a diffuse one many. Which tokens stay
    /// is still the policy's choice. Without attention nothing is evicted.
    Mass(f32),
    /// p-MoD's progressive ratio decay (Zhang, Meng, Qi, Huang, Wu, Wang,
    /// *p-MoD: Building Mixture-of-Depths MLLMs via Progressive Ratio Decay*,
    /// 2024, arXiv:2412.04449): a [`Budget::Ratio`] per layer that falls
    /// along a shifted cosine, `mean + cos(π · l / (L − 1)) / 2` for layer
    /// `l` of `L`, so early layers keep more of the context than deep ones
    /// (the paper observes that deeper layers' tokens are more redundant).
    /// A layer scheduled at or above `ceiling` keeps every token (p-MoD
    /// leaves those layers without token selection), one below `floor`
    /// keeps `floor`. It describes a whole model: [`Budget::for_layer`]
    /// turns it into the ratio of one layer, and a cache is built with that.
    Decay {
        /// The schedule's mean ratio over layers (before the floor), in (0, 1].
        mean: f32,
        /// The least ratio a layer keeps, in (0, 1].
        floor: f32,
        /// Layers scheduled at or above this ratio keep everything; in
        /// [`floor`](Budget::Decay::floor), 1].
        ceiling: f32,
    },
}

impl Budget {
    /// p-MoD's schedule with mean `mean`, a 5 % floor and no ceiling below
    /// 100 %.
    pub fn decay(mean: f32) -> Self {
        Budget::Decay {
            mean,
            floor: 0.05,
            ceiling: 1.0,
        }
    }

    /// The budget of layer `layer` of `layers`: [`Budget::Decay`] becomes
    /// that layer's [`Budget::Ratio`]; every other budget is the same for
    /// each layer.
    ///
    /// ```
    /// use tensorpress_kvcache::Budget;
    ///
    /// let schedule = Budget::decay(0.5);
    /// // The first layer keeps everything, the middle one the mean, the
    /// // last one the floor.
    /// assert_eq!(schedule.for_layer(0, 5), Budget::Ratio(1.0));
    /// assert_eq!(schedule.for_layer(2, 5), Budget::Ratio(0.5));
    /// assert_eq!(schedule.for_layer(4, 5), Budget::Ratio(0.05));
    /// assert_eq!(Budget::Ratio(0.3).for_layer(4, 5), Budget::Ratio(0.3));
    /// ```
    pub fn for_layer(&self, layer: usize, layers: usize) -> Budget {
        match *self {
            Budget::Decay {
                mean,
                floor,
                ceiling,
            } => {
                let t = if layers > 1 {
                    layer.min(layers - 1) as f64 / (layers - 1) as f64
                } else {
                    0.5
                };
                let r = f64::from(mean) + (std::f64::consts::PI * t).cos() / 2.0;
                // Rounded to 1e-6 so the schedule's symmetric points come out
                // exact (cos(π/2) is 6e-17, not 0).
                let r = ((r * 1e6).round() / 1e6) as f32;
                if r >= ceiling {
                    Budget::Ratio(1.0)
                } else {
                    Budget::Ratio(r.max(floor))
                }
            }
            other => other,
        }
    }

    /// Tokens allowed after `seen` tokens (for [`Budget::Mass`], every token:
    /// its count comes from the attention, step by step; for
    /// [`Budget::Decay`], the mean ratio's — a cache uses its layer's).
    pub fn allowed(&self, seen: usize) -> usize {
        let ratio = |r: f32| ((r as f64) * seen as f64).ceil() as usize;
        match *self {
            Budget::Tokens(n) => n,
            Budget::Ratio(r) => ratio(r),
            Budget::Decay { mean, .. } => ratio(mean),
            Budget::Mass(_) => seen,
        }
    }

    /// Checks the numbers: a positive token count, ratios and shares in
    /// (0, 1], and for [`Budget::Decay`] a floor no higher than the
    /// ceiling.
    ///
    /// # Errors
    /// [`Error::Config`] naming the budget.
    pub fn validate(&self) -> Result<()> {
        let unit = |r: f32| r > 0.0 && r <= 1.0;
        let ok = match *self {
            Budget::Tokens(n) => n > 0,
            Budget::Ratio(r) | Budget::Mass(r) => unit(r),
            Budget::Decay {
                mean,
                floor,
                ceiling,
            } => unit(mean) && unit(floor) && unit(ceiling) && floor <= ceiling,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Config {
                field: "budget",
                reason: format!(
                    "{self:?}: give a positive number of tokens, or a ratio or attention share \
                     in (0, 1]{}",
                    if matches!(self, Budget::Decay { .. }) {
                        " (for a decay schedule: mean, floor and ceiling, floor ≤ ceiling)"
                    } else {
                        ""
                    }
                ),
            })
        }
    }
}

/// The fewest tokens whose share of `mass` (non-negative) reaches `share`.
fn tokens_for_mass(mass: &[f32], share: f32) -> usize {
    let total: f64 = mass.iter().map(|&m| f64::from(m.max(0.0))).sum();
    if total <= 0.0 {
        return mass.len();
    }
    let mut sorted: Vec<f32> = mass.iter().map(|m| m.max(0.0)).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let target = f64::from(share) * total;
    let mut sum = 0.0f64;
    for (k, &m) in sorted.iter().enumerate() {
        sum += f64::from(m);
        if sum >= target * (1.0 - 1e-6) {
            return k + 1;
        }
    }
    mass.len()
}

/// Which tokens to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Eviction {
    /// StreamingLLM: `sinks` first tokens plus the most recent.
    StreamingLlm {
        /// Attention-sink tokens kept from the start (the paper uses 4).
        sinks: usize,
    },
    /// H2O: recent tokens plus heavy hitters by accumulated attention.
    H2o {
        /// Share of the budget given to the most recent tokens (the paper
        /// splits evenly: 0.5).
        recent: f32,
    },
    /// EMS-style: global-local scores choose, evicted tokens merge into the
    /// most similar kept one.
    Ems {
        /// Queries whose attention makes the local score, kept as the recent
        /// tokens (32, as SnapKV's window).
        window: usize,
        /// First tokens always kept (the attention sinks; 4).
        sinks: usize,
        /// Smallest key cosine similarity at which an evicted token merges
        /// (in [-1, 1]; 0.5 by default); below it the token is dropped.
        merge: f32,
    },
    /// SnapKV: the observation window's pooled votes.
    SnapKv {
        /// Queries in the observation window (the paper: 32).
        window: usize,
        /// Max-pooling kernel over positions (odd; the paper: 7).
        kernel: usize,
        /// First tokens always kept (0 in the paper, which compresses a
        /// prompt once; a rolling vote can otherwise evict the attention
        /// sink from a head for good).
        sinks: usize,
    },
}

impl Eviction {
    /// StreamingLLM with the paper's 4 sinks.
    pub fn streaming_llm() -> Self {
        Eviction::StreamingLlm { sinks: 4 }
    }

    /// H2O with half the budget for recent tokens.
    pub fn h2o() -> Self {
        Eviction::H2o { recent: 0.5 }
    }

    /// SnapKV with a 32-query window and a 7-wide pooling kernel.
    pub fn snapkv() -> Self {
        Eviction::SnapKv {
            window: 32,
            kernel: 7,
            sinks: 0,
        }
    }

    /// EMS-style with a 32-query window, 4 sinks and merging at cosine ≥ 0.5.
    pub fn ems() -> Self {
        Eviction::Ems {
            window: 32,
            sinks: 4,
            merge: 0.5,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        match *self {
            Eviction::Ems { window: 0, .. } => {
                bad("window", "EMS needs a window of at least one query".into())
            }
            Eviction::Ems { merge, .. } if !(-1.0..=1.0).contains(&merge) => bad(
                "merge",
                format!("EMS's merge similarity {merge} must lie in [-1, 1]"),
            ),
            Eviction::StreamingLlm { .. } => Ok(()),
            Eviction::H2o { recent } if !(0.0..=1.0).contains(&recent) => bad(
                "recent",
                format!("H2O's recent share {recent} must lie in [0, 1]"),
            ),
            Eviction::SnapKv { window: 0, .. } => bad(
                "window",
                "SnapKV needs an observation window of at least one query".into(),
            ),
            Eviction::SnapKv { kernel, .. } if kernel == 0 || kernel.is_multiple_of(2) => bad(
                "kernel",
                format!("SnapKV's pooling kernel {kernel} must be odd"),
            ),
            _ => Ok(()),
        }
    }
}

/// One head's kept tokens.
#[derive(Debug, Clone, Default)]
struct Head {
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Position of each kept token (its index among the tokens seen).
    pos: Vec<usize>,
    /// H2O, EMS: accumulated attention of each kept token.
    score: Vec<f32>,
    /// EMS: how many queries could attend to each kept token.
    hits: Vec<f32>,
    /// SnapKV: the attention rows of the last `window` queries over the kept
    /// tokens (oldest first), each as long as `pos`.
    votes: Vec<Vec<f32>>,
}

/// A full-precision (f32) cache that evicts tokens to stay within a
/// [`Budget`], choosing them by an [`Eviction`] policy.
///
/// ```
/// use ndarray::Array3;
/// use tensorpress_kvcache::{Budget, EvictingCache, Eviction, KvCache};
///
/// let mut cache = EvictingCache::new(2, 8, Eviction::streaming_llm(), Budget::Tokens(6))?;
/// for _ in 0..5 {
///     let kv = Array3::<f32>::ones((3, 2, 8));
///     cache.append(kv.view(), kv.view())?;
///     cache.end_step(None)?;
///     assert!(cache.len() <= 6);
/// }
/// // The 4 sinks and the 2 newest of the 15 tokens seen.
/// assert_eq!(cache.positions(0), [0, 1, 2, 3, 13, 14]);
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EvictingCache {
    heads: Vec<Head>,
    head_dim: usize,
    policy: Eviction,
    budget: Budget,
    seen: usize,
    /// Tokens appended in the current step (not yet ended).
    pending: usize,
    /// [`Budget::Mass`]: the tokens the last step's attention asked for.
    mass_keep: Option<usize>,
}

impl EvictingCache {
    /// An empty cache for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero budget, a ratio outside (0, 1], an H2O
    /// recent share outside [0, 1], an empty SnapKV window or an even kernel,
    /// and for a [`Budget::Decay`] schedule (build with its
    /// [`for_layer`](Budget::for_layer) budget).
    pub fn new(heads: usize, head_dim: usize, policy: Eviction, budget: Budget) -> Result<Self> {
        budget.validate()?;
        if let Budget::Decay { .. } = budget {
            return Err(Error::Config {
                field: "budget",
                reason: format!(
                    "{budget:?} is a schedule over a model's layers: build each layer's cache \
                     with `budget.for_layer(layer, layers)` (CacheSpec::build_layer does)"
                ),
            });
        }
        policy.validate()?;
        Ok(EvictingCache {
            heads: vec![Head::default(); heads],
            head_dim,
            policy,
            budget,
            seen: 0,
            pending: 0,
            mass_keep: None,
        })
    }

    /// The policy.
    pub fn policy(&self) -> Eviction {
        self.policy
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Tokens appended since the cache was created or cleared.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Positions (indices among the tokens seen) that head `head` keeps, in order.
    ///
    /// # Panics
    /// If `head` is not below [`KvCache::heads`].
    pub fn positions(&self, head: usize) -> &[usize] {
        &self.heads[head].pos
    }

    fn read(&self, pick: impl Fn(&Head) -> &Vec<f32>) -> Array3<f32> {
        let (n, d) = (self.len(), self.head_dim);
        Array3::from_shape_fn((n, self.heads.len(), d), |(t, h, i)| {
            pick(&self.heads[h])[t * d + i]
        })
    }

    /// Which kept tokens (indices into the head's lists) survive, keeping
    /// `keep` of them, in order: the policy's most recent ones (StreamingLLM:
    /// all but the sinks; H2O: its recent share; SnapKV: the observation
    /// window; at least the newest token) and the best of the others.
    fn select(&self, head: &Head, keep: usize) -> Vec<usize> {
        let n = head.pos.len();
        if keep >= n {
            return (0..n).collect();
        }
        let recent = match self.policy {
            Eviction::StreamingLlm { sinks } => keep - sinks.min(keep - 1),
            Eviction::H2o { recent } => (recent as f64 * keep as f64).round() as usize,
            // The window never crowds out the sinks.
            Eviction::SnapKv { window, sinks, .. } | Eviction::Ems { window, sinks, .. } => {
                window.min(keep.saturating_sub(sinks)).max(1)
            }
        }
        .min(keep);
        let (old, keep_old) = (n - recent, keep - recent);
        let mut chosen: Vec<usize> = match self.policy {
            Eviction::StreamingLlm { .. } => (0..keep_old).collect(),
            Eviction::H2o { .. } => top(&head.score[..old], keep_old),
            Eviction::SnapKv { kernel, sinks, .. } => {
                let mut vote = vec![0f32; old];
                for row in &head.votes {
                    for (v, r) in vote.iter_mut().zip(row) {
                        *v += r;
                    }
                }
                let half = kernel / 2;
                let mut pooled: Vec<f32> = (0..old)
                    .map(|i| {
                        vote[i.saturating_sub(half)..(i + half + 1).min(old)]
                            .iter()
                            .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
                    })
                    .collect();
                for (p, &pos) in pooled.iter_mut().zip(&head.pos) {
                    if pos < sinks {
                        *p = f32::INFINITY;
                    }
                }
                top(&pooled, keep_old)
            }
            Eviction::Ems { sinks, .. } => top(&ems_scores(head, old, sinks), keep_old),
        };
        chosen.extend(old..n);
        chosen.sort_unstable();
        chosen
    }

    fn evict(&mut self) {
        let keep = match self.budget {
            Budget::Mass(_) => match self.mass_keep.take() {
                Some(k) => k,
                None => return,
            },
            _ => self.budget.allowed(self.seen),
        };
        let d = self.head_dim;
        for h in 0..self.heads.len() {
            if self.heads[h].pos.len() <= keep {
                continue;
            }
            let chosen = self.select(&self.heads[h], keep);
            let head = &mut self.heads[h];
            if let Eviction::Ems { sinks, merge, .. } = self.policy {
                merge_evicted(head, &chosen, sinks, merge, d);
            }
            let rows = |x: &[f32]| -> Vec<f32> {
                chosen
                    .iter()
                    .flat_map(|&t| x[t * d..(t + 1) * d].iter().copied())
                    .collect()
            };
            head.keys = rows(&head.keys);
            head.values = rows(&head.values);
            head.pos = chosen.iter().map(|&t| head.pos[t]).collect();
            if !head.score.is_empty() {
                head.score = chosen.iter().map(|&t| head.score[t]).collect();
            }
            if !head.hits.is_empty() {
                head.hits = chosen.iter().map(|&t| head.hits[t]).collect();
            }
            for row in &mut head.votes {
                *row = chosen.iter().map(|&t| row[t]).collect();
            }
        }
    }
}

/// Indices of the `k` largest scores (ties: the later token, which is
/// closer to the queries to come).
fn top(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(b.cmp(&a)));
    order.truncate(k);
    order
}

impl KvCache for EvictingCache {
    fn heads(&self) -> usize {
        self.heads.len()
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.heads.first().map_or(0, |h| h.pos.len())
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        let t = check_append(self.heads.len(), self.head_dim, &keys, &values)?;
        if self.pending > 0 {
            // The previous step was not ended (no attention came back):
            // evict on what is known before taking more.
            self.end_step(None)?;
        }
        for (h, head) in self.heads.iter_mut().enumerate() {
            for i in 0..t {
                head.keys.extend(keys.slice(ndarray::s![i, h, ..]).iter());
                head.values
                    .extend(values.slice(ndarray::s![i, h, ..]).iter());
                head.pos.push(self.seen + i);
                if matches!(self.policy, Eviction::H2o { .. } | Eviction::Ems { .. }) {
                    head.score.push(0.0);
                }
                if matches!(self.policy, Eviction::Ems { .. }) {
                    head.hits.push(0.0);
                }
            }
            for row in &mut head.votes {
                row.resize(head.pos.len(), 0.0);
            }
        }
        self.seen += t;
        self.pending = t;
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.read(|h| &h.keys)
    }

    fn values(&self) -> Array3<f32> {
        self.read(|h| &h.values)
    }

    fn memory_bytes(&self) -> usize {
        self.heads
            .iter()
            .map(|h| (h.keys.len() + h.values.len()) * 4)
            .sum()
    }

    fn clear(&mut self) {
        for h in &mut self.heads {
            *h = Head::default();
        }
        self.seen = 0;
        self.pending = 0;
        self.mass_keep = None;
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }

    fn wants_attention(&self) -> bool {
        !matches!(self.policy, Eviction::StreamingLlm { .. })
            || matches!(self.budget, Budget::Mass(_))
    }

    fn end_step(&mut self, attention: Option<ArrayView3<'_, f32>>) -> Result<()> {
        if let Some(p) = attention {
            let (qh, t, n) = p.dim();
            let heads = self.heads.len();
            if qh == 0 || !qh.is_multiple_of(heads) || n != self.len() || t == 0 {
                return Err(Error::Config {
                    field: "attention",
                    reason: format!(
                        "probabilities of shape {:?}; expected [query heads (a multiple of \
                         {heads}), new tokens, {}]",
                        p.shape(),
                        self.len()
                    ),
                });
            }
            let groups = qh / heads;
            let window = match self.policy {
                Eviction::SnapKv { window, .. } | Eviction::Ems { window, .. } => window,
                _ => 0,
            };
            if let Budget::Mass(share) = self.budget {
                // The step's attention per KV head, averaged over its queries.
                let keep = (0..heads)
                    .map(|h| {
                        let mut mass = vec![0f32; n];
                        for g in 0..groups {
                            for q in 0..t {
                                for (m, &a) in
                                    mass.iter_mut()
                                        .zip(p.slice(ndarray::s![h * groups + g, q, ..]))
                                {
                                    *m += a;
                                }
                            }
                        }
                        tokens_for_mass(&mass, share)
                    })
                    .max()
                    .unwrap_or(n);
                self.mass_keep = Some(keep.max(1));
            }
            for (h, head) in self.heads.iter_mut().enumerate() {
                for q in 0..t {
                    let mut row = vec![0f32; n];
                    for g in 0..groups {
                        for (r, &a) in
                            row.iter_mut()
                                .zip(p.slice(ndarray::s![h * groups + g, q, ..]))
                        {
                            *r += a;
                        }
                    }
                    match self.policy {
                        Eviction::H2o { .. } => {
                            for (s, r) in head.score.iter_mut().zip(&row) {
                                *s += r;
                            }
                        }
                        Eviction::SnapKv { .. } => {
                            if t - q <= window {
                                head.votes.push(row);
                            }
                        }
                        Eviction::Ems { .. } => {
                            // Query q of this step sees the tokens before
                            // the step's (n - t) and the step's first q + 1.
                            let visible = n - t + q + 1;
                            for ((s, c), r) in head
                                .score
                                .iter_mut()
                                .zip(head.hits.iter_mut())
                                .zip(&row)
                                .take(visible)
                            {
                                *s += r;
                                *c += 1.0;
                            }
                            if t - q <= window {
                                head.votes.push(row);
                            }
                        }
                        Eviction::StreamingLlm { .. } => {}
                    }
                }
                if head.votes.len() > window {
                    let extra = head.votes.len() - window;
                    head.votes.drain(..extra);
                }
            }
        }
        self.evict();
        self.pending = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
