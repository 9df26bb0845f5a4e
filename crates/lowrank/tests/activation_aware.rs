//! Activation-aware factorization and compensation against their baselines on
//! synthetic correlated activations, fed through the same calibration types the
//! pipeline uses (`Hessian` finalized for GPTQ, `ChannelStats`).
//!
//! Run with `--nocapture` to see the measured error tables.

use ndarray::{s, Array2};
use proptest::prelude::*;
use tensorpress_lowrank::{
    activation_error, asvd, channel_rms, eora, factorize, lorc, svd_llm, BitStack, BitStackConfig,
    ErrorMetric, RankSelection,
};
use tensorpress_tensor::{linalg, ChannelStats, Hessian, SeededRng};

/// Calibration inputs `[tokens, in]`: `latent` factors mixed into the
/// channels, every `outlier_every`-th channel amplified, plus noise.
fn activations(
    rng: &mut SeededRng,
    tokens: usize,
    inp: usize,
    latent: usize,
    outlier_every: usize,
) -> Array2<f32> {
    let mut x = rng
        .array_normal((tokens, latent))
        .dot(&rng.array_normal((latent, inp)))
        + rng.array_normal((tokens, inp)) * 0.2;
    for j in (0..inp).step_by(outlier_every) {
        x.column_mut(j).mapv_inplace(|v| v * 10.0);
    }
    x
}

/// The pipeline's statistics: the GPTQ Hessian `(2/n) Σ x xᵀ` (undamped) and
/// the per-channel mean `|x|`.
fn calibrate(x: &Array2<f32>) -> (Array2<f64>, ndarray::Array1<f32>) {
    let mut h = Hessian::new(x.ncols());
    h.update(x.view()).unwrap();
    let mut stats = ChannelStats::new(x.ncols());
    stats.update(x.view()).unwrap();
    (h.finalize(0.0).unwrap().h, stats.abs_mean().unwrap())
}

/// `Σ_{i ≥ r} σ_i(W H^{1/2})²` through the symmetric square root (eigh), an
/// independent route to SVD-LLM's predicted optimum.
fn optimum_sq(w: &Array2<f32>, h: &Array2<f64>, rank: usize) -> f64 {
    let eig = linalg::eigh(h.view()).unwrap();
    let root = &eig.vectors
        * &eig
            .values
            .mapv(|v| v.max(0.0).sqrt())
            .insert_axis(ndarray::Axis(0));
    let s = linalg::singular_values(w.mapv(f64::from).dot(&root).view()).unwrap();
    s.slice(s![rank..]).iter().map(|v| v * v).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn svd_llm_is_optimal_and_beats_asvd_and_plain_svd(
        out in 4usize..24,
        inp in 4usize..24,
        rank_frac in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let mut rng = SeededRng::new(seed);
        let x = activations(&mut rng, 4 * inp, inp, (inp / 3).max(1), 4);
        let (h, mean_abs) = calibrate(&x);
        let w = rng.array_normal((out, inp));
        let rank = (((out.min(inp)) as f64 * rank_frac) as usize).max(1);
        let sel = RankSelection::Rank(rank);
        let err = |f: &tensorpress_lowrank::LowRank| {
            activation_error(w.view(), f.reconstruct().view(), h.view()).unwrap().frobenius
        };
        let e_llm = err(&svd_llm(w.view(), h.view(), sel).unwrap());
        let e_asvd = err(&asvd(w.view(), mean_abs.view(), sel).unwrap());
        let e_svd = err(&factorize(w.view(), sel).unwrap());
        let scale = activation_error(w.view(), Array2::zeros(w.dim()).view(), h.view()).unwrap().frobenius;
        let tol = 1e-5 * scale;
        prop_assert!(e_llm <= e_asvd + tol, "SVD-LLM {} > ASVD {}", e_llm, e_asvd);
        prop_assert!(e_llm <= e_svd + tol, "SVD-LLM {} > SVD {}", e_llm, e_svd);
        let opt = optimum_sq(&w, &h, rank).sqrt();
        prop_assert!((e_llm - opt).abs() <= tol, "SVD-LLM {} vs optimum {}", e_llm, opt);
    }
}

#[test]
fn measured_errors_on_an_outlier_layer() {
    let mut rng = SeededRng::new(2024);
    let (out, inp) = (128, 96);
    let x = activations(&mut rng, 1024, inp, 24, 8);
    let (h, mean_abs) = calibrate(&x);
    let w = rng.array_normal((out, inp)) * 0.05;
    let rel = |approx: &Array2<f32>| {
        activation_error(w.view(), approx.view(), h.view())
            .unwrap()
            .relative
    };

    println!(
        "relative output error ‖(W − AB)X‖/‖WX‖, {out}×{inp}, 24 latent factors, 1/8 channels ×10"
    );
    println!("rank  plain SVD   ASVD(α=.5)  SVD-LLM");
    for rank in [8, 16, 24, 32, 48] {
        let sel = RankSelection::Rank(rank);
        let e_svd = rel(&factorize(w.view(), sel).unwrap().reconstruct());
        let e_asvd = rel(&asvd(w.view(), mean_abs.view(), sel).unwrap().reconstruct());
        let llm = svd_llm(w.view(), h.view(), sel).unwrap();
        let e_llm = rel(&llm.reconstruct());
        println!("{rank:>4}  {e_svd:>9.4}  {e_asvd:>10.4}  {e_llm:>8.4}");
        assert!(e_llm <= e_asvd && e_asvd < e_svd, "rank {rank}");
        assert!((e_llm - llm.predicted_relative_error()).abs() < 1e-4);
    }

    // Compensation of a 3-level (≈ 2-bit) rounding.
    let step = 0.05f32;
    let w_q = w.mapv(|v| ((v / step).round().clamp(-1.0, 1.0)) * step);
    let base = rel(&w_q);
    println!("compensating a 3-level rounding (output error {base:.4})");
    println!("rank  LoRC      EoRA      +bits/weight (fp16)");
    for rank in [4, 8, 16, 32] {
        let ad_l = lorc(w.view(), w_q.view(), rank).unwrap();
        let ad_e = eora(w.view(), w_q.view(), h.view(), rank).unwrap();
        let e_l = rel(&ad_l.apply(w_q.view()).unwrap());
        let e_e = rel(&ad_e.apply(w_q.view()).unwrap());
        println!(
            "{rank:>4}  {e_l:.4}    {e_e:.4}    {:.3}",
            ad_e.added_bits_per_weight(16.0)
        );
        assert!(e_e < e_l && e_l < base, "rank {rank}");
    }

    // BitStack with the paper's activation scaling vs unscaled.
    let cfg = BitStackConfig::new(6).magnitude_rank(1);
    let scaled =
        BitStack::decompose(w.view(), Some(channel_rms(h.view()).unwrap().view()), &cfg).unwrap();
    let plain = BitStack::decompose(w.view(), None, &cfg).unwrap();
    println!("BitStack (k = 1): blocks, bits/weight, output error unscaled / activation-scaled");
    for n in 1..=6 {
        let e_p = rel(&plain.reconstruct(n).unwrap());
        let e_s = rel(&scaled.reconstruct(n).unwrap());
        println!(
            "{n:>4}  {:.3}  {e_p:.4} / {e_s:.4}",
            scaled.bits_per_weight(n)
        );
        assert!(e_s < e_p, "block {n}");
    }
    let gains = scaled
        .error_reductions(w.view(), ErrorMetric::Gram(h.view()))
        .unwrap();
    assert!(gains[0] > gains[5]);
}
