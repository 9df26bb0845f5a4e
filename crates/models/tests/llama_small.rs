//! The Llama forward pass on a small random model: layouts, observers,
//! swapping, and gradients.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{Tensor, D};
use ndarray::{ArrayD, Ix2};
use tensorpress_models::linear::{DenseLinear, Observer};
use tensorpress_models::llama::{
    hf_module_to_gguf, permute_qk, DecodeCache, LlamaModel, LlamaParams, Naming, QkPermutation,
    RopeLayout,
};
use tensorpress_models::weights::{LoadOptions, MemoryWeights, WeightSource};

fn params(layout: RopeLayout) -> LlamaParams {
    LlamaParams {
        vocab_size: 48,
        hidden_size: 24,
        intermediate_size: 40,
        num_layers: 2,
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        rope_layout: layout,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        add_bos: false,
    }
}

const TOKENS: [u32; 9] = [1, 7, 22, 3, 45, 9, 9, 30, 11];

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The same weights in GGUF naming with Q/K rows permuted for interleaved RoPE.
fn to_gguf_layout(hf: &MemoryWeights, p: &LlamaParams) -> MemoryWeights {
    let mut out = MemoryWeights::new();
    for name in hf.names() {
        let mut value = hf.load_f32(name).unwrap();
        let heads = if name.contains("q_proj") {
            Some(p.num_heads)
        } else if name.contains("k_proj") {
            Some(p.num_kv_heads)
        } else {
            None
        };
        if let Some(h) = heads {
            let w = value.clone().into_dimensionality::<Ix2>().unwrap();
            value = permute_qk(w.view(), h, QkPermutation::HfToGguf)
                .unwrap()
                .into_dyn();
        }
        let module = name.strip_suffix(".weight").unwrap();
        out.insert(format!("{}.weight", hf_module_to_gguf(module)), value);
    }
    out
}

#[test]
fn gguf_and_hf_layouts_give_the_same_logits() {
    let p = params(RopeLayout::Halves);
    let hf = MemoryWeights::random_llama(&p, 3);
    let gguf = to_gguf_layout(&hf, &p);
    let a = LlamaModel::load(&hf, p.clone(), Naming::HuggingFace, LoadOptions::default()).unwrap();
    let b = LlamaModel::load(
        &gguf,
        params(RopeLayout::Interleaved),
        Naming::Gguf,
        LoadOptions::default(),
    )
    .unwrap();
    let la = a.logits(&TOKENS, 0).unwrap();
    let lb = b.logits(&TOKENS, 0).unwrap();
    assert!(max_abs_diff(&la, &lb) < 1e-4);
    // Without the permutation the interleaved model computes something else.
    let c = LlamaModel::load(
        &hf,
        params(RopeLayout::Interleaved),
        Naming::HuggingFace,
        LoadOptions::default(),
    )
    .unwrap();
    assert!(max_abs_diff(&la, &c.logits(&TOKENS, 0).unwrap()) > 1e-3);
}

#[test]
fn logits_are_causal_and_sliced() {
    let p = params(RopeLayout::Halves);
    let w = MemoryWeights::random_llama(&p, 5);
    let m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
    let full = m.logits(&TOKENS, 0).unwrap();
    let tail = m.logits(&TOKENS, 4).unwrap();
    assert_eq!(tail.dims(), &[5, 48]);
    assert!(max_abs_diff(&full.narrow(0, 4, 5).unwrap(), &tail) < 1e-5);
    // Changing a later token leaves earlier logits alone.
    let mut changed = TOKENS;
    changed[8] = 40;
    let other = m.logits(&changed, 0).unwrap();
    assert!(
        max_abs_diff(
            &full.narrow(0, 0, 8).unwrap(),
            &other.narrow(0, 0, 8).unwrap()
        ) < 1e-5
    );
    assert!(
        max_abs_diff(
            &full.narrow(0, 8, 1).unwrap(),
            &other.narrow(0, 8, 1).unwrap()
        ) > 1e-4
    );
    assert!(
        m.logits(&[47, 48], 0).is_err(),
        "token 48 is outside the vocabulary"
    );
}

