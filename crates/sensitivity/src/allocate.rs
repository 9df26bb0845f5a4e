//! Exact mixed-precision bit allocation: a multiple-choice knapsack solved by
//! dynamic programming.
//!
//! Every layer has a list of candidate settings ([`Choice`]: a bit width, a
//! group size, a sparsity, …), each with a storage size, an estimated cost in
//! bit-operations and a sensitivity. [`allocate`] picks one candidate per
//! layer so that the summed sensitivity is smallest while the summed size (or
//! bit-operations) fits a [`Budget`]. HAWQ-V3 (Yao et al., 2021, "HAWQ-V3:
//! Dyadic Neural Network Quantization") states this problem as an integer
//! linear program; here it is solved exactly by dynamic programming over
//! layers × capacity.

use std::fmt;

use crate::{Error, Result};

/// One candidate setting for a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Name of the setting, e.g. `"int4-g128"`.
    pub label: String,
    /// Total storage bits of the layer under this setting (codes, scales and
    /// zeros); finite and `>= 0`.
    pub bits: f64,
    /// Sensitivity of the layer under this setting: lower is better. Expected
    /// `>= 0`, but any finite value is accepted.
    pub cost: f64,
    /// Estimated bit-operations per token (weights × weight bits × activation
    /// bits); `0` when unused. Finite and `>= 0`.
    pub bops: f64,
}

impl Choice {
    /// A candidate without bit-operations (`bops = 0`).
    pub fn new(label: impl Into<String>, bits: f64, cost: f64) -> Self {
        Choice {
            label: label.into(),
            bits,
            cost,
            bops: 0.0,
        }
    }

    /// The same candidate with `bops` bit-operations per token.
    #[must_use]
    pub fn with_bops(mut self, bops: f64) -> Self {
        self.bops = bops;
        self
    }
}

/// A layer and its candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChoices {
    /// Name of the layer, e.g. `"model.layers.0.mlp.down_proj"`.
    pub name: String,
    /// Number of weights of the layer (the denominator of bits per weight).
    pub params: u64,
    /// The candidate settings; at least one.
    pub choices: Vec<Choice>,
}

impl LayerChoices {
    /// A layer with its candidates.
    pub fn new(name: impl Into<String>, params: u64, choices: Vec<Choice>) -> Self {
        LayerChoices {
            name: name.into(),
            params,
            choices,
        }
    }
}

/// What the allocation must fit in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most this many storage bits in total ([`Choice::bits`] summed).
    Bits(f64),
    /// At most this many storage bits per weight on average: total bits over
    /// the summed [`LayerChoices::params`].
    BitsPerWeight(f64),
    /// At most this many bit-operations per token ([`Choice::bops`] summed).
    Bops(f64),
}

impl Budget {
    fn value(self) -> f64 {
        match self {
            Budget::Bits(v) | Budget::BitsPerWeight(v) | Budget::Bops(v) => v,
        }
    }

    /// The same kind of budget with another value.
    fn with_value(self, v: f64) -> Budget {
        match self {
            Budget::Bits(_) => Budget::Bits(v),
            Budget::BitsPerWeight(_) => Budget::BitsPerWeight(v),
            Budget::Bops(_) => Budget::Bops(v),
        }
    }

    /// What a choice spends of this budget: its bits or its bops.
    pub(crate) fn weight(self, choice: &Choice) -> f64 {
        match self {
            Budget::Bits(_) | Budget::BitsPerWeight(_) => choice.bits,
            Budget::Bops(_) => choice.bops,
        }
    }

    /// The budget in the unit of [`Budget::weight`] (bits or bops).
    pub(crate) fn capacity(self, params: u64) -> f64 {
        match self {
            Budget::Bits(v) | Budget::Bops(v) => v,
            Budget::BitsPerWeight(v) => v * params as f64,
        }
    }

    /// A total in the unit of [`Budget::weight`], expressed as this kind of budget.
    pub(crate) fn express(self, total: f64, params: u64) -> Budget {
        match self {
            Budget::BitsPerWeight(_) => Budget::BitsPerWeight(total / params as f64),
            _ => self.with_value(total),
        }
    }
}

/// Formats with the formatter's precision if given, else 2 decimals for
/// bits per weight, whole bits when integral, and 3 significant decimals of
/// scientific notation for bit-operations.
impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = f.precision();
        match *self {
            Budget::Bits(v) => {
                let p = p.unwrap_or(if v.fract() == 0.0 { 0 } else { 2 });
                write!(f, "{v:.p$} bits")
            }
            Budget::BitsPerWeight(v) => write!(f, "{v:.p$} bits/weight", p = p.unwrap_or(2)),
            Budget::Bops(v) => write!(f, "{v:.p$e} BOPs", p = p.unwrap_or(3)),
        }
    }
}

