//! Errors of the sensitivity metrics.

/// Errors of `tensorpress-sensitivity`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("shape mismatch in {op}: {lhs:?} vs {rhs:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// First shape.
        lhs: Vec<usize>,
        /// Second shape.
        rhs: Vec<usize>,
    },
    /// A metric that is undefined for an all-zero matrix or spectrum.
    #[error("{metric} is undefined for an all-zero matrix")]
    ZeroMatrix {
        /// The metric.
        metric: &'static str,
    },
    /// A relative error whose reference output is zero.
    #[error("relative output error is undefined: the reference output is zero")]
    ZeroReference,
    /// A singular value that is negative or not finite.
    #[error("singular value {index} is {value}: must be finite and >= 0")]
    InvalidSingularValue {
        /// Its index.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// An estimator asked for zero samples.
    #[error("{op} needs at least one sample")]
    NoSamples {
        /// The estimator.
        op: &'static str,
    },
    /// Bit allocation was given no layers.
    #[error("bit allocation needs at least one layer: the layer list is empty")]
    NoLayers,
    /// A layer without candidate settings.
    #[error("layer `{layer}` has no candidate settings: give it at least one Choice")]
    NoChoices {
        /// The layer's name.
        layer: String,
    },
    /// A candidate whose cost, bits or bops is NaN or infinite.
    #[error(
        "layer `{layer}`, choice `{label}`: {field} is {value}; \
         cost, bits and bops must be finite"
    )]
    NonFiniteChoice {
        /// The layer's name.
        layer: String,
        /// The candidate's label.
        label: String,
        /// `"cost"`, `"bits"` or `"bops"`.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A candidate with negative bits or bops.
    #[error(
        "layer `{layer}`, choice `{label}`: {field} is {value}; \
         storage bits and bit-operations must be >= 0"
    )]
    NegativeChoice {
        /// The layer's name.
        layer: String,
        /// The candidate's label.
        label: String,
        /// `"bits"` or `"bops"`.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A budget that is not finite and positive.
    #[error("budget {budget} is invalid: it must be finite and > 0")]
    InvalidBudget {
        /// The budget.
        budget: crate::Budget,
    },
    /// A bits-per-weight budget over layers that have no parameters.
    #[error(
        "a bits/weight budget needs parameters, but every layer has params = 0: \
         set LayerChoices::params or use Budget::Bits"
    )]
    NoParams,
    /// Even the smallest candidate of every layer exceeds the budget.
    #[error("{}", crate::allocate::infeasible_message(.budget, .smallest))]
    Infeasible {
        /// The budget.
        budget: crate::Budget,
        /// The smallest achievable total, as the same kind of budget.
        smallest: crate::Budget,
    },
    /// The budget fits the smallest candidates, but not once their sizes are
    /// rounded up to the solver's units.
    #[error(
        "budget {budget} fits the smallest candidates only without rounding: \
         at resolution {resolution} each one rounds up past it; \
         raise AllocateOptions::resolution (or the budget)"
    )]
    ResolutionTooCoarse {
        /// The budget.
        budget: crate::Budget,
        /// The resolution used.
        resolution: usize,
    },
    /// A layer with more candidates than the solver's table can index.
    #[error("layer `{layer}` has {count} candidates; the solver takes at most 65536 per layer")]
    TooManyChoices {
        /// The layer's name.
        layer: String,
        /// Its number of candidates.
        count: usize,
    },
    /// An option outside its valid range.
    #[error("invalid {option} = {value}: {requirement}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Its value.
        value: usize,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// A numeric parameter outside its range.
    #[error("{op}: {name} = {value} is outside {range}")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
    /// A selection stage of EvoPress that cannot work.
    #[error(
        "invalid selection stage {stage} (survivors {survivors}, tokens {tokens}): {requirement}"
    )]
    InvalidStage {
        /// Its index.
        stage: usize,
        /// Its survivors.
        survivors: usize,
        /// Its tokens.
        tokens: usize,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// A start configuration with the wrong number of picks.
    #[error("the start has {got} picks for {expected} layers: give one choice index per layer")]
    StartLength {
        /// Number of layers.
        expected: usize,
        /// Number of picks given.
        got: usize,
    },
    /// A start pick past its layer's candidates.
    #[error("the start picks choice {pick} of layer `{layer}`, which has {choices} candidates")]
    StartOutOfRange {
        /// The layer's name.
        layer: String,
        /// The pick.
        pick: usize,
        /// Its number of candidates.
        choices: usize,
    },
    /// A start configuration over the budget.
    #[error(
        "the start spends {spent}, over the budget of {budget}: \
         start from a configuration within it (e.g. from allocate)"
    )]
    StartOverBudget {
        /// The budget.
        budget: crate::Budget,
        /// What the start spends, as the same kind of budget.
        spent: crate::Budget,
    },
    /// A fitness closure that returned NaN.
    #[error(
        "the fitness returned NaN in generation {generation} (0 is the start): \
         it must return a number, lower is better"
    )]
    NanFitness {
        /// The generation (0 for the start's score).
        generation: usize,
    },
    /// The caller's fitness function failed (a model error, passed through as text).
    #[error("the fitness function failed: {reason}")]
    Fitness {
        /// What went wrong.
        reason: String,
    },
    /// An error of the tensor layer (non-finite input, SVD failure, …).
    #[error(transparent)]
    Tensor(#[from] tensorpress_tensor::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
