//! EvoPress: evolutionary search over per-layer compression levels, scored by
//! a caller-supplied fitness (e.g. the KL divergence of the compressed model
//! on calibration tokens).
//!
//! Sieberling, Kuznedelev, Kurtic and Alistarh (2024), "EvoPress: Towards
//! Optimal Dynamic Model Compression via Evolutionary Search". Unlike
//! [`allocate`](crate::allocate), which needs a cost per layer that adds up,
//! EvoPress measures whole configurations, so interactions between layers
//! count; it is a (1 + λ) elitist evolutionary algorithm with
//!
//! - **level-switch mutation**: one layer moves up a level and another down,
//!   so the total size stays where it was (with layers of unequal size,
//!   as many layers go down as it takes to fit the budget again);
//! - **multi-step selection**: the λ offspring are first scored on few
//!   tokens, the best few of them again on more tokens, and so on; only the
//!   last stage, where the parent competes too, uses many tokens.

use std::collections::HashSet;

use tensorpress_tensor::SeededRng;

use crate::allocate::{spent, validate};
use crate::{Budget, Error, LayerChoices, Result};

/// One stage of multi-step selection: score the candidates on `tokens`
/// calibration tokens and keep the `survivors` best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Candidates kept after this stage; non-increasing over the stages, and
    /// 1 in the last stage (the new parent).
    pub survivors: usize,
    /// Calibration tokens the fitness is asked to score each candidate on.
    pub tokens: usize,
}

impl Stage {
    /// A stage keeping `survivors` candidates scored on `tokens` tokens.
    pub fn new(survivors: usize, tokens: usize) -> Self {
        Stage { survivors, tokens }
    }
}

/// Options of [`evopress`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvoOptions {
    /// Number of generations (0 only scores the start).
    pub generations: usize,
    /// Offspring λ mutated from the parent per generation; at least 1.
    pub offspring: usize,
    /// The selection stages, from the cheapest to the last (where the parent
    /// competes); at least one.
    pub stages: Vec<Stage>,
    /// Seed of the mutations.
    pub seed: u64,
    /// Most level switches per offspring; at least 1. The count is drawn as
    /// the smaller of two uniform draws from `1..=max_mutations`, which
    /// favours few switches (as EvoPress does).
    pub max_mutations: usize,
}

/// EvoPress's settings for quantization: 150 generations of 128 offspring,
/// selected down to 16, 4 and 1 on 2 048, 16 384 and 131 072 tokens, with
/// up to 3 level switches per offspring.
impl Default for EvoOptions {
    fn default() -> Self {
        EvoOptions {
            generations: 150,
            offspring: 128,
            stages: vec![
                Stage::new(16, 2048),
                Stage::new(4, 16_384),
                Stage::new(1, 131_072),
            ],
            seed: 0,
            max_mutations: 3,
        }
    }
}

impl EvoOptions {
    /// Checks the options: see [`evopress`]'s errors.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for zero offspring, zero `max_mutations` or no
    /// stages; [`Error::InvalidStage`] for a stage with zero survivors or
    /// tokens, more survivors than the stage before (or than offspring), or a
    /// last stage that keeps more than one.
    pub fn validate(&self) -> Result<()> {
        if self.offspring == 0 {
            return Err(Error::InvalidOption {
                option: "offspring",
                value: 0,
                requirement: "must be at least 1",
            });
        }
        if self.max_mutations == 0 {
            return Err(Error::InvalidOption {
                option: "max_mutations",
                value: 0,
                requirement: "must be at least 1 (level switches per offspring)",
            });
        }
        if self.stages.is_empty() {
            return Err(Error::InvalidOption {
                option: "stages",
                value: 0,
                requirement: "give at least one selection stage",
            });
        }
        let mut previous = self.offspring;
        for (stage, s) in self.stages.iter().enumerate() {
            let invalid = |requirement| Error::InvalidStage {
                stage,
                survivors: s.survivors,
                tokens: s.tokens,
                requirement,
            };
            if s.survivors == 0 {
                return Err(invalid("survivors must be at least 1"));
            }
            if s.tokens == 0 {
                return Err(invalid("tokens must be at least 1"));
            }
            if s.survivors > previous {
                return Err(invalid(if stage == 0 {
                    "survivors must not exceed the offspring"
                } else {
                    "survivors must not increase from one stage to the next"
                }));
            }
            if stage + 1 == self.stages.len() && s.survivors != 1 {
                return Err(invalid(
                    "the last stage picks the next parent: its survivors must be 1",
                ));
            }
            previous = s.survivors;
        }
        Ok(())
    }
}

