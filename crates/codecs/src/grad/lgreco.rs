//! L-GreCo (Markov et al., MLSys 2024): per-layer compression parameters
//! chosen by dynamic programming.
//!
//! Uniform compression treats layers alike although they differ in size and
//! in how much error a given setting causes. L-GreCo measures, for each layer
//! and each candidate setting (a top-k density, a PowerSGD rank, a number of
//! quantization levels), the bytes it sends and the error it makes on a
//! sample gradient ([`measure`]), then picks one candidate per layer to
//! minimize the total error subject to a total byte budget ([`select`]): a
//! multiple-choice knapsack, solved exactly by dynamic programming over sizes.
//!
//! # Discretization
//!
//! The budget `B` is split into `buckets` units of `u = ⌈B / buckets⌉` bytes;
//! a candidate of `b` bytes costs `⌈b / u⌉` units, and the program allows
//! `⌊B / u⌋` units in total. Rounding costs up makes every selection it
//! returns fit the true budget. The result is exact when `u = 1`
//! (`buckets ≥ B`) or every size is a multiple of `u`; otherwise it is at
//! least as good as the best selection that fits in `B − L·u` bytes for `L`
//! layers (each layer's rounding wastes less than one unit). Time is
//! `O(L · K · buckets)` for `K` candidates per layer, memory
//! `O(L · buckets)`.
//!
//! ```
//! use tensorpress_codecs::grad::lgreco::{select, Candidate};
//!
//! // Two layers; layer 0 is sensitive, layer 1 barely cares.
//! let layers = vec![
//!     vec![Candidate { bytes: 100, error: 0.1 }, Candidate { bytes: 10, error: 5.0 }],
//!     vec![Candidate { bytes: 100, error: 0.1 }, Candidate { bytes: 10, error: 0.2 }],
//! ];
//! let pick = select(&layers, 120, 120)?;
//! assert_eq!(pick.choices, vec![0, 1]);
//! assert_eq!(pick.bytes, 110);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

use ndarray::ArrayViewD;

use super::{exchange, GradCompressor};
use crate::{Error, Result};

/// One candidate setting of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Bytes a worker sends per step with this setting.
    pub bytes: u64,
    /// Error it makes (e.g. the squared L2 distance between the gradient and
    /// its reconstruction, as [`measure`] reports); finite, summed over layers.
    pub error: f64,
}

/// The chosen candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Index of the chosen candidate, per layer.
    pub choices: Vec<usize>,
    /// Total bytes of the choice (true sizes, within the budget).
    pub bytes: u64,
    /// Total error of the choice.
    pub error: f64,
}

/// Largest dynamic-programming table (`layers × (buckets + 1)` entries).
pub const MAX_TABLE: usize = 1 << 28;

/// Bytes and squared error of `compressor` on `grad`, through a one-worker
/// [`exchange`] (so multi-round compressors are measured too). Stateful
/// compressors (error feedback, DGC, PowerSGD) are measured from their current
/// state, and their state advances.
///
/// # Errors
/// Those of the compressor and of [`exchange`].
pub fn measure<C: GradCompressor>(
    compressor: &mut C,
    grad: ArrayViewD<'_, f32>,
) -> Result<Candidate> {
    let out = exchange(std::slice::from_mut(compressor), &[grad.view()])?;
    let error = out
        .mean
        .iter()
        .zip(grad.iter())
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    Ok(Candidate {
        bytes: out.bytes_sent[0] as u64,
        error,
    })
}

