//! Where model weights come from: GGUF files, safetensors folders, or memory.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use ndarray::ArrayD;
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::import::QuantizedCheckpoint;
use tensorpress_io::safetensors::SafetensorsModel;

use crate::linear::FactorizedLinear;
pub use crate::lossless::open_weights;
use crate::{Error, Result};

/// A source of named f32 weights.
pub trait WeightSource {
    /// Whether the source holds `name`.
    fn contains(&self, name: &str) -> bool;
    /// The tensor `name` as f32 in row-major order (outermost dimension first),
    /// dequantized or converted as needed.
    fn load_f32(&self, name: &str) -> Result<ArrayD<f32>>;
}

impl WeightSource for GgufFile {
    fn contains(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }

    fn load_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        if !WeightSource::contains(self, name) {
            return Err(Error::MissingTensor { name: name.into() });
        }
        Ok(self.dequantize(name)?)
    }
}

impl WeightSource for SafetensorsModel {
    fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    fn load_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        if !WeightSource::contains(self, name) {
            return Err(Error::MissingTensor { name: name.into() });
        }
        Ok(self.to_f32(name)?)
    }
}

/// A quantized checkpoint (compressed-tensors or GPTQ): quantized modules'
/// `.weight` tensors are unpacked and dequantized, every other tensor is read
/// as stored.
impl WeightSource for QuantizedCheckpoint {
    fn contains(&self, name: &str) -> bool {
        quantized_module(self, name).is_some() || self.model().info(name).is_some()
    }

    fn load_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        if let Some(module) = quantized_module(self, name) {
            return Ok(self.layer(module)?.dequantize().into_dyn());
        }
        WeightSource::load_f32(self.model(), name)
    }
}

/// The quantized module whose weight `name` is, if any.
fn quantized_module<'a>(ckpt: &QuantizedCheckpoint, name: &'a str) -> Option<&'a str> {
    let module = name.strip_suffix(".weight")?;
    ckpt.spec(module).is_some().then_some(module)
}

/// Weights held in memory, keyed by name (handy for tests and for weights
/// produced by a compression pass).
#[derive(Debug, Clone, Default)]
pub struct MemoryWeights {
    tensors: BTreeMap<String, ArrayD<f32>>,
}

impl MemoryWeights {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `name`.
    pub fn insert(&mut self, name: impl Into<String>, value: ArrayD<f32>) {
        self.tensors.insert(name.into(), value);
    }

    /// Random weights for a Llama model with `params`, in Hugging Face naming:
    /// normal entries scaled by `1/√in` (norm weights are 1), deterministic in
    /// `seed`. For tests, doc examples and benchmarks of the forward pass.
    pub fn random_llama(params: &crate::llama::LlamaParams, seed: u64) -> Self {
        let mut rng = tensorpress_tensor::SeededRng::new(seed);
        let mut w = MemoryWeights::new();
        let p = params;
        let (h, q, kv) = (
            p.hidden_size,
            p.num_heads * p.head_dim,
            p.num_kv_heads * p.head_dim,
        );
        let dense = |rng: &mut tensorpress_tensor::SeededRng, out_f: usize, in_f: usize| {
            let scale = 1.0 / (in_f as f32).sqrt();
            rng.array_normal(vec![out_f, in_f]).mapv(|v| v * scale)
        };
        w.insert(
            "model.embed_tokens.weight",
            dense(&mut rng, p.vocab_size, h),
        );
        for l in 0..p.num_layers {
            let b = format!("model.layers.{l}");
            for (m, o, i) in [
                ("self_attn.q_proj", q, h),
                ("self_attn.k_proj", kv, h),
                ("self_attn.v_proj", kv, h),
                ("self_attn.o_proj", h, q),
                ("mlp.gate_proj", p.intermediate_size, h),
                ("mlp.up_proj", p.intermediate_size, h),
                ("mlp.down_proj", h, p.intermediate_size),
            ] {
                w.insert(format!("{b}.{m}.weight"), dense(&mut rng, o, i));
            }
            for n in ["input_layernorm", "post_attention_layernorm"] {
                w.insert(format!("{b}.{n}.weight"), ArrayD::ones(vec![h]));
            }
        }
        w.insert("model.norm.weight", ArrayD::ones(vec![h]));
        if !p.tie_word_embeddings {
            w.insert("lm_head.weight", dense(&mut rng, p.vocab_size, h));
        }
        w
    }

    /// The names held, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

impl WeightSource for MemoryWeights {
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn load_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor { name: name.into() })
    }
}

/// How weights become candle tensors.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The device the model runs on.
    pub device: Device,
    /// Load every weight as a [`Var`] so gradients flow to it, and use the
    /// differentiable (slower) versions of the fused ops.
    pub trainable: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            trainable: false,
        }
    }
}

impl LoadOptions {
    /// Options for a model that gradients flow through.
    pub fn trainable() -> Self {
        LoadOptions {
            trainable: true,
            ..Self::default()
        }
    }
}

/// Loads weights from a [`WeightSource`] onto a device, checking shapes and
/// remembering the variables when the model is trainable.
pub(crate) struct Loader<'a> {
    source: &'a dyn WeightSource,
    options: LoadOptions,
    vars: Vec<(String, Var)>,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(source: &'a dyn WeightSource, options: LoadOptions) -> Self {
        Loader {
            source,
            options,
            vars: Vec::new(),
        }
    }

    pub(crate) fn device(&self) -> &Device {
        &self.options.device
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.source.contains(name)
    }

    /// Loads `name`, which must have shape `expected`.
    pub(crate) fn load(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let array = self.source.load_f32(name)?;
        if array.shape() != expected {
            return Err(Error::WeightShape {
                name: name.into(),
                expected: expected.to_vec(),
                actual: array.shape().to_vec(),
            });
        }
        self.place(name, array)
    }

    /// Loads `name` whatever its shape (the caller checks it).
    pub(crate) fn load_any(&mut self, name: &str) -> Result<Tensor> {
        let array = self.source.load_f32(name)?;
        self.place(name, array)
    }

    /// The factors `u: [out, r]`, `v: [r, in]` of a factorized layer (the
    /// rank comes from `u`'s shape).
    pub(crate) fn load_factorized(
        &mut self,
        u: &str,
        v: &str,
        out_f: usize,
        in_f: usize,
    ) -> Result<FactorizedLinear> {
        let a = self.load_any(u)?;
        let rank = match a.dims() {
            [o, r] if *o == out_f && *r >= 1 => *r,
            dims => {
                return Err(Error::WeightShape {
                    name: u.to_string(),
                    expected: vec![out_f, 0],
                    actual: dims.to_vec(),
                })
            }
        };
        let b = self.load(v, &[rank, in_f])?;
        FactorizedLinear::new(a, b, None)
    }

    /// `array` as a tensor on the device (a variable when trainable).
    fn place(&mut self, name: &str, array: ArrayD<f32>) -> Result<Tensor> {
        let expected = array.shape().to_vec();
        let data = if array.is_standard_layout() {
            array.into_raw_vec_and_offset().0
        } else {
            array.iter().copied().collect()
        };
        let tensor = Tensor::from_vec(data, expected.as_slice(), &self.options.device)?;
        if self.options.trainable {
            let var = Var::from_tensor(&tensor)?;
            let t = var.as_tensor().clone();
            self.vars.push((name.to_string(), var));
            Ok(t)
        } else {
            Ok(tensor)
        }
    }

    pub(crate) fn into_vars(self) -> Vec<(String, Var)> {
        self.vars
    }
}
