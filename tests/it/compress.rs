//! `compress_llama` on a small random Llama: every targeted layer is quantized
//! and swapped for its dequantized weight, calibration drives GPTQ, runs are
//! deterministic, and bad options are typed errors.

use std::sync::Arc;

use tensorpress::compress::{
    compress_llama, CompressOptions, CompressedWeight, LayerFilter, Method, Progress,
};
use tensorpress::models::linear::to_matrix;
use tensorpress::models::llama::{LlamaModel, Naming};
use tensorpress::models::weights::{LoadOptions, MemoryWeights};
use tensorpress::quant::ggml::{GgmlRtn, GgmlType};
use tensorpress::quant::{Gptq, QuantSpec, Rtn};
use tensorpress::Error;

use crate::common::{max_gap, model, params, windows};

#[test]
fn rtn_quantizes_every_target_and_swaps_in_the_dequantized_weight() {
    let mut m = model();
    let spec = QuantSpec::int(4).group(32);
    let options = CompressOptions::new(Arc::new(Rtn::new(spec)), false);
    let mut layers_seen = 0;
    let report = compress_llama(&mut m, &[], &options, &mut |p| {
        if let Progress::Layer(_) = p {
            layers_seen += 1;
        }
    })
    .unwrap();
    // 7 linears per block, lm_head excluded by default.
    assert_eq!(report.layers.len(), 14);
    assert_eq!(layers_seen, 14);
    assert!(!report.quantized.contains_key("lm_head"));
    for l in &report.layers {
        assert!(l.output_error.is_none());
        assert!(l.weight_error > 0.0 && l.weight_error < 0.05, "{l:?}");
        let q = report.quantized[&l.name].as_quantized().unwrap();
        let w = to_matrix(&m.linear_mut(&l.name).unwrap().op().dense_weight().unwrap()).unwrap();
        assert_eq!(w, q.dequantize(), "{}", l.name);
    }
}

#[test]
fn gptq_beats_rtn_on_the_calibration_outputs_and_is_deterministic() {
    let spec = QuantSpec::int(3).group(32);
    let cal = windows();
    let run = |gptq: bool| {
        let mut m = model();
        let options = if gptq {
            CompressOptions::new(Arc::new(Gptq::new(spec)), true)
        } else {
            // Calibrated only to measure RTN's output error.
            CompressOptions::new(Arc::new(Rtn::new(spec)), true)
        };
        compress_llama(&mut m, &cal, &options, &mut |_| {}).unwrap()
    };
    let rtn = run(false);
    let gptq = run(true);
    let mean = |r: &tensorpress::compress::CompressReport| {
        r.layers
            .iter()
            .map(|l| l.output_error.unwrap())
            .sum::<f64>()
            / r.layers.len() as f64
    };
    assert!(
        mean(&gptq) < 0.8 * mean(&rtn),
        "gptq {} rtn {}",
        mean(&gptq),
        mean(&rtn)
    );
    let again = run(true);
    for (name, q) in &gptq.quantized {
        assert_eq!(q, &again.quantized[name], "{name}");
    }
}

#[test]
fn bad_options_are_typed_errors() {
    let mut m = model();
    let rtn = Arc::new(Rtn::new(QuantSpec::int(4).group(32)));
    let mut options = CompressOptions::new(rtn.clone(), false);
    options.targets =
        LayerFilter::new(["model.layers.*.mlp.gat_proj"], Vec::<String>::new()).unwrap();
    assert!(matches!(
        compress_llama(&mut m, &[], &options, &mut |_| {}),
        Err(Error::PatternMatchesNothing { pattern }) if pattern.contains("gat_proj")
    ));
    let options = CompressOptions::new(rtn, true);
    assert!(matches!(
        compress_llama(&mut m, &[], &options, &mut |_| {}),
        Err(Error::NoCalibration)
    ));
    // A quantizer error names the layer.
    let options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(4).group(0))), false);
    let err = compress_llama(&mut m, &[], &options, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Layer { layer, .. } if layer == "model.layers.0.self_attn.q_proj"),
        "{err}"
    );
}

