//! BERT encoders (MiniLM, all-MiniLM-L6-v2 and kin) and sentence embeddings:
//! mean pooling over the tokens, then L2 normalization, as sentence-transformers does.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use tensorpress_io::config::{BertConfig, HiddenAct};

use crate::linear::{DenseLinear, Linear, Observer};
use crate::tokenizer::TextTokenizer;
use crate::weights::{LoadOptions, Loader, WeightSource};
use crate::{Error, Result};

/// Hyper-parameters of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertParams {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Learned positions.
    pub max_position_embeddings: usize,
    /// Token-type (segment) embeddings.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl BertParams {
    /// From an HF `config.json` (only `hidden_act = gelu`, exact erf GELU, is supported).
    pub fn from_config(c: &BertConfig) -> Result<Self> {
        if c.hidden_act != HiddenAct::Gelu {
            return Err(Error::Config {
                field: "hidden_act",
                reason: format!("{:?} is not supported (only exact gelu)", c.hidden_act),
            });
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::Config {
                field: "num_attention_heads",
                reason: format!(
                    "hidden size {} does not split into {} heads",
                    c.hidden_size, c.num_attention_heads
                ),
            });
        }
        Ok(BertParams {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_layers: c.num_hidden_layers,
            num_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
            layer_norm_eps: c.layer_norm_eps,
        })
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

#[derive(Debug, Clone)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder with observable, swappable linear layers.
#[derive(Debug, Clone)]
pub struct BertModel {
    params: BertParams,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<BertLayer>,
    device: Device,
    observer: Option<Arc<dyn Observer>>,
}

