//! Attention of one decoding step over a cache: the scalar reference (on
//! dequantized keys and values) that fused kernels are tested against.

use ndarray::{Array2, ArrayView2, ArrayView3};

use crate::{Error, Result};

/// Checks `queries` (`[query_heads, head_dim]`) against a cache of `heads`
/// heads of `head_dim`; returns the query heads per KV head.
pub(crate) fn check_queries(
    queries: &ArrayView2<'_, f32>,
    heads: usize,
    head_dim: usize,
) -> Result<usize> {
    let (qh, d) = queries.dim();
    if d != head_dim || qh == 0 || heads == 0 || !qh.is_multiple_of(heads) {
        return Err(Error::Config {
            field: "queries",
            reason: format!(
                "shape {:?}; expected [query heads (a multiple of {heads}), {head_dim}]",
                queries.shape()
            ),
        });
    }
    if let Some(((q, i), _)) = queries.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "queries",
            token: 0,
            head: q,
            dim: i,
        });
    }
    Ok(qh / heads)
}

/// In-place softmax of `scores` (max subtracted); an empty slice stays empty.
pub(crate) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    if sum > 0.0 {
        for s in scores.iter_mut() {
            *s /= sum;
        }
    }
}

/// `softmax(K qᵀ) V` for each query head over `keys`, `values` (`[tokens,
/// heads, head_dim]`), in f32: the reference of
/// [`KvCache::attend`](crate::KvCache::attend). Queries come scaled (by `1/√head_dim`) and
/// rotated as the keys were; query head `q` reads KV head `q / groups`.
///
/// # Errors
/// [`Error::Config`] for queries whose shape does not fit the keys;
/// [`Error::NonFinite`] for NaN or infinite queries.
pub fn attend_reference(
    keys: ArrayView3<'_, f32>,
    values: ArrayView3<'_, f32>,
    queries: ArrayView2<'_, f32>,
) -> Result<Array2<f32>> {
    let (n, heads, d) = keys.dim();
    let groups = check_queries(&queries, heads, d)?;
    let mut out = Array2::zeros(queries.dim());
    let mut p = vec![0f32; n];
    for (q, query) in queries.outer_iter().enumerate() {
        let h = q / groups;
        for (t, s) in p.iter_mut().enumerate() {
            *s = keys
                .slice(ndarray::s![t, h, ..])
                .iter()
                .zip(query)
                .map(|(k, x)| k * x)
                .sum();
        }
        softmax(&mut p);
        let mut row = out.row_mut(q);
        for (t, &w) in p.iter().enumerate() {
            row.scaled_add(w, &values.slice(ndarray::s![t, h, ..]));
        }
    }
    Ok(out)
}
