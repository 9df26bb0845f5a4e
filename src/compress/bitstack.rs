//! BitStack on a whole model (issue 7): every block projection is decomposed
//! once into a stack of ~1-bit residual blocks ([`BitStack`]; Wang et al.,
//! *BitStack: Any-Size Compression of Large Language Models in Variable
//! Memory Environments*, ICLR 2025, arXiv:2410.23918), and any memory
//! budget then loads a prefix of every layer's stack.
//!
//! [`bitstack_llama`] decomposes (one calibration pass for the activation
//! scales, `√mean x²` per input channel as in the reference code, then one
//! SVD per block) and ranks every block by how much it lowers its layer's
//! output error relative to that layer's output energy, with the diagonal
//! of the input Gram matrix as the metric (`Σ_j mean x_j² Σ_i ΔW_ij²`; the
//! full Gram form costs `O(out·in²)` per block). [`StackedModel::allocate`]
//! turns a budget in bits per weight into blocks per layer (every layer
//! loads at least one; the rest go greedily by importance per bit,
//! [`allocate_blocks`]), and [`StackedModel::assemble`] puts the
//! reconstructed weights into a model: one decomposition, any size.
//! [`StackedModel::write`] stores the stacks as one safetensors file;
//! [`StackedFile`] opens it, plans a budget from the metadata and reads only
//! the blocks the plan loads (the layout is documented there).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use half::f16;
use ndarray::{Array1, Array2, ArrayView1};
use serde_json::{json, Value};
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_lowrank::{
    allocate_blocks, BitStack, BitStackConfig, BlockAllocation, ErrorMetric, SignPlane, StackBlock,
    StackProfile,
};
use tensorpress_models::linear::{to_matrix, DenseLinear};
use tensorpress_models::llama::LlamaModel;
use tensorpress_tensor::DType;

use super::{HessianCollector, Progress};
use crate::{Error, Result};

/// One layer's stack and the importance of each of its blocks.
#[derive(Debug, Clone)]
pub struct StackedLayer {
    /// Layer name (Hugging Face module naming).
    pub name: String,
    /// The decomposition.
    pub stack: BitStack,
    /// Per block: the drop in the layer's relative (diagonal) output error.
    pub importance: Vec<f64>,
}

/// Every block projection of a model, decomposed into BitStack blocks.
#[derive(Debug, Clone)]
pub struct StackedModel {
    /// The layers, in model order.
    pub layers: Vec<StackedLayer>,
    /// Seconds spent decomposing.
    pub seconds: f64,
}

