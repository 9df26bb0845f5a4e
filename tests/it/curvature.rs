//! Loss curvature through the runner on a small random Llama: Hutchinson's
//! trace estimate against the exact trace of a Hessian small enough to form,
//! the finite-difference Hessian-vector product against its symmetry and
//! against a quadratic check, the empirical Fisher and the KL divergence.

use ndarray::Array2;
use tensorpress::mixed::layer_curvature;
use tensorpress::models::eval::curvature::{
    fisher_diagonal, hessian_vector_product, kl_divergence, log_probs, loss_gradients, weight_var,
};
use tensorpress::models::llama::{LlamaModel, LlamaParams, Naming, RopeLayout};
use tensorpress::models::weights::{LoadOptions, MemoryWeights};
use tensorpress::sensitivity::hutchinson_trace;
use tensorpress::tensor::SeededRng;

fn params() -> LlamaParams {
    LlamaParams {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 4,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: true,
        rope_layout: RopeLayout::Interleaved,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        add_bos: false,
    }
}

fn windows() -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(5);
    (0..3)
        .map(|_| (0..24).map(|_| rng.below(40) as u32).collect())
        .collect()
}

fn model() -> LlamaModel {
    let p = params();
    let w = MemoryWeights::random_llama(&p, 21);
    LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::trainable()).unwrap()
}

const LAYER: &str = "model.layers.1.self_attn.v_proj";

#[test]
fn hutchinson_is_within_five_percent_of_the_exact_layer_trace() {
    let model = model();
    let windows = windows();
    let w = weight_var(&model, LAYER).unwrap().as_tensor().clone();
    let (r, c) = w.dims2().unwrap();
    let n = r * c;
    assert_eq!(n, 8 * 16);
    let eps = 1e-2;
    // The exact Hessian, one column per basis direction.
    let mut h = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut e = Array2::<f32>::zeros((r, c));
        e[[j / c, j % c]] = 1.0;
        let col = hessian_vector_product(&model, &windows, LAYER, e.view(), eps).unwrap();
        for (i, v) in col.iter().enumerate() {
            h[[i, j]] = f64::from(*v);
        }
    }
    // A Hessian is symmetric: the finite differences must agree with that.
    let asym = (&h - &h.t()).mapv(f64::abs).sum() / h.mapv(f64::abs).sum();
    assert!(asym < 0.02, "relative asymmetry {asym}");
    let exact = h.diag().sum();
    assert!(exact > 0.0, "trace {exact}");

    let mut rng = SeededRng::new(9);
    let estimate = hutchinson_trace(n, 1600, &mut rng, |z| {
        let v = Array2::from_shape_fn((r, c), |(i, k)| z[i * c + k] as f32);
        let hv = hessian_vector_product(&model, &windows, LAYER, v.view(), eps).unwrap();
        hv.iter().map(|x| f64::from(*x)).collect()
    })
    .unwrap();
    let rel = (estimate.mean - exact).abs() / exact;
    eprintln!(
        "exact trace {exact:.5}, Hutchinson (1600 probes) {:.5} ± {:.5}, off by {:.2} %",
        estimate.mean,
        estimate.std_error,
        rel * 100.0
    );
    // Not luck: the estimator's own standard error is well inside the 5 %.
    assert!(estimate.std_error < 0.03 * exact);
    assert!(
        rel < 0.05,
        "Hutchinson {} ± {} vs exact {exact} ({:.1} %)",
        estimate.mean,
        estimate.std_error,
        rel * 100.0
    );
    // The facade's HAWQ metrics on the same layer: power iteration finds the
    // top eigenvalue of the same Hessian, Hutchinson its trace.
    let eig = tensorpress::tensor::linalg::eigvalsh(h.view()).unwrap();
    let top = eig
        .iter()
        .fold(0.0f64, |m, e| if e.abs() > m.abs() { *e } else { m });
    let c = layer_curvature(&model, &windows, LAYER, 60, 200, 4).unwrap();
    assert!(
        (c.top_eigenvalue - top).abs() < 0.02 * top.abs(),
        "{} vs {top}",
        c.top_eigenvalue
    );
    assert!((c.trace.mean - exact).abs() < 4.0 * c.trace.std_error);
    assert!(layer_curvature(&model, &windows, LAYER, 0, 10, 4).is_err());
    // The weight is restored after every product.
    let after = weight_var(&model, LAYER).unwrap().as_tensor();
    let diff = (after - &w)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
}