#[test]
fn incremental_decoding_matches_the_full_forward() {
    for layout in [RopeLayout::Halves, RopeLayout::Interleaved] {
        let p = params(layout);
        let w = MemoryWeights::random_llama(&p, 6);
        let m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
        let full = m.logits(&TOKENS, 0).unwrap();
        let mut cache = DecodeCache::new();
        // A prompt of 4, then 2 tokens at once, then one at a time.
        let mut at = 0;
        for step in [4, 2, 1, 1, 1] {
            let logits = m.decode(&mut cache, &TOKENS[at..at + step]).unwrap();
            at += step;
            assert_eq!(cache.len(), at);
            let want = full.narrow(0, at - 1, 1).unwrap().squeeze(0).unwrap();
            let gap = max_abs_diff(&logits, &want);
            assert!(gap < 1e-4, "{layout:?}: position {}: gap {gap}", at - 1);
        }
        assert!(m.decode(&mut cache, &[]).is_err(), "no tokens");
        assert!(
            m.decode(&mut cache, &[48]).is_err(),
            "token outside the vocabulary"
        );
        let too_long = vec![3u32; 64];
        assert!(m.decode(&mut cache, &too_long).is_err(), "past the context");
        cache.clear();
        assert!(cache.is_empty());
    }
}

#[test]
fn the_cache_grows_and_clones_branch_independently() {
    let p = params(RopeLayout::Halves);
    let w = MemoryWeights::random_llama(&p, 8);
    let m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
    let check = |logits: &Tensor, full: &Tensor, i: usize, what: &str| {
        let want = full.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
        let gap = max_abs_diff(logits, &want);
        assert!(gap < 1e-4, "{what}: position {i}: gap {gap}");
    };
    // 60 tokens one by one: the buffers grow 16 → 32 → 64 on the way.
    let a: Vec<u32> = (0..60).map(|i| (i * 7 + 3) % 48).collect();
    let full_a = m.logits(&a, 0).unwrap();
    let mut cache = DecodeCache::new();
    for (i, &t) in a.iter().enumerate().take(21) {
        check(&m.decode(&mut cache, &[t]).unwrap(), &full_a, i, "a");
    }
    // A clone after 21 tokens (capacity 32) and the original then take
    // turns, each with its own tokens, within the capacity they shared.
    let mut branch = cache.clone();
    let mut b = a[..21].to_vec();
    b.extend((0..8u32).map(|i| 40 - i));
    let full_b = m.logits(&b, 0).unwrap();
    for i in 21..29 {
        check(
            &m.decode(&mut branch, &[b[i]]).unwrap(),
            &full_b,
            i,
            "branch",
        );
        check(
            &m.decode(&mut cache, &[a[i]]).unwrap(),
            &full_a,
            i,
            "original",
        );
    }
    for (i, &t) in a.iter().enumerate().skip(29) {
        check(&m.decode(&mut cache, &[t]).unwrap(), &full_a, i, "a");
    }
}

#[derive(Default)]
struct Shapes(Mutex<BTreeMap<String, Vec<usize>>>);

impl Observer for Shapes {
    fn wants(&self, layer: &str) -> bool {
        layer != "lm_head"
    }
    fn observe(&self, layer: &str, input: &Tensor) -> tensorpress_models::Result<()> {
        let m = tensorpress_models::linear::to_matrix(input)?;
        self.0
            .lock()
            .unwrap()
            .insert(layer.to_string(), m.shape().to_vec());
        Ok(())
    }
}

#[test]
fn observers_see_every_linear_input() {
    let p = params(RopeLayout::Halves);
    let w = MemoryWeights::random_llama(&p, 9);
    let mut m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
    let shapes = Arc::new(Shapes::default());
    m.set_observer(Some(shapes.clone()));
    m.logits(&TOKENS, 0).unwrap();
    let seen = shapes.0.lock().unwrap();
    assert_eq!(
        seen.len(),
        2 * 7,
        "every block linear, lm_head filtered out"
    );
    assert_eq!(seen["model.layers.1.self_attn.q_proj"], vec![9, 24]);
    assert_eq!(seen["model.layers.0.self_attn.o_proj"], vec![9, 24]);
    assert_eq!(seen["model.layers.0.mlp.down_proj"], vec![9, 40]);
}

