//! Memory-budget allocation of stacked blocks across layers.

use crate::{Error, Result};

/// What [`allocate_blocks`] needs to know of one layer's stack — its block
/// size and per-block importance in loading order — so that budgets can be
/// planned before any block is read from storage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackProfile<'a> {
    /// Bits of each block.
    pub block_bits: u64,
    /// Importance of each block (e.g. its
    /// [`BitStack::error_reductions`](crate::BitStack::error_reductions)).
    pub importance: &'a [f64],
}

/// How many blocks each layer loads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BlockAllocation {
    /// Blocks loaded per layer (a prefix of each stack).
    pub blocks: Vec<usize>,
    /// Total bits loaded (≤ the budget).
    pub bits: u64,
    /// Total importance loaded.
    pub importance: f64,
}

/// A run of consecutive blocks of one layer, loaded together.
#[derive(Debug, Clone, Copy)]
struct Group {
    layer: usize,
    /// Blocks loaded in the layer once the group is.
    end: usize,
    bits: u64,
    gain: f64,
}

impl Group {
    /// Importance per bit (±∞ for a free group).
    fn density(&self) -> f64 {
        match (self.bits, self.gain) {
            (0, g) if g > 0.0 => f64::INFINITY,
            (0, g) if g < 0.0 => f64::NEG_INFINITY,
            (0, _) => 0.0,
            (b, g) => g / b as f64,
        }
    }
}

/// Chooses how many blocks each layer loads within `budget_bits`: a greedy
/// prefix by importance per bit across layers, respecting each layer's block
/// order.
///
/// Within a layer a block can only be loaded after the ones before it, so a
/// block that is less important than its successor is pooled with it (adjacent
/// runs are merged until the importance per bit of the runs is non-increasing,
/// which is the optimal order for chains of jobs). The runs of all layers are
/// then taken in decreasing importance per bit while they fit; a layer whose
/// next run does not fit, or whose next run has no positive importance, stops.
/// With equal block sizes and importances that fall along each stack (BitStack's
/// usual case) this loads exactly the most important blocks that fit, which is
/// optimal.
///
/// ```
/// use tensorpress_lowrank::{allocate_blocks, StackProfile};
///
/// let a = StackProfile { block_bits: 100, importance: &[9.0, 4.0, 1.0] };
/// let b = StackProfile { block_bits: 100, importance: &[6.0, 5.0, 0.5] };
/// let plan = allocate_blocks(&[a, b], 400)?;
/// assert_eq!(plan.blocks, vec![2, 2]); // 9, 6, 5, 4
/// assert_eq!((plan.bits, plan.importance), (400, 24.0));
/// # Ok::<(), tensorpress_lowrank::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for a non-finite importance.
pub fn allocate_blocks(stacks: &[StackProfile<'_>], budget_bits: u64) -> Result<BlockAllocation> {
    let mut groups = Vec::new();
    for (layer, p) in stacks.iter().enumerate() {
        let mut runs: Vec<Group> = Vec::new();
        for (i, &gain) in p.importance.iter().enumerate() {
            if !gain.is_finite() {
                return Err(Error::InvalidParameter {
                    name: "block importance",
                    value: gain,
                    expected: "finite",
                });
            }
            let mut cur = Group {
                layer,
                end: i + 1,
                bits: p.block_bits,
                gain,
            };
            while let Some(prev) = runs.last() {
                if cur.density() > prev.density() {
                    cur.bits = cur.bits.saturating_add(prev.bits);
                    cur.gain += prev.gain;
                    runs.pop();
                } else {
                    break;
                }
            }
            runs.push(cur);
        }
        groups.extend(runs);
    }
    groups.sort_by(|x, y| {
        y.density()
            .total_cmp(&x.density())
            .then(x.layer.cmp(&y.layer))
            .then(x.end.cmp(&y.end))
    });
    let mut blocks = vec![0usize; stacks.len()];
    let mut closed = vec![false; stacks.len()];
    let (mut bits, mut importance) = (0u64, 0.0f64);
    for g in groups {
        if closed[g.layer] {
            continue;
        }
        let left = budget_bits - bits;
        if g.gain <= 0.0 || g.bits > left {
            closed[g.layer] = true;
            continue;
        }
        bits += g.bits;
        importance += g.gain;
        blocks[g.layer] = g.end;
    }
    Ok(BlockAllocation {
        blocks,
        bits,
        importance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_lets_a_strong_second_block_pull_a_weak_first_one() {
        // Layer 0: 1 then 10 (pooled density 5.5); layer 1: 5.
        let a = StackProfile {
            block_bits: 1,
            importance: &[1.0, 10.0],
        };
        let b = StackProfile {
            block_bits: 1,
            importance: &[5.0],
        };
        let plan = allocate_blocks(&[a, b], 2).unwrap();
        assert_eq!(plan.blocks, vec![2, 0]);
        assert_eq!(plan.importance, 11.0);
        // Non-positive runs are never loaded, whatever the budget.
        let c = StackProfile {
            block_bits: 1,
            importance: &[2.0, -1.0, 0.0],
        };
        assert_eq!(allocate_blocks(&[c], 100).unwrap().blocks, vec![1]);
        // A layer whose next block does not fit stops; smaller blocks elsewhere still load.
        let big = StackProfile {
            block_bits: 10,
            importance: &[100.0, 90.0],
        };
        let small = StackProfile {
            block_bits: 1,
            importance: &[1.0, 1.0, 1.0],
        };
        let plan = allocate_blocks(&[big, small], 13).unwrap();
        assert_eq!(plan.blocks, vec![1, 3]);
        assert_eq!(plan.bits, 13);
    }
}
