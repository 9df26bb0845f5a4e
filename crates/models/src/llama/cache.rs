//! Decoding state: the keys and values of the tokens seen so far, per block,
//! in f32 buffers or in a compressed cache from `tensorpress-kvcache`.

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;
use ndarray::Array3;
use tensorpress_kvcache::KvCache;

use crate::{Error, Result};

/// The keys and values of one block: buffers `[1, kv_heads, capacity,
/// head_dim]` of which the first `len` positions are filled. Capacity grows
/// by doubling, so appending a token copies only that token (the cache used
/// to be concatenated anew at every token, copying all of it: quadratic in
/// the context, 5 % of SmolLM2's decode time at 300 tokens).
///
/// With a compressed cache ([`DecodeCache::compressed`]) the keys and values
/// go to it instead, and attention reads them back dequantized.
#[derive(Debug, Default)]
pub(crate) struct BlockCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    pub(crate) len: usize,
    compressed: Option<Box<dyn KvCache>>,
    /// Whether the buffers are this cache's own; a clone shares them (as a
    /// view of the filled part) until its first append copies them.
    owned: bool,
}

impl Clone for BlockCache {
    fn clone(&self) -> Self {
        let view = |t: &Option<Tensor>| t.as_ref().and_then(|t| t.narrow(2, 0, self.len).ok());
        BlockCache {
            k: view(&self.k),
            v: view(&self.v),
            len: self.len,
            compressed: self.compressed.as_ref().map(|c| c.clone_box()),
            owned: false,
        }
    }
}

impl BlockCache {
    /// Appends `k` and `v` (`[1, kv_heads, t, head_dim]`) and returns every
    /// cached key and value, `[1, kv_heads, len, head_dim]`.
    pub(crate) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        if let Some(c) = self.compressed.as_mut() {
            c.append(to_tokens(k)?.view(), to_tokens(v)?.view())?;
            self.len = c.len();
            return Ok((from_tokens(c.keys(), k)?, from_tokens(c.values(), v)?));
        }
        let t = k.dim(2)?;
        let need = self.len + t;
        let capacity = self.k.as_ref().map_or(Ok(0), |b| b.dim(2))?;
        if !self.owned || need > capacity {
            let capacity = need.next_power_of_two().max(16);
            self.k = Some(grow(self.k.as_ref(), k, self.len, capacity)?);
            self.v = Some(grow(self.v.as_ref(), v, self.len, capacity)?);
            self.owned = true;
        }
        let (kb, vb) = match (&self.k, &self.v) {
            (Some(kb), Some(vb)) => (kb, vb),
            _ => unreachable!("buffers allocated above"),
        };
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = need;
        Ok((kb.narrow(2, 0, need)?, vb.narrow(2, 0, need)?))
    }
}

