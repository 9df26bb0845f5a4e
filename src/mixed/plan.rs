//! What a profile gives: the knapsack input, plans applied to a model or
//! written as recipes, and the one-layer KL sensitivity.

use std::fmt::Write as _;

use candle_core::Tensor;
use tensorpress_models::eval::curvature::{kl_divergence, log_probs};
use tensorpress_models::llama::LlamaModel;
use tensorpress_sensitivity::{Choice, LayerChoices};

use super::{Measure, Profile};
use crate::{Error, Result};

impl Profile {
    /// The knapsack input: each layer's candidates with their bits and their
    /// cost under `measure`. Bit-operations are `params × bits × 16` (f16
    /// activations), for a BOPs budget.
    ///
    /// # Errors
    /// [`Error::Scheme`] when `measure` needs a Fisher the profile lacks.
    pub fn choices(&self, measure: Measure) -> Result<Vec<LayerChoices>> {
        if measure != Measure::OutputError && !self.has_fisher {
            return Err(Error::Scheme {
                scheme: "measure".into(),
                reason: "this profile has no Fisher: profile with a trainable model and \
                         fisher_windows > 0, or use the output-error measure"
                    .into(),
            });
        }
        Ok(self
            .layers
            .iter()
            .map(|l| {
                let params = (l.shape[0] * l.shape[1]) as u64;
                LayerChoices {
                    name: l.name.clone(),
                    params,
                    choices: l
                        .results
                        .iter()
                        .map(|r| Choice {
                            label: self.candidates[r.candidate].clone(),
                            bits: r.bits,
                            cost: match measure {
                                Measure::FisherOutput => r.fisher_output,
                                Measure::FisherWeight => r.fisher_weight,
                                Measure::OutputError => r.output_error,
                            },
                            bops: r.bits * 16.0,
                        })
                        .collect(),
                }
            })
            .collect())
    }

    /// The picks that give every layer candidate `candidate` (a uniform model).
    ///
    /// # Errors
    /// A layer the candidate does not apply to (or an index out of range).
    pub fn uniform(&self, candidate: usize) -> Result<Vec<usize>> {
        self.layers
            .iter()
            .map(|l| {
                l.results
                    .iter()
                    .position(|r| r.candidate == candidate)
                    .ok_or_else(|| Error::Scheme {
                        scheme: self.candidates.get(candidate).cloned().unwrap_or_default(),
                        reason: format!(
                            "candidate {candidate} does not apply to layer `{}`",
                            l.name
                        ),
                    })
            })
            .collect()
    }

    /// The candidate scheme of `pick` in layer `layer` (an index into
    /// [`layers`](Self::layers)).
    ///
    /// # Panics
    /// When either index is out of range.
    pub fn label(&self, layer: usize, pick: usize) -> &str {
        &self.candidates[self.layers[layer].results[pick].candidate]
    }

    /// Average bits per weight of `picks`.
    pub fn bits_per_weight(&self, picks: &[usize]) -> f64 {
        let (bits, params) = self
            .layers
            .iter()
            .zip(picks)
            .fold((0.0, 0.0), |(b, p), (l, &k)| {
                (b + l.results[k].bits, p + (l.shape[0] * l.shape[1]) as f64)
            });
        bits / params.max(1.0)
    }

    fn check_picks(&self, picks: &[usize]) -> Result<()> {
        let out_of_range = self
            .layers
            .iter()
            .zip(picks)
            .any(|(l, &k)| k >= l.results.len());
        if picks.len() != self.layers.len() || out_of_range {
            return Err(Error::Scheme {
                scheme: "plan".into(),
                reason: format!(
                    "a plan needs one pick per profiled layer ({} layers, got {} picks), \
                     each below the number of candidates that apply to its layer",
                    self.layers.len(),
                    picks.len()
                ),
            });
        }
        Ok(())
    }

