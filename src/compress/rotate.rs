//! Rotating a Llama model's residual stream and value heads by random
//! orthogonal matrices, fused into the weights: QuaRot's `R1`/`R2`
//! (Ashkboos et al., 2024, arXiv:2404.00456; SpinQuant, Liu et al., 2024,
//! arXiv:2405.16406, names them and shows random orthogonal matrices work
//! too).
//!
//! A transformer whose normalizations are RMSNorms without weights is
//! invariant under an orthogonal change of basis `Q` of its residual stream:
//! `RMSNorm(x Q) = RMSNorm(x) Q`, so if the embedding produces `x Q`, every
//! layer that reads the stream reads `(x Q)(W Q)ᵀ = x Wᵀ`, and every layer
//! that writes it writes `y (Qᵀ W)ᵀ = y Wᵀ Q`, the model computes the same
//! logits. The rotated weights `W Q` have their outlier input channels spread
//! over all channels, and quantize with less error (QuaRot, Table 1; QuIP's
//! incoherence). [`rotate_llama`]:
//!
//! 1. folds every RMSNorm weight `γ` into the layers that read the norm
//!    ([`fold_llama_norms`]): `q/k/v_proj ← W diag(γ_attn)`,
//!    `gate/up_proj ← W diag(γ_ffn)`, `lm_head ← W diag(γ_final)`, and sets
//!    the norms to ones;
//! 2. rotates the residual stream (`R1`): `embed ← E Q`, the readers
//!    `q/k/v/gate/up_proj, lm_head ← W Q`, the writers
//!    `o_proj, down_proj ← Qᵀ W` (a tied output head becomes untied);
//! 3. optionally rotates each key/value head's values (`R2`): `v_proj`'s rows
//!    of kv head `h` by `R_hᵀ`, and `o_proj`'s columns of every query head
//!    that reads kv head `h` (grouped-query attention) by `R_h`. Queries and
//!    keys are left alone (RoPE does not commute with a rotation), so a
//!    GGUF-loaded model's permuted query/key rows need no care: their
//!    columns only see `R1`.
//!
//! QuaRot's online Hadamard transforms (before `down_proj`, and `R3`/`R4` on
//! queries, keys and activations) need the runtime to rotate activations and
//! are not done here: this module produces an ordinary Llama checkpoint that
//! any runtime loads. The transforms run in f64 and round to f32 once.
//!
//! Every changed tensor is recorded in the [`CompressReport`] (`replaced`), so
//! [`write_hf_checkpoint`](super::write_hf_checkpoint) and
//! [`write_gguf`](super::write_gguf) write the rotated model. To quantize the
//! rotated model, call [`compress_llama`](super::compress_llama) next and
//! combine the two reports with [`merge_reports`].

use std::sync::Arc;

use candle_core::{DType, Tensor};
use ndarray::{s, Array1, Array2, ArrayViewMut2};
use tensorpress_models::linear::{to_matrix, DenseLinear};
use tensorpress_models::llama::{BlockNorm, LlamaModel};
use tensorpress_quant_core::rotation::{Rotation, RotationKind};
use tensorpress_tensor::SeededRng;

use super::CompressReport;
use crate::Result;

/// How [`rotate_llama`] rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateOptions {
    /// Randomized Hadamard (default) or random orthogonal matrices.
    pub kind: RotationKind,
    /// Seed of the residual rotation `R1`; the per-head rotations `R2` use
    /// seeds forked from it.
    pub seed: u64,
    /// Also rotate each value head and the matching `o_proj` columns (`R2`).
    pub rotate_values: bool,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            kind: RotationKind::Hadamard,
            seed: 0,
            rotate_values: true,
        }
    }
}

impl RotateOptions {
    /// Uses rotations of `kind`.
    pub fn kind(mut self, kind: RotationKind) -> Self {
        self.kind = kind;
        self
    }

    /// Uses `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether to rotate the value heads (`R2`).
    pub fn rotate_values(mut self, on: bool) -> Self {
        self.rotate_values = on;
        self
    }
}

/// Folds every RMSNorm weight of `model` into the linear layers that read it
/// and sets the norms to ones, recording the changed tensors in `report`. The
/// model computes the same function (up to f32 rounding). Idempotent.
///
/// # Errors
/// A model error when a layer is missing or a shape is off.
pub fn fold_llama_norms(model: &mut LlamaModel, report: &mut CompressReport) -> Result<()> {
    transform(model, None, report)
}

