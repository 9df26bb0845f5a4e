//! Activation sparsity in the gated FFN of a Llama-family model, applied in
//! the runner through [`FfnHook`]: the gate activation `a_gate = silu(x W_gateᵀ)`
//! is zeroed where it matters least, which zeroes the matching inputs of the
//! down projection (and the rows of the up projection a sparse kernel skips).
//!
//! Rules, each at a target sparsity calibrated on text:
//! - [`FfnSparsity::Chess`]: CHESS's channel-wise thresholds (He et al., 2024):
//!   an entry is dropped when `|a_gate,i| · E|a_up,i| ≤ τ`, the error it adds
//!   to `a_gate ⊙ a_up` with `a_up` replaced by its mean magnitude on the
//!   calibration tokens; one `τ` per layer, the target quantile of that score,
//!   so each channel gets its own threshold `τ / E|a_up,i|`;
//! - [`FfnSparsity::Cats`]: CATS (Lee et al., 2024), one threshold per layer on
//!   `|a_gate|`, the target quantile of its calibration distribution;
//! - [`FfnSparsity::TopK`]: per token, keep the `k` largest `|a_gate|`;
//! - [`FfnSparsity::ChessPlus`]: CHESS in the FFN plus its selective
//!   sparsification of attention (He et al., 2024, the authors' "CHESS+"):
//!   the inputs of the query and output projections are thresholded too, one
//!   threshold per layer and point (the target quantile of `|x|`), while keys
//!   and values keep the dense input — they are cached and reused by every
//!   later token, so an error there persists.
//!
//! [`FfnSparsityHook`] applies a rule and counts what it did: the realized
//! sparsity of each layer and its dead-neuron rate (the share of channels
//! never active over the text, as the AP paper measures it).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tensorpress::activation::{calibrate_ffn, FfnSparsity, FfnSparsityHook};
//! # fn main() -> tensorpress::Result<()> {
//! # let mut model: tensorpress::models::llama::LlamaModel = todo!();
//! # let windows: Vec<Vec<u32>> = vec![];
//! let stats = calibrate_ffn(&mut model, &windows, 4096)?;
//! let hook = Arc::new(FfnSparsityHook::new(&stats, FfnSparsity::Chess(0.5))?);
//! model.set_ffn_hook(Some(hook.clone()));
//! // … evaluate …
//! for (block, layer) in hook.report().iter().enumerate() {
//!     println!("block {block}: {:.1} % zeros", 100.0 * layer.sparsity);
//! }
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, D};
use tensorpress_models::llama::{FfnHook, LlamaModel};

use crate::{Error, Result};

/// An activation-sparsity rule and its target: the fraction of gate
/// activations to zero, in `(0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FfnSparsity {
    /// CHESS channel-wise thresholds.
    Chess(f64),
    /// CATS: one threshold per layer.
    Cats(f64),
    /// Keep the largest `(1 − s) · intermediate` entries of each token.
    TopK(f64),
    /// CHESS in the FFN, and per-layer thresholds on the inputs of the query
    /// and output projections at the same target.
    ChessPlus(f64),
}

impl FfnSparsity {
    /// The target sparsity.
    pub fn target(&self) -> f64 {
        match *self {
            FfnSparsity::Chess(s)
            | FfnSparsity::Cats(s)
            | FfnSparsity::TopK(s)
            | FfnSparsity::ChessPlus(s) => s,
        }
    }
}

/// What [`calibrate_ffn`] records per block.
#[derive(Debug, Clone, Default)]
pub struct FfnBlockStats {
    /// `|a_gate|` of the recorded tokens, `[tokens × intermediate]` row-major.
    pub gate_abs: Vec<f32>,
    /// Mean `|a_up|` per channel over every calibration token.
    pub up_abs_mean: Vec<f32>,
    /// Tokens recorded in `gate_abs`.
    pub tokens: usize,
    /// `|h|` at the query projection's input, for the first
    /// [`ATTENTION_TOKENS`] tokens, `[tokens × hidden]` row-major.
    pub query_abs: Vec<f32>,
    /// `|attn|` at the output projection's input, same tokens.
    pub output_abs: Vec<f32>,
}

/// Tokens per block whose attention inputs [`calibrate_ffn`] records (a
/// per-layer quantile needs far fewer samples than per-channel ones).
pub const ATTENTION_TOKENS: usize = 512;

/// Calibration distributions of every block's FFN activations.
#[derive(Debug, Clone)]
pub struct FfnStats {
    /// One entry per block.
    pub blocks: Vec<FfnBlockStats>,
    /// Channels per block (`intermediate_size`).
    pub intermediate: usize,
}