/// The result of [`evopress`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvoResult {
    /// The best configuration found: a choice index per layer.
    pub picks: Vec<usize>,
    /// Its fitness, as last scored on the last stage's tokens.
    pub fitness: f64,
    /// Its total storage bits.
    pub bits: f64,
    /// The parent's fitness after each generation (one entry per generation).
    pub history: Vec<f64>,
    /// Number of fitness calls, the start's included.
    pub evaluations: usize,
}

/// Attempts at one mutant before its draw is given up: a mutant is
/// resampled when it cannot be brought back within the budget or when it
/// gives back too much (see [`evopress`]).
pub const MUTATION_RETRIES: usize = 64;

/// Most layers lowered to pay for one raised layer.
pub const MAX_LOWERINGS: usize = 16;

/// A mutant that lowers more than this multiple of what it raises (in bits,
/// or bops) is resampled: EvoPress's guard against offspring that waste the
/// budget (it rejects raised / lowered below 0.8).
pub const MAX_GIVE_BACK: f64 = 1.25;

/// Draws per wanted offspring before a generation settles for fewer distinct
/// offspring (small search spaces run out of new configurations).
pub const OFFSPRING_DRAWS: usize = 16;

/// EvoPress's search for the configuration of least `fitness` within
/// `budget`, starting from `start` (a choice index per layer, within the
/// budget; e.g. a uniform setting, or the result of
/// [`allocate`](crate::allocate)).
///
/// **Levels.** The choices of a layer are its levels, ordered by
/// [`Choice::bits`](crate::Choice::bits) (ties by position): a level up is
/// the next larger candidate, a level down the next smaller one.
///
/// **Generation.** λ = `offspring` distinct configurations, different from
/// the parent, are mutated from it by 1 to `max_mutations` level switches.
/// A switch raises one layer a level, then lowers other layers (never one
/// raised in the same mutant) a level each, at random, until the total fits
/// the budget again. With layers of equal size and a parent at the budget
/// that is exactly one layer up and one down, EvoPress's level switch; with
/// unequal sizes, a big layer may need several small ones lowered, and a
/// parent under the budget may spend its slack without lowering any. (A
/// strict one-up-one-down switch keeps the summed level constant, so with
/// unequal sizes it could never reach an optimum with another summed level.)
/// A mutant is rejected and resampled, at most [`MUTATION_RETRIES`] times
/// before the draw is given up, when a switch cannot fit the budget within
/// [`MAX_LOWERINGS`] lowerings or when it lowers more than [`MAX_GIVE_BACK`]
/// times what it raises. So every configuration scored stays within the
/// budget (by the same floating-point sum as [`allocate`](crate::allocate)).
/// When no new offspring turns up in [`OFFSPRING_DRAWS`] × λ draws, the
/// generation goes on with fewer.
///
/// **Selection.** The offspring are scored with the first stage's tokens
/// and the best `survivors` kept, then rescored with the next stage's tokens,
/// and so on. The parent joins the last stage (elitism: it is replaced only
/// by a configuration at least as fit on the same tokens; ties go to the
/// offspring, so the search can cross plateaus) and is rescored there every
/// generation, so a fitness that draws fresh calibration data can be
/// compared on equal terms. `progress(generation, best)` is called after
/// each generation (numbered from 1): a good place to resample calibration
/// data, as EvoPress does per generation.
///
/// `fitness(picks, tokens)` returns a loss (lower is better) of the model
/// compressed with `picks`, measured on `tokens` calibration tokens.
/// Infinities are ordered as usual. The search is reproducible: the same
/// seed and the same fitness values give the same result.
///
/// # Errors
/// The errors of [`allocate`](crate::allocate) for the layers and budget
/// ([`Error::NoLayers`], [`Error::Infeasible`], …); option errors of
/// [`EvoOptions::validate`]; [`Error::StartLength`],
/// [`Error::StartOutOfRange`] and [`Error::StartOverBudget`] for a bad
/// start; [`Error::NanFitness`] when `fitness` returns NaN (generation 0 is
/// the start's score); and any error `fitness` returns, as is.
///
/// ```
/// use tensorpress_sensitivity::{evopress, Budget, Choice, EvoOptions, LayerChoices, Stage};
///
/// // Four layers at 2, 3 or 4 bits; the first two are more sensitive.
/// let layers: Vec<LayerChoices> = [8.0, 4.0, 1.0, 1.0]
///     .iter()
///     .enumerate()
///     .map(|(i, s)| {
///         let choices = (2..=4)
///             .map(|b| Choice::new(format!("int{b}"), 100.0 * b as f64, s * 2f64.powi(-b)))
///             .collect();
///         LayerChoices::new(format!("l{i}"), 100, choices)
///     })
///     .collect();
/// // The model's loss: here the sum of the chosen costs.
/// let mut loss = |picks: &[usize], _tokens: usize| {
///     Ok(layers.iter().zip(picks).map(|(l, &k)| l.choices[k].cost).sum::<f64>())
/// };
/// let options = EvoOptions {
///     generations: 20,
///     offspring: 8,
///     stages: vec![Stage::new(2, 64), Stage::new(1, 512)],
///     ..EvoOptions::default()
/// };
/// let start = [1, 1, 1, 1]; // int3 everywhere: 3 bits/weight
/// let r = evopress(&layers, Budget::BitsPerWeight(3.0), &start, &options, &mut loss, &mut |_, _| {})?;
/// assert_eq!(r.picks, [2, 2, 0, 0]); // the sensitive layers get int4
/// assert!(r.bits <= 1200.0);
/// assert_eq!(r.history.len(), 20);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn evopress(
    layers: &[LayerChoices],
    budget: Budget,
    start: &[usize],
    options: &EvoOptions,
    fitness: &mut dyn FnMut(&[usize], usize) -> Result<f64>,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<EvoResult> {
    let capacity = validate(layers, budget)?;
    options.validate()?;
    check_start(layers, budget, start, capacity)?;

    let mut search = Search {
        layers,
        budget,
        capacity,
        levels: Levels::new(layers),
        rng: SeededRng::new(options.seed),
        fitness,
        evaluations: 0,
    };
    let last_tokens = options.stages[options.stages.len() - 1].tokens;
    let mut parent = search.levels.of_picks(start);
    let mut parent_fitness = search.score(&parent, last_tokens, 0)?;
    let mut history = Vec::with_capacity(options.generations);

    for generation in 1..=options.generations {
        let offspring = search.offspring(&parent, options);
        let mut pool: Vec<(Vec<usize>, f64)> =
            offspring.into_iter().map(|c| (c, f64::NAN)).collect();
        for (i, stage) in options.stages.iter().enumerate() {
            if i + 1 == options.stages.len() {
                pool.push((std::mem::take(&mut parent), f64::NAN));
            }
            for (candidate, f) in &mut pool {
                *f = search.score(candidate, stage.tokens, generation)?;
            }
            // Stable: among equal scores, offspring stay ahead of the parent.
            pool.sort_by(|a, b| a.1.total_cmp(&b.1));
            pool.truncate(stage.survivors);
        }
        (parent, parent_fitness) = pool.swap_remove(0);
        history.push(parent_fitness);
        progress(generation, parent_fitness);
    }

    let picks = search.levels.picks(&parent);
    let bits = layers
        .iter()
        .zip(&picks)
        .map(|(l, &k)| l.choices[k].bits)
        .sum();
    Ok(EvoResult {
        picks,
        fitness: parent_fitness,
        bits,
        history,
        evaluations: search.evaluations,
    })
}