impl BertModel {
    /// Builds the encoder from `source` (HF names, optionally prefixed `bert.`).
    pub fn load(
        source: &dyn WeightSource,
        params: BertParams,
        options: LoadOptions,
    ) -> Result<Self> {
        let prefix = if source.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut loader = Loader::new(source, options);
        let p = &params;
        let h = p.hidden_size;
        let norm = |loader: &mut Loader, name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: loader.load(&format!("{prefix}{name}.weight"), &[h])?,
                bias: loader.load(&format!("{prefix}{name}.bias"), &[h])?,
            })
        };
        let word_embeddings = loader.load(
            &format!("{prefix}embeddings.word_embeddings.weight"),
            &[p.vocab_size, h],
        )?;
        let position_embeddings = loader.load(
            &format!("{prefix}embeddings.position_embeddings.weight"),
            &[p.max_position_embeddings, h],
        )?;
        let token_type_embeddings = loader.load(
            &format!("{prefix}embeddings.token_type_embeddings.weight"),
            &[p.type_vocab_size, h],
        )?;
        let embed_norm = norm(&mut loader, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(p.num_layers);
        for l in 0..p.num_layers {
            let base = format!("encoder.layer.{l}");
            let linear = |loader: &mut Loader, module: &str, out_f: usize, in_f: usize| {
                let name = format!("{base}.{module}");
                let w = loader.load(&format!("{prefix}{name}.weight"), &[out_f, in_f])?;
                let b = loader.load(&format!("{prefix}{name}.bias"), &[out_f])?;
                Ok::<_, Error>(Linear::new(name, Arc::new(DenseLinear::new(w, Some(b))?)))
            };
            let query = linear(&mut loader, "attention.self.query", h, h)?;
            let key = linear(&mut loader, "attention.self.key", h, h)?;
            let value = linear(&mut loader, "attention.self.value", h, h)?;
            let attn_out = linear(&mut loader, "attention.output.dense", h, h)?;
            let intermediate = linear(&mut loader, "intermediate.dense", p.intermediate_size, h)?;
            let output = linear(&mut loader, "output.dense", h, p.intermediate_size)?;
            let attn_norm = norm(&mut loader, &format!("{base}.attention.output.LayerNorm"))?;
            let out_norm = norm(&mut loader, &format!("{base}.output.LayerNorm"))?;
            layers.push(BertLayer {
                query,
                key,
                value,
                attn_out,
                attn_norm,
                intermediate,
                output,
                out_norm,
            });
        }
        let device = loader.device().clone();
        Ok(BertModel {
            params,
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embed_norm,
            layers,
            device,
            observer: None,
        })
    }

    /// Loads an HF folder: `config.json` and `model.safetensors`.
    pub fn from_hf_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let params = BertParams::from_config(&config)?;
        let weights = crate::lossless::open_weights(dir)?;
        BertModel::load(&weights, params, options)
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &BertParams {
        &self.params
    }

    /// Every linear layer in execution order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    &l.query,
                    &l.key,
                    &l.value,
                    &l.attn_out,
                    &l.intermediate,
                    &l.output,
                ]
            })
            .collect()
    }

    /// The linear layer called `name`, for swapping its op.
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [
                    &mut l.query,
                    &mut l.key,
                    &mut l.value,
                    &mut l.attn_out,
                    &mut l.intermediate,
                    &mut l.output,
                ]
            })
            .find(|l| l.name() == name)
    }

    /// Attaches (or with `None` detaches) an observer of linear-layer inputs.
    pub fn set_observer(&mut self, observer: Option<Arc<dyn Observer>>) {
        self.observer = observer;
    }

    /// Token states of the last layer for one sequence, `[tokens, hidden]`.
    pub fn forward(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.forward_merging(ids, 0)?.0)
    }

    /// The forward pass with ToMe token merging
    /// ([`tensorpress_kvcache::tome`]): after each layer's attention, the `r`
    /// most similar token pairs (by the layer's keys averaged over heads)
    /// merge, `[CLS]` excepted, and attention adds `log(size)` to each key's
    /// logits. Returns the last layer's states of the remaining tokens and
    /// their sizes (input tokens each stands for). `r = 0` is [`forward`].
    ///
    /// [`forward`]: BertModel::forward
    pub fn forward_merging(&self, ids: &[u32], r: usize) -> Result<(Tensor, Vec<f32>)> {
        let p = &self.params;
        let mut t = ids.len();
        if t == 0 || t > p.max_position_embeddings {
            return Err(Error::Config {
                field: "tokens",
                reason: format!(
                    "{t} tokens; a sequence needs 1 to {} tokens",
                    p.max_position_embeddings
                ),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= p.vocab_size) {
            return Err(Error::TokenOutOfRange {
                id: bad,
                vocab_size: p.vocab_size,
            });
        }
        let obs = self.observer.as_deref();
        let idx = Tensor::from_slice(ids, t, &self.device)?;
        let words = self.word_embeddings.index_select(&idx, 0)?;
        let pos = self.position_embeddings.narrow(0, 0, t)?;
        let types = self.token_type_embeddings.narrow(0, 0, 1)?;
        let x = words.add(&pos)?.broadcast_add(&types)?;
        let mut x = layer_norm(&x, &self.embed_norm, p.layer_norm_eps)?;
        let (nh, hd) = (p.num_heads, p.hidden_size / p.num_heads);
        let scale = 1.0 / (hd as f64).sqrt();
        let mut sizes = vec![1f32; t];
        for layer in &self.layers {
            let heads = |y: Tensor| -> Result<Tensor> {
                Ok(y.reshape((t, nh, hd))?.transpose(0, 1)?.contiguous()?)
            };
            let q = heads((layer.query.forward(&x, obs)? * scale)?)?;
            let k = heads(layer.key.forward(&x, obs)?)?;
            let v = heads(layer.value.forward(&x, obs)?)?;
            let mut logits = q.matmul(&k.t()?)?;
            if r > 0 {
                // Proportional attention: a token of size s counts s times.
                let log_sizes: Vec<f32> = sizes.iter().map(|s| s.ln()).collect();
                let bias = Tensor::from_vec(log_sizes, (1, 1, t), &self.device)?;
                logits = logits.broadcast_add(&bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&logits)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(0, 1)?
                .reshape((t, p.hidden_size))?;
            let attn = layer.attn_out.forward(&ctx, obs)?;
            x = layer_norm(&(attn + &x)?, &layer.attn_norm, p.layer_norm_eps)?;
            if r > 0 && t > 1 {
                let metric = k.mean(0)?;
                let to_array = |y: &Tensor| -> Result<ndarray::Array2<f32>> {
                    let (rows, cols) = y.dims2()?;
                    let data = y.flatten_all()?.to_vec1::<f32>()?;
                    ndarray::Array2::from_shape_vec((rows, cols), data).map_err(|e| Error::Config {
                        field: "tokens",
                        reason: e.to_string(),
                    })
                };
                let merged = tensorpress_kvcache::tome::merge_tokens(
                    to_array(&x)?.view(),
                    to_array(&metric)?.view(),
                    &sizes,
                    r,
                    true,
                )?;
                t = merged.tokens.nrows();
                sizes = merged.sizes;
                let data: Vec<f32> = merged.tokens.iter().copied().collect();
                x = Tensor::from_vec(data, (t, p.hidden_size), &self.device)?;
            }
            let inter = layer.intermediate.forward(&x, obs)?.gelu_erf()?;
            let out = layer.output.forward(&inter, obs)?;
            x = layer_norm(&(out + &x)?, &layer.out_norm, p.layer_norm_eps)?;
        }
        Ok((x, sizes))
    }

    /// The L2-normalized embedding with ToMe merging `r` tokens per layer
    /// ([`forward_merging`](BertModel::forward_merging)): the size-weighted
    /// mean of the remaining tokens, which is the mean over the input tokens
    /// each stands for.
    pub fn embed_ids_merging(&self, ids: &[u32], r: usize) -> Result<Vec<f32>> {
        let (x, sizes) = self.forward_merging(ids, r)?;
        let total: f32 = sizes.iter().sum();
        let w = Tensor::from_vec(sizes.clone(), (1, sizes.len()), x.device())?;
        let pooled = (w.matmul(&x)? / f64::from(total))?.squeeze(0)?;
        let norm = pooled.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        let v = (pooled / f64::from(norm.max(1e-12)))?;
        Ok(v.to_vec1::<f32>()?)
    }

    /// The mean of the last layer's token states (sentence-transformers'
    /// mean pooling for one unpadded sequence), `[hidden]`.
    pub fn mean_pooled(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(self.forward(ids)?.mean(0)?)
    }

    /// The L2-normalized mean-pooled embedding, `[hidden]`.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let pooled = self.mean_pooled(ids)?;
        let norm = pooled.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        // sentence-transformers normalizes with F.normalize: x / max(‖x‖, 1e-12).
        let v = (pooled / f64::from(norm.max(1e-12)))?;
        Ok(v.to_vec1::<f32>()?)
    }
}

fn layer_norm(x: &Tensor, n: &LayerNorm, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::layer_norm(
        x, &n.weight, &n.bias, eps as f32,
    )?)
}