/// The message of [`Error::Infeasible`], with enough decimals that the budget
/// and the smallest total read differently.
pub(crate) fn infeasible_message(budget: &Budget, smallest: &Budget) -> String {
    let p = (2..12)
        .find(|&p| format!("{budget:.p$}") != format!("{smallest:.p$}"))
        .unwrap_or(12);
    let p = match budget {
        Budget::Bits(v) if v.fract() == 0.0 && smallest.value().fract() == 0.0 => 0,
        _ => p,
    };
    format!(
        "budget {budget:.p$} is below the smallest possible {smallest:.p$}: \
         raise the budget or add smaller candidates"
    )
}

/// The result of an allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// The chosen candidate of each layer: an index into its
    /// [`LayerChoices::choices`].
    pub picks: Vec<usize>,
    /// Total storage bits of the picks.
    pub bits: f64,
    /// Total bit-operations per token of the picks.
    pub bops: f64,
    /// Total sensitivity of the picks.
    pub cost: f64,
    /// Total weights of the layers.
    pub params: u64,
}

impl Allocation {
    /// The picks' totals over `layers` (which must match `picks` in length and
    /// hold every picked index).
    pub(crate) fn from_picks(layers: &[LayerChoices], picks: Vec<usize>) -> Allocation {
        let (mut bits, mut bops, mut cost) = (0.0, 0.0, 0.0);
        for (layer, &k) in layers.iter().zip(&picks) {
            let c = &layer.choices[k];
            bits += c.bits;
            bops += c.bops;
            cost += c.cost;
        }
        Allocation {
            picks,
            bits,
            bops,
            cost,
            params: layers.iter().map(|l| l.params).sum(),
        }
    }

    /// Average storage bits per weight, `bits / params` (infinite or NaN when
    /// `params` is 0).
    pub fn bits_per_weight(&self) -> f64 {
        self.bits / self.params as f64
    }

    /// `(layer name, choice label)` of each pick.
    ///
    /// # Panics
    /// When a pick is out of range for its layer, i.e. when `layers` are not
    /// the layers this allocation was made for.
    #[track_caller]
    pub fn labels<'a>(&self, layers: &'a [LayerChoices]) -> Vec<(&'a str, &'a str)> {
        layers
            .iter()
            .zip(&self.picks)
            .map(|(l, &k)| (l.name.as_str(), l.choices[k].label.as_str()))
            .collect()
    }
}

/// Options of [`allocate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocateOptions {
    /// Number of integer units the budget is split into for the dynamic
    /// program (default 200 000). Time is `O(layers × choices × resolution)`
    /// and memory `layers × resolution` bytes; a coarser resolution rounds
    /// each candidate up by at most `budget / resolution`.
    pub resolution: usize,
}

impl Default for AllocateOptions {
    fn default() -> Self {
        AllocateOptions {
            resolution: 200_000,
        }
    }
}

impl AllocateOptions {
    /// These options with another [`AllocateOptions::resolution`].
    #[must_use]
    pub fn with_resolution(mut self, resolution: usize) -> Self {
        self.resolution = resolution;
        self
    }
}

/// Most table cells (layers × (resolution + 1)) [`allocate`] will allocate.
const MAX_CELLS: usize = 1 << 31;