#[derive(Debug)]
struct Recorder {
    max_tokens: usize,
    blocks: Mutex<Vec<(FfnBlockStats, Vec<f64>, usize)>>,
}

fn hook_error(e: impl std::fmt::Display) -> tensorpress_models::Error {
    tensorpress_models::Error::Observer {
        layer: "mlp".into(),
        source: e.to_string().into(),
    }
}

impl Recorder {
    /// Appends `|x|` of up to [`ATTENTION_TOKENS`] tokens to the block's
    /// `field` (`query_abs` or `output_abs`).
    fn record_attention(
        &self,
        block: usize,
        x: &Tensor,
        field: fn(&mut FfnBlockStats) -> &mut Vec<f32>,
    ) -> tensorpress_models::Result<()> {
        let width = x.dim(D::Minus1)?;
        let flat = x.abs()?.flatten_to(D::Minus2)?;
        let mut blocks = self.blocks.lock().map_err(hook_error)?;
        if blocks.len() <= block {
            blocks.resize_with(block + 1, Default::default);
        }
        let values = field(&mut blocks[block].0);
        let room = (ATTENTION_TOKENS * width).saturating_sub(values.len()) / width.max(1);
        let take = room.min(flat.dim(0)?);
        if take > 0 {
            values.extend(flat.narrow(0, 0, take)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(())
    }
}

impl FfnHook for Recorder {
    fn query_input(&self, block: usize, h: &Tensor) -> tensorpress_models::Result<Tensor> {
        self.record_attention(block, h, |s| &mut s.query_abs)?;
        Ok(h.clone())
    }

    fn attention_output(&self, block: usize, attn: &Tensor) -> tensorpress_models::Result<Tensor> {
        self.record_attention(block, attn, |s| &mut s.output_abs)?;
        Ok(attn.clone())
    }

    fn gate(&self, block: usize, gate: &Tensor, up: &Tensor) -> tensorpress_models::Result<Tensor> {
        let n = gate.dim(D::Minus1)?;
        let g = gate.abs()?.flatten_to(D::Minus2)?;
        let tokens = g.dim(0)?;
        let up_sum: Vec<f32> = up
            .abs()?
            .flatten_to(D::Minus2)?
            .sum(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        let mut blocks = self.blocks.lock().map_err(hook_error)?;
        if blocks.len() <= block {
            blocks.resize_with(block + 1, Default::default);
        }
        let (stats, sums, seen) = &mut blocks[block];
        if sums.len() != n {
            *sums = vec![0.0; n];
        }
        for (s, u) in sums.iter_mut().zip(&up_sum) {
            *s += f64::from(*u);
        }
        *seen += tokens;
        let room = self.max_tokens.saturating_sub(stats.tokens).min(tokens);
        if room > 0 {
            let rows: Vec<f32> = g.narrow(0, 0, room)?.flatten_all()?.to_vec1()?;
            stats.gate_abs.extend(rows);
            stats.tokens += room;
        }
        Ok(gate.clone())
    }
}

/// Runs `windows` through `model` and records every block's FFN activation
/// distributions (at most `max_tokens` tokens of `|a_gate|` per block; the
/// mean `|a_up|` from all of them). Any hook already attached is replaced
/// while calibrating and detached after.
///
/// # Errors
/// No windows, a forward error.
pub fn calibrate_ffn(
    model: &mut LlamaModel,
    windows: &[Vec<u32>],
    max_tokens: usize,
) -> Result<FfnStats> {
    if windows.is_empty() {
        return Err(Error::NoCalibration);
    }
    let recorder = Arc::new(Recorder {
        max_tokens,
        blocks: Mutex::new(Vec::new()),
    });
    model.set_ffn_hook(Some(recorder.clone()));
    let run = windows
        .iter()
        .try_for_each(|w| model.logits(w, w.len() - 1).map(|_| ()));
    model.set_ffn_hook(None);
    run?;
    let blocks = recorder
        .blocks
        .lock()
        .map_err(|_| Error::Scheme {
            scheme: "ffn calibration".into(),
            reason: "the recorder's lock is poisoned".into(),
        })?
        .drain(..)
        .map(|(mut stats, sums, seen)| {
            stats.up_abs_mean = sums
                .iter()
                .map(|s| (s / seen.max(1) as f64) as f32)
                .collect();
            stats
        })
        .collect();
    Ok(FfnStats {
        blocks,
        intermediate: model.params().intermediate_size,
    })
}

/// The `q`-quantile of `values` (the entry at index `floor(q · n)` in order).
fn quantile(mut values: Vec<f32>, q: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = ((q * values.len() as f64) as usize).min(values.len() - 1);
    let (_, v, _) = values.select_nth_unstable_by(k, f32::total_cmp);
    *v
}

impl FfnStats {
    /// Per-block, per-channel thresholds on `|a_gate|` for a threshold rule
    /// (CHESS or CATS): an entry is kept when `|a_gate,i| > t_i`.
    ///
    /// # Errors
    /// A target outside `(0, 1)`; [`FfnSparsity::TopK`], which has no thresholds.
    pub fn thresholds(&self, rule: FfnSparsity) -> Result<Vec<Vec<f32>>> {
        check_target(rule.target())?;
        let n = self.intermediate;
        self.blocks
            .iter()
            .map(|b| match rule {
                FfnSparsity::Cats(s) => Ok(vec![quantile(b.gate_abs.clone(), s); n]),
                FfnSparsity::Chess(s) | FfnSparsity::ChessPlus(s) => {
                    let scores: Vec<f32> = b
                        .gate_abs
                        .iter()
                        .enumerate()
                        .map(|(k, g)| g * b.up_abs_mean[k % n])
                        .collect();
                    let tau = quantile(scores, s);
                    Ok(b.up_abs_mean
                        .iter()
                        .map(|u| if *u > 0.0 { tau / u } else { f32::INFINITY })
                        .collect())
                }
                FfnSparsity::TopK(_) => Err(Error::Scheme {
                    scheme: "top-k".into(),
                    reason: "top-k keeps a count per token and has no thresholds".into(),
                }),
            })
            .collect()
    }
}

impl FfnStats {
    /// Per block, the thresholds on `|x|` at the query projection's input
    /// and at the output projection's input (CHESS's selective
    /// sparsification): the `target` quantile of each calibration
    /// distribution. An entry is kept when `|x| > t`.
    ///
    /// # Errors
    /// A target outside `(0, 1)`; stats recorded without attention inputs.
    pub fn attention_thresholds(&self, target: f64) -> Result<Vec<(f32, f32)>> {
        check_target(target)?;
        self.blocks
            .iter()
            .enumerate()
            .map(|(block, b)| {
                if b.query_abs.is_empty() || b.output_abs.is_empty() {
                    return Err(Error::Scheme {
                        scheme: "CHESS attention".into(),
                        reason: format!(
                            "block {block} has no recorded attention inputs: calibrate with calibrate_ffn"
                        ),
                    });
                }
                Ok((
                    quantile(b.query_abs.clone(), target),
                    quantile(b.output_abs.clone(), target),
                ))
            })
            .collect()
    }
}

fn check_target(s: f64) -> Result<()> {
    if s > 0.0 && s < 1.0 {
        Ok(())
    } else {
        Err(Error::Prune {
            layer: "mlp".into(),
            source: tensorpress_sparsity::Error::InvalidSparsity { sparsity: s },
        })
    }
}

/// What an [`FfnSparsityHook`] did to one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FfnLayerReport {
    /// Fraction of gate activations zeroed.
    pub sparsity: f64,
    /// Fraction of channels never active over the tokens seen (dead neurons).
    pub dead_rate: f64,
    /// Tokens seen.
    pub tokens: u64,
    /// Fraction of the query projection's inputs zeroed ([`FfnSparsity::ChessPlus`]; 0 otherwise).
    pub query_sparsity: f64,
    /// Fraction of the output projection's inputs zeroed ([`FfnSparsity::ChessPlus`]; 0 otherwise).
    pub output_sparsity: f64,
}

#[derive(Debug)]
enum Rule {
    /// Per block `[intermediate]` thresholds.
    Thresholds(Vec<Tensor>),
    /// Entries kept per token.
    TopK(usize),
}

/// An [`FfnHook`] that applies an activation-sparsity rule and counts, per
/// block and channel, how often each channel stayed active.
#[derive(Debug)]
pub struct FfnSparsityHook {
    rule: Rule,
    /// Per block: (tokens seen, active count per channel).
    counts: Mutex<Vec<(u64, Vec<u64>)>>,
    /// CHESS+: per block, the query-input and output-projection-input thresholds.
    attention: Option<Vec<(f32, f32)>>,
    /// Per block: [zeroed, seen] at the query input and at the output input.
    attention_counts: Mutex<Vec<[u64; 4]>>,
}

impl FfnSparsityHook {
    /// The hook for `rule`, with thresholds from `stats`.
    ///
    /// # Errors
    /// A target outside `(0, 1)`.
    pub fn new(stats: &FfnStats, rule: FfnSparsity) -> Result<Self> {
        check_target(rule.target())?;
        let rule_in = rule;
        let n = stats.intermediate;
        let rule = match rule {
            FfnSparsity::TopK(s) => Rule::TopK((((1.0 - s) * n as f64).round() as usize).max(1)),
            _ => Rule::Thresholds(
                stats
                    .thresholds(rule)?
                    .into_iter()
                    .map(|t| Tensor::from_vec(t, n, &candle_core::Device::Cpu))
                    .collect::<candle_core::Result<_>>()?,
            ),
        };
        let attention = match rule_in {
            FfnSparsity::ChessPlus(s) => Some(stats.attention_thresholds(s)?),
            _ => None,
        };
        Ok(FfnSparsityHook {
            rule,
            counts: Mutex::new(Vec::new()),
            attention,
            attention_counts: Mutex::new(Vec::new()),
        })
    }

    /// Zeroes `|x| ≤ t` (CHESS+ at one attention point) and counts it.
    fn threshold_attention(
        &self,
        block: usize,
        x: &Tensor,
        pick: fn((f32, f32)) -> f32,
        slot: usize,
    ) -> tensorpress_models::Result<Tensor> {
        let Some(thresholds) = &self.attention else {
            return Ok(x.clone());
        };
        let t = *thresholds
            .get(block)
            .ok_or_else(|| hook_error(format!("no attention thresholds for block {block}")))?;
        let keep = x.abs()?.gt(f64::from(pick(t)))?.to_dtype(x.dtype())?;
        let kept = keep.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? as u64;
        let n = keep.elem_count() as u64;
        let mut counts = self.attention_counts.lock().map_err(hook_error)?;
        if counts.len() <= block {
            counts.resize(block + 1, [0; 4]);
        }
        counts[block][slot] += n - kept;
        counts[block][slot + 1] += n;
        Ok((x * keep)?)
    }

    /// Per block: realized sparsity and dead-neuron rate so far.
    pub fn report(&self) -> Vec<FfnLayerReport> {
        let counts = match self.counts.lock() {
            Ok(c) => c.clone(),
            Err(_) => return Vec::new(),
        };
        let attention = self
            .attention_counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        counts
            .iter()
            .enumerate()
            .map(|(block, (tokens, active))| {
                let n = active.len().max(1) as f64;
                let kept: u64 = active.iter().sum();
                let a = attention.get(block).copied().unwrap_or([0; 4]);
                FfnLayerReport {
                    sparsity: 1.0 - kept as f64 / (*tokens as f64 * n).max(1.0),
                    dead_rate: active.iter().filter(|a| **a == 0).count() as f64 / n,
                    tokens: *tokens,
                    query_sparsity: a[0] as f64 / a[1].max(1) as f64,
                    output_sparsity: a[2] as f64 / a[3].max(1) as f64,
                }
            })
            .collect()
    }

    /// Forgets the counts (e.g. between calibration and evaluation).
    pub fn reset(&self) {
        if let Ok(mut c) = self.counts.lock() {
            c.clear();
        }
        if let Ok(mut c) = self.attention_counts.lock() {
            c.clear();
        }
    }
}

impl FfnHook for FfnSparsityHook {
    fn query_input(&self, block: usize, h: &Tensor) -> tensorpress_models::Result<Tensor> {
        self.threshold_attention(block, h, |t| t.0, 0)
    }

    fn attention_output(&self, block: usize, attn: &Tensor) -> tensorpress_models::Result<Tensor> {
        self.threshold_attention(block, attn, |t| t.1, 2)
    }

    fn gate(
        &self,
        block: usize,
        gate: &Tensor,
        _up: &Tensor,
    ) -> tensorpress_models::Result<Tensor> {
        let abs = gate.abs()?;
        let keep = match &self.rule {
            Rule::Thresholds(t) => {
                let t = t
                    .get(block)
                    .ok_or_else(|| hook_error(format!("no thresholds for block {block}")))?;
                abs.broadcast_gt(t)?
            }
            Rule::TopK(k) => {
                let (sorted, _) = abs.sort_last_dim(false)?;
                let n = sorted.dim(D::Minus1)?;
                let kth = sorted.narrow(D::Minus1, (*k).min(n) - 1, 1)?;
                abs.broadcast_ge(&kth)?
            }
        };
        let keep = keep.to_dtype(gate.dtype())?;
        let per_channel: Vec<f32> = keep
            .flatten_to(D::Minus2)?
            .sum(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        let tokens = keep.elem_count() / per_channel.len().max(1);
        let mut counts = self.counts.lock().map_err(hook_error)?;
        if counts.len() <= block {
            counts.resize_with(block + 1, || (0, vec![0; per_channel.len()]));
        }
        let (seen, active) = &mut counts[block];
        *seen += tokens as u64;
        for (a, c) in active.iter_mut().zip(&per_channel) {
            *a += *c as u64;
        }
        Ok((gate * keep)?)
    }
}