fn check_start(
    layers: &[LayerChoices],
    budget: Budget,
    start: &[usize],
    capacity: f64,
) -> Result<()> {
    if start.len() != layers.len() {
        return Err(Error::StartLength {
            expected: layers.len(),
            got: start.len(),
        });
    }
    if let Some((layer, &pick)) = layers
        .iter()
        .zip(start)
        .find(|(l, &k)| k >= l.choices.len())
    {
        return Err(Error::StartOutOfRange {
            layer: layer.name.clone(),
            pick,
            choices: layer.choices.len(),
        });
    }
    let total = spent(layers, start, budget);
    if total > capacity {
        let params = layers.iter().map(|l| l.params).sum();
        let spent = budget.express(total, params);
        return Err(Error::StartOverBudget { budget, spent });
    }
    Ok(())
}

/// The choices of each layer ordered by bits: level `j` of layer `i` is
/// choice `order[i][j]`.
struct Levels {
    order: Vec<Vec<usize>>,
}

impl Levels {
    fn new(layers: &[LayerChoices]) -> Self {
        let order = layers
            .iter()
            .map(|l| {
                let mut idx: Vec<usize> = (0..l.choices.len()).collect();
                // Stable, so equal sizes keep their listed order.
                idx.sort_by(|&a, &b| l.choices[a].bits.total_cmp(&l.choices[b].bits));
                idx
            })
            .collect();
        Levels { order }
    }

