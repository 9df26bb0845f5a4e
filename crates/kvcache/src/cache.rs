//! The [`KvCache`] trait and checks shared by the implementations.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

use crate::{Error, Result};

/// A key/value cache of one attention layer: keys and values of shape
/// `[tokens, heads, head_dim]`, appended as tokens arrive and read back as f32.
pub trait KvCache: Send + Sync + std::fmt::Debug {
    /// Number of (KV) heads.
    fn heads(&self) -> usize;

    /// Dimension of each head.
    fn head_dim(&self) -> usize;

    /// Tokens stored.
    fn len(&self) -> usize;

    /// Whether no token is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `keys` and `values` (`[tokens, heads, head_dim]`, same token count).
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::TokenMismatch`], [`Error::NonFinite`]; the
    /// cache is unchanged on error.
    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()>;

    /// All keys, dequantized, `[len, heads, head_dim]`.
    fn keys(&self) -> Array3<f32>;

    /// All values, dequantized, `[len, heads, head_dim]`.
    fn values(&self) -> Array3<f32>;

    /// Bytes of storage the cached data occupies (codes and scales; not the
    /// `Vec` headers or spare capacity).
    fn memory_bytes(&self) -> usize;

    /// Removes every token, keeping the allocation.
    fn clear(&mut self);

    /// A boxed copy (caches are cloned with the decoding state that holds
    /// them).
    fn clone_box(&self) -> Box<dyn KvCache>;

    /// Attention of one decoding step: `queries` `[query_heads, head_dim]`
    /// (rotated as the keys were and scaled by `1/√head_dim`) against every
    /// cached token, `softmax(K qᵀ) V` per query head, `[query_heads,
    /// head_dim]`; query head `q` reads KV head `q / (query_heads / heads)`.
    ///
    /// The default dequantizes the whole cache and calls
    /// [`attend_reference`](crate::attend_reference); caches with a kernel
    /// on their own storage ([`KiviCache`](crate::KiviCache),
    /// [`F32Cache`](crate::F32Cache)) override it, and are tested against
    /// that reference.
    ///
    /// # Errors
    /// [`Error::Config`] for queries whose shape does not fit;
    /// [`Error::NonFinite`] for NaN or infinite queries.
    fn attend(&self, queries: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        crate::attend_reference(self.keys().view(), self.values().view(), queries)
    }

    /// Whether [`end_step`](Self::end_step) wants the attention
    /// probabilities (eviction policies that score tokens by attention).
    fn wants_attention(&self) -> bool {
        false
    }

    /// Ends a step: the runner has appended the step's keys and values and
    /// attended to [`keys`](Self::keys) and [`values`](Self::values). When
    /// [`wants_attention`](Self::wants_attention), `attention` holds the
    /// probabilities `[query_heads, new_tokens, len]` (query head `q` reads
    /// KV head `q / (query_heads / heads)`). Caches with a budget evict here.
    ///
    /// # Errors
    /// [`Error::Config`] for probabilities of the wrong shape.
    fn end_step(&mut self, attention: Option<ArrayView3<'_, f32>>) -> Result<()> {
        let _ = attention;
        Ok(())
    }
}

/// Validates an append against `[_, heads, head_dim]`; returns the token count.
pub(crate) fn check_append(
    heads: usize,
    head_dim: usize,
    keys: &ArrayView3<'_, f32>,
    values: &ArrayView3<'_, f32>,
) -> Result<usize> {
    for (what, a) in [("keys", keys), ("values", values)] {
        let (_, h, d) = a.dim();
        if (h, d) != (heads, head_dim) {
            return Err(Error::Shape {
                what,
                got: a.shape().to_vec(),
                heads,
                head_dim,
            });
        }
    }
    if keys.dim().0 != values.dim().0 {
        return Err(Error::TokenMismatch {
            keys: keys.dim().0,
            values: values.dim().0,
        });
    }
    for (what, a) in [("keys", keys), ("values", values)] {
        if let Some(((token, head, dim), _)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what,
                token,
                head,
                dim,
            });
        }
    }
    Ok(keys.dim().0)
}