impl StackedModel {
    /// Weights in the stacked layers.
    pub fn weights(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| (l.stack.dim().0 * l.stack.dim().1) as u64)
            .sum()
    }

    /// Bits per weight of one block in every layer (the smallest budget) and
    /// of every block (the largest).
    pub fn bits_per_weight_range(&self) -> (f64, f64) {
        let w = self.weights().max(1) as f64;
        let one: u64 = self.layers.iter().map(|l| l.stack.block_bits()).sum();
        let all: u64 = self
            .layers
            .iter()
            .map(|l| l.stack.bits(l.stack.len()))
            .sum();
        (one as f64 / w, all as f64 / w)
    }

    /// Blocks per layer for a budget of `bits_per_weight` over the stacked
    /// layers: one block each, then the most important blocks per bit that
    /// fit.
    ///
    /// # Errors
    /// [`Error::Budget`] when the budget is not finite or is below one block
    /// per layer ([`bits_per_weight_range`](Self::bits_per_weight_range)).
    pub fn allocate(&self, bits_per_weight: f64) -> Result<BlockAllocation> {
        let layers: Vec<(u64, &[f64])> = self
            .layers
            .iter()
            .map(|l| (l.stack.block_bits(), l.importance.as_slice()))
            .collect();
        plan(&layers, self.weights(), bits_per_weight)
    }

    /// Bits per weight of `plan` over the stacked layers.
    pub fn plan_bits_per_weight(&self, plan: &BlockAllocation) -> f64 {
        plan.bits as f64 / self.weights().max(1) as f64
    }

    /// Replaces every stacked layer of `model` by the sum of its first
    /// `plan.blocks[i]` blocks.
    ///
    /// # Errors
    /// A plan for another number of layers or with more blocks than a stack
    /// holds; a layer the model lacks.
    pub fn assemble(&self, model: &mut LlamaModel, plan: &BlockAllocation) -> Result<()> {
        if plan.blocks.len() != self.layers.len() {
            return Err(Error::Budget {
                reason: format!(
                    "a plan for {} layers, but {} are stacked",
                    plan.blocks.len(),
                    self.layers.len()
                ),
            });
        }
        for (layer, &n) in self.layers.iter().zip(&plan.blocks) {
            let w = layer
                .stack
                .reconstruct(n)
                .map_err(|source| Error::Factorize {
                    layer: layer.name.clone(),
                    source,
                })?;
            set_weight(model, &layer.name, w)?;
        }
        Ok(())
    }

    /// Writes the stacks as one safetensors file at `path` (atomically: a
    /// temporary file renamed into place), in the layout of
    /// [`StackedFile`]. Returns the file's size in bytes.
    ///
    /// # Errors
    /// File errors.
    pub fn write(&self, path: &Path) -> Result<u64> {
        let mut st = SafetensorsWriter::new();
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "name": l.name,
                    "shape": [l.stack.dim().0, l.stack.dim().1],
                    "blocks": l.stack.len(),
                    "magnitude_rank": l.stack.blocks().first().map_or(0, |b| b.rank()),
                    "importance": l.importance,
                })
            })
            .collect();
        let meta = json!({ "version": FILE_VERSION, "layers": layers });
        st.add_metadata(METADATA_KEY, meta.to_string())?;
        for l in &self.layers {
            for (i, b) in l.stack.blocks().iter().enumerate() {
                let prefix = format!("{}.bitstack.{i}", l.name);
                st.add_array(
                    format!("{prefix}.signs"),
                    ArrayView1::from(b.signs().words()).into_dyn(),
                )?;
                st.add_array(format!("{prefix}.u"), b.u().into_dyn())?;
                st.add_array(format!("{prefix}.v"), b.v().into_dyn())?;
            }
        }
        st.write_file(path)?;
        Ok(std::fs::metadata(path)
            .map_err(|source| Error::File {
                path: path.to_path_buf(),
                source,
            })?
            .len())
    }
}

/// The key of a BitStack file's `__metadata__` entry.
pub const METADATA_KEY: &str = "tensorpress_bitstack";
const FILE_VERSION: u64 = 1;

/// One layer as a BitStack file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StackedLayerInfo {
    /// Layer name (Hugging Face module naming).
    pub name: String,
    /// `(out, in)`.
    pub dim: (usize, usize),
    /// Blocks stored.
    pub blocks: usize,
    /// Magnitude rank `k` of every block.
    pub magnitude_rank: usize,
    /// Per block: the drop in the layer's relative output error.
    pub importance: Vec<f64>,
}

impl StackedLayerInfo {
    /// Bits of one block: `out·in` signs plus `16·k·(out + in)`.
    pub fn block_bits(&self) -> u64 {
        let (o, i) = self.dim;
        (o * i) as u64 + 16 * (self.magnitude_rank * (o + i)) as u64
    }
}

/// A BitStack file, opened (memory-mapped) without reading any block: plan a
/// budget from its metadata, then [`assemble`](StackedFile::assemble) reads
/// only the blocks the plan loads.
///
/// Layout: one safetensors file; for layer `{module}` and block `i`
/// (0-based, loading order)
///
/// | tensor | dtype | shape | content |
/// |---|---|---|---|
/// | `{module}.bitstack.{i}.signs` | U64 | `[⌈out·in/64⌉]` | sign bits, row-major; bit `j` of the plane is bit `j % 64` of word `j / 64`, set for negative |
/// | `{module}.bitstack.{i}.u` | F16 | `[out, k]` | left magnitude factor |
/// | `{module}.bitstack.{i}.v` | F16 | `[k, in]` | right magnitude factor (activation scaling folded in) |
///
/// and `__metadata__["tensorpress_bitstack"]` =
/// `{"version": 1, "layers": [{"name", "shape": [out, in], "blocks", "magnitude_rank", "importance": [...]}]}`.
/// Block `i` of a layer adds `sign ⊙ (u v)` to the weight.
#[derive(Debug)]
pub struct StackedFile {
    file: SafetensorsModel,
    layers: Vec<StackedLayerInfo>,
}