    /// Swaps each layer's chosen dequantized weight into `model`.
    ///
    /// # Errors
    /// Wrong number of picks, weights not kept, a layer the model lacks.
    pub fn apply(&self, model: &mut LlamaModel, picks: &[usize]) -> Result<()> {
        self.check_picks(picks)?;
        for (layer, &k) in self.layers.iter().zip(picks) {
            let op = layer.results[k]
                .weight
                .clone()
                .ok_or_else(|| Error::Scheme {
                    scheme: "plan".into(),
                    reason: "the profile kept no weights: profile with keep_weights = true".into(),
                })?;
            let linear = model
                .linear_mut(&layer.name)
                .ok_or_else(|| Error::NotObserved {
                    layer: layer.name.clone(),
                })?;
            linear.set_op(op)?;
        }
        Ok(())
    }

    /// The plan as a recipe (TOML): the most used candidate as the scheme,
    /// one `[[override]]` per other candidate listing its layers. It parses
    /// with [`Recipe::from_toml_str`](crate::compress::Recipe::from_toml_str) into the
    /// options of [`compress_llama`](crate::compress::compress_llama).
    ///
    /// # Errors
    /// Wrong number of picks.
    pub fn recipe(&self, picks: &[usize], comment: &str) -> Result<String> {
        self.check_picks(picks)?;
        let chosen: Vec<usize> = self
            .layers
            .iter()
            .zip(picks)
            .map(|(l, &k)| l.results[k].candidate)
            .collect();
        let mut count = vec![0usize; self.candidates.len()];
        for &c in &chosen {
            count[c] += 1;
        }
        let main = (0..count.len()).max_by_key(|&k| count[k]).unwrap_or(0);
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "scheme = \"{}\"", self.candidates[main]);
        for (k, c) in self.candidates.iter().enumerate() {
            if k == main || count[k] == 0 {
                continue;
            }
            let _ = writeln!(out, "\n[[override]]\nscheme = \"{c}\"\nlayers = [");
            for (layer, _) in self.layers.iter().zip(&chosen).filter(|(_, &c)| c == k) {
                let _ = writeln!(out, "  \"{}\",", layer.name);
            }
            let _ = writeln!(out, "]");
        }
        Ok(out)
    }
}

impl Profile {
    /// The one-layer KL sensitivity: for each profiled layer, the mean KL
    /// divergence of `model`'s next-token distribution on `windows` when
    /// only that layer takes candidate `candidate` (from the database) and
    /// every other layer stays as in `model`. One forward pass per layer and
    /// window; `progress(done, total)` after each layer. NaN for a layer the
    /// candidate does not apply to.
    ///
    /// # Errors
    /// A candidate out of range, weights not kept, no windows, a forward error.
    pub fn one_layer_kl(
        &self,
        model: &LlamaModel,
        candidate: usize,
        windows: &[Vec<u32>],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f64>> {
        if candidate >= self.candidates.len() {
            return Err(Error::Scheme {
                scheme: "candidate".into(),
                reason: format!(
                    "candidate {candidate} is out of range: the profile has {}",
                    self.candidates.len()
                ),
            });
        }
        if windows.is_empty() {
            return Err(Error::NoCalibration);
        }
        let reference: Vec<Tensor> = windows
            .iter()
            .map(|w| log_probs(model, w))
            .collect::<tensorpress_models::Result<_>>()?;
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let Some(result) = layer.results.iter().find(|r| r.candidate == candidate) else {
                // The candidate does not apply to this layer.
                out.push(f64::NAN);
                progress(i + 1, self.layers.len());
                continue;
            };
            let op = result.weight.clone().ok_or_else(|| Error::Scheme {
                scheme: "profile".into(),
                reason: "the profile kept no weights: profile with keep_weights = true".into(),
            })?;
            let mut m = model.clone();
            m.linear_mut(&layer.name)
                .ok_or_else(|| Error::NotObserved {
                    layer: layer.name.clone(),
                })?
                .set_op(op)?;
            let mut kl = 0.0;
            for (w, r) in windows.iter().zip(&reference) {
                kl += kl_divergence(&m, w, r)?;
            }
            out.push(kl / windows.len() as f64);
            progress(i + 1, self.layers.len());
        }
        Ok(out)
    }
}
