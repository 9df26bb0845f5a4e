//! The Llama forward pass: RMSNorm, rotary embeddings, grouped-query attention,
//! SwiGLU, tied or separate output projection.

use std::sync::Arc;

use candle_core::{Device, Tensor, Var, D};

use super::cache::{BlockCache, DecodeCache};
use super::config::{LlamaParams, RopeLayout};
use super::hook::FfnHook;
use super::names::Naming;
use crate::linear::{DenseLinear, Linear, Observer};
use crate::weights::{LoadOptions, Loader, WeightSource};
use crate::{Error, Result};

/// One transformer block.
#[derive(Debug, Clone)]
pub struct LlamaBlock {
    index: usize,
    attn_norm: Tensor,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    ffn_norm: Tensor,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl LlamaBlock {
    /// The block's linear layers in execution order.
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.q_proj,
            &self.k_proj,
            &self.v_proj,
            &self.o_proj,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ]
    }

    /// The RMSNorm weight before attention (`input_layernorm`).
    pub fn attn_norm(&self) -> &Tensor {
        &self.attn_norm
    }

    /// The RMSNorm weight before the MLP (`post_attention_layernorm`).
    pub fn ffn_norm(&self) -> &Tensor {
        &self.ffn_norm
    }

    /// The weight of one of the block's norms.
    pub fn norm(&self, which: BlockNorm) -> &Tensor {
        match which {
            BlockNorm::Attention => &self.attn_norm,
            BlockNorm::Ffn => &self.ffn_norm,
        }
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }
}

/// One of the two RMSNorms of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockNorm {
    /// `input_layernorm`, before attention.
    Attention,
    /// `post_attention_layernorm`, before the MLP.
    Ffn,
}

impl BlockNorm {
    /// The Hugging Face module name of this norm in block `block`.
    pub fn module_name(self, block: usize) -> String {
        match self {
            BlockNorm::Attention => format!("model.layers.{block}.input_layernorm"),
            BlockNorm::Ffn => format!("model.layers.{block}.post_attention_layernorm"),
        }
    }
}

/// Cosine and sine tables of the rotary embedding, `[positions, head_dim / 2]`.
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(params: &LlamaParams, positions: usize, device: &Device) -> Result<Self> {
        let half = params.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                (1.0 / params
                    .rope_theta
                    .powf(2.0 * i as f64 / params.head_dim as f64)) as f32
            })
            .collect();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }
}

/// A Llama-family language model with observable, swappable linear layers.
#[derive(Debug, Clone)]
pub struct LlamaModel {
    params: LlamaParams,
    embed_tokens: Tensor,
    blocks: Vec<LlamaBlock>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    differentiable: bool,
    vars: Vec<(String, Var)>,
    observer: Option<Arc<dyn Observer>>,
    ffn_hook: Option<Arc<dyn FfnHook>>,
}

