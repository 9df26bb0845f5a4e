//! Length-limited code lengths by package-merge (Larmore and Hirschberg 1990).

use crate::{CodeLengthFault, Error, Result};

/// Optimal code lengths for `counts` with no code longer than `max_length`
/// bits: symbols that never occur get length 0, a lone symbol gets length 1.
///
/// Package-merge: the leaves (symbols by count) form the list of the smallest
/// denomination; each further list merges the leaves with the pairs
/// ("packages") of the previous list, `max_length` lists in all. The first
/// `2n − 2` items of the last list are the optimal choice, and a symbol's code
/// length is how many of the chosen items contain it. Time and memory are
/// `O(n · max_length)`.
///
/// # Errors
/// [`Error::InvalidCodeLengths`] for `max_length` outside `1..=15` or more than
/// `2^max_length` occurring symbols; [`Error::EmptyModel`] when nothing occurs;
/// [`Error::InvalidAlphabet`] above 2^16 symbols.
pub fn code_lengths(counts: &[u64], max_length: u32) -> Result<Vec<u8>> {
    if !(1..=super::MAX_CODE_LENGTH).contains(&max_length) {
        return Err(Error::InvalidCodeLengths {
            kind: CodeLengthFault::MaxLength { max: max_length },
        });
    }
    if counts.len() > 1 << 16 {
        return Err(Error::InvalidAlphabet {
            size: counts.len(),
            max: 1 << 16,
        });
    }
    let mut leaves: Vec<(u64, usize)> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(s, &c)| (c, s))
        .collect();
    leaves.sort_unstable();
    let n = leaves.len();
    let mut lengths = vec![0u8; counts.len()];
    match n {
        0 => return Err(Error::EmptyModel),
        1 => {
            lengths[leaves[0].1] = 1;
            return Ok(lengths);
        }
        _ => {}
    }
    if n > 1 << max_length {
        return Err(Error::InvalidCodeLengths {
            kind: CodeLengthFault::TooManySymbols {
                symbols: n,
                max: max_length,
            },
        });
    }

    // Each list as item kinds: `Some(leaf)` or `None` for a package of the
    // previous list's next two items. Weights are u128: sums of up to 2^16
    // counts of up to 2^64, doubled per level, cannot overflow.
    const PACKAGE: u32 = u32::MAX;
    let mut kinds: Vec<Vec<u32>> = vec![(0..n as u32).collect()];
    let mut weights: Vec<u128> = leaves.iter().map(|&(c, _)| u128::from(c)).collect();
    for _ in 1..max_length {
        let packages: Vec<u128> = weights.chunks_exact(2).map(|p| p[0] + p[1]).collect();
        let mut kind = Vec::with_capacity(n + packages.len());
        let mut merged = Vec::with_capacity(n + packages.len());
        let (mut i, mut j) = (0, 0);
        while i < n || j < packages.len() {
            let leaf_first =
                j == packages.len() || (i < n && u128::from(leaves[i].0) <= packages[j]);
            if leaf_first {
                kind.push(i as u32);
                merged.push(u128::from(leaves[i].0));
                i += 1;
            } else {
                kind.push(PACKAGE);
                merged.push(packages[j]);
                j += 1;
            }
        }
        kinds.push(kind);
        weights = merged;
    }

    let mut take = 2 * n - 2;
    for kind in kinds.iter().rev() {
        let mut packages = 0;
        for &k in &kind[..take] {
            if k == PACKAGE {
                packages += 1;
            } else {
                lengths[leaves[k as usize].1] += 1;
            }
        }
        take = 2 * packages;
    }
    Ok(lengths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    /// Cost of unconstrained Huffman coding, by repeated merging of the two lightest.
    fn huffman_cost(counts: &[u64]) -> u64 {
        let mut heap: BinaryHeap<Reverse<u64>> = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| Reverse(c))
            .collect();
        let mut cost = 0;
        while heap.len() > 1 {
            let (Reverse(a), Reverse(b)) = (heap.pop().unwrap(), heap.pop().unwrap());
            cost += a + b;
            heap.push(Reverse(a + b));
        }
        cost
    }

    fn cost(counts: &[u64], lengths: &[u8]) -> u64 {
        counts
            .iter()
            .zip(lengths)
            .map(|(&c, &l)| c * u64::from(l))
            .sum()
    }

    fn kraft_is_one(lengths: &[u8]) -> bool {
        let sum: u64 = lengths
            .iter()
            .filter(|&&l| l > 0)
            .map(|&l| 1u64 << (15 - l))
            .sum();
        sum == 1 << 15
    }

    #[test]
    fn unconstrained_lengths_are_huffman_optimal() {
        let counts = [45, 13, 12, 16, 9, 5, 0, 1];
        let l = code_lengths(&counts, 15).unwrap();
        assert_eq!(cost(&counts, &l), huffman_cost(&counts));
        assert!(kraft_is_one(&l));
        assert_eq!(l[6], 0);
    }

    #[test]
    fn the_limit_binds_on_fibonacci_counts() {
        // Fibonacci counts make Huffman codes as deep as possible.
        let mut counts = vec![1u64, 1];
        while counts.len() < 12 {
            let k = counts.len();
            counts.push(counts[k - 1] + counts[k - 2]);
        }
        let free = code_lengths(&counts, 15).unwrap();
        assert_eq!(free.iter().max(), Some(&11));
        let l = code_lengths(&counts, 7).unwrap();
        assert_eq!(l.iter().max(), Some(&7));
        assert!(kraft_is_one(&l));
        assert!(cost(&counts, &l) > cost(&counts, &free));
    }

    #[test]
    fn edge_cases() {
        assert_eq!(code_lengths(&[0, 3], 4).unwrap(), vec![0, 1]);
        assert_eq!(code_lengths(&[1; 4], 2).unwrap(), vec![2; 4]);
        assert!(code_lengths(&[1; 5], 2).is_err());
        assert!(code_lengths(&[0; 3], 4).is_err());
        assert!(code_lengths(&[1], 16).is_err());
        assert!(code_lengths(&[1], 0).is_err());
    }
}