impl BlockCache {
    /// One token's attention on a compressed cache's own storage: appends
    /// `k`, `v` (`[1, kv_heads, 1, head_dim]`), attends the scaled, rotated
    /// queries `q` (`[1, heads, 1, head_dim]`) with [`KvCache::attend`] and
    /// returns `[1, 1, heads · head_dim]`. `None` (nothing appended) for the
    /// f32 buffers and for caches that need the attention probabilities.
    pub(crate) fn attend_one(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Option<Tensor>> {
        let Some(c) = self.compressed.as_mut() else {
            return Ok(None);
        };
        if c.wants_attention() {
            return Ok(None);
        }
        c.append(to_tokens(k)?.view(), to_tokens(v)?.view())?;
        let (_, heads, _, d) = q.dims4()?;
        let queries =
            ndarray::Array2::from_shape_vec((heads, d), q.flatten_all()?.to_vec1::<f32>()?)
                .map_err(|e| Error::Config {
                    field: "kv cache",
                    reason: e.to_string(),
                })?;
        let out = c.attend(queries.view())?;
        c.end_step(None)?;
        self.len = c.len();
        let data = out.into_raw_vec_and_offset().0;
        Ok(Some(Tensor::from_vec(data, (1, 1, heads * d), q.device())?))
    }

    /// Ends a step after attention: a compressed cache that scores tokens by
    /// attention gets `probs` (`[1, kv_heads, groups·t, n]`, read as
    /// `[query_heads, t, n]`) and may evict.
    pub(crate) fn end_step(&mut self, probs: &Tensor, shape: (usize, usize, usize)) -> Result<()> {
        let Some(c) = self.compressed.as_mut() else {
            return Ok(());
        };
        if c.wants_attention() {
            let data = probs.flatten_all()?.to_vec1::<f32>()?;
            let probs = Array3::from_shape_vec(shape, data).map_err(|e| Error::Config {
                field: "kv cache",
                reason: e.to_string(),
            })?;
            c.end_step(Some(probs.view()))?;
        } else {
            c.end_step(None)?;
        }
        self.len = c.len();
        Ok(())
    }
}

/// A zeroed buffer shaped like `like` with `capacity` positions on dim 2,
/// holding the first `len` positions of `old`.
fn grow(old: Option<&Tensor>, like: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = like.dims4()?;
    let buf = Tensor::zeros((b, h, capacity, d), like.dtype(), like.device())?;
    if let Some(old) = old.filter(|_| len > 0) {
        buf.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

/// Keys and values of the tokens decoded so far
/// ([`LlamaModel::decode`](super::LlamaModel::decode)), in f32 (the
/// reference) or in compressed caches of `tensorpress-kvcache`
/// ([`DecodeCache::compressed`]).
#[derive(Clone, Default)]
pub struct DecodeCache {
    pub(crate) blocks: Vec<BlockCache>,
    pub(crate) len: usize,
    factory: Option<CacheFactory>,
}

/// Builds the compressed cache of one block from `(block, kv_heads,
/// head_dim)` (the block index lets a cache differ per layer: calibrated
/// scales, budgets that decay with depth).
pub type CacheFactory = Arc<
    dyn Fn(usize, usize, usize) -> std::result::Result<Box<dyn KvCache>, tensorpress_kvcache::Error>
        + Send
        + Sync,
>;

impl fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeCache")
            .field("blocks", &self.blocks)
            .field("len", &self.len)
            .field("compressed", &self.factory.is_some())
            .finish()
    }
}

impl DecodeCache {
    /// An empty cache.
    pub fn new() -> Self {
        DecodeCache::default()
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.blocks.clear();
        self.len = 0;
    }

    /// An empty cache whose blocks store keys and values in the caches
    /// `factory` builds (KIVI, int8, …): attention then reads them back
    /// dequantized, as a runtime with that cache computes.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tensorpress_kvcache::{KiviCache, KiviConfig, KvCache};
    /// use tensorpress_models::llama::DecodeCache;
    ///
    /// let cache = DecodeCache::compressed(Arc::new(|_block, heads, head_dim| {
    ///     Ok(Box::new(KiviCache::new(heads, head_dim, KiviConfig::new(4))?) as Box<dyn KvCache>)
    /// }));
    /// assert!(cache.is_empty());
    /// ```
    pub fn compressed(factory: CacheFactory) -> Self {
        DecodeCache {
            factory: Some(factory),
            ..DecodeCache::default()
        }
    }

    /// Bytes the cached keys and values occupy (f32 buffers: 4 bytes per
    /// element held; compressed caches: their own count).
    pub fn memory_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| match &b.compressed {
                Some(c) => c.memory_bytes(),
                None => {
                    let per = |t: &Option<Tensor>| {
                        t.as_ref()
                            .map_or(0, |t| t.elem_count() / t.dim(2).unwrap_or(1).max(1))
                    };
                    4 * b.len * (per(&b.k) + per(&b.v))
                }
            })
            .sum()
    }

    /// Makes sure there is one block cache per model block.
    pub(crate) fn prepare(
        &mut self,
        blocks: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        if self.blocks.len() == blocks {
            return Ok(());
        }
        self.blocks = (0..blocks)
            .map(|block| {
                let compressed = match &self.factory {
                    Some(f) => Some(f(block, kv_heads, head_dim)?),
                    None => None,
                };
                Ok(BlockCache {
                    compressed,
                    ..BlockCache::default()
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// `[1, heads, t, d]` → `[t, heads, d]` as an array.
fn to_tokens(x: &Tensor) -> Result<Array3<f32>> {
    let (_, h, t, d) = x.dims4()?;
    let data = x
        .squeeze(0)?
        .transpose(0, 1)?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Array3::from_shape_vec((t, h, d), data).map_err(|e| Error::Config {
        field: "kv cache",
        reason: e.to_string(),
    })
}

/// `[n, heads, d]` → `[1, heads, n, d]` on `like`'s device.
fn from_tokens(a: Array3<f32>, like: &Tensor) -> Result<Tensor> {
    let (n, h, d) = a.dim();
    let data = if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect()
    };
    Ok(Tensor::from_vec(data, (n, h, d), like.device())?
        .transpose(0, 1)?
        .contiguous()?
        .unsqueeze(0)?)
}