impl LlamaModel {
    /// Builds the model from `source`, whose tensors are named by `naming`.
    pub fn load(
        source: &dyn WeightSource,
        params: LlamaParams,
        naming: Naming,
        options: LoadOptions,
    ) -> Result<Self> {
        params.validate()?;
        let differentiable = options.trainable;
        let mut loader = Loader::new(source, options);
        let p = &params;
        let (h, i_sz) = (p.hidden_size, p.intermediate_size);
        let q_out = p.num_heads * p.head_dim;
        let kv_out = p.num_kv_heads * p.head_dim;

        let embed_name = naming.tensor("model.embed_tokens");
        let embed_tokens = loader.load(&embed_name, &[p.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(p.num_layers);
        for l in 0..p.num_layers {
            let prefix = format!("model.layers.{l}");
            let mut linear = |module: &str, out_f: usize, in_f: usize| -> Result<Linear> {
                let name = format!("{prefix}.{module}");
                let dense = naming.tensor(&name);
                let (u, v) = (
                    naming.tensor(&format!("{name}.u")),
                    naming.tensor(&format!("{name}.v")),
                );
                if !loader.contains(&dense) && loader.contains(&u) && loader.contains(&v) {
                    // A factorized layer (`tensorpress factorize`): W ≈ U·V.
                    return Ok(Linear::new(
                        name,
                        Arc::new(loader.load_factorized(&u, &v, out_f, in_f)?),
                    ));
                }
                let w = loader.load(&dense, &[out_f, in_f])?;
                Ok(Linear::new(name, Arc::new(DenseLinear::new(w, None)?)))
            };
            let q_proj = linear("self_attn.q_proj", q_out, h)?;
            let k_proj = linear("self_attn.k_proj", kv_out, h)?;
            let v_proj = linear("self_attn.v_proj", kv_out, h)?;
            let o_proj = linear("self_attn.o_proj", h, q_out)?;
            let gate_proj = linear("mlp.gate_proj", i_sz, h)?;
            let up_proj = linear("mlp.up_proj", i_sz, h)?;
            let down_proj = linear("mlp.down_proj", h, i_sz)?;
            let attn_norm =
                loader.load(&naming.tensor(&format!("{prefix}.input_layernorm")), &[h])?;
            let ffn_norm = loader.load(
                &naming.tensor(&format!("{prefix}.post_attention_layernorm")),
                &[h],
            )?;
            blocks.push(LlamaBlock {
                index: blocks.len(),
                attn_norm,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                ffn_norm,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let norm = loader.load(&naming.tensor("model.norm"), &[h])?;
        let head_name = naming.tensor("lm_head");
        let head_weight = if p.tie_word_embeddings || !loader.contains(&head_name) {
            embed_tokens.clone()
        } else {
            loader.load(&head_name, &[p.vocab_size, h])?
        };
        let lm_head = Linear::new("lm_head", Arc::new(DenseLinear::new(head_weight, None)?));
        let device = loader.device().clone();
        let positions = p.max_position_embeddings.clamp(1, 32_768);
        let rope = Rope::new(p, positions, &device)?;
        let vars = loader.into_vars();
        Ok(LlamaModel {
            params,
            embed_tokens,
            blocks,
            norm,
            lm_head,
            rope,
            device,
            differentiable,
            vars,
            observer: None,
            ffn_hook: None,
        })
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &LlamaParams {
        &self.params
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The transformer blocks.
    pub fn blocks(&self) -> &[LlamaBlock] {
        &self.blocks
    }

    /// The token embedding `[vocab, hidden]`.
    pub fn embed_weight(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The final RMSNorm weight.
    pub fn norm_weight(&self) -> &Tensor {
        &self.norm
    }

    /// Replaces the weight of one RMSNorm of block `block` (smoothing and
    /// rotation fold scales into it).
    ///
    /// # Errors
    /// [`Error::Config`] for a block index out of range, [`Error::WeightShape`]
    /// when `weight` is not `[hidden]`.
    pub fn set_block_norm(&mut self, block: usize, norm: BlockNorm, weight: Tensor) -> Result<()> {
        let hidden = self.params.hidden_size;
        check_shape(&norm.module_name(block), &weight, &[hidden])?;
        let blocks = self.blocks.len();
        let b = self.blocks.get_mut(block).ok_or_else(|| Error::Config {
            field: "block",
            reason: format!("index {block} ≥ {blocks} blocks"),
        })?;
        match norm {
            BlockNorm::Attention => b.attn_norm = weight,
            BlockNorm::Ffn => b.ffn_norm = weight,
        }
        Ok(())
    }

    /// Replaces the final RMSNorm weight (`model.norm`, `[hidden]`).
    ///
    /// # Errors
    /// [`Error::WeightShape`] when the shape differs.
    pub fn set_norm_weight(&mut self, weight: Tensor) -> Result<()> {
        check_shape("model.norm", &weight, &[self.params.hidden_size])?;
        self.norm = weight;
        Ok(())
    }

    /// Replaces the token embedding (`[vocab, hidden]`). The output head keeps
    /// its own weight: after this call a tied model is no longer tied.
    ///
    /// # Errors
    /// [`Error::WeightShape`] when the shape differs.
    pub fn set_embed_weight(&mut self, weight: Tensor) -> Result<()> {
        let p = &self.params;
        check_shape(
            "model.embed_tokens",
            &weight,
            &[p.vocab_size, p.hidden_size],
        )?;
        self.embed_tokens = weight;
        Ok(())
    }

    /// Every linear layer, blocks first in order, then `lm_head`.
    pub fn linears(&self) -> Vec<&Linear> {
        let mut out: Vec<&Linear> = self.blocks.iter().flat_map(|b| b.linears()).collect();
        out.push(&self.lm_head);
        out
    }

    /// The names of [`linears`](Self::linears), owned, for loops that then
    /// swap layers through [`linear_mut`](Self::linear_mut).
    pub fn linear_names(&self) -> Vec<String> {
        self.linears()
            .iter()
            .map(|l| l.name().to_string())
            .collect()
    }

    /// The linear layer called `name`, for swapping its op.
    pub fn linear_mut(&mut self, name: &str) -> Option<&mut Linear> {
        if self.lm_head.name() == name {
            return Some(&mut self.lm_head);
        }
        self.blocks
            .iter_mut()
            .flat_map(|b| b.linears_mut())
            .find(|l| l.name() == name)
    }

    /// Removes FFN neurons of block `block`: keeps the rows `keep` (sorted,
    /// distinct) of its gate and up projections and takes `down` (`[hidden,
    /// keep.len()]`, e.g. refit on the kept inputs) as its down projection.
    /// When every block then has the same width, `params().intermediate_size`
    /// follows it.
    ///
    /// # Errors
    /// [`Error::Config`] for a block out of range, an empty, unsorted or
    /// out-of-range `keep`, or a `down` of the wrong shape.
    pub fn shrink_ffn(&mut self, block: usize, keep: &[usize], down: Tensor) -> Result<()> {
        let bad = |reason: String| Error::Config {
            field: "ffn neurons",
            reason,
        };
        let n_blocks = self.blocks.len();
        let b = self
            .blocks
            .get_mut(block)
            .ok_or_else(|| bad(format!("block {block} ≥ {n_blocks} blocks")))?;
        let width = b.gate_proj.op().out_features();
        let hidden = b.down_proj.op().out_features();
        if keep.is_empty() {
            return Err(bad("keeping no neuron would empty the layer".into()));
        }
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&k| k >= width) {
            return Err(bad(format!(
                "kept neurons must be sorted, distinct and below {width}"
            )));
        }
        if down.dims() != [hidden, keep.len()] {
            return Err(bad(format!(
                "down projection {:?}, expected [{hidden}, {}]",
                down.dims(),
                keep.len()
            )));
        }
        let index = Tensor::from_vec(
            keep.iter().map(|&k| k as u32).collect::<Vec<_>>(),
            keep.len(),
            self.embed_tokens.device(),
        )?;
        for linear in [&mut b.gate_proj, &mut b.up_proj] {
            let w = linear.op().dense_weight()?.index_select(&index, 0)?;
            linear.replace_op(Arc::new(DenseLinear::new(w, None)?));
        }
        b.down_proj
            .replace_op(Arc::new(DenseLinear::new(down, None)?));
        let widths: Vec<usize> = self
            .blocks
            .iter()
            .map(|b| b.gate_proj.op().out_features())
            .collect();
        if widths.iter().all(|&w| w == widths[0]) {
            self.params.intermediate_size = widths[0];
        }
        Ok(())
    }

    /// Structured attention-head pruning: keeps only the query heads `keep`
    /// (sorted, distinct) of block `block` and makes `o_proj` (`[hidden,
    /// keep.len() · head_dim]`) its output projection. Key/value heads stay;
    /// every key/value group must keep the same number of query heads, so
    /// that kept head `h'` still reads key/value head `h' / groups'`. When
    /// every block then has the same head count, the model's
    /// `num_heads` follows.
    ///
    /// # Errors
    /// [`Error::Config`] for a block out of range, an empty, unsorted or
    /// out-of-range `keep`, groups that keep different counts, or an
    /// `o_proj` of the wrong shape.
    pub fn shrink_heads(&mut self, block: usize, keep: &[usize], o_proj: Tensor) -> Result<()> {
        let bad = |reason: String| Error::Config {
            field: "attention heads",
            reason,
        };
        let n_blocks = self.blocks.len();
        let (nkv, hd) = (self.params.num_kv_heads, self.params.head_dim);
        let b = self
            .blocks
            .get_mut(block)
            .ok_or_else(|| bad(format!("block {block} ≥ {n_blocks} blocks")))?;
        let heads = b.q_proj.op().out_features() / hd;
        let hidden = b.o_proj.op().out_features();
        if keep.is_empty() {
            return Err(bad("keeping no head would empty the layer".into()));
        }
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&k| k >= heads) {
            return Err(bad(format!(
                "kept heads must be sorted, distinct and below {heads}"
            )));
        }
        let groups = heads / nkv;
        let per_group: Vec<usize> = (0..nkv)
            .map(|g| keep.iter().filter(|&&h| h / groups == g).count())
            .collect();
        if per_group.iter().any(|&c| c != per_group[0]) {
            return Err(bad(format!(
                "every key/value group must keep the same number of query heads, not {per_group:?}"
            )));
        }
        if o_proj.dims() != [hidden, keep.len() * hd] {
            return Err(bad(format!(
                "o_proj {:?}, expected [{hidden}, {}]",
                o_proj.dims(),
                keep.len() * hd
            )));
        }
        let rows: Vec<u32> = keep
            .iter()
            .flat_map(|&h| (h * hd..(h + 1) * hd).map(|r| r as u32))
            .collect();
        let len = rows.len();
        let index = Tensor::from_vec(rows, len, self.embed_tokens.device())?;
        let q = b.q_proj.op().dense_weight()?.index_select(&index, 0)?;
        b.q_proj.replace_op(Arc::new(DenseLinear::new(q, None)?));
        b.o_proj
            .replace_op(Arc::new(DenseLinear::new(o_proj, None)?));
        let counts: Vec<usize> = self
            .blocks
            .iter()
            .map(|b| b.q_proj.op().out_features() / hd)
            .collect();
        if counts.iter().all(|&c| c == counts[0]) {
            self.params.num_heads = counts[0];
        }
        Ok(())
    }

    /// Attaches (or with `None` detaches) a hook on every block's FFN gate
    /// activation ([`FfnHook`]).
    pub fn set_ffn_hook(&mut self, hook: Option<Arc<dyn FfnHook>>) {
        self.ffn_hook = hook;
    }

    /// Attaches (or with `None` detaches) an observer of linear-layer inputs.
    pub fn set_observer(&mut self, observer: Option<Arc<dyn Observer>>) {
        self.observer = observer;
    }

    /// The trainable variables by checkpoint name (empty unless loaded with
    /// [`LoadOptions::trainable`]).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Embeds `tokens` as `[1, tokens, hidden]`.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        for &t in tokens {
            if t as usize >= self.params.vocab_size {
                return Err(Error::TokenOutOfRange {
                    id: t,
                    vocab_size: self.params.vocab_size,
                });
            }
        }
        let ids = Tensor::from_slice(tokens, tokens.len(), &self.device)?;
        Ok(self.embed_tokens.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    /// Runs block `index` on hidden states `x: [batch, tokens, hidden]` whose
    /// first token sits at position 0.
    pub fn forward_block(&self, index: usize, x: &Tensor) -> Result<Tensor> {
        let block = self.blocks.get(index).ok_or_else(|| Error::Config {
            field: "block",
            reason: format!("index {index} ≥ {} blocks", self.blocks.len()),
        })?;
        let (_, t, _) = x.dims3()?;
        let mask = self.causal_mask(t, 0)?;
        self.block_forward(block, x, Some(&mask), 0, None)
    }

    /// Hidden states after every block and the final norm, `[1, tokens, hidden]`.
    pub fn hidden_states(&self, tokens: &[u32]) -> Result<Tensor> {
        let mut x = self.embed(tokens)?;
        let mask = self.causal_mask(tokens.len(), 0)?;
        for block in &self.blocks {
            x = self.block_forward(block, &x, Some(&mask), 0, None)?;
        }
        self.rms_norm(&x, &self.norm)
    }

    /// Logits `[tokens - from, vocab]` for the positions `from..tokens.len()`.
    /// Only those rows go through the output projection.
    pub fn logits(&self, tokens: &[u32], from: usize) -> Result<Tensor> {
        if tokens.is_empty() || from >= tokens.len() {
            return Err(Error::Config {
                field: "from",
                reason: format!("position {from} is outside {} tokens", tokens.len()),
            });
        }
        let max = self.rope.cos.dim(0)?;
        if tokens.len() > max {
            return Err(Error::Config {
                field: "tokens",
                reason: format!("{} tokens exceed the context of {max}", tokens.len()),
            });
        }
        let hidden = self.hidden_states(tokens)?;
        let hidden = hidden.narrow(1, from, tokens.len() - from)?.squeeze(0)?;
        let obs = self.observer.as_deref();
        self.lm_head.forward(&hidden, obs)
    }

    /// Runs `tokens` after the ones already in `cache` (incremental decoding):
    /// their keys and values are appended to the cache, and the logits of the
    /// last token, `[vocab]`, come back. A prompt goes in as one call, then one
    /// token per call.
    pub fn decode(&self, cache: &mut DecodeCache, tokens: &[u32]) -> Result<Tensor> {
        let from = tokens.len().saturating_sub(1);
        Ok(self.decode_rows(cache, tokens, from)?.squeeze(0)?)
    }

    /// As [`decode`](Self::decode), returning the logits of the new tokens
    /// `from..tokens.len()`, `[tokens.len() - from, vocab]` (chunked prefill
    /// that scores every token: decode-style perplexity).
    pub fn decode_rows(
        &self,
        cache: &mut DecodeCache,
        tokens: &[u32],
        from: usize,
    ) -> Result<Tensor> {
        let past = cache.len;
        let max = self.rope.cos.dim(0)?;
        if tokens.is_empty() || past + tokens.len() > max || from >= tokens.len() {
            return Err(Error::Config {
                field: "tokens",
                reason: format!(
                    "{} new tokens after {past} cached must be at least one, fit the context of \
                     {max} and include row {from}",
                    tokens.len()
                ),
            });
        }
        cache.prepare(
            self.blocks.len(),
            self.params.num_kv_heads,
            self.params.head_dim,
        )?;
        let t = tokens.len();
        let mut x = self.embed(tokens)?;
        let mask = if t > 1 {
            Some(self.causal_mask(t, past)?)
        } else {
            None
        };
        for (block, c) in self.blocks.iter().zip(cache.blocks.iter_mut()) {
            x = self.block_forward(block, &x, mask.as_ref(), past, Some(c))?;
        }
        cache.len = past + t;
        let rows = self
            .rms_norm(&x.narrow(1, from, t - from)?, &self.norm)?
            .squeeze(0)?;
        self.lm_head.forward(&rows, self.observer.as_deref())
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let eps = self.params.rms_norm_eps as f32;
        Ok(if self.differentiable {
            candle_nn::ops::rms_norm_slow(x, weight, eps)?
        } else {
            candle_nn::ops::rms_norm(x, weight, eps)?
        })
    }

    /// `[t, past + t]` additive causal mask for `t` new tokens after `past`
    /// cached ones.
    fn causal_mask(&self, t: usize, past: usize) -> Result<Tensor> {
        let n = past + t;
        let mut mask = Vec::with_capacity(t * n);
        for i in 0..t {
            mask.extend((0..n).map(|j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }));
        }
        Ok(Tensor::from_vec(mask, (t, n), &self.device)?)
    }

    /// Rotary embedding of `t` tokens starting at position `pos`.
    fn rope(&self, x: &Tensor, pos: usize, t: usize) -> Result<Tensor> {
        let cos = self.rope.cos.narrow(0, pos, t)?;
        let sin = self.rope.sin.narrow(0, pos, t)?;
        Ok(match (self.params.rope_layout, self.differentiable) {
            (RopeLayout::Interleaved, false) => candle_nn::rotary_emb::rope_i(x, &cos, &sin)?,
            (RopeLayout::Interleaved, true) => candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin)?,
            (RopeLayout::Halves, false) => candle_nn::rotary_emb::rope(x, &cos, &sin)?,
            (RopeLayout::Halves, true) => candle_nn::rotary_emb::rope_slow(x, &cos, &sin)?,
        })
    }

    /// One block on `x: [batch, t, hidden]` whose first token sits at
    /// position `pos`. With a cache, the keys and values of the new tokens are
    /// appended to it and attention runs over everything cached.
    fn block_forward(
        &self,
        block: &LlamaBlock,
        x: &Tensor,
        mask: Option<&Tensor>,
        pos: usize,
        cache: Option<&mut BlockCache>,
    ) -> Result<Tensor> {
        let obs = self.observer.as_deref();
        let p = &self.params;
        let (b, t, _) = x.dims3()?;
        // Query heads from the block's own projection: structured head
        // pruning may leave blocks with different counts.
        let (nkv, hd) = (p.num_kv_heads, p.head_dim);
        let nh = block.q_proj.op().out_features() / hd;
        let groups = nh / nkv;

        let h = self.rms_norm(x, &block.attn_norm)?;
        let q = match &self.ffn_hook {
            Some(hook) => block
                .q_proj
                .forward(&hook.query_input(block.index, &h)?, obs)?,
            None => block.q_proj.forward(&h, obs)?,
        };
        let k = block.k_proj.forward(&h, obs)?;
        let v = block.v_proj.forward(&h, obs)?;
        let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
        let q = (self.rope(&q, pos, t)? * (1.0 / (hd as f64).sqrt()))?;
        let k = self.rope(&k, pos, t)?;
        let mut cache = cache;
        // One new token into a compressed cache: attention runs on the
        // cache's own storage (KIVI's codes), nothing dequantized.
        if let (1, 1, Some(c)) = (b, t, cache.as_deref_mut()) {
            if let Some(attn) = c.attend_one(&q, &k, &v)? {
                return self.block_rest(block, x, attn);
            }
        }
        let (k, v) = match cache.as_deref_mut() {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        // An evicting cache holds fewer tokens than the positions seen: the
        // old ones are all visible, the new ones causal among themselves.
        let n = k.dim(2)?;
        let rebuilt;
        let mask = match mask {
            Some(m) if m.dim(1)? != n => {
                rebuilt = self.causal_mask(t, n - t)?;
                Some(&rebuilt)
            }
            m => m,
        };
        // Query heads h = kv·groups + g share key/value head kv: fold the groups
        // into the row dimension so one matmul per kv head does them all.
        let q = q.reshape((b, nkv, groups * t, hd))?;
        let scores = q.matmul(&k.t()?)?;
        let scores = match mask {
            Some(m) => {
                let n = scores.dim(D::Minus1)?;
                scores
                    .reshape((b, nkv, groups, t, n))?
                    .broadcast_add(m)?
                    .reshape((b, nkv, groups * t, n))?
            }
            None => scores,
        };
        let probs = if self.differentiable {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        if let Some(c) = cache {
            c.end_step(&probs, (nh, t, n))?;
        }
        let attn = probs
            .matmul(&v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.block_rest(block, x, attn)
    }

    /// The rest of a block after attention (`attn: [batch, t, heads ·
    /// head_dim]`): output projection, residual, FFN.
    fn block_rest(&self, block: &LlamaBlock, x: &Tensor, attn: Tensor) -> Result<Tensor> {
        let obs = self.observer.as_deref();
        let attn = match &self.ffn_hook {
            Some(hook) => hook.attention_output(block.index, &attn)?,
            None => attn,
        };
        let x = (x + block.o_proj.forward(&attn, obs)?)?;

        let h = self.rms_norm(&x, &block.ffn_norm)?;
        let gate = block.gate_proj.forward(&h, obs)?;
        let up = block.up_proj.forward(&h, obs)?;
        let a_gate = candle_nn::ops::silu(&gate)?;
        let a_gate = match &self.ffn_hook {
            Some(hook) => hook.gate(block.index, &a_gate, &up)?,
            None => a_gate,
        };
        let act = (a_gate * up)?;
        let down = block.down_proj.forward(&act, obs)?;
        Ok((x + down)?)
    }
}

fn check_shape(name: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.dims() != expected {
        return Err(Error::WeightShape {
            name: name.to_string(),
            expected: expected.to_vec(),
            actual: t.dims().to_vec(),
        });
    }
    Ok(())
}