    fn of_picks(&self, picks: &[usize]) -> Vec<usize> {
        self.order
            .iter()
            .zip(picks)
            .map(|(o, &k)| o.iter().position(|&c| c == k).unwrap_or(0))
            .collect()
    }

    fn picks(&self, levels: &[usize]) -> Vec<usize> {
        self.order.iter().zip(levels).map(|(o, &j)| o[j]).collect()
    }

    fn count(&self, layer: usize) -> usize {
        self.order[layer].len()
    }
}

/// The state of one search.
struct Search<'a, 'f> {
    layers: &'a [LayerChoices],
    budget: Budget,
    capacity: f64,
    levels: Levels,
    rng: SeededRng,
    fitness: &'f mut dyn FnMut(&[usize], usize) -> Result<f64>,
    evaluations: usize,
}

impl Search<'_, '_> {
    fn score(&mut self, levels: &[usize], tokens: usize, generation: usize) -> Result<f64> {
        let picks = self.levels.picks(levels);
        let value = (self.fitness)(&picks, tokens)?;
        self.evaluations += 1;
        if value.is_nan() {
            return Err(Error::NanFitness { generation });
        }
        Ok(value)
    }

    fn within_budget(&self, levels: &[usize]) -> bool {
        spent(self.layers, &self.levels.picks(levels), self.budget) <= self.capacity
    }

    /// Up to `options.offspring` distinct mutants of `parent`, none equal to it.
    fn offspring(&mut self, parent: &[usize], options: &EvoOptions) -> Vec<Vec<usize>> {
        let mut seen = HashSet::from([parent.to_vec()]);
        let mut out = Vec::with_capacity(options.offspring);
        let draws = options.offspring.saturating_mul(OFFSPRING_DRAWS);
        for _ in 0..draws {
            if out.len() == options.offspring {
                break;
            }
            if let Some(child) = self.mutate(parent, options.max_mutations) {
                if seen.insert(child.clone()) {
                    out.push(child);
                }
            }
        }
        out
    }

    /// `parent` after 1 to `max` level switches, within budget; `None` when
    /// [`MUTATION_RETRIES`] attempts all fail.
    fn mutate(&mut self, parent: &[usize], max: usize) -> Option<Vec<usize>> {
        let max = max as u64;
        let switches = 1 + self.rng.below(max).min(self.rng.below(max));
        (0..MUTATION_RETRIES).find_map(|_| self.try_mutate(parent, switches))
    }