/// Checks layers and budget: at least one layer, every layer with at least
/// one finite, non-negative candidate, a finite positive budget, parameters
/// for a bits/weight budget, and a smallest total within the budget. Returns
/// the budget in the unit of [`Budget::weight`].
pub(crate) fn validate(layers: &[LayerChoices], budget: Budget) -> Result<f64> {
    if layers.is_empty() {
        return Err(Error::NoLayers);
    }
    let v = budget.value();
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::InvalidBudget { budget });
    }
    for layer in layers {
        if layer.choices.is_empty() {
            return Err(Error::NoChoices {
                layer: layer.name.clone(),
            });
        }
        for c in &layer.choices {
            for (field, value) in [("cost", c.cost), ("bits", c.bits), ("bops", c.bops)] {
                if !value.is_finite() {
                    return Err(Error::NonFiniteChoice {
                        layer: layer.name.clone(),
                        label: c.label.clone(),
                        field,
                        value,
                    });
                }
            }
            for (field, value) in [("bits", c.bits), ("bops", c.bops)] {
                if value < 0.0 {
                    return Err(Error::NegativeChoice {
                        layer: layer.name.clone(),
                        label: c.label.clone(),
                        field,
                        value,
                    });
                }
            }
        }
    }
    let params: u64 = layers.iter().map(|l| l.params).sum();
    if matches!(budget, Budget::BitsPerWeight(_)) && params == 0 {
        return Err(Error::NoParams);
    }
    let capacity = budget.capacity(params);
    let smallest: f64 = layers
        .iter()
        .map(|l| {
            l.choices
                .iter()
                .map(|c| budget.weight(c))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    if smallest > capacity {
        return Err(Error::Infeasible {
            budget,
            smallest: budget.express(smallest, params),
        });
    }
    Ok(capacity)
}

/// Total of the picks in the unit of `budget` (bits or bops), summed in layer
/// order; the one sum every budget check in this crate uses.
pub(crate) fn spent(layers: &[LayerChoices], picks: &[usize], budget: Budget) -> f64 {
    layers
        .iter()
        .zip(picks)
        .map(|(l, &k)| budget.weight(&l.choices[k]))
        .sum()
}

/// The allocation of smallest summed [`Choice::cost`] whose summed bits (or
/// bops, for [`Budget::Bops`]) fit `budget`: a multiple-choice knapsack.
///
/// Each candidate's weight (bits or bops) is discretized to integer units of
/// `capacity / resolution`, **rounded up**, and a dynamic program over layers
/// × units finds the cheapest combination, keeping the argmin candidate of
/// every cell (one byte per cell, two with over 256 candidates in a layer)
/// and walking back from the full capacity.
///
/// * The result is **exact for the discretized weights**: no combination whose
///   rounded-up weights fit has a smaller cost. When every weight is a
///   multiple of `capacity / resolution` (integer bits with `resolution`
///   equal to the budget in bits, say) this is the exact optimum of the
///   original problem.
/// * The **true total never exceeds the budget**: rounding up only
///   overestimates. The totals are rechecked in floating point, and in the
///   rare case where rounding error alone puts them a few ulps over, the
///   program is re-solved with one unit less.
///
/// Ties between equal costs are broken deterministically (the earlier
/// candidate of a layer wins a cell). Time `O(layers × choices × resolution)`.
///
/// # Errors
/// [`Error::NoLayers`], [`Error::NoChoices`], [`Error::NonFiniteChoice`],
/// [`Error::NegativeChoice`], [`Error::InvalidBudget`], [`Error::NoParams`]
/// (bits/weight budget over layers without parameters),
/// [`Error::Infeasible`] (even the smallest candidates do not fit),
/// [`Error::ResolutionTooCoarse`] (they fit, but not once rounded up),
/// [`Error::TooManyChoices`] (over 65 536 in a layer) and
/// [`Error::InvalidOption`] for a zero resolution or a table past 2³¹ cells.
///
/// ```
/// use tensorpress_sensitivity::{allocate, AllocateOptions, Budget, Choice, LayerChoices};
///
/// // Two layers of 1000 weights, each at 2, 4 or 8 bits; the first is more
/// // sensitive to quantization.
/// let layer = |name: &str, scale: f64| {
///     let choices = [2.0, 4.0, 8.0]
///         .map(|b: f64| Choice::new(format!("int{b}"), 1000.0 * b, scale * 4f64.powf(-b)));
///     LayerChoices::new(name, 1000, choices.to_vec())
/// };
/// let layers = [layer("attn", 100.0), layer("mlp", 1.0)];
///
/// let a = allocate(&layers, Budget::BitsPerWeight(5.0), AllocateOptions::default())?;
/// assert_eq!(a.labels(&layers), [("attn", "int8"), ("mlp", "int2")]);
/// assert_eq!(a.bits_per_weight(), 5.0);
/// # Ok::<(), tensorpress_sensitivity::Error>(())
/// ```
pub fn allocate(
    layers: &[LayerChoices],
    budget: Budget,
    options: AllocateOptions,
) -> Result<Allocation> {
    let capacity = validate(layers, budget)?;
    let r = options.resolution;
    if r == 0 {
        return Err(Error::InvalidOption {
            option: "resolution",
            value: r,
            requirement: "must be at least 1",
        });
    }
    if layers.len().saturating_mul(r.saturating_add(1)) > MAX_CELLS {
        return Err(Error::InvalidOption {
            option: "resolution",
            value: r,
            requirement: "layers × (resolution + 1) must stay within 2³¹ table cells: lower it",
        });
    }
    let most = layers.iter().map(|l| l.choices.len()).max().unwrap_or(0);
    if let Some(l) = layers.iter().find(|l| l.choices.len() > 1 << 16) {
        return Err(Error::TooManyChoices {
            layer: l.name.clone(),
            count: l.choices.len(),
        });
    }

    let unit = capacity / r as f64;
    let items: Vec<Vec<Item>> = layers
        .iter()
        .map(|l| {
            l.choices
                .iter()
                .enumerate()
                .filter_map(|(k, c)| {
                    units(budget.weight(c), unit, r).map(|units| Item {
                        index: k,
                        units,
                        cost: c.cost,
                    })
                })
                .collect()
        })
        .collect();
    let too_coarse = Error::ResolutionTooCoarse {
        budget,
        resolution: r,
    };
    if items.iter().any(Vec::is_empty) {
        return Err(too_coarse);
    }

    // One unit of slack absorbs any floating-point excess of the true total
    // (a unit is many ulps of the capacity); the second pass almost never runs.
    for cap in [r, r.saturating_sub(1)] {
        let picks = if most <= 1 << 8 {
            solve::<u8>(&items, cap)
        } else {
            solve::<u16>(&items, cap)
        };
        let Some(picks) = picks else { break };
        if spent(layers, &picks, budget) <= capacity {
            return Ok(Allocation::from_picks(layers, picks));
        }
    }
    Err(too_coarse)
}

/// A candidate in the dynamic program: its index, rounded-up weight and cost.
#[derive(Debug, Clone, Copy)]
struct Item {
    index: usize,
    units: usize,
    cost: f64,
}

/// `weight` in units of `unit`, rounded up; `None` above `max` units.
fn units(weight: f64, unit: f64, max: usize) -> Option<usize> {
    let q = (weight / unit).ceil();
    if q > max as f64 {
        return None;
    }
    let mut u = q as usize;
    // Division may round `weight / unit` down across an integer.
    while (u as f64) * unit < weight {
        u += 1;
    }
    (u <= max).then_some(u)
}

/// The cheapest picks whose units sum to at most `cap`, or `None` when none
/// fit. `I` stores an argmin position per cell (`u8` or `u16`).
fn solve<I>(items: &[Vec<Item>], cap: usize) -> Option<Vec<usize>>
where
    I: Copy + Default + TryFrom<usize> + Into<usize>,
{
    let width = cap + 1;
    // best[c]: least cost of the layers so far with at most c units.
    let mut best = vec![0.0f64; width];
    let mut next = vec![f64::INFINITY; width];
    let mut arg: Vec<I> = vec![I::default(); items.len() * width];
    for (i, layer) in items.iter().enumerate() {
        next.fill(f64::INFINITY);
        let row = &mut arg[i * width..(i + 1) * width];
        for (pos, item) in layer.iter().enumerate() {
            let Ok(pos) = I::try_from(pos) else {
                unreachable!("candidate count checked against the table type")
            };
            if item.units > cap {
                continue;
            }
            let (from, to) = (&best[..width - item.units], &mut next[item.units..]);
            let cells = row[item.units..].iter_mut();
            for ((dst, cell), &prev) in to.iter_mut().zip(cells).zip(from) {
                let v = prev + item.cost;
                if v < *dst {
                    *dst = v;
                    *cell = pos;
                }
            }
        }
        std::mem::swap(&mut best, &mut next);
    }
    if !best[cap].is_finite() {
        return None;
    }
    let mut picks = vec![0; items.len()];
    let mut c = cap;
    for i in (0..items.len()).rev() {
        let item = items[i][arg[i * width + c].into()];
        picks[i] = item.index;
        c -= item.units;
    }
    Some(picks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, params: u64, choices: &[(f64, f64)]) -> LayerChoices {
        let choices = choices
            .iter()
            .map(|&(bits, cost)| Choice::new(format!("{bits}b"), bits, cost))
            .collect();
        LayerChoices::new(name, params, choices)
    }

    fn opts(resolution: usize) -> AllocateOptions {
        AllocateOptions::default().with_resolution(resolution)
    }

    #[test]
    fn picks_the_cheapest_fit_and_reports_totals() {
        let layers = [
            layer("a", 10, &[(20.0, 5.0), (40.0, 1.0), (80.0, 0.0)]),
            layer("b", 10, &[(20.0, 3.0), (40.0, 2.0), (80.0, 1.5)]),
        ];
        // Capacity 100: (40, 40) costs 3; (80, 20) costs 3; (20, 80) 6.5.
        let a = allocate(&layers, Budget::Bits(100.0), opts(100)).unwrap();
        assert_eq!(a.cost, 3.0);
        assert!(a.bits <= 100.0);
        // Capacity 120: (80, 40) costs 2.
        let a = allocate(&layers, Budget::Bits(120.0), opts(120)).unwrap();
        assert_eq!(a.picks, [2, 1]);
        assert_eq!((a.bits, a.cost, a.params), (120.0, 2.0, 20));
        assert_eq!(a.bits_per_weight(), 6.0);
        assert_eq!(a.labels(&layers), [("a", "80b"), ("b", "40b")]);
        // The same as bits per weight.
        let b = allocate(&layers, Budget::BitsPerWeight(6.0), opts(120)).unwrap();
        assert_eq!(b, a);
    }

    #[test]
    fn coarse_resolution_stays_within_budget() {
        // Weights that are not multiples of the unit round up: never over.
        let layers = [
            layer("a", 1, &[(3.3, 9.0), (7.7, 1.0)]),
            layer("b", 1, &[(2.9, 8.0), (6.1, 2.0)]),
            layer("c", 1, &[(1.1, 7.0), (5.5, 3.0)]),
        ];
        for r in [7, 10, 33, 1000, 100_000] {
            let a = allocate(&layers, Budget::Bits(15.0), opts(r)).unwrap();
            assert!(a.bits <= 15.0, "resolution {r}: {} bits", a.bits);
        }
        // Fine enough: 7.7 + 2.9 + 1.1 = 11.7 (cost 16) loses to
        // 3.3 + 6.1 + 5.5 = 14.9 (cost 14) and 7.7 + 6.1 + 1.1 = 14.9 (cost 10).
        let a = allocate(&layers, Budget::Bits(15.0), opts(100_000)).unwrap();
        assert_eq!((a.picks, a.cost), (vec![1, 1, 0], 10.0));
    }

    #[test]
    fn negative_costs_and_many_choices() {
        let layers = [layer("a", 1, &[(1.0, -2.0), (2.0, -5.0)])];
        let a = allocate(&layers, Budget::Bits(2.0), opts(2)).unwrap();
        assert_eq!(a.cost, -5.0);

        // 300 candidates: the u16 table. The cheapest within 150 bits is 150.
        let many: Vec<(f64, f64)> = (0..300).map(|b| (b as f64, 1000.0 - b as f64)).collect();
        let layers = [layer("wide", 1, &many), layer("b", 1, &[(0.0, 0.0)])];
        let a = allocate(&layers, Budget::Bits(150.0), opts(150)).unwrap();
        assert_eq!(a.picks, [150, 0]);
    }

    #[test]
    fn bops_budget_ignores_bits() {
        let c = |label: &str, bits: f64, bops: f64, cost: f64| {
            Choice::new(label, bits, cost).with_bops(bops)
        };
        let layers = [
            LayerChoices::new(
                "a",
                4,
                vec![c("w4a4", 16.0, 64.0, 3.0), c("w8a8", 32.0, 256.0, 1.0)],
            ),
            LayerChoices::new(
                "b",
                4,
                vec![c("w4a4", 16.0, 64.0, 2.5), c("w8a8", 32.0, 256.0, 0.0)],
            ),
        ];
        let a = allocate(&layers, Budget::Bops(320.0), opts(320)).unwrap();
        // Only one layer at w8a8 fits; b saves more.
        assert_eq!(a.labels(&layers), [("a", "w4a4"), ("b", "w8a8")]);
        assert_eq!((a.bops, a.bits, a.cost), (320.0, 48.0, 3.0));
        assert!(matches!(
            allocate(&layers, Budget::Bops(100.0), opts(100)),
            Err(Error::Infeasible {
                smallest: Budget::Bops(128.0),
                ..
            })
        ));
    }

    #[test]
    fn errors_name_what_to_change() {
        let ok = layer("a", 100, &[(225.0, 1.0), (400.0, 0.0)]);
        let d = AllocateOptions::default();

        let e = allocate(&[], Budget::Bits(1.0), d).unwrap_err();
        assert!(matches!(e, Error::NoLayers), "{e}");

        let e = allocate(&[ok.clone(), layer("empty", 1, &[])], Budget::Bits(1e3), d).unwrap_err();
        assert!(matches!(&e, Error::NoChoices { layer } if layer == "empty"));
        assert!(e.to_string().contains("`empty`"), "{e}");

        for (bits, cost, bops, field) in [
            (1.0, f64::NAN, 0.0, "cost"),
            (f64::INFINITY, 1.0, 0.0, "bits"),
            (1.0, 1.0, f64::NEG_INFINITY, "bops"),
        ] {
            let bad =
                LayerChoices::new("x", 1, vec![Choice::new("fp8", bits, cost).with_bops(bops)]);
            let e = allocate(&[bad], Budget::Bits(1e3), d).unwrap_err();
            assert!(
                matches!(&e, Error::NonFiniteChoice { layer, label, field: f, .. }
                    if layer == "x" && label == "fp8" && *f == field),
                "{e}"
            );
            assert!(e.to_string().contains("`x`") && e.to_string().contains("`fp8`"));
        }

        let e = allocate(&[layer("n", 1, &[(-1.0, 0.0)])], Budget::Bits(1.0), d).unwrap_err();
        assert!(matches!(&e, Error::NegativeChoice { field: "bits", value, .. } if *value == -1.0));

        for b in [
            Budget::Bits(0.0),
            Budget::BitsPerWeight(-1.0),
            Budget::Bops(f64::NAN),
            Budget::Bits(f64::INFINITY),
        ] {
            let e = allocate(std::slice::from_ref(&ok), b, d).unwrap_err();
            assert!(
                matches!(e, Error::InvalidBudget { budget } if budget.value().to_bits() == b.value().to_bits())
            );
        }

        let e = allocate(
            &[layer("z", 0, &[(1.0, 0.0)])],
            Budget::BitsPerWeight(4.0),
            d,
        )
        .unwrap_err();
        assert!(matches!(e, Error::NoParams));

        let e = allocate(std::slice::from_ref(&ok), Budget::BitsPerWeight(2.1), d).unwrap_err();
        assert!(matches!(
            e,
            Error::Infeasible {
                smallest: Budget::BitsPerWeight(s),
                ..
            } if s == 2.25
        ));
        assert_eq!(
            e.to_string(),
            "budget 2.10 bits/weight is below the smallest possible 2.25 bits/weight: \
             raise the budget or add smaller candidates"
        );
        let e = allocate(std::slice::from_ref(&ok), Budget::Bits(200.0), d).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("budget 200 bits is below the smallest possible 225 bits"),
            "{e}"
        );
        // Close values get more decimals.
        let e = allocate(std::slice::from_ref(&ok), Budget::BitsPerWeight(2.2499), d).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("budget 2.2499 bits/weight is below the smallest possible 2.2500"),
            "{e}"
        );

        let e = allocate(std::slice::from_ref(&ok), Budget::Bits(1000.0), opts(0)).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidOption {
                option: "resolution",
                value: 0,
                ..
            }
        ));
        let e = allocate(
            std::slice::from_ref(&ok),
            Budget::Bits(1000.0),
            opts(usize::MAX),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidOption {
                option: "resolution",
                ..
            }
        ));

        // Three layers of 1 bit fit 3.5 bits but not once rounded up to units of 3.5/2.
        let tight: Vec<_> = (0..3)
            .map(|i| layer(&format!("t{i}"), 1, &[(1.0, 0.0)]))
            .collect();
        let e = allocate(&tight, Budget::Bits(3.5), opts(2)).unwrap_err();
        assert!(
            matches!(e, Error::ResolutionTooCoarse { resolution: 2, .. }),
            "{e}"
        );
        assert!(allocate(&tight, Budget::Bits(3.5), opts(7)).is_ok());

        let huge: Vec<(f64, f64)> = (0..70_000).map(|b| (b as f64, 0.0)).collect();
        let e = allocate(&[layer("huge", 1, &huge)], Budget::Bits(1e6), opts(10)).unwrap_err();
        assert!(matches!(&e, Error::TooManyChoices { layer, count: 70_000 } if layer == "huge"));
    }

    #[test]
    fn units_round_up() {
        assert_eq!(units(3.0, 1.0, 10), Some(3));
        assert_eq!(units(3.0001, 1.0, 10), Some(4));
        assert_eq!(units(0.0, 0.5, 10), Some(0));
        assert_eq!(units(11.0, 1.0, 10), None);
        // 0.3 / 0.1 rounds to 2.9999999999999996 in f64; the unit count must
        // still cover 0.3.
        let u = units(0.3, 0.1, 100).unwrap();
        assert!(u as f64 * 0.1 >= 0.3);
    }
}