#[test]
fn swapping_a_linear_changes_exactly_what_it_should() {
    let p = params(RopeLayout::Halves);
    let w = MemoryWeights::random_llama(&p, 11);
    let mut m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::default()).unwrap();
    let before = m.logits(&TOKENS, 0).unwrap();
    let name = "model.layers.1.mlp.down_proj";
    let weight = m.linear_mut(name).unwrap().op().dense_weight().unwrap();
    let same = Arc::new(DenseLinear::new(weight.clone(), None).unwrap());
    m.linear_mut(name).unwrap().set_op(same).unwrap();
    assert!(max_abs_diff(&before, &m.logits(&TOKENS, 0).unwrap()) < 1e-6);
    let zero = Arc::new(DenseLinear::new(weight.zeros_like().unwrap(), None).unwrap());
    m.linear_mut(name).unwrap().set_op(zero).unwrap();
    assert!(max_abs_diff(&before, &m.logits(&TOKENS, 0).unwrap()) > 1e-4);
    // A wrong shape is refused.
    let wrong =
        Arc::new(DenseLinear::new(weight.t().unwrap().contiguous().unwrap(), None).unwrap());
    assert!(m.linear_mut(name).unwrap().set_op(wrong).is_err());
}

fn loss(model: &LlamaModel) -> Tensor {
    let logits = model.logits(&TOKENS[..8], 0).unwrap();
    let targets = Tensor::new(&TOKENS[1..], logits.device()).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
    let picked = logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap();
    picked.mean_all().unwrap().neg().unwrap()
}

#[test]
fn gradients_flow_and_match_finite_differences() {
    let p = params(RopeLayout::Interleaved);
    let w = MemoryWeights::random_llama(&p, 13);
    let fast =
        LlamaModel::load(&w, p.clone(), Naming::HuggingFace, LoadOptions::default()).unwrap();
    let model = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::trainable()).unwrap();
    // The differentiable ops compute the same function as the fused ones.
    assert!(
        max_abs_diff(
            &fast.logits(&TOKENS, 0).unwrap(),
            &model.logits(&TOKENS, 0).unwrap()
        ) < 1e-4
    );

    let l = loss(&model);
    let grads = l.backward().unwrap();
    let (name, var) = model
        .vars()
        .iter()
        .find(|(n, _)| n == "model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    let g = grads
        .get(var.as_tensor())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let original: ArrayD<f32> = w.load_f32(name).unwrap();
    // Central differences on a few entries.
    let eps = 1e-2f32;
    for &(r, c) in &[(0usize, 0usize), (3, 5), (7, 23)] {
        let mut plus = original.clone();
        plus[[r, c]] += eps;
        let mut minus = original.clone();
        minus[[r, c]] -= eps;
        let shape = original.shape().to_vec();
        var.set(
            &Tensor::from_vec(
                plus.into_raw_vec_and_offset().0,
                shape.clone(),
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let lp = loss(&model).to_scalar::<f32>().unwrap();
        var.set(
            &Tensor::from_vec(
                minus.into_raw_vec_and_offset().0,
                shape.clone(),
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let lm = loss(&model).to_scalar::<f32>().unwrap();
        var.set(
            &Tensor::from_vec(
                original.clone().into_raw_vec_and_offset().0,
                shape,
                &candle_core::Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let numeric = (lp - lm) / (2.0 * eps);
        let analytic = g[r][c];
        assert!(
            (numeric - analytic).abs() <= 2e-3 + 0.05 * analytic.abs(),
            "d loss / d w[{r},{c}]: numeric {numeric}, autograd {analytic}"
        );
    }
}