    fn try_mutate(&mut self, parent: &[usize], switches: u64) -> Option<Vec<usize>> {
        let n = parent.len();
        let mut child = parent.to_vec();
        // +1 raised, -1 lowered, 0 untouched: no layer moves both ways.
        let mut moved = vec![0i8; n];
        let (mut raised, mut lowered) = (0.0, 0.0);
        for _ in 0..switches {
            let up = pick(&mut self.rng, n, |i| {
                moved[i] >= 0 && child[i] + 1 < self.levels.count(i)
            })?;
            raised += self.step(up, child[up]);
            child[up] += 1;
            moved[up] = 1;
            let mut lowerings = 0;
            while !self.within_budget(&child) {
                if lowerings == MAX_LOWERINGS {
                    return None;
                }
                let down = pick(&mut self.rng, n, |i| moved[i] <= 0 && child[i] > 0)?;
                child[down] -= 1;
                lowered += self.step(down, child[down]);
                moved[down] = -1;
                lowerings += 1;
            }
        }
        (lowered <= MAX_GIVE_BACK * raised).then_some(child)
    }

    /// What layer `i` spends more at level `level + 1` than at `level`.
    fn step(&self, i: usize, level: usize) -> f64 {
        let choices = &self.layers[i].choices;
        let order = &self.levels.order[i];
        self.budget.weight(&choices[order[level + 1]]) - self.budget.weight(&choices[order[level]])
    }
}