/// Folds the norms of `model` and rotates it as `options` says, recording
/// every changed tensor in `report` (Hugging Face names, the model's layout).
/// The rotated model computes the same logits as before, up to f32 rounding.
///
/// This is QuaRot's (Ashkboos et al., 2024) and SpinQuant's (Liu et al.,
/// 2024) fused rotation: with `Q` orthogonal and the RMSNorm weights `γ`
/// folded into the layers that read them ([`fold_llama_norms`]), the
/// embedding becomes `E Q`, the residual readers (`q/k/v/gate/up_proj`,
/// `lm_head`) `W diag(γ) Q`, the writers (`o_proj`, `down_proj`) `Qᵀ W`, and
/// every norm weight ones (`R1`; a tied head is untied). With
/// [`RotateOptions::rotate_values`], each key/value head `h` also gets its
/// own `R_h`: `v_proj`'s rows of head `h` become `R_hᵀ W`, and `o_proj`'s
/// columns of every query head reading head `h` become `W R_h` (`R2`).
/// Queries and keys are only rotated on their input side, so GGUF's permuted
/// query/key rows need no care. Online rotations of activations (QuaRot's
/// Hadamard before `down_proj`, `R3`/`R4`) need runtime support and are not
/// done. The arithmetic runs in f64, rounding to f32 once per tensor.
///
/// ```
/// use tensorpress::compress::{rotate_llama, CompressReport, RotateOptions};
/// use tensorpress::models::llama::{LlamaModel, LlamaParams, Naming, RopeLayout};
/// use tensorpress::models::weights::{LoadOptions, MemoryWeights};
///
/// let p = LlamaParams {
///     vocab_size: 32, hidden_size: 48, intermediate_size: 96, num_layers: 1,
///     num_heads: 4, num_kv_heads: 2, head_dim: 12, rms_norm_eps: 1e-5,
///     rope_theta: 10_000.0, max_position_embeddings: 64, tie_word_embeddings: true,
///     rope_layout: RopeLayout::Halves, bos_token_id: None, eos_token_id: None,
///     add_bos: false,
/// };
/// let w = MemoryWeights::random_llama(&p, 1);
/// let mut m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default())?;
/// let tokens = [3u32, 1, 4, 1, 5, 9, 2, 6];
/// let before = m.logits(&tokens, 0)?;
/// let mut report = CompressReport::new();
/// rotate_llama(&mut m, &RotateOptions::default().seed(7), &mut report)?;
/// let after = m.logits(&tokens, 0)?;
/// let diff = (before - after)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
/// assert!(diff < 1e-4, "{diff}");
/// // The untied head is among the tensors an exporter writes.
/// assert!(report.replaced.contains_key("lm_head.weight"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Measured on SmolLM2-135M
///
/// Rotation keeps the model (perplexity on SOTU 2017–2021 unchanged to four
/// decimals, logits within 2·10⁻⁴) and lowers RTN's weight error (int4
/// per-channel: mean relative `‖ΔW‖²/‖W‖²` 1.72·10⁻² against 2.09·10⁻²
/// unrotated), but weight-only RTN of the rotated model has a *higher*
/// perplexity than RTN of the unrotated one (77 against 45 on two windows,
/// base 21): folding the RMSNorm weights alone takes RTN to 105, since the
/// weights' rounding noise then meets the normalized activations before `γ`
/// damps their outlier channels, and the rotation only wins part of that
/// back. QuaRot pairs the rotation with GPTQ and with activation
/// quantization, where it pays off; measure before relying on it for
/// weight-only RTN of small models (`examples/rotation.rs` prints the table).
///
/// # Errors
/// [`tensorpress_quant_core::Error::NoHadamard`] (wrapped) for a Hadamard
/// rotation of a hidden size or head size without a construction; a model
/// error when a layer is missing.
pub fn rotate_llama(
    model: &mut LlamaModel,
    options: &RotateOptions,
    report: &mut CompressReport,
) -> Result<()> {
    transform(model, Some(options), report)
}

/// Combines the report of a first stage (e.g. [`rotate_llama`]) with that of
/// a later one (e.g. [`compress_llama`](super::compress_llama) on the rotated
/// model): the later stage's quantized layers supersede the float weights
/// the first recorded for them, its replaced tensors win, and the timings
/// add up.
pub fn merge_reports(mut first: CompressReport, then: CompressReport) -> CompressReport {
    for name in then.quantized.keys() {
        first.replaced.remove(&format!("{name}.weight"));
        first.quantized.remove(name);
        first.layers.retain(|l| &l.name != name);
    }
    first.layers.extend(then.layers);
    first.quantized.extend(then.quantized);
    first.replaced.extend(then.replaced);
    first.adapters.extend(then.adapters);
    first.factors.extend(then.factors);
    first.kv_cache_scales.extend(then.kv_cache_scales);
    first.timings.forward += then.timings.forward;
    first.timings.hessian += then.timings.hessian;
    first.timings.solve += then.timings.solve;
    first
}