#[test]
fn overrides_pick_per_layer_methods_including_ggml_blocks() {
    let mut m = model();
    let cal = windows();
    let mlp = LayerFilter::new(["*.mlp.*"], Vec::<String>::new()).unwrap();
    let options = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0))).override_layers(
        mlp,
        Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::IQ4NL).with_importance())),
    );
    let report = compress_llama(&mut m, &cal, &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 14);
    for l in &report.layers {
        let CompressedWeight::Ggml(g) = &report.quantized[&l.name] else {
            panic!("{} is not GGML", l.name);
        };
        let want = if l.name.contains(".mlp.") {
            GgmlType::IQ4NL
        } else {
            GgmlType::Q8_0
        };
        assert_eq!(g.ggml_type(), want, "{}", l.name);
        // Calibrated (the IQ4_NL layers use importance), so every layer reports its output error.
        assert!(l.output_error.is_some());
        let w = to_matrix(&m.linear_mut(&l.name).unwrap().op().dense_weight().unwrap()).unwrap();
        assert_eq!(w, g.dequantize().unwrap());
    }
    // An override that matches no targeted layer is a typed error.
    let typo = LayerFilter::new(["*.mlp.up"], Vec::<String>::new()).unwrap();
    let options = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0)))
        .override_layers(typo, Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q4_0))));
    assert!(matches!(
        compress_llama(&mut model(), &cal, &options, &mut |_| {}),
        Err(Error::PatternMatchesNothing { .. })
    ));
}

#[test]
fn the_shipped_recipe_parses_and_selects_layers() {
    let r = tensorpress::compress::Recipe::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/recipes/gptq-w4-g64.toml"
    )))
    .unwrap();
    assert_eq!((r.windows, r.tokens), (128, 512));
    let mut m = model();
    let report = compress_llama(&mut m, &windows(), &r.options, &mut |_| {}).unwrap();
    for l in &report.layers {
        let q = report.quantized[&l.name].as_quantized().unwrap();
        let bits = if l.name.ends_with("down_proj") { 8 } else { 4 };
        assert_eq!(q.spec().bits(), bits, "{}", l.name);
    }
}

#[test]
fn awq_lowers_the_output_error_of_rtn_and_folds_scales_into_the_norms() {
    use tensorpress::compress::Smoothing;
    use tensorpress::quant::Awq;
    let spec = QuantSpec::int(3).group(32);
    let block0_error = |report: &tensorpress::compress::CompressReport| -> f64 {
        report
            .layers
            .iter()
            .filter(|l| l.name.starts_with("model.layers.0."))
            .map(|l| l.output_error.unwrap())
            .sum()
    };
    // RTN, calibrated only to measure its output error.
    let mut m = model();
    let rtn = compress_llama(
        &mut m,
        &windows(),
        &CompressOptions::new(Arc::new(Rtn::new(spec)), true),
        &mut |_| {},
    )
    .unwrap();
    let mut m = model();
    let mut options = CompressOptions::new(Arc::new(Awq::new(spec)), true);
    options.smoothing = Some(Smoothing::Awq(Awq::new(spec)));
    let awq = compress_llama(&mut m, &windows(), &options, &mut |_| {}).unwrap();
    assert!(
        block0_error(&awq) < block0_error(&rtn),
        "AWQ {} vs RTN {}",
        block0_error(&awq),
        block0_error(&rtn)
    );
    // q/k/v, gate/up and down per block (grouped-query attention: no v → o).
    assert_eq!(awq.smoothing.len(), 3 * 2);
    for s in &awq.smoothing {
        let (loss, identity) = s.loss.unwrap();
        assert!(loss <= identity, "{s:?}");
    }
    // The norms changed and are reported for the exporters; the smoothed
    // up_proj rows are quantized, so only the norms are replaced.
    let names: Vec<&String> = awq.replaced.keys().collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(awq
        .replaced
        .contains_key("model.layers.1.post_attention_layernorm.weight"));
    let gamma = m.blocks()[0].attn_norm().to_vec1::<f32>().unwrap();
    let reported = &awq.replaced["model.layers.0.input_layernorm.weight"];
    assert_eq!(reported.iter().copied().collect::<Vec<_>>(), gamma);
}

