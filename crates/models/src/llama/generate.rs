//! Text generation: a prompt through the KV cache, then one token at a time,
//! chosen greedily or by temperature and nucleus (top-p) sampling.

use std::time::Instant;

use candle_core::Tensor;
use tensorpress_tensor::SeededRng;

use super::{DecodeCache, LlamaModel};
use crate::{Error, Result};

/// How the next token is chosen from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `0` picks the most likely token (greedy).
    pub temperature: f32,
    /// Nucleus sampling: draw from the smallest set of most likely tokens
    /// whose probabilities add up to at least `top_p` (Holtzman et al.,
    /// "The Curious Case of Neural Text Degeneration", 2019); `1` keeps all.
    pub top_p: f32,
    /// Seed of the random draws: the same seed, prompt and model give the
    /// same text.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Temperature and top-p sampling with `seed`.
    pub fn top_p(temperature: f32, top_p: f32, seed: u64) -> Self {
        Sampling {
            temperature,
            top_p,
            seed,
        }
    }

    /// Fails with [`Error::Config`] for a negative or non-finite temperature
    /// or a `top_p` outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Config {
                field: "temperature",
                reason: format!("{} is not a finite number ≥ 0", self.temperature),
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Config {
                field: "top_p",
                reason: format!("{} is not in (0, 1]", self.top_p),
            });
        }
        Ok(())
    }
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling::greedy()
    }
}

/// Picks tokens from logits: greedy, or temperature + top-p with a seeded RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: SeededRng,
    /// Scratch: (probability, token), reused across steps.
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for `sampling`.
    ///
    /// # Errors
    /// As [`Sampling::validate`].
    pub fn new(sampling: Sampling) -> Result<Self> {
        sampling.validate()?;
        Ok(Sampler {
            sampling,
            rng: SeededRng::new(sampling.seed),
            probs: Vec::new(),
        })
    }

    /// The next token for `logits` (`[vocab]`).
    ///
    /// # Errors
    /// [`Error::Config`] for empty logits or logits with NaN.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        if logits.is_empty() || logits.iter().any(|v| v.is_nan()) {
            return Err(Error::Config {
                field: "logits",
                reason: "empty, or NaN among them".into(),
            });
        }
        let argmax = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            });
        if self.sampling.temperature == 0.0 {
            return Ok(argmax.0 as u32);
        }
        let (max, inv_t) = (argmax.1, 1.0 / self.sampling.temperature);
        self.probs.clear();
        self.probs.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (((v - max) * inv_t).exp(), i as u32)),
        );
        let total: f32 = self.probs.iter().map(|p| p.0).sum();
        // Most likely first; ties by token id, so the draw is reproducible.
        self.probs
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep = nucleus(&self.probs, total * self.sampling.top_p);
        let kept: f32 = self.probs[..keep].iter().map(|p| p.0).sum();
        let mut u = self.rng.uniform_f32() * kept;
        for &(p, token) in &self.probs[..keep] {
            if u < p {
                return Ok(token);
            }
            u -= p;
        }
        Ok(self.probs[keep - 1].1)
    }
}

/// How many of the sorted `probs` (unnormalized) reach `mass`: at least one.
fn nucleus(probs: &[(f32, u32)], mass: f32) -> usize {
    let mut sum = 0.0f32;
    for (i, p) in probs.iter().enumerate() {
        sum += p.0;
        if sum >= mass {
            return i + 1;
        }
    }
    probs.len().max(1)
}

/// What [`generate`] produced, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens (the stop token, if one ended the text, is included).
    pub tokens: Vec<u32>,
    /// Whether a stop token ended the generation (rather than the token limit).
    pub stopped: bool,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seconds to process the prompt (up to the first new token's logits).
    pub prompt_seconds: f64,
    /// Seconds for the remaining new tokens.
    pub decode_seconds: f64,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(f64::MIN_POSITIVE)
    }

    /// New tokens per second after the first (each one a forward pass).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_seconds.max(f64::MIN_POSITIVE)
    }
}

/// Generates up to `max_tokens` tokens after `prompt` (which holds the BOS
/// token if the model wants one): the prompt in one pass through the KV
/// cache, then one pass per token. Stops after a token in `stop` (typically
/// the model's EOS). `on_token` sees each new token as it comes and may
/// return `false` to stop early.
///
/// # Errors
/// [`Error::Config`] for an empty prompt or one that, with `max_tokens`,
/// exceeds the model's context; errors of the forward pass.
pub fn generate(
    model: &LlamaModel,
    prompt: &[u32],
    max_tokens: usize,
    sampling: Sampling,
    stop: &[u32],
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    generate_with(
        model,
        DecodeCache::new(),
        prompt,
        max_tokens,
        sampling,
        stop,
        on_token,
    )
}