/// Which side of a linear layer meets the residual stream.
#[derive(Clone, Copy)]
enum Side {
    /// The input: `W ← W diag(γ) Q`.
    Reads,
    /// The output: `W ← Qᵀ W`, `b ← b Q`.
    Writes,
}

fn transform(
    model: &mut LlamaModel,
    options: Option<&RotateOptions>,
    report: &mut CompressReport,
) -> Result<()> {
    let p = model.params().clone();
    let device = model.device().clone();
    let q = options
        .map(|o| Rotation::new(o.kind, p.hidden_size, o.seed))
        .transpose()?;
    let q = q.as_ref();
    // Every rotation is built before the model changes, so an error leaves it intact.
    let r2: Vec<Option<ValueRotations>> = (0..p.num_layers)
        .map(|b| match options {
            Some(o) if o.rotate_values => value_rotations(o, b, &p).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    let ones = Tensor::ones(p.hidden_size, DType::F32, &device)?;

    if let Some(q) = q {
        let mut e = to_f64(model.embed_weight())?;
        q.apply(e.view_mut())?;
        let e = to_tensor(&e, &device)?;
        report.replace("model.embed_tokens.weight", &e)?;
        model.set_embed_weight(e)?;
    }
    for b in 0..p.num_layers {
        let block = &model.blocks()[b];
        let (attn, ffn) = (to_vec(block.attn_norm())?, to_vec(block.ffn_norm())?);
        let layer = |m: &str| format!("model.layers.{b}.{m}");
        for (module, side, gamma) in [
            ("self_attn.q_proj", Side::Reads, Some(&attn)),
            ("self_attn.k_proj", Side::Reads, Some(&attn)),
            ("self_attn.v_proj", Side::Reads, Some(&attn)),
            ("self_attn.o_proj", Side::Writes, None),
            ("mlp.gate_proj", Side::Reads, Some(&ffn)),
            ("mlp.up_proj", Side::Reads, Some(&ffn)),
            ("mlp.down_proj", Side::Writes, None),
        ] {
            if q.is_none() && gamma.is_none() {
                continue; // folding alone leaves the writers as they are
            }
            let r2 = r2[b].as_ref().and_then(|r| match module {
                "self_attn.v_proj" => Some((r, HeadSide::Values)),
                "self_attn.o_proj" => Some((r, HeadSide::Output)),
                _ => None,
            });
            update_linear(model, &layer(module), side, gamma, q, r2, report)?;
        }
        for norm in [BlockNorm::Attention, BlockNorm::Ffn] {
            report.replace(format!("{}.weight", norm.module_name(b)), &ones)?;
            model.set_block_norm(b, norm, ones.clone())?;
        }
    }
    let final_norm = to_vec(model.norm_weight())?;
    update_linear(
        model,
        "lm_head",
        Side::Reads,
        Some(&final_norm),
        q,
        None,
        report,
    )?;
    report.replace("model.norm.weight", &ones)?;
    model.set_norm_weight(ones)?;
    Ok(())
}

/// The per-head rotations `R_h` of block `b`, one per key/value head.
struct ValueRotations {
    heads: Vec<Rotation>,
    head_dim: usize,
    /// Query heads per key/value head.
    groups: usize,
}

#[derive(Clone, Copy)]
enum HeadSide {
    /// `v_proj`: rows of kv head `h` ← `R_hᵀ ·`.
    Values,
    /// `o_proj`: columns of query head `g` ← `· R_{g / groups}`.
    Output,
}

fn value_rotations(
    options: &RotateOptions,
    block: usize,
    p: &tensorpress_models::llama::LlamaParams,
) -> Result<ValueRotations> {
    let root = SeededRng::new(options.seed);
    let heads = (0..p.num_kv_heads)
        .map(|h| {
            let stream = 1 + (block * p.num_kv_heads + h) as u64;
            let seed = root.fork(stream).next_u64();
            Rotation::new(options.kind, p.head_dim, seed)
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(ValueRotations {
        heads,
        head_dim: p.head_dim,
        groups: p.num_heads / p.num_kv_heads.max(1),
    })
}

fn update_linear(
    model: &mut LlamaModel,
    name: &str,
    side: Side,
    gamma: Option<&Array1<f64>>,
    q: Option<&Rotation>,
    r2: Option<(&ValueRotations, HeadSide)>,
    report: &mut CompressReport,
) -> Result<()> {
    let device = model.device().clone();
    let linear = model
        .linear_mut(name)
        .ok_or_else(|| crate::Error::NotObserved {
            layer: name.to_string(),
        })?;
    let mut w = to_f64(&linear.op().dense_weight()?)?;
    let mut bias = linear.op().bias().map(to_vec).transpose()?;
    match side {
        Side::Reads => {
            if let Some(g) = gamma {
                w *= &g.view().insert_axis(ndarray::Axis(0));
            }
            if let Some(q) = q {
                q.apply(w.view_mut())?;
            }
        }
        Side::Writes => {
            if let Some(q) = q {
                // Qᵀ W = (Wᵀ Q)ᵀ: rotate the columns.
                q.apply(w.view_mut().reversed_axes())?;
                if let Some(b) = bias.as_mut() {
                    q.apply(row_view(b))?;
                }
            }
        }
    }
    if let Some((r, head_side)) = r2 {
        let hd = r.head_dim;
        match head_side {
            HeadSide::Values => {
                for (h, rot) in r.heads.iter().enumerate() {
                    let rows = h * hd..(h + 1) * hd;
                    rot.apply(w.slice_mut(s![rows.clone(), ..]).reversed_axes())?;
                    if let Some(b) = bias.as_mut() {
                        let mut head = b.slice_mut(s![rows]).insert_axis(ndarray::Axis(0));
                        rot.apply(head.view_mut())?;
                    }
                }
            }
            HeadSide::Output => {
                let query_heads = r.heads.len() * r.groups;
                for g in 0..query_heads {
                    let rot = &r.heads[g / r.groups];
                    rot.apply(w.slice_mut(s![.., g * hd..(g + 1) * hd]))?;
                }
            }
        }
    }
    let weight = to_tensor(&w, &device)?;
    let bias = bias
        .map(|b| Tensor::from_vec(b.mapv(|v| v as f32).to_vec(), b.len(), &device))
        .transpose()?;
    report.replace(format!("{name}.weight"), &weight)?;
    if let Some(b) = &bias {
        report.replace(format!("{name}.bias"), b)?;
    }
    linear.set_op(Arc::new(DenseLinear::new(weight, bias)?))?;
    Ok(())
}

fn row_view(v: &mut Array1<f64>) -> ArrayViewMut2<'_, f64> {
    v.view_mut().insert_axis(ndarray::Axis(0))
}

fn to_f64(t: &Tensor) -> Result<Array2<f64>> {
    Ok(to_matrix(t)?.mapv(f64::from))
}

fn to_vec(t: &Tensor) -> Result<Array1<f64>> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(v.into_iter().map(f64::from).collect())
}

fn to_tensor(w: &Array2<f64>, device: &candle_core::Device) -> Result<Tensor> {
    let data: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    Ok(Tensor::from_vec(data, w.dim(), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_models::llama::{LlamaParams, Naming, RopeLayout};
    use tensorpress_models::weights::{LoadOptions, MemoryWeights};

    fn params(tied: bool) -> LlamaParams {
        LlamaParams {
            vocab_size: 40,
            hidden_size: 48,
            intermediate_size: 96,
            num_layers: 2,
            num_heads: 6,
            num_kv_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: tied,
            rope_layout: RopeLayout::Interleaved,
            bos_token_id: None,
            eos_token_id: None,
            add_bos: false,
        }
    }

    /// A random model with random norms and (if `biases`) random biases.
    fn model(tied: bool, biases: bool) -> LlamaModel {
        let p = params(tied);
        let w = MemoryWeights::random_llama(&p, 3);
        let mut m =
            LlamaModel::load(&w, p.clone(), Naming::HuggingFace, LoadOptions::default()).unwrap();
        let mut rng = SeededRng::new(4);
        let dev = m.device().clone();
        let norm = |rng: &mut SeededRng| {
            let v: Vec<f32> = (0..p.hidden_size)
                .map(|_| 0.5 + rng.uniform_f32() * 1.5)
                .collect();
            Tensor::from_vec(v, p.hidden_size, &dev).unwrap()
        };
        for b in 0..p.num_layers {
            m.set_block_norm(b, BlockNorm::Attention, norm(&mut rng))
                .unwrap();
            m.set_block_norm(b, BlockNorm::Ffn, norm(&mut rng)).unwrap();
        }
        m.set_norm_weight(norm(&mut rng)).unwrap();
        if biases {
            let names = m.linear_names();
            for name in names.iter().filter(|n| n.starts_with("model.")) {
                let l = m.linear_mut(name).unwrap();
                let w = l.op().dense_weight().unwrap();
                let out = w.dim(0).unwrap();
                let b: Vec<f32> = (0..out).map(|_| rng.normal_f32() * 0.1).collect();
                let b = Tensor::from_vec(b, out, &dev).unwrap();
                l.set_op(Arc::new(DenseLinear::new(w, Some(b)).unwrap()))
                    .unwrap();
            }
        }
        m
    }

    fn logits(m: &LlamaModel) -> Vec<f32> {
        let tokens: Vec<u32> = (0..20).map(|i| (i * 7 % 40) as u32).collect();
        m.logits(&tokens, 0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    #[test]
    fn folding_and_rotating_keep_the_logits() {
        for (tied, biases) in [(true, false), (false, true)] {
            let base = model(tied, biases);
            let want = logits(&base);
            let mut folded = base.clone();
            let mut report = CompressReport::new();
            fold_llama_norms(&mut folded, &mut report).unwrap();
            assert!(max_diff(&logits(&folded), &want) < 1e-4);
            // Norms and readers are recorded; writers are left alone.
            assert!(report
                .replaced
                .contains_key("model.layers.1.post_attention_layernorm.weight"));
            assert!(report
                .replaced
                .contains_key("model.layers.1.mlp.up_proj.weight"));
            assert!(!report
                .replaced
                .contains_key("model.layers.1.mlp.down_proj.weight"));
            for kind in [RotationKind::Hadamard, RotationKind::Orthogonal] {
                for rotate_values in [false, true] {
                    let mut m = base.clone();
                    let mut report = CompressReport::new();
                    let options = RotateOptions::default()
                        .kind(kind)
                        .seed(5)
                        .rotate_values(rotate_values);
                    rotate_llama(&mut m, &options, &mut report).unwrap();
                    let got = logits(&m);
                    assert!(max_diff(&got, &want) < 1e-4, "{kind} {rotate_values}");
                    // 7 linears and 2 norms per block, embedding, head, final norm.
                    let biases = if biases { 14 } else { 0 };
                    assert_eq!(report.replaced.len(), 2 * 9 + 3 + biases);
                    let v = to_f64(
                        &m.linear_mut("model.layers.0.self_attn.v_proj")
                            .unwrap()
                            .op()
                            .dense_weight()
                            .unwrap(),
                    )
                    .unwrap();
                    let recorded = &report.replaced["model.layers.0.self_attn.v_proj.weight"];
                    assert_eq!(recorded.shape(), &[16, 48]);
                    assert!(recorded
                        .iter()
                        .zip(v.iter())
                        .all(|(&a, &b)| f64::from(a) == b));
                }
            }
        }
    }

    #[test]
    fn rotation_changes_the_weights_and_depends_on_the_seed() {
        let base = model(true, false);
        let run = |seed| {
            let mut m = base.clone();
            let mut report = CompressReport::new();
            rotate_llama(&mut m, &RotateOptions::default().seed(seed), &mut report).unwrap();
            report
        };
        let (a, b, again) = (run(1), run(2), run(1));
        let name = "model.layers.0.mlp.down_proj.weight";
        assert_eq!(a.replaced[name], again.replaced[name]);
        assert_ne!(a.replaced[name], b.replaced[name]);
        // Norms are ones afterwards.
        assert!(a.replaced["model.norm.weight"].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn a_hidden_size_without_hadamard_is_a_typed_error() {
        let mut p = params(true);
        p.hidden_size = 36;
        p.head_dim = 6;
        let w = MemoryWeights::random_llama(&p, 3);
        let mut m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
        let err = rotate_llama(
            &mut m,
            &RotateOptions::default(),
            &mut CompressReport::new(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                crate::Error::Quant(tensorpress_quant_core::Error::NoHadamard { n: 36 })
            ),
            "{err}"
        );
        // A random orthogonal rotation works at any size.
        let want = logits(&m);
        let options = RotateOptions::default().kind(RotationKind::Orthogonal);
        rotate_llama(&mut m, &options, &mut CompressReport::new()).unwrap();
        assert!(max_diff(&logits(&m), &want) < 1e-4);
    }
}