#[test]
fn smoothquant_keeps_the_model_close_and_quantizes_activations() {
    use tensorpress::compress::{ActivationQuant, Smoothing};
    let mut p = params();
    p.num_kv_heads = p.num_heads;
    let w = MemoryWeights::random_llama(&p, 11);
    let load = || LlamaModel::load(&w, p.clone(), Naming::HuggingFace, LoadOptions::default());
    let base = load().unwrap();
    let tokens = &windows()[0];
    let base_logits = to_matrix(&base.logits(tokens, 0).unwrap()).unwrap();
    let mut m = load().unwrap();
    let mut options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(8).channel())), false);
    options.smoothing = Some(Smoothing::SmoothQuant { alpha: 0.5 });
    options.activations = Some(ActivationQuant { bits: 8 });
    let report = compress_llama(&mut m, &windows(), &options, &mut |_| {}).unwrap();
    // Multi-head attention: v → o is smoothed too.
    assert_eq!(report.smoothing.len(), 4 * 2);
    assert_eq!(report.activations, Some(ActivationQuant { bits: 8 }));
    let logits = to_matrix(&m.logits(tokens, 0).unwrap()).unwrap();
    let err = (&logits - &base_logits).mapv(|v| v * v).sum().sqrt()
        / base_logits.mapv(|v| v * v).sum().sqrt();
    assert!(err < 0.05, "relative logit error {err}");
    assert!(err > 0.0, "activations and weights were quantized");
}

#[test]
fn smoothquant_w8a8_exports_reload_with_their_norms_and_activation_quantization() {
    use tensorpress::compress::{
        calibration_windows, parse_scheme, write_hf_checkpoint, ExportFormat, ExportOptions,
    };
    use tensorpress::io::export::FloatDType;
    use tensorpress::io::gguf::GgufFile;
    use tensorpress::io::testdata;
    use tensorpress::models::tokenizer::TextTokenizer;

    let path = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let gguf = GgufFile::open(&path).unwrap();
    let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let text = testdata::sotu_text(1990..=1990).unwrap();
    let calib = calibration_windows(&tokenizer.encode(&text).unwrap(), 2, 64).unwrap();
    // Block 0 only: it runs first, so the test stays short.
    let mut options = parse_scheme("smoothquant-w8a8").unwrap().options();
    options.targets = LayerFilter::new(["model.layers.0.*"], ["lm_head"]).unwrap();
    let report = compress_llama(&mut m, &calib, &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 7);
    assert_eq!(report.smoothing.len(), 3);
    assert_eq!(report.replaced.len(), 2, "the two norms of block 0");
    let tokens = [1u32, 504, 3136, 282, 260, 1345, 28, 5346, 30];
    let want = m.logits(&tokens, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        format: ExportFormat::CompressedTensors,
        dtype: FloatDType::F32,
    };
    write_hf_checkpoint(&path, &report, &opts, dir.path()).unwrap();
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(config.contains("\"input_activations\""), "{config}");
    let back = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
    let got = back.logits(&tokens, 0).unwrap();
    let diff = max_gap(&got, &want);
    assert!(diff < 1e-3, "{diff}");
    // GPTQ checkpoints have no way to say the activations are quantized.
    let dir = tempfile::tempdir().unwrap();
    let gptq = ExportOptions::new(ExportFormat::Gptq);
    assert!(matches!(
        write_hf_checkpoint(&path, &report, &gptq, dir.path()),
        Err(Error::Export { .. })
    ));
}

