//! Token merging for encoders: ToMe's bipartite soft matching (Bolya, Fu,
//! Dai, Zhang, Feichtenhofer, Hoffman, *Token Merging: Your ViT But Faster*,
//! ICLR 2023, arXiv:2210.09461).
//!
//! Between a block's attention and its MLP, the tokens are split into two
//! alternating sets A (even positions) and B (odd); each A token finds its
//! most similar B token by the cosine similarity of a *metric* (the block's
//! keys, averaged over heads), the `r` most similar pairs are merged — the A
//! token folds into its B partner as a size-weighted mean — and the other A
//! tokens stay. Each token carries its *size* (how many input tokens it
//! stands for): attention adds `log(size)` to the logits of the keys
//! (proportional attention, so a merged token draws the attention its
//! members would have together) and mean pooling weighs tokens by size. With
//! `protect_first`, token 0 (BERT's `[CLS]`) never merges. Every block
//! removes `r` tokens (fewer when fewer than `r` A tokens remain), so the
//! encoder's later blocks run on shorter sequences.
//!
//! ```
//! use ndarray::array;
//! use tensorpress_kvcache::tome::merge_tokens;
//!
//! // Tokens 0 and 1 point the same way, 2 and 3 do not: one merge joins 0 and 1.
//! let x = array![[1.0f32, 0.0], [3.0, 0.0], [0.0, 1.0], [-1.0, 0.0]];
//! let merged = merge_tokens(x.view(), x.view(), &[1.0; 4], 1, false)?;
//! assert_eq!(merged.sizes, [1.0, 2.0, 1.0]); // A token 2; B tokens 1 (with 0), 3
//! assert_eq!(merged.tokens.row(1).to_vec(), [2.0, 0.0]);
//! # Ok::<(), tensorpress_kvcache::Error>(())
//! ```

use ndarray::{Array2, ArrayView2};

use crate::{Error, Result};

/// Tokens after one merging step.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The remaining tokens, `[tokens − merged, dim]`: the unmerged A tokens
    /// (in order), then the B tokens (in order).
    pub tokens: Array2<f32>,
    /// How many input tokens each remaining token stands for.
    pub sizes: Vec<f32>,
    /// For each input token, the row of `tokens` it went to (to unmerge:
    /// `tokens.row(source[i])` stands in for input token `i`).
    pub source: Vec<usize>,
}