#[test]
fn hvp_matches_the_change_of_the_gradient_and_fisher_is_the_mean_squared_gradient() {
    let model = model();
    let windows = windows();
    let names = vec![LAYER.to_string()];
    let (_, g0) = loss_gradients(&model, &windows, &names).unwrap();
    let g0 = &g0[LAYER];
    // Move the weight by a small step d: the gradient moves by ≈ H d.
    let mut rng = SeededRng::new(3);
    let d = rng.array_normal(g0.dim()) * 1e-3;
    let hd = hessian_vector_product(&model, &windows, LAYER, d.view(), 1e-2).unwrap();
    let var = weight_var(&model, LAYER).unwrap();
    let w = var.as_tensor().copy().unwrap();
    let step = candle_core::Tensor::from_vec(
        d.iter().copied().collect::<Vec<f32>>(),
        g0.dim(),
        w.device(),
    )
    .unwrap();
    var.set(&(&w + &step).unwrap()).unwrap();
    let (_, g1) = loss_gradients(&model, &windows, &names).unwrap();
    var.set(&w).unwrap();
    let change = &g1[LAYER] - g0;
    let err = (&change - &hd).mapv(|v| v * v).sum().sqrt();
    let size = change.mapv(|v| v * v).sum().sqrt();
    assert!(size > 0.0);
    assert!(err < 0.1 * size, "‖Δg − Hd‖ = {err} vs ‖Δg‖ = {size}");

    // Fisher: the mean over windows of the squared per-window gradient.
    let fisher = fisher_diagonal(&model, &windows, &names, &mut |_, _| {}).unwrap();
    let mut expected = Array2::<f32>::zeros(g0.dim());
    for w in &windows {
        let (_, g) = loss_gradients(&model, std::slice::from_ref(w), &names).unwrap();
        expected += &g[LAYER].mapv(|v| v * v / windows.len() as f32);
    }
    let diff = (&fisher[LAYER] - &expected).mapv(f32::abs).sum();
    assert!(diff <= 1e-6 * expected.sum().max(1e-12), "{diff}");
    assert!(expected.sum() > 0.0);
}

#[test]
fn kl_is_zero_for_the_same_model_and_positive_after_a_change() {
    let model = model();
    let tokens = &windows()[0];
    let reference = log_probs(&model, tokens).unwrap();
    let same = kl_divergence(&model, tokens, &reference).unwrap();
    assert!(same.abs() < 1e-6, "{same}");
    let var = weight_var(&model, LAYER).unwrap();
    let w = var.as_tensor().copy().unwrap();
    var.set(&(&w * 0.0).unwrap()).unwrap();
    let changed = kl_divergence(&model, tokens, &reference).unwrap();
    var.set(&w).unwrap();
    assert!(changed > 1e-4, "{changed}");
    // Bad input: a reference of the wrong shape, a model that is not trainable.
    assert!(kl_divergence(&model, &tokens[..5], &reference).is_err());
    let p = params();
    let frozen = LlamaModel::load(
        &MemoryWeights::random_llama(&p, 21),
        p,
        Naming::HuggingFace,
        LoadOptions::default(),
    )
    .unwrap();
    assert!(weight_var(&frozen, LAYER).is_err());
    assert!(loss_gradients(&model, &[], &[LAYER.to_string()]).is_err());
}