#[test]
fn compressed_layers_run_on_the_kernels_with_the_dequantized_model_logits() {
    use tensorpress::compress::attach_kernels;
    use tensorpress::models::linear::KernelActivations;
    use tensorpress::models::llama::DecodeCache;

    let cal = windows();
    let mut m = model();
    // GPTQ act-order int4 g32 by default, GGML Q4_0 on the MLP up projections,
    // Q8_0 on lm_head, and 3-bit down projections (no kernel: they stay f32).
    let gptq = Gptq::new(QuantSpec::int(4).group(32)).act_order(true);
    let mut options = CompressOptions::new(Arc::new(gptq), true);
    options.targets = LayerFilter::all();
    let options = options
        .override_layers(
            LayerFilter::new(["*.up_proj"], Vec::<String>::new()).unwrap(),
            Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q4_0))),
        )
        .override_layers(
            LayerFilter::new(["lm_head"], Vec::<String>::new()).unwrap(),
            Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0))),
        )
        .override_layers(
            LayerFilter::new(["*.down_proj"], Vec::<String>::new()).unwrap(),
            Method::Weight {
                quantizer: Arc::new(Rtn::new(QuantSpec::int(3).group(32))),
                calibrate: false,
            },
        );
    let report = compress_llama(&mut m, &cal, &options, &mut |_| {}).unwrap();
    assert!(report
        .quantized
        .values()
        .any(|w| w.as_quantized().is_some_and(|q| q.g_idx().is_some())));
    let tokens = &cal[0][..20];
    let want = m.logits(tokens, 0).unwrap();

    let mut k = m.clone();
    let attached = attach_kernels(&mut k, &report, KernelActivations::F32).unwrap();
    assert_eq!(attached.attached.len(), 13, "{attached:?}");
    assert_eq!(attached.skipped.len(), 2);
    assert!(attached
        .skipped
        .iter()
        .all(|(n, _)| n.ends_with("down_proj")));
    let got = k.logits(tokens, 0).unwrap();
    assert!(
        max_gap(&got, &want) < 1e-4,
        "f32 kernels: {}",
        max_gap(&got, &want)
    );
    // Decoding token by token through the GEMV kernels gives the same logits.
    let mut cache = DecodeCache::new();
    k.decode(&mut cache, &tokens[..12]).unwrap();
    for (i, &t) in tokens.iter().enumerate().skip(12) {
        let step = k.decode(&mut cache, &[t]).unwrap();
        let row = want.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
        assert!(
            max_gap(&step, &row) < 1e-4,
            "decode at {i}: {}",
            max_gap(&step, &row)
        );
    }

    // Int8 activations: close to the f32 products, not equal.
    let mut k8 = m.clone();
    attach_kernels(&mut k8, &report, KernelActivations::Int8).unwrap();
    let got8 = k8.logits(tokens, 0).unwrap();
    let gap = max_gap(&got8, &want);
    assert!(gap > 0.0 && gap < 0.05, "int8 activations: {gap}");
}

/// Fraction of exact zeros in a layer's current weight.
fn zero_fraction(m: &mut LlamaModel, name: &str) -> f64 {
    let w = to_matrix(&m.linear_mut(name).unwrap().op().dense_weight().unwrap()).unwrap();
    w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64
}