impl StackedFile {
    /// Opens `path` and checks its metadata.
    ///
    /// # Errors
    /// File and safetensors errors; [`Error::Export`] for a file without
    /// BitStack metadata, of another version, or whose metadata is
    /// inconsistent (shapes that are not `[out, in]`, importances that are
    /// not one finite number per block).
    pub fn open(path: &Path) -> Result<Self> {
        let file = SafetensorsModel::open(path)?;
        let bad = |reason: String| Error::Export {
            layer: path.display().to_string(),
            reason,
        };
        let text = file
            .metadata()
            .get(METADATA_KEY)
            .ok_or_else(|| bad(format!("no `{METADATA_KEY}` metadata: not a BitStack file")))?;
        let meta: Value = serde_json::from_str(text)?;
        if meta["version"].as_u64() != Some(FILE_VERSION) {
            return Err(bad(format!(
                "BitStack file version {}, expected {FILE_VERSION}",
                meta["version"]
            )));
        }
        let entries = meta["layers"]
            .as_array()
            .ok_or_else(|| bad("metadata has no `layers` list".into()))?;
        let mut layers = Vec::with_capacity(entries.len());
        for e in entries {
            let field = |k: &str| -> Result<usize> {
                e[k].as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| bad(format!("layer entry without a valid `{k}`: {e}")))
            };
            let name = e["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad(format!("layer entry without a name: {e}")))?
                .to_string();
            let shape: Vec<u64> = e["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let dim = match shape.as_slice() {
                [o, i] if *o > 0 && *i > 0 && o.checked_mul(*i).is_some_and(|n| n < 1 << 40) => {
                    (*o as usize, *i as usize)
                }
                _ => return Err(bad(format!("{name}: shape {shape:?} is not [out, in]"))),
            };
            let blocks = field("blocks")?;
            let magnitude_rank = field("magnitude_rank")?;
            let importance: Vec<f64> = e["importance"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            if blocks == 0
                || magnitude_rank == 0
                || magnitude_rank > dim.0.min(dim.1)
                || importance.len() != blocks
                || importance.iter().any(|v| !v.is_finite())
            {
                return Err(bad(format!(
                    "{name}: {blocks} blocks of rank {magnitude_rank} with {} finite importances",
                    importance.len()
                )));
            }
            layers.push(StackedLayerInfo {
                name,
                dim,
                blocks,
                magnitude_rank,
                importance,
            });
        }
        Ok(StackedFile { file, layers })
    }

    /// The layers, as the metadata describes them.
    pub fn layers(&self) -> &[StackedLayerInfo] {
        &self.layers
    }

    /// Weights in the stacked layers.
    pub fn weights(&self) -> u64 {
        self.layers.iter().map(|l| (l.dim.0 * l.dim.1) as u64).sum()
    }

    /// As [`StackedModel::allocate`], from the metadata alone.
    ///
    /// # Errors
    /// As [`StackedModel::allocate`].
    pub fn allocate(&self, bits_per_weight: f64) -> Result<BlockAllocation> {
        let layers: Vec<(u64, &[f64])> = self
            .layers
            .iter()
            .map(|l| (l.block_bits(), l.importance.as_slice()))
            .collect();
        plan(&layers, self.weights(), bits_per_weight)
    }

    /// Reads the first `blocks` blocks of layer `index`.
    ///
    /// # Errors
    /// [`Error::Budget`] for a layer or more blocks than stored;
    /// [`Error::Export`] for a missing tensor or one of the wrong dtype or
    /// shape; [`Error::Factorize`] for non-finite factors.
    pub fn read_layer(&self, index: usize, blocks: usize) -> Result<BitStack> {
        let info = self.layers.get(index).ok_or_else(|| Error::Budget {
            reason: format!("layer {index} of {}", self.layers.len()),
        })?;
        if blocks > info.blocks {
            return Err(Error::Budget {
                reason: format!(
                    "{}: {blocks} blocks asked, {} stored",
                    info.name, info.blocks
                ),
            });
        }
        let (out, inp) = info.dim;
        let k = info.magnitude_rank;
        let wrap = |source| Error::Factorize {
            layer: info.name.clone(),
            source,
        };
        let half = |name: &str, shape: (usize, usize)| -> Result<Array2<f16>> {
            let bytes = self.raw(name, DType::F16, &[shape.0, shape.1])?;
            let v: Vec<f16> = bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            Array2::from_shape_vec(shape, v).map_err(|e| Error::Export {
                layer: name.to_string(),
                reason: e.to_string(),
            })
        };
        let mut read = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let prefix = format!("{}.bitstack.{i}", info.name);
            let bytes = self.raw(
                &format!("{prefix}.signs"),
                DType::U64,
                &[(out * inp).div_ceil(64)],
            )?;
            let words: Vec<u64> = bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    u64::from_le_bytes(w)
                })
                .collect();
            let u = half(&format!("{prefix}.u"), (out, k))?;
            let v = half(&format!("{prefix}.v"), (k, inp))?;
            let signs = SignPlane::from_words(out, inp, words).map_err(wrap)?;
            read.push(StackBlock::from_parts(signs, u, v).map_err(wrap)?);
        }
        BitStack::from_blocks((out, inp), read).map_err(wrap)
    }

    /// Puts layer `i`'s first `plan.blocks[i]` blocks into `model`, reading
    /// only those from the file.
    ///
    /// # Errors
    /// A plan for another number of layers; those of
    /// [`read_layer`](Self::read_layer); a layer the model lacks or of
    /// another shape.
    pub fn assemble(&self, model: &mut LlamaModel, plan: &BlockAllocation) -> Result<()> {
        if plan.blocks.len() != self.layers.len() {
            return Err(Error::Budget {
                reason: format!(
                    "a plan for {} layers, but the file stacks {}",
                    plan.blocks.len(),
                    self.layers.len()
                ),
            });
        }
        for (i, &n) in plan.blocks.iter().enumerate() {
            let stack = self.read_layer(i, n)?;
            let w = stack.reconstruct(n).map_err(|source| Error::Factorize {
                layer: self.layers[i].name.clone(),
                source,
            })?;
            set_weight(model, &self.layers[i].name, w)?;
        }
        Ok(())
    }

    /// The bytes of tensor `name`, which must have `dtype` and `shape`.
    fn raw(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<&[u8]> {
        use tensorpress_tensor::Tensor as _;
        let view = self.file.view(name).map_err(|e| Error::Export {
            layer: name.to_string(),
            reason: e.to_string(),
        })?;
        if view.dtype() != dtype || view.shape() != shape {
            return Err(Error::Export {
                layer: name.to_string(),
                reason: format!(
                    "{:?} {:?} stored, {dtype:?} {shape:?} expected",
                    view.dtype(),
                    view.shape()
                ),
            });
        }
        Ok(view.data())
    }
}