/// Sentence embeddings: a BERT encoder, its tokenizer and the maximum length.
#[derive(Debug, Clone)]
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: TextTokenizer,
    max_seq_length: usize,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, and `sentence_bert_config.json` for the maximum length
    /// (default 512).
    pub fn from_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        let model = BertModel::from_hf_dir(dir, options)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let st_path = dir.join("sentence_bert_config.json");
        let mut max_seq_length = model.params().max_position_embeddings;
        if st_path.exists() {
            let text = std::fs::read_to_string(&st_path).map_err(|source| Error::File {
                path: st_path.clone(),
                source,
            })?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
                field: "sentence_bert_config.json",
                reason: e.to_string(),
            })?;
            if let Some(m) = v.get("max_seq_length").and_then(serde_json::Value::as_u64) {
                max_seq_length = (m as usize).min(max_seq_length);
            }
        }
        Ok(SentenceEncoder {
            model,
            tokenizer,
            max_seq_length,
        })
    }

    /// The encoder.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// Mutable access to the encoder, e.g. to swap linear layers.
    pub fn model_mut(&mut self) -> &mut BertModel {
        &mut self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Token ids of `text` with `[CLS]`/`[SEP]`, truncated to the maximum length
    /// (keeping the final `[SEP]`, as the HF tokenizer's truncation does).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_with_special(text)?;
        if ids.len() > self.max_seq_length {
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_seq_length);
            if let Some(end) = ids.last_mut() {
                *end = last;
            }
        }
        Ok(ids)
    }

    /// Normalized sentence embeddings, one per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        texts
            .iter()
            .map(|t| self.model.embed_ids(&self.tokenize(t)?))
            .collect()
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