#[test]
fn pruning_schemes_prune_every_target_and_sparsegpt_beats_magnitude() {
    use tensorpress::compress::parse_scheme;
    let cal = windows();
    // Mean squared change of the logits on the calibration windows.
    let base = model();
    let logits_gap = |m: &LlamaModel| {
        cal.iter()
            .map(|w| {
                let d = (m.logits(w, 0).unwrap() - base.logits(w, 0).unwrap()).unwrap();
                d.sqr()
                    .unwrap()
                    .mean_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .sum::<f32>()
    };
    let mut gaps = Vec::new();
    for scheme in ["magnitude-50", "wanda-50", "sparsegpt-50"] {
        let mut m = model();
        let options = parse_scheme(scheme).unwrap().options();
        let report = compress_llama(&mut m, &cal, &options, &mut |_| {}).unwrap();
        assert_eq!(report.layers.len(), 14, "{scheme}");
        // Pruned layers stay float: no codes, a replaced tensor and a mask each.
        assert!(report.quantized.is_empty());
        for l in &report.layers {
            assert_eq!(l.sparsity, 0.5, "{scheme} {}", l.name);
            assert_eq!(zero_fraction(&mut m, &l.name), 0.5);
            assert_eq!(report.masks[&l.name].sparsity(), 0.5);
            assert!(report.replaced.contains_key(&format!("{}.weight", l.name)));
            assert_eq!(l.bits_per_weight, 9.0);
        }
        gaps.push(logits_gap(&m));
    }
    let [magnitude, wanda, sparsegpt] = gaps[..] else {
        unreachable!()
    };
    // A random model has little structure to exploit; SmolLM2 figures are in docs/sparsity.md.
    assert!(sparsegpt < 0.8 * magnitude && sparsegpt < wanda, "{gaps:?}");
    assert!(wanda < magnitude, "{gaps:?}");
}

#[test]
fn joint_and_prune_then_quantize_keep_the_pattern() {
    use tensorpress::compress::parse_scheme;
    use tensorpress::sparsity::is_n_m_sparse;
    let cal = windows();
    // Joint: one sweep gives 2:4 int4 codes that decode to the model's weight.
    let mut m = model();
    let joint = parse_scheme("sparsegpt-2:4-w4-g32").unwrap().options();
    let report = compress_llama(&mut m, &cal, &joint, &mut |_| {}).unwrap();
    for l in &report.layers {
        let q = report.quantized[&l.name].as_quantized().unwrap();
        let w = to_matrix(&m.linear_mut(&l.name).unwrap().op().dense_weight().unwrap()).unwrap();
        assert_eq!(w, q.dequantize(), "{}", l.name);
        assert!(is_n_m_sparse(w.view(), 2, 4).unwrap(), "{}", l.name);
    }
    // Prune, then GPTQ that keeps the zeros.
    let mut m = model();
    let prune = parse_scheme("sparsegpt-2:4").unwrap().options();
    compress_llama(&mut m, &cal, &prune, &mut |_| {}).unwrap();
    let quant = parse_scheme("gptq-w4-g32-sparse").unwrap().options();
    let report = compress_llama(&mut m, &cal, &quant, &mut |_| {}).unwrap();
    for l in &report.layers {
        let w = to_matrix(&m.linear_mut(&l.name).unwrap().op().dense_weight().unwrap()).unwrap();
        assert!(is_n_m_sparse(w.view(), 2, 4).unwrap(), "{}", l.name);
        // A kept weight may also round to zero.
        assert!(l.sparsity >= 0.5 && l.sparsity < 0.52, "{l:?}");
    }
}

#[test]
fn pruning_errors_are_typed() {
    use tensorpress::compress::parse_scheme;
    // Wanda and SparseGPT need calibration text.
    for scheme in ["wanda-50", "sparsegpt-2:4"] {
        let options = parse_scheme(scheme).unwrap().options();
        assert!(matches!(
            compress_llama(&mut model(), &[], &options, &mut |_| {}),
            Err(Error::NoCalibration)
        ));
    }
    // 64 input columns do not split into groups of 3.
    let options = parse_scheme("magnitude-2:3").unwrap().options();
    let err = compress_llama(&mut model(), &[], &options, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Prune {
                source: tensorpress::sparsity::Error::IndivisibleGroups { m: 3, .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn ffn_activation_sparsity_hits_its_targets_and_counts_them() {
    use tensorpress::activation::{calibrate_ffn, FfnSparsity, FfnSparsityHook};
    let mut m = model();
    let cal = windows();
    let stats = calibrate_ffn(&mut m, &cal, 10_000).unwrap();
    assert_eq!(stats.blocks.len(), 2);
    assert_eq!(stats.blocks[0].tokens, 6 * 48);
    let dense = m.logits(&cal[0], 0).unwrap();
    let mut gaps = Vec::new();
    for rule in [
        FfnSparsity::Chess(0.5),
        FfnSparsity::Cats(0.5),
        FfnSparsity::TopK(0.5),
        FfnSparsity::ChessPlus(0.5),
    ] {
        let hook = Arc::new(FfnSparsityHook::new(&stats, rule).unwrap());
        m.set_ffn_hook(Some(hook.clone()));
        for w in &cal {
            m.logits(w, 0).unwrap();
        }
        // On the calibration tokens themselves, every layer meets the target.
        for layer in hook.report() {
            assert_eq!(layer.tokens, 6 * 48);
            assert!((layer.sparsity - 0.5).abs() < 0.01, "{rule:?}: {layer:?}");
            // CHESS+ thresholds the query and output projections' inputs too
            // (near the target: later inputs shift once earlier ones are sparse).
            let attention = if matches!(rule, FfnSparsity::ChessPlus(_)) {
                0.5
            } else {
                0.0
            };
            assert!((layer.query_sparsity - attention).abs() < 0.03, "{layer:?}");
            assert!(
                (layer.output_sparsity - attention).abs() < 0.03,
                "{layer:?}"
            );
        }
        let sparse = m.logits(&cal[0], 0).unwrap();
        gaps.push(max_gap(&sparse, &dense));
        m.set_ffn_hook(None);
    }
    assert!(gaps.iter().all(|g| *g > 0.0), "{gaps:?}");
    // The runner is unchanged once the hook is gone.
    assert_eq!(max_gap(&m.logits(&cal[0], 0).unwrap(), &dense), 0.0);
    // Targets outside (0, 1) and thresholds for top-k are errors.
    assert!(FfnSparsityHook::new(&stats, FfnSparsity::Chess(1.0)).is_err());
    assert!(FfnSparsityHook::new(&stats, FfnSparsity::TopK(0.0)).is_err());
    assert!(stats.thresholds(FfnSparsity::TopK(0.5)).is_err());
    assert!(stats.attention_thresholds(1.5).is_err());
    assert_eq!(stats.blocks[1].query_abs.len(), 6 * 48 * 64);
    assert!(matches!(
        calibrate_ffn(&mut m, &[], 10),
        Err(Error::NoCalibration)
    ));
}

#[test]
fn structured_ffn_pruning_writes_a_smaller_smollm2_that_reloads() {
    use tensorpress::compress::{
        prune_ffn_llama, write_hf_checkpoint, ExportFormat, ExportOptions,
    };
    use tensorpress::io::export::FloatDType;
    use tensorpress::io::gguf::GgufFile;
    use tensorpress::io::testdata;

    let path = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let gguf = GgufFile::open(&path).unwrap();
    let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let tokens = [1u32, 504, 3136, 282, 260, 1345, 28, 5346, 30];
    let base = m.logits(&tokens, 0).unwrap();
    let cal: Vec<Vec<u32>> = (0..2)
        .map(|w| {
            (0..64)
                .map(|i| 300 + ((w * 64 + i) * 37 % 4000) as u32)
                .collect()
        })
        .collect();
    let report = prune_ffn_llama(&mut m, &cal, 0.25, &mut |_| {}).unwrap();
    assert_eq!(m.params().intermediate_size, 1152);
    assert_eq!(report.layers.len(), 90);
    assert!(report
        .layers
        .iter()
        .filter_map(|l| l.output_error)
        .all(|e| e > 0.0 && e < 1.0));
    let pruned = m.logits(&tokens, 0).unwrap();
    assert!(max_gap(&pruned, &base) > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        format: ExportFormat::Dequantized,
        dtype: FloatDType::F32,
    };
    write_hf_checkpoint(&path, &report, &opts, dir.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["intermediate_size"], 1152);
    let back = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(back.params().intermediate_size, 1152);
    let diff = max_gap(&back.logits(&tokens, 0).unwrap(), &pruned);
    assert!(diff < 1e-3, "{diff}");
    // Removing every neuron, or none, is an error.
    for ratio in [1.0, 0.0] {
        assert!(matches!(
            prune_ffn_llama(&mut m, &cal, ratio, &mut |_| {}),
            Err(Error::Prune { .. })
        ));
    }
}

#[test]
fn relevance_is_gradient_times_activation_of_the_target_logit() {
    use tensorpress::models::eval::curvature::{target_logit, target_logit_gradients, weight_var};

    let p = params();
    let w = MemoryWeights::random_llama(&p, 11);
    let m = LlamaModel::load(&w, p, Naming::HuggingFace, LoadOptions::trainable()).unwrap();
    let cal = windows();
    let layer = "model.layers.0.mlp.down_proj".to_string();
    let (_, grads) =
        target_logit_gradients(&m, &cal[..2], std::slice::from_ref(&layer), &mut |_, _| {})
            .unwrap();
    let g = &grads[&layer];
    let var = weight_var(&m, &layer).unwrap();
    let w0 = to_matrix(var.as_tensor()).unwrap();
    let mean_logit = |m: &LlamaModel| -> f64 {
        cal[..2]
            .iter()
            .map(|t| f64::from(target_logit(m, t).unwrap().to_scalar::<f32>().unwrap()))
            .sum::<f64>()
            / 2.0
    };
    for neuron in [3usize, 77] {
        let relevance: f64 = w0
            .column(neuron)
            .iter()
            .zip(g.column(neuron))
            .map(|(w, g)| f64::from(*w) * f64::from(*g))
            .sum();
        // Scaling neuron i's output by (1 ± ε) is scaling its down column.
        let eps = 1e-2f32;
        let scaled = |s: f32| {
            let mut w = w0.clone();
            w.column_mut(neuron).mapv_inplace(|v| v * s);
            let t = candle_core::Tensor::from_vec(
                w.iter().copied().collect(),
                w.dim(),
                &candle_core::Device::Cpu,
            )
            .unwrap();
            var.set(&t).unwrap();
            mean_logit(&m)
        };
        let fd = (scaled(1.0 + eps) - scaled(1.0 - eps)) / (2.0 * f64::from(eps));
        scaled(1.0);
        assert!(
            (fd - relevance).abs() < 1e-3 + 0.02 * relevance.abs(),
            "neuron {neuron}: finite difference {fd} vs gradient × activation {relevance}"
        );
    }
}

#[test]
fn ffn_pruning_allocations_meet_the_target_and_pad_for_export() {
    use tensorpress::compress::{prune_ffn_llama_with, BlockRatios, FfnPruning, NeuronCriterion};
    use tensorpress::sparsity::SapRule;

    let cal = windows();
    let p = params();
    let w = MemoryWeights::random_llama(&p, 11);
    for (criterion, allocation) in [
        (NeuronCriterion::Relevance, BlockRatios::Uniform),
        (
            NeuronCriterion::Energy,
            BlockRatios::Sap(SapRule::default()),
        ),
        (NeuronCriterion::Energy, BlockRatios::PreCropping),
        (NeuronCriterion::Relevance, BlockRatios::PreCropping),
    ] {
        let mut m =
            LlamaModel::load(&w, params(), Naming::HuggingFace, LoadOptions::trainable()).unwrap();
        let options = FfnPruning::new(0.4)
            .criterion(criterion)
            .allocation(allocation)
            .pad_to_uniform(true);
        let report = prune_ffn_llama_with(&mut m, &cal, &options, &mut |_| {}).unwrap();
        let widths: Vec<usize> = m
            .blocks()
            .iter()
            .map(|b| b.linears()[4].op().out_features())
            .collect();
        let removed = 256 - widths.iter().sum::<usize>();
        // Rounding up per block: at most one extra neuron per block.
        assert!(
            (102..=105).contains(&removed),
            "{criterion:?} {allocation:?}: widths {widths:?}"
        );
        // Padded to one width in the report, in memory as pruned.
        let max = *widths.iter().max().unwrap();
        for (b, &width) in widths.iter().enumerate() {
            let g = &report.replaced[&format!("model.layers.{b}.mlp.gate_proj.weight")];
            let d = &report.replaced[&format!("model.layers.{b}.mlp.down_proj.weight")];
            assert_eq!((g.shape()[0], d.shape()[1]), (max, max));
            // The padding is zeros.
            assert!(g.slice(ndarray::s![width.., ..]).iter().all(|v| *v == 0.0));
        }
    }
    // Relevance needs gradients.
    let mut m = model();
    let options = FfnPruning::new(0.25).criterion(NeuronCriterion::Relevance);
    assert!(prune_ffn_llama_with(&mut m, &cal, &options, &mut |_| {}).is_err());
}

#[test]
fn head_pruning_writes_a_smollm2_with_fewer_query_heads_that_reloads() {
    use tensorpress::compress::{
        prune_heads_llama, write_hf_checkpoint, ExportFormat, ExportOptions, NeuronCriterion,
    };
    use tensorpress::io::export::FloatDType;
    use tensorpress::io::gguf::GgufFile;
    use tensorpress::io::testdata;

    let path = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let gguf = GgufFile::open(&path).unwrap();
    let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let tokens = [1u32, 504, 3136, 282, 260, 1345, 28, 5346, 30];
    let base = m.logits(&tokens, 0).unwrap();
    let cal: Vec<Vec<u32>> = (0..2)
        .map(|w| {
            (0..64)
                .map(|i| 300 + ((w * 64 + i) * 37 % 4000) as u32)
                .collect()
        })
        .collect();
    let report =
        prune_heads_llama(&mut m, &cal, 0.3, NeuronCriterion::Energy, &mut |_| {}).unwrap();
    // Nine query heads in three groups: one per group goes.
    assert_eq!(m.params().num_heads, 6);
    assert_eq!(report.layers.len(), 60);
    assert!(report
        .layers
        .iter()
        .filter_map(|l| l.output_error)
        .all(|e| e > 0.0 && e < 1.0));
    let pruned = m.logits(&tokens, 0).unwrap();
    assert!(max_gap(&pruned, &base) > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOptions {
        format: ExportFormat::Dequantized,
        dtype: FloatDType::F32,
    };
    write_hf_checkpoint(&path, &report, &opts, dir.path()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["num_attention_heads"], 6);
    assert_eq!(config["head_dim"], 64);
    let back = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
    assert_eq!(back.params().num_heads, 6);
    let diff = max_gap(&back.logits(&tokens, 0).unwrap(), &pruned);
    assert!(diff < 1e-3, "{diff}");
    // Removing a whole group, or nothing, is an error.
    for ratio in [1.0, 0.0] {
        assert!(matches!(
            prune_heads_llama(&mut m, &cal, ratio, NeuronCriterion::Energy, &mut |_| {}),
            Err(Error::Prune { .. })
        ));
    }
}
