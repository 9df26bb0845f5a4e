//! Errors specific to quantized checkpoint formats (writing and reading).

/// Why a quantized layer cannot be written in, or read from, a checkpoint format.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantFormatError {
    /// The layer's number format has no representation in this checkpoint format.
    #[error("{tensor}: {format} cannot store {found}")]
    UnsupportedFormat {
        /// The module.
        tensor: String,
        /// The checkpoint format.
        format: &'static str,
        /// The layer's number format, as text.
        found: String,
    },
    /// A layer whose number format the checkpoint format stores, but not
    /// this layer's arrangement of it (an act-order group index outside
    /// compressed-tensors' `pack-quantized`, for example).
    #[error("{tensor}: {format} cannot store this layer: {reason}")]
    UnsupportedLayout {
        /// The module.
        tensor: String,
        /// The checkpoint format.
        format: &'static str,
        /// What the format lacks.
        reason: String,
    },
    /// Static activation quantization declared for a writer, which would
    /// need calibrated `input_scale` tensors it does not write.
    #[error(
        "only dynamic input activations can be declared (static ones need calibrated input scales)"
    )]
    StaticActivations,
    /// compressed-tensors' group strategy needs groups that tile the columns.
    #[error("{tensor}: {cols} input columns are not a multiple of the group size {group}")]
    PartialGroup {
        /// The module.
        tensor: String,
        /// Input columns.
        cols: usize,
        /// The group size.
        group: usize,
    },
    /// A zero point that is not an integer code of the grid.
    #[error(
        "{tensor}: zero point {zero} of row {row}, group {group} is not an integer in 0..={max}"
    )]
    ZeroPoint {
        /// The module.
        tensor: String,
        /// Output channel.
        row: usize,
        /// Group.
        group: usize,
        /// The zero point.
        zero: f32,
        /// The largest code.
        max: u32,
    },
    /// A symmetric layer whose zero point is not the middle of the grid.
    #[error("{tensor}: symmetric layer has zero point {zero} at row {row}, group {group}; expected {expected}")]
    SymmetricZero {
        /// The module.
        tensor: String,
        /// Output channel.
        row: usize,
        /// Group.
        group: usize,
        /// The zero point.
        zero: f32,
        /// `2^(bits−1)`.
        expected: u32,
    },
    /// A per-tensor layer whose groups do not share one scale and zero point.
    #[error("{tensor}: per-tensor layer has differing scales or zero points")]
    NotPerTensor {
        /// The module.
        tensor: String,
    },
    /// An act-order group index that leaves a group without columns.
    #[error("{tensor}: group {group} has no columns in g_idx")]
    EmptyGroup {
        /// The module.
        tensor: String,
        /// The empty group.
        group: usize,
    },
    /// A format with one quantization for the whole checkpoint got layers
    /// that disagree.
    #[error("{tensor}: quantized as {found}, but the checkpoint is {expected}")]
    MixedSpecs {
        /// The module.
        tensor: String,
        /// The spec of the first layer.
        expected: String,
        /// The spec of this layer.
        found: String,
    },
    /// Several quantization schemes where the chosen target style allows one.
    #[error(
        "targets [\"Linear\"] with an ignore list describe one scheme, the layers use {schemes}"
    )]
    LinearTargetsNeedOneScheme {
        /// The schemes in use.
        schemes: usize,
    },
    /// A KV-cache scale that is not a positive finite number in the
    /// checkpoint's float type.
    #[error("{module}: KV-cache scale {scale} is not a positive finite number in the checkpoint's float type")]
    KvCacheScale {
        /// The scale tensor (`model.layers.N.self_attn.k_scale`).
        module: String,
        /// The scale given.
        scale: f32,
    },
    /// A layer name added twice.
    #[error("module {module:?} was added twice")]
    DuplicateModule {
        /// The module.
        module: String,
    },
    /// A bias whose length is not the layer's output features.
    #[error("{tensor}: bias has {actual} values for {expected} output features")]
    BiasLength {
        /// The module.
        tensor: String,
        /// Output features.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// `config.json` (or the model config handed to a writer) is not a JSON object.
    #[error("the model config is not a JSON object")]
    ConfigNotObject,
    /// A `quantization_config` (or `quantize_config.json`) field that is
    /// missing, mistyped or has a value this reader does not handle.
    #[error("quantization config: {field}: {problem}")]
    Config {
        /// The field (dotted path).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A checkpoint quantized by a method this crate does not read.
    #[error("quant_method {found:?} is not supported (compressed-tensors or gptq)")]
    QuantMethod {
        /// The method named in the config.
        found: String,
    },
    /// A packed module that no config group describes (or several do).
    #[error("module {module:?} matches {matches} config groups")]
    SchemeMatch {
        /// The module.
        module: String,
        /// How many groups it matched.
        matches: usize,
    },
    /// A stored tensor with a dtype this format does not allow there.
    #[error("tensor {tensor:?} is {found}, expected {expected}")]
    TensorDType {
        /// The tensor.
        tensor: String,
        /// The dtypes allowed.
        expected: &'static str,
        /// The dtype found.
        found: String,
    },
    /// A stored tensor whose shape disagrees with the layer.
    #[error("tensor {tensor:?} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor.
        tensor: String,
        /// The shape expected.
        expected: Vec<usize>,
        /// The shape found.
        actual: Vec<usize>,
    },
    /// A stored shape or group index with a negative or oversized value.
    #[error("tensor {tensor:?} holds {value} at index {index}, outside {range}")]
    TensorValue {
        /// The tensor.
        tensor: String,
        /// Flat index.
        index: usize,
        /// The value.
        value: i64,
        /// The range allowed.
        range: String,
    },
    /// A sparse weight whose bitmask keeps a different number of elements
    /// than its `compressed` tensor stores.
    #[error("{tensor}: the bitmask keeps {kept} elements, but {stored} values are stored")]
    SparseMask {
        /// The bitmask tensor.
        tensor: String,
        /// Set bits (within the dense shape).
        kept: u64,
        /// Values stored.
        stored: u64,
    },
}
