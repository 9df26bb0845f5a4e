//! BitStack properties through the public API: the error never grows with
//! the number of blocks loaded, and budget allocation stays within budget,
//! loads prefixes only, and is optimal on equal-size stacks with falling
//! importance.

use ndarray::{Array1, ArrayView1, ArrayView2, Axis, Zip};
use proptest::prelude::*;
use tensorpress_lowrank::{allocate_blocks, BitStack, BitStackConfig, ErrorMetric, StackProfile};
use tensorpress_tensor::SeededRng;

/// The relative Frobenius error of every prefix of a stack in the scaled norm
/// `‖(W − Ŵ) S‖_F`, for tests.
fn scaled_errors(stack: &BitStack, w: ArrayView2<'_, f32>, s: ArrayView1<'_, f32>) -> Vec<f64> {
    (0..=stack.len())
        .map(|n| {
            let r = stack.reconstruct(n).unwrap();
            Zip::from(&w)
                .and(&r)
                .and_broadcast(&s.insert_axis(Axis(0)))
                .fold(0.0f64, |acc, &x, &y, &s| {
                    acc + (f64::from(x - y) * f64::from(s)).powi(2)
                })
                .sqrt()
        })
        .collect()
}

/// Exhaustive best total importance for tiny instances.
fn brute_force(stacks: &[StackProfile<'_>], budget: u64) -> f64 {
    fn go(stacks: &[StackProfile<'_>], budget: u64) -> f64 {
        let Some((first, rest)) = stacks.split_first() else {
            return 0.0;
        };
        (0..=first.importance.len())
            .filter_map(|n| {
                let bits = first.block_bits * n as u64;
                (bits <= budget)
                    .then(|| first.importance[..n].iter().sum::<f64>() + go(rest, budget - bits))
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }
    go(stacks, budget)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn error_never_grows_with_blocks(
        out in 2usize..24,
        inp in 2usize..24,
        k in 1usize..4,
        scaled in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let w = rng.array_normal((out, inp));
        let s = if scaled { rng.array_uniform(inp).mapv(|v| 0.1 + 4.0 * v) } else { Array1::ones(inp) };
        let stack = BitStack::decompose(
            w.view(),
            scaled.then_some(s.view()),
            &BitStackConfig::new(6).magnitude_rank(k),
        ).unwrap();
        let errs = scaled_errors(&stack, w.view(), s.view());
        for pair in errs.windows(2) {
            prop_assert!(pair[1] <= pair[0] * (1.0 + 1e-4) + 1e-6, "{:?}", errs);
        }
        prop_assert!(errs[6] < 0.5 * errs[0], "{:?}", errs);
        let gains = stack.error_reductions(w.view(), ErrorMetric::Frobenius).unwrap();
        prop_assert_eq!(gains.len(), 6);
    }

    #[test]
    fn allocation_respects_budget_and_matches_the_optimum_on_sorted_stacks(
        lens in proptest::collection::vec(0usize..5, 1..4),
        budget_blocks in 0u64..12,
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let imps: Vec<Vec<f64>> = lens
            .iter()
            .map(|&n| {
                let mut v: Vec<f64> = (0..n).map(|_| rng.uniform_f64()).collect();
                v.sort_by(|a, b| b.total_cmp(a));
                v
            })
            .collect();
        let stacks: Vec<StackProfile<'_>> = imps
            .iter()
            .map(|v| StackProfile { block_bits: 8, importance: v })
            .collect();
        let budget = budget_blocks * 8 + 3;
        let plan = allocate_blocks(&stacks, budget).unwrap();
        prop_assert!(plan.bits <= budget);
        for (n, p) in plan.blocks.iter().zip(&stacks) {
            prop_assert!(*n <= p.importance.len());
        }
        let total: f64 = plan.blocks.iter().zip(&stacks).map(|(&n, p)| p.importance[..n].iter().sum::<f64>()).sum();
        prop_assert!((total - plan.importance).abs() < 1e-9);
        prop_assert!((plan.importance - brute_force(&stacks, budget)).abs() < 1e-9);

        // Unsorted importances and mixed sizes: still within budget, prefixes only.
        let shuffled: Vec<Vec<f64>> = imps.iter().map(|v| v.iter().rev().map(|x| x - 0.3).collect()).collect();
        let mixed: Vec<StackProfile<'_>> = shuffled
            .iter()
            .enumerate()
            .map(|(i, v)| StackProfile { block_bits: 3 + 2 * i as u64, importance: v })
            .collect();
        let plan = allocate_blocks(&mixed, budget).unwrap();
        prop_assert!(plan.bits <= budget);
        let used: u64 = plan.blocks.iter().zip(&mixed).map(|(&n, p)| n as u64 * p.block_bits).sum();
        prop_assert_eq!(used, plan.bits);
    }
}