/// A uniformly random index in `0..n` satisfying `eligible`, `None` if none does.
fn pick(rng: &mut SeededRng, n: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[rng.below(candidates.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Choice;

    /// `n` layers of `params` weights at 2..=5 bits; cost `scale_i · 4^-b`.
    fn layers(params: &[u64], scales: &[f64]) -> Vec<LayerChoices> {
        params
            .iter()
            .zip(scales)
            .enumerate()
            .map(|(i, (&p, &s))| {
                let choices = (2..=5)
                    .map(|b: u32| {
                        let bits = (p * u64::from(b)) as f64;
                        Choice::new(format!("int{b}"), bits, s * 4f64.powi(-(b as i32)))
                    })
                    .collect();
                LayerChoices::new(format!("layer{i}"), p, choices)
            })
            .collect()
    }

    fn separable(layers: &[LayerChoices]) -> impl FnMut(&[usize], usize) -> Result<f64> + '_ {
        |picks, _| {
            Ok(layers
                .iter()
                .zip(picks)
                .map(|(l, &k)| l.choices[k].cost)
                .sum())
        }
    }

    fn small_options(generations: usize) -> EvoOptions {
        EvoOptions {
            generations,
            offspring: 6,
            stages: vec![Stage::new(3, 10), Stage::new(1, 100)],
            seed: 7,
            max_mutations: 3,
        }
    }

    #[test]
    fn stages_get_their_tokens_and_the_parent_competes_last() {
        let ls = layers(&[100; 6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut calls: Vec<(Vec<usize>, usize, f64)> = Vec::new();
        let mut f = |p: &[usize], t: usize| {
            let v = ls.iter().zip(p).map(|(l, &k)| l.choices[k].cost).sum();
            calls.push((p.to_vec(), t, v));
            Ok(v)
        };
        let start = [1; 6];
        let o = small_options(3);
        let mut seen = Vec::new();
        let mut progress = |g: usize, best: f64| seen.push((g, best));
        let r = evopress(
            &ls,
            Budget::BitsPerWeight(3.0),
            &start,
            &o,
            &mut f,
            &mut progress,
        )
        .unwrap();
        // Start, then per generation 6 offspring on 10 tokens, 3 survivors and
        // the parent on 100.
        assert_eq!(r.evaluations, 1 + 3 * (6 + 3 + 1));
        assert_eq!(calls.len(), r.evaluations);
        assert_eq!((calls[0].0.as_slice(), calls[0].1), (&start[..], 100));
        for g in 0..3 {
            let gen = &calls[1 + g * 10..1 + (g + 1) * 10];
            assert!(gen[..6].iter().all(|c| c.1 == 10));
            assert!(gen[6..].iter().all(|c| c.1 == 100));
            // Offspring are distinct and differ from the parent.
            let offspring: HashSet<_> = gen[..6].iter().map(|c| c.0.clone()).collect();
            assert_eq!(offspring.len(), 6);
            // The parent is scored last, in the last stage.
            let parent = &gen[9];
            if g == 0 {
                assert_eq!(parent.0, start);
            } else {
                assert_eq!(parent.2, r.history[g - 1]);
            }
            assert!(!offspring.contains(&parent.0));
            // The three survivors are the three best offspring.
            let mut scores: Vec<f64> = gen[..6].iter().map(|c| c.2).collect();
            scores.sort_by(f64::total_cmp);
            let survivors: Vec<f64> = gen[6..9].iter().map(|c| c.2).collect();
            assert_eq!(survivors, scores[..3]);
        }
        assert_eq!(
            seen,
            [(1, r.history[0]), (2, r.history[1]), (3, r.history[2])]
        );
        assert_eq!(r.fitness, r.history[2]);
        // Elitism with a deterministic fitness: the history never rises.
        assert!(
            r.history.windows(2).all(|w| w[1] <= w[0]),
            "{:?}",
            r.history
        );
    }

    #[test]
    fn tiny_search_space_runs_out_of_offspring_gracefully() {
        // Two layers with two levels each at 3 bits/weight average: only
        // (low, high) and (high, low) fit.
        let ls: Vec<LayerChoices> = (0..2)
            .map(|i| {
                LayerChoices::new(
                    format!("l{i}"),
                    10,
                    vec![
                        Choice::new("a", 20.0, 1.0 + i as f64),
                        Choice::new("b", 40.0, 0.0),
                    ],
                )
            })
            .collect();
        let mut f = separable(&ls);
        let o = small_options(4);
        let r = evopress(&ls, Budget::Bits(60.0), &[1, 0], &o, &mut f, &mut |_, _| {}).unwrap();
        // (0, 1) costs 1, (1, 0) costs 2.
        assert_eq!((r.picks, r.fitness), (vec![0, 1], 1.0));
        // At most one distinct offspring per generation.
        assert!(r.evaluations <= 1 + 4 * 3);
    }

    #[test]
    fn levels_follow_bits_not_positions() {
        // Candidates listed largest first.
        let ls: Vec<LayerChoices> = (0..4)
            .map(|i| {
                let s = [10.0, 1.0, 1.0, 10.0][i];
                let choices = [8.0, 2.0, 4.0]
                    .iter()
                    .map(|&b| Choice::new(format!("int{b}"), 10.0 * b, s / b))
                    .collect();
                LayerChoices::new(format!("l{i}"), 10, choices)
            })
            .collect();
        let mut f = separable(&ls);
        let start = [2; 4]; // int4 everywhere
        let r = evopress(
            &ls,
            Budget::BitsPerWeight(4.5),
            &start,
            &small_options(30),
            &mut f,
            &mut |_, _| {},
        )
        .unwrap();
        // Within 18 bits summed per weight, the optimum (cost 4.5) puts one
        // sensitive layer at int8 (listed first), the other and one
        // insensitive layer at int4, the last at int2.
        assert_eq!(r.fitness, 4.5);
        assert_eq!(r.picks.iter().filter(|&&k| k == 0).count(), 1);
        assert_eq!(r.bits, 180.0);
        let options = crate::AllocateOptions { resolution: 180 };
        let best = crate::allocate(&ls, Budget::BitsPerWeight(4.5), options).unwrap();
        assert_eq!(best.cost, 4.5);
    }

    #[test]
    fn errors() {
        let ls = layers(&[100; 3], &[1.0; 3]);
        let b = Budget::BitsPerWeight(3.0);
        let o = small_options(2);
        let run = |start: &[usize], o: &EvoOptions| {
            let mut f = separable(&ls);
            evopress(&ls, b, start, o, &mut f, &mut |_, _| {})
        };
        assert!(matches!(
            run(&[1, 1], &o),
            Err(Error::StartLength {
                expected: 3,
                got: 2
            })
        ));
        let e = run(&[1, 9, 1], &o).unwrap_err();
        assert!(
            matches!(&e, Error::StartOutOfRange { layer, pick: 9, choices: 4 } if layer == "layer1"),
            "{e}"
        );
        let e = run(&[1, 2, 1], &o).unwrap_err();
        assert!(
            matches!(e, Error::StartOverBudget { spent: Budget::BitsPerWeight(s), .. } if (s - 10.0 / 3.0).abs() < 1e-12),
            "{e}"
        );
        assert!(e.to_string().contains("3.33 bits/weight"), "{e}");

        let bad = |f: fn(&mut EvoOptions)| {
            let mut o = small_options(2);
            f(&mut o);
            run(&[1, 1, 1], &o).unwrap_err()
        };
        assert!(matches!(
            bad(|o| o.offspring = 0),
            Error::InvalidOption {
                option: "offspring",
                ..
            }
        ));
        assert!(matches!(
            bad(|o| o.max_mutations = 0),
            Error::InvalidOption {
                option: "max_mutations",
                ..
            }
        ));
        assert!(matches!(
            bad(|o| o.stages.clear()),
            Error::InvalidOption {
                option: "stages",
                ..
            }
        ));
        assert!(matches!(
            bad(|o| o.stages[0].survivors = 0),
            Error::InvalidStage { stage: 0, .. }
        ));
        assert!(matches!(
            bad(|o| o.stages[1].tokens = 0),
            Error::InvalidStage { stage: 1, .. }
        ));
        assert!(matches!(
            bad(|o| o.stages[0].survivors = 7),
            Error::InvalidStage {
                stage: 0,
                survivors: 7,
                ..
            }
        ));
        assert!(matches!(
            bad(|o| o.stages = vec![Stage::new(2, 10), Stage::new(3, 10), Stage::new(1, 10)]),
            Error::InvalidStage {
                stage: 1,
                survivors: 3,
                ..
            }
        ));
        let e = bad(|o| o.stages[1].survivors = 2);
        assert!(matches!(
            e,
            Error::InvalidStage {
                stage: 1,
                survivors: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("must be 1"), "{e}");
        // Layer and budget errors come first.
        let mut f = separable(&ls);
        assert!(matches!(
            evopress(
                &ls,
                Budget::BitsPerWeight(1.0),
                &[0, 0, 0],
                &o,
                &mut f,
                &mut |_, _| {}
            ),
            Err(Error::Infeasible { .. })
        ));

        // NaN in generation 2 (calls: 1 start + 10 per generation).
        let mut calls = 0;
        let mut nan_late = |_: &[usize], _| {
            calls += 1;
            Ok(if calls == 15 { f64::NAN } else { 1.0 })
        };
        let e = evopress(&ls, b, &[1, 1, 1], &o, &mut nan_late, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, Error::NanFitness { generation: 2 }), "{e}");
        let mut nan_start = |_: &[usize], _| Ok(f64::NAN);
        let e = evopress(&ls, b, &[1, 1, 1], &o, &mut nan_start, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, Error::NanFitness { generation: 0 }));
        // The closure's own errors pass through.
        let mut failing = |_: &[usize], _| Err(Error::NoSamples { op: "model" });
        let e = evopress(&ls, b, &[1, 1, 1], &o, &mut failing, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, Error::NoSamples { op: "model" }));
    }

    #[test]
    fn zero_generations_score_the_start() {
        let ls = layers(&[100; 3], &[1.0, 2.0, 3.0]);
        let mut f = separable(&ls);
        let r = evopress(
            &ls,
            Budget::BitsPerWeight(3.0),
            &[1, 1, 1],
            &small_options(0),
            &mut f,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!((r.picks, r.bits, r.evaluations), (vec![1, 1, 1], 900.0, 1));
        assert!(r.history.is_empty());
        assert!((r.fitness - 6.0 / 64.0).abs() < 1e-15);
    }
}