/// Replaces `name`'s op in `model` by the dense weight `w`.
fn set_weight(model: &mut LlamaModel, name: &str, w: Array2<f32>) -> Result<()> {
    let linear = model.linear_mut(name).ok_or_else(|| Error::NotObserved {
        layer: name.to_string(),
    })?;
    let (rows, cols) = w.dim();
    let (out, inp) = (linear.op().out_features(), linear.op().in_features());
    if (out, inp) != (rows, cols) {
        return Err(Error::Export {
            layer: name.to_string(),
            reason: format!("stacked weight [{rows}, {cols}] for a [{out}, {inp}] layer"),
        });
    }
    let device = linear.op().dense_weight()?.device().clone();
    let bias = linear.op().bias().cloned();
    let t = candle_core::Tensor::from_vec(w.into_raw_vec_and_offset().0, (rows, cols), &device)?;
    linear.set_op(Arc::new(DenseLinear::new(t, bias)?))?;
    Ok(())
}

/// One block per layer, then the most important blocks per bit that fit in
/// `bits_per_weight × weights`. `layers` holds each layer's block size and
/// per-block importances.
fn plan(layers: &[(u64, &[f64])], weights: u64, bits_per_weight: f64) -> Result<BlockAllocation> {
    let w = weights.max(1) as f64;
    let first: u64 = layers.iter().map(|(b, _)| b).sum();
    let all: u64 = layers.iter().map(|(b, imp)| b * imp.len() as u64).sum();
    let min = first as f64 / w;
    if !(bits_per_weight.is_finite() && bits_per_weight >= min)
        || layers.iter().any(|(_, i)| i.is_empty())
    {
        return Err(Error::Budget {
            reason: format!(
                "{bits_per_weight} bits per weight is below one BitStack block per layer \
                 ({min:.3}); the stack holds up to {:.3}",
                all as f64 / w
            ),
        });
    }
    let budget = (bits_per_weight * w).floor() as u64;
    let profiles: Vec<StackProfile<'_>> = layers
        .iter()
        .map(|(bits, imp)| StackProfile {
            block_bits: *bits,
            importance: imp.get(1..).unwrap_or(&[]),
        })
        .collect();
    let mut plan =
        allocate_blocks(&profiles, budget.saturating_sub(first)).map_err(|e| Error::Budget {
            reason: e.to_string(),
        })?;
    plan.blocks.iter_mut().for_each(|b| *b += 1);
    plan.bits += first;
    plan.importance += layers.iter().map(|(_, imp)| imp[0]).sum::<f64>();
    Ok(plan)
}