/// Merges the `r` most similar A→B pairs of `tokens` (`[t, dim]`) by the
/// cosine similarity of `metric` (`[t, metric_dim]`, e.g. the keys averaged
/// over heads); `sizes` are the tokens' current sizes.
///
/// # Errors
/// [`Error::Config`] when the row counts of `tokens`, `metric` and `sizes`
/// differ or a size is not positive; [`Error::NonFinite`] for NaN or
/// infinite metric values (`head` 0).
pub fn merge_tokens(
    tokens: ArrayView2<'_, f32>,
    metric: ArrayView2<'_, f32>,
    sizes: &[f32],
    r: usize,
    protect_first: bool,
) -> Result<Merged> {
    let t = tokens.nrows();
    if metric.nrows() != t || sizes.len() != t {
        return Err(Error::Config {
            field: "tokens",
            reason: format!(
                "{t} tokens, {} metric rows and {} sizes: give one of each per token",
                metric.nrows(),
                sizes.len()
            ),
        });
    }
    if let Some(s) = sizes.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::Config {
            field: "sizes",
            reason: format!("token size {s}: sizes are positive counts"),
        });
    }
    if let Some(pos) = metric.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "metric",
            token: pos / metric.ncols().max(1),
            head: 0,
            dim: pos % metric.ncols().max(1),
        });
    }
    let a: Vec<usize> = (0..t).step_by(2).collect();
    let b: Vec<usize> = (1..t).step_by(2).collect();
    let candidates = a.len() - usize::from(protect_first && !a.is_empty());
    let r = r.min(candidates).min(b.len());
    let unit = |i: usize| {
        let row = metric.row(i);
        let n = row.dot(&row).sqrt().max(f32::MIN_POSITIVE);
        row.mapv(|v| v / n)
    };
    let (na, nb): (Vec<_>, Vec<_>) = (
        a.iter().map(|&i| unit(i)).collect(),
        b.iter().map(|&i| unit(i)).collect(),
    );
    // Each A token's best B partner.
    let best: Vec<(usize, f32)> = na
        .iter()
        .enumerate()
        .map(|(ai, x)| {
            if protect_first && ai == 0 {
                return (0, f32::NEG_INFINITY);
            }
            nb.iter()
                .enumerate()
                .map(|(bi, y)| (bi, x.dot(y)))
                .fold((0, f32::NEG_INFINITY), |m, c| if c.1 > m.1 { c } else { m })
        })
        .collect();
    let mut order: Vec<usize> = (0..a.len()).collect();
    // Most similar first; ties by position, so the result is deterministic.
    order.sort_by(|&x, &y| best[y].1.total_cmp(&best[x].1).then(x.cmp(&y)));
    let mut merged_a = vec![false; a.len()];
    for &ai in &order[..r] {
        merged_a[ai] = true;
    }
    let kept_a: Vec<usize> = (0..a.len()).filter(|&ai| !merged_a[ai]).collect();
    let rows = kept_a.len() + b.len();
    let dim = tokens.ncols();
    let mut out = Array2::zeros((rows, dim));
    let mut out_sizes = vec![0f32; rows];
    let mut source = vec![0usize; t];
    for (row, &ai) in kept_a.iter().enumerate() {
        out.row_mut(row).assign(&tokens.row(a[ai]));
        out_sizes[row] = sizes[a[ai]];
        source[a[ai]] = row;
    }
    // B tokens accumulate size-weighted sums, then divide.
    for (bi, &i) in b.iter().enumerate() {
        let row = kept_a.len() + bi;
        out.row_mut(row).assign(&(&tokens.row(i) * sizes[i]));
        out_sizes[row] = sizes[i];
        source[i] = row;
    }
    for &ai in &order[..r] {
        let (i, row) = (a[ai], kept_a.len() + best[ai].0);
        out.row_mut(row).scaled_add(sizes[i], &tokens.row(i));
        out_sizes[row] += sizes[i];
        source[i] = row;
    }
    for (bi, _) in b.iter().enumerate() {
        let row = kept_a.len() + bi;
        let s = out_sizes[row];
        out.row_mut(row).mapv_inplace(|v| v / s);
    }
    Ok(Merged {
        tokens: out,
        sizes: out_sizes,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    proptest! {
        /// Merging removes exactly min(r, candidates) tokens, conserves the
        /// total size and the size-weighted sum of the tokens, and every
        /// input token maps to a row.
        #[test]
        fn merging_conserves_size_and_mass(
            t in 1usize..30,
            r in 0usize..20,
            protect in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut rng = SeededRng::new(seed);
            let x = rng.array_normal((t, 5));
            let sizes: Vec<f32> = (0..t).map(|i| 1.0 + (i % 3) as f32).collect();
            let m = merge_tokens(x.view(), x.view(), &sizes, r, protect).unwrap();
            let a = t.div_ceil(2);
            let removed = r.min(a - usize::from(protect)).min(t / 2);
            prop_assert_eq!(m.tokens.nrows(), t - removed);
            prop_assert!((m.sizes.iter().sum::<f32>() - sizes.iter().sum::<f32>()).abs() < 1e-4);
            for c in 0..5 {
                let before: f32 = (0..t).map(|i| sizes[i] * x[[i, c]]).sum();
                let after: f32 = (0..m.tokens.nrows()).map(|i| m.sizes[i] * m.tokens[[i, c]]).sum();
                prop_assert!((before - after).abs() < 1e-3 * (1.0 + before.abs()));
            }
            prop_assert!(m.source.iter().all(|&s| s < m.tokens.nrows()));
            if protect {
                prop_assert_eq!(m.sizes[0], sizes[0]);
                prop_assert_eq!(m.source[0], 0);
            }
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let x = Array2::<f32>::zeros((4, 2));
        assert!(merge_tokens(x.view(), x.view(), &[1.0; 3], 1, false).is_err());
        assert!(merge_tokens(x.view(), x.view(), &[1.0, 0.0, 1.0, 1.0], 1, false).is_err());
        let mut bad = x.clone();
        bad[[1, 1]] = f32::NAN;
        assert!(matches!(
            merge_tokens(x.view(), bad.view(), &[1.0; 4], 1, false),
            Err(Error::NonFinite { .. })
        ));
    }
}