/// [`generate`] with the keys and values kept in `cache` (an empty
/// [`DecodeCache::compressed`] for a KIVI or int8 cache; tokens already in it
/// are the context the prompt continues).
///
/// # Errors
/// As [`generate`].
pub fn generate_with(
    model: &LlamaModel,
    mut cache: DecodeCache,
    prompt: &[u32],
    max_tokens: usize,
    sampling: Sampling,
    stop: &[u32],
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(sampling)?;
    let context = model.params().max_position_embeddings;
    if prompt.is_empty() || cache.len() + prompt.len() + max_tokens > context {
        return Err(Error::Config {
            field: "prompt",
            reason: format!(
                "{} prompt tokens + {max_tokens} new ones must be at least one and fit the \
                 context of {context}",
                prompt.len()
            ),
        });
    }
    let mut out = Generation {
        tokens: Vec::with_capacity(max_tokens),
        stopped: false,
        prompt_tokens: prompt.len(),
        prompt_seconds: 0.0,
        decode_seconds: 0.0,
    };
    if max_tokens == 0 {
        return Ok(out);
    }
    let start = Instant::now();
    let mut logits = model.decode(&mut cache, prompt)?;
    out.prompt_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    loop {
        let token = sampler.sample(&to_vec(&logits)?)?;
        out.tokens.push(token);
        let go_on = on_token(token);
        if stop.contains(&token) {
            out.stopped = true;
            break;
        }
        if !go_on || out.tokens.len() == max_tokens {
            break;
        }
        logits = model.decode(&mut cache, &[token])?;
    }
    out.decode_seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

fn to_vec(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit() {
        let mut s = Sampler::new(Sampling::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 2.9]).unwrap(), 1);
    }

    #[test]
    fn tiny_top_p_is_greedy_and_full_top_p_reaches_every_token() {
        let logits = [1.0f32, 1.5, 0.5, 1.2];
        let mut narrow = Sampler::new(Sampling::top_p(1.0, 1e-6, 3)).unwrap();
        for _ in 0..50 {
            assert_eq!(narrow.sample(&logits).unwrap(), 1);
        }
        let mut wide = Sampler::new(Sampling::top_p(1.0, 1.0, 3)).unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[wide.sample(&logits).unwrap() as usize] += 1;
        }
        // Softmax of the logits: 0.222, 0.366, 0.135, 0.272 (± 4 σ ≈ 0.03).
        let want = [0.222, 0.366, 0.135, 0.272];
        for (n, w) in seen.iter().zip(want) {
            assert!((*n as f64 / 4000.0 - w).abs() < 0.03, "{seen:?}");
        }
    }

    #[test]
    fn top_p_drops_the_tail() {
        // p = 0.6, 0.3, 0.1 at temperature 1: top_p 0.85 keeps two tokens.
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let mut s = Sampler::new(Sampling::top_p(1.0, 0.85, 9)).unwrap();
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            seen[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!(seen[1] > 400, "{seen:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::top_p(0.8, 0.9, seed)).unwrap();
            (0..20)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(4), draw(4));
        assert_ne!(draw(4), draw(5));
    }

    /// The parameters of [`tiny_model`]: 2 blocks, 4 query and 2 KV heads
    /// of 8.
    pub(crate) fn tiny_params() -> crate::llama::LlamaParams {
        use crate::llama::{LlamaParams, RopeLayout};
        LlamaParams {
            vocab_size: 40,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            rope_layout: RopeLayout::Halves,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            add_bos: true,
        }
    }

    /// A random two-block model (seed 11).
    pub(crate) fn tiny_model() -> LlamaModel {
        tiny_model_with(crate::weights::LoadOptions::default())
    }

    /// [`tiny_model`] loaded with `options` (trainable, for gradients).
    pub(crate) fn tiny_model_with(options: crate::weights::LoadOptions) -> LlamaModel {
        use crate::llama::Naming;
        use crate::weights::MemoryWeights;
        let params = tiny_params();
        let weights = MemoryWeights::random_llama(&params, 11);
        LlamaModel::load(&weights, params, Naming::HuggingFace, options).unwrap()
    }

    #[test]
    fn greedy_generation_follows_the_full_forward_pass() {
        let model = tiny_model();
        let prompt = [1u32, 7, 9, 13];
        let mut seen = Vec::new();
        let g = generate(&model, &prompt, 6, Sampling::greedy(), &[], &mut |t| {
            seen.push(t);
            true
        })
        .unwrap();
        assert_eq!(g.tokens, seen);
        assert_eq!((g.tokens.len(), g.stopped, g.prompt_tokens), (6, false, 4));
        // Each token is the argmax of the logits of the whole sequence so far.
        let mut seq = prompt.to_vec();
        for &t in &g.tokens {
            let logits = model.logits(&seq, seq.len() - 1).unwrap();
            let want = to_vec(&logits).unwrap();
            let best = (0..want.len())
                .max_by(|&a, &b| want[a].total_cmp(&want[b]))
                .unwrap();
            assert_eq!(t, best as u32);
            seq.push(t);
        }
    }

    /// Token-by-token decoding through compressed caches takes the fused
    /// attention path (`KvCache::attend`); it must give the plain cache's
    /// logits (f32 storage) or close to them (KIVI-8 with its codes in use).
    #[test]
    fn one_token_steps_attend_on_the_compressed_storage() {
        use std::sync::Arc;
        use tensorpress_kvcache::{F32Cache, KiviCache, KiviConfig, KvCache};
        let model = tiny_model();
        let tokens: Vec<u32> = (0..40).map(|i| (i * 11 + 3) % 40).collect();
        let run = |mut cache: DecodeCache| -> Vec<Vec<f32>> {
            tokens
                .iter()
                .map(|&t| to_vec(&model.decode(&mut cache, &[t]).unwrap()).unwrap())
                .collect()
        };
        let plain = run(DecodeCache::new());
        let f32c = run(DecodeCache::compressed(Arc::new(|_, h, d| {
            Ok(Box::new(F32Cache::new(h, d)) as Box<dyn KvCache>)
        })));
        let kivi = run(DecodeCache::compressed(Arc::new(|_, h, d| {
            let c = KiviCache::new(h, d, KiviConfig::new(8).group(4).residual(8))?;
            Ok(Box::new(c) as Box<dyn KvCache>)
        })));
        let gap = |a: &[Vec<f32>], b: &[Vec<f32>]| {
            a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(gap(&plain, &f32c) < 1e-4, "{}", gap(&plain, &f32c));
        let g = gap(&plain, &kivi);
        assert!(g > 0.0 && g < 0.05, "{g}");
    }

    #[test]
    fn generation_stops_at_a_stop_token_or_when_asked() {
        let model = tiny_model();
        let prompt = [1u32, 5, 6];
        let free = generate(&model, &prompt, 5, Sampling::greedy(), &[], &mut |_| true).unwrap();
        let stop = [free.tokens[1]];
        let g = generate(&model, &prompt, 5, Sampling::greedy(), &stop, &mut |_| true).unwrap();
        let at = free.tokens.iter().position(|t| *t == stop[0]).unwrap();
        assert!(g.stopped);
        assert_eq!(g.tokens, free.tokens[..=at]);
        let g = generate(&model, &prompt, 5, Sampling::greedy(), &[], &mut |_| false).unwrap();
        assert_eq!(g.tokens.len(), 1);
        let too_long = generate(&model, &prompt, 62, Sampling::greedy(), &[], &mut |_| true);
        assert!(matches!(
            too_long,
            Err(Error::Config {
                field: "prompt",
                ..
            })
        ));
        assert!(generate(&model, &[], 3, Sampling::greedy(), &[], &mut |_| true).is_err());
    }

    #[test]
    fn bad_settings_and_logits_are_refused() {
        assert!(Sampler::new(Sampling::top_p(-1.0, 0.9, 0)).is_err());
        assert!(Sampler::new(Sampling::top_p(1.0, 0.0, 0)).is_err());
        assert!(Sampler::new(Sampling::top_p(1.0, 1.5, 0)).is_err());
        assert!(Sampler::new(Sampling::top_p(f32::NAN, 0.9, 0)).is_err());
        let mut s = Sampler::new(Sampling::greedy()).unwrap();
        assert!(s.sample(&[]).is_err());
        assert!(s.sample(&[1.0, f32::NAN]).is_err());
    }
}