/// Decomposes every block projection of `model` into `config.blocks` BitStack
/// blocks, scaling input channels by their calibration RMS (one forward pass
/// over `calibration`; the model is not changed).
///
/// # Errors
/// [`Error::NoCalibration`] without windows; [`Error::Factorize`] for a
/// layer that does not decompose (non-finite weights, `magnitude_rank` 0,
/// a factor that overflows fp16); forward errors.
pub fn bitstack_llama(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    config: &BitStackConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<StackedModel> {
    if calibration.is_empty() {
        return Err(Error::NoCalibration);
    }
    let names: Vec<String> = model
        .linear_names()
        .into_iter()
        .filter(|n| n.starts_with("model.layers."))
        .collect();
    let collector = Arc::new(HessianCollector::new(names.iter().cloned()));
    model.set_observer(Some(collector.clone()));
    let pass = calibration.iter().enumerate().try_for_each(|(i, w)| {
        progress(Progress::Calibrating {
            block: i,
            blocks: calibration.len(),
        });
        model.hidden_states(w).map(|_| ())
    });
    model.set_observer(None);
    pass?;
    let start = Instant::now();
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let wrap = |source| Error::Factorize {
            layer: name.clone(),
            source,
        };
        let c = collector.get(&name).ok_or_else(|| Error::NotObserved {
            layer: name.clone(),
        })?;
        let mean_sq = c.stats.mean_square()?;
        let rms = mean_sq.mapv(|v| v.max(0.0).sqrt());
        let linear = model
            .linears()
            .into_iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| Error::NotObserved {
                layer: name.clone(),
            })?;
        let w = to_matrix(&linear.op().dense_weight()?)?;
        let t0 = Instant::now();
        let stack = BitStack::decompose(w.view(), Some(rms.view()), config).map_err(wrap)?;
        let c: Array1<f64> = mean_sq.mapv(f64::from);
        let energy: f64 = w
            .outer_iter()
            .map(|row| {
                row.iter()
                    .zip(&c)
                    .map(|(x, c)| c * f64::from(*x).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        let importance = stack
            .error_reductions(w.view(), ErrorMetric::Diagonal(c.view()))
            .map_err(wrap)?
            .into_iter()
            .map(|g| g / energy)
            .collect();
        let (out, inp) = stack.dim();
        progress(Progress::Layer(super::LayerReport {
            name: name.clone(),
            shape: [out, inp],
            output_error: None,
            weight_error: 0.0,
            bits_per_weight: stack.bits_per_weight(stack.len()),
            sparsity: 0.0,
            seconds: t0.elapsed().as_secs_f64(),
        }));
        layers.push(StackedLayer {
            name,
            stack,
            importance,
        });
    }
    Ok(StackedModel {
        layers,
        seconds: start.elapsed().as_secs_f64(),
    })
}