/// Picks one candidate per layer minimizing the total error with total bytes
/// at most `budget`, over sizes discretized into `buckets` units (see the
/// [module docs](self)). Ties go to the smaller total in units, then to lower
/// candidate indices.
///
/// # Errors
/// [`Error::InvalidConfig`] for no layers, a layer without candidates, a
/// non-finite error or `buckets == 0`; [`Error::TooLarge`] past
/// [`MAX_TABLE`]; [`Error::BudgetInfeasible`] when even the smallest
/// candidates do not fit once rounded.
pub fn select(layers: &[Vec<Candidate>], budget: u64, buckets: usize) -> Result<Selection> {
    if layers.is_empty() || layers.iter().any(Vec::is_empty) {
        return Err(Error::InvalidConfig {
            param: "layers",
            value: format!("{} layers", layers.len()),
            expected: "at least one layer, each with at least one candidate",
        });
    }
    if buckets == 0 {
        return Err(Error::InvalidConfig {
            param: "buckets",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    if let Some(c) = layers.iter().flatten().find(|c| !c.error.is_finite()) {
        return Err(Error::InvalidConfig {
            param: "error",
            value: c.error.to_string(),
            expected: "finite",
        });
    }
    let unit = budget.div_ceil(buckets as u64).max(1);
    let cap = (budget / unit) as usize; // ≤ buckets
    let width = cap + 1;
    let cells = layers.len().checked_mul(width).filter(|&c| c <= MAX_TABLE);
    let cells = cells.ok_or(Error::TooLarge {
        what: "dynamic-programming table",
        requested: layers.len() as u128 * width as u128,
        limit: MAX_TABLE as u128,
    })?;
    let infeasible = || Error::BudgetInfeasible {
        budget,
        minimum: layers
            .iter()
            .map(|l| l.iter().map(|c| c.bytes).min().unwrap_or(0))
            .fold(0u64, u64::saturating_add),
    };
    // best[c]: least error of the layers so far at exactly c units.
    let mut best = vec![f64::INFINITY; width];
    best[0] = 0.0;
    let mut choice = vec![u32::MAX; cells];
    for (l, cands) in layers.iter().enumerate() {
        let mut next = vec![f64::INFINITY; width];
        let row = &mut choice[l * width..(l + 1) * width];
        for (k, cand) in cands.iter().enumerate() {
            let cost = cand.bytes.div_ceil(unit);
            if cost > cap as u64 {
                continue;
            }
            let cost = cost as usize;
            for c in 0..width - cost {
                let e = best[c] + cand.error;
                if best[c].is_finite() && e < next[c + cost] {
                    next[c + cost] = e;
                    row[c + cost] = k as u32;
                }
            }
        }
        best = next;
    }
    let (mut c, _) = best
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
        .ok_or_else(infeasible)?;
    let mut choices = vec![0usize; layers.len()];
    for l in (0..layers.len()).rev() {
        let k = choice[l * width + c] as usize;
        choices[l] = k;
        c -= layers[l][k].bytes.div_ceil(unit) as usize;
    }
    let bytes = choices.iter().zip(layers).map(|(&k, l)| l[k].bytes).sum();
    let error = choices.iter().zip(layers).map(|(&k, l)| l[k].error).sum();
    Ok(Selection {
        choices,
        bytes,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{PowerSgd, PowerSgdConfig, TopK};
    use ndarray::Array2;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    /// Least total error over all selections within `budget` bytes.
    fn brute_force(layers: &[Vec<Candidate>], budget: u64) -> Option<f64> {
        fn go(layers: &[Vec<Candidate>], budget: u64, err: f64, best: &mut Option<f64>) {
            let Some((first, rest)) = layers.split_first() else {
                if best.is_none_or(|b| err < b) {
                    *best = Some(err);
                }
                return;
            };
            for c in first {
                if c.bytes <= budget {
                    go(rest, budget - c.bytes, err + c.error, best);
                }
            }
        }
        let mut best = None;
        go(layers, budget, 0.0, &mut best);
        best
    }

    fn instance() -> impl Strategy<Value = (Vec<Vec<Candidate>>, u64)> {
        let cand = (1u64..60, 0.0f64..10.0).prop_map(|(bytes, error)| Candidate { bytes, error });
        (
            proptest::collection::vec(proptest::collection::vec(cand, 1..5), 1..6),
            0u64..200,
        )
    }

    proptest! {
        #[test]
        fn exact_with_unit_buckets_matches_brute_force((layers, budget) in instance()) {
            let want = brute_force(&layers, budget);
            match select(&layers, budget, budget.max(1) as usize) {
                Ok(s) => {
                    let want = want.expect("DP found a selection brute force did not");
                    prop_assert!(s.bytes <= budget);
                    prop_assert!((s.error - want).abs() < 1e-9, "{} vs {}", s.error, want);
                    let err: f64 = s.choices.iter().zip(&layers).map(|(&k, l)| l[k].error).sum();
                    prop_assert!((err - s.error).abs() < 1e-12);
                }
                Err(Error::BudgetInfeasible { .. }) => prop_assert!(want.is_none()),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn coarse_buckets_fit_and_beat_the_shrunken_budget(
            (layers, budget) in instance(),
            buckets in 1usize..20,
        ) {
            if let Ok(s) = select(&layers, budget, buckets) {
                prop_assert!(s.bytes <= budget);
                if let Some(opt) = brute_force(&layers, budget) {
                    prop_assert!(s.error >= opt - 1e-9);
                }
            }
            let unit = budget.div_ceil(buckets as u64).max(1);
            let shrunk = budget.saturating_sub(layers.len() as u64 * unit);
            if let Some(bound) = brute_force(&layers, shrunk) {
                let s = select(&layers, budget, buckets);
                prop_assert!(s.is_ok());
                prop_assert!(s.unwrap().error <= bound + 1e-9);
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        let c = Candidate {
            bytes: 10,
            error: 1.0,
        };
        assert!(matches!(
            select(&[], 10, 10),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            select(&[vec![]], 10, 10),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            select(&[vec![c]], 10, 0),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            select(&[vec![c], vec![c]], 15, 15),
            Err(Error::BudgetInfeasible {
                budget: 15,
                minimum: 20
            })
        ));
        let nan = Candidate {
            bytes: 1,
            error: f64::NAN,
        };
        assert!(matches!(
            select(&[vec![nan]], 10, 10),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn measures_and_allocates_ranks_by_sensitivity() {
        // Layer 0 is rank 1 (rank 1 is exact), layer 1 is full rank: under a
        // budget the ranks go to layer 1.
        let mut rng = SeededRng::new(3);
        let u = rng.array_normal((64, 1));
        let v = rng.array_normal((1, 64));
        let layers_g = [u.dot(&v), rng.array_normal((64, 64))];
        let ranks = [1usize, 2, 4, 8];
        let mut table = Vec::new();
        for g in &layers_g {
            let mut cands = Vec::new();
            for &rank in &ranks {
                let mut c = PowerSgd::new(PowerSgdConfig {
                    rank,
                    ..Default::default()
                })
                .unwrap();
                cands.push(measure(&mut c, g.view().into_dyn()).unwrap());
            }
            table.push(cands);
        }
        assert!(table[0][0].error < 1e-6 * layers_g[0].mapv(|x| x * x).sum() as f64);
        let budget = table[0][0].bytes + table[1][3].bytes;
        // Unit buckets: exact. (With 1000 buckets of 5 bytes, 530 + 4114 rounds
        // up past the budget and the next best choice is taken.)
        let s = select(&table, budget, budget as usize).unwrap();
        assert_eq!(s.choices, vec![0, 3]);
        let coarse = select(&table, budget, 1000).unwrap();
        assert!(coarse.bytes <= budget && coarse.error >= s.error);
        // measure works for one-round compressors too.
        let g = Array2::from_shape_fn((4, 4), |(i, j)| (i * 4 + j) as f32);
        let c = measure(&mut TopK::new(0.25).unwrap(), g.view().into_dyn()).unwrap();
        let kept: f64 = [12.0f64, 13.0, 14.0, 15.0].iter().map(|x| x * x).sum();
        let total: f64 = (0..16).map(|x| f64::from(x) * f64::from(x)).sum();
        assert!((c.error - (total - kept)).abs() < 1e-6);
    }
}
