//! Low rank in the pipeline: EoRA and LoRC adapters after quantization, run
//! as `W'x + A(Bx)`, truncated per rank, and written as a PEFT LoRA folder;
//! factorized layers (SVD, ASVD, SVD-LLM) under a parameter budget, written
//! as `u`/`v` factor pairs that reload; BitStack stacks loaded at any budget.

use std::sync::Arc;

use tensorpress::compress::{
    bitstack_llama, compress_llama, factorize_llama, set_adapter_rank, write_hf_checkpoint,
    write_peft_adapter, Compensation, CompressOptions, CompressReport, ExportFormat, ExportOptions,
    FactorMethod, Factorization, RankAllocation, StackedFile,
};
use tensorpress::io::export::FloatDType;
use tensorpress::lowrank::BitStackConfig;
use tensorpress::models::llama::LlamaModel;
use tensorpress::quant::{QuantSpec, Rtn};

use crate::common::{max_gap, model, windows, write_hf_folder};

fn rtn_w2(compensation: Option<Compensation>) -> (LlamaModel, CompressReport) {
    let mut m = model();
    // Calibrated, so every layer reports its output error.
    let mut options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(2).group(32))), true);
    options.compensation = compensation;
    let report = compress_llama(&mut m, &windows(), &options, &mut |_| {}).unwrap();
    (m, report)
}

fn mean_output_error(r: &CompressReport) -> f64 {
    r.layers.iter().filter_map(|l| l.output_error).sum::<f64>() / r.layers.len() as f64
}

#[test]
fn eora_beats_lorc_on_the_calibration_outputs_and_ranks_truncate() {
    let (plain_model, plain) = rtn_w2(None);
    let (mut eora_model, eora) = rtn_w2(Some(Compensation::eora(8)));
    let (_, lorc) = rtn_w2(Some(Compensation::lorc(8)));
    assert_eq!(eora.adapters.len(), 14);
    assert!(plain.adapters.is_empty());
    // Every layer's output error on the calibration inputs drops, and EoRA's
    // (fitted to those inputs) is below LoRC's.
    let (e0, e_eora, e_lorc) = (
        mean_output_error(&plain),
        mean_output_error(&eora),
        mean_output_error(&lorc),
    );
    assert!(e_eora < e_lorc && e_lorc < e0, "{e_eora} {e_lorc} {e0}");
    // The adapter's bits show in the report: 8 · (out + in) fp16 values.
    let l = &eora.layers[0];
    let p = &plain.layers[0];
    let added = 16.0 * 8.0 * (l.shape[0] + l.shape[1]) as f64 / (l.shape[0] * l.shape[1]) as f64;
    assert!((l.bits_per_weight - p.bits_per_weight - added).abs() < 1e-9);
    // Rank 0 removes the adapters: the model is plain RTN (same codes).
    let tokens = &windows()[0];
    let compensated = eora_model.logits(tokens, 0).unwrap();
    set_adapter_rank(&mut eora_model, &eora, 0).unwrap();
    let gap = max_gap(
        &eora_model.logits(tokens, 0).unwrap(),
        &plain_model.logits(tokens, 0).unwrap(),
    );
    assert!(gap < 1e-4, "{gap}");
    // The full rank restores the compensated model; a larger one is an error.
    set_adapter_rank(&mut eora_model, &eora, 8).unwrap();
    assert!(max_gap(&eora_model.logits(tokens, 0).unwrap(), &compensated) < 1e-5);
    assert!(set_adapter_rank(&mut eora_model, &eora, 9).is_err());
    // Ranks out of range are typed errors before anything runs.
    let mut m = model();
    let mut options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(4).group(32))), false);
    options.compensation = Some(Compensation::lorc(0));
    assert!(matches!(
        compress_llama(&mut m, &windows(), &options, &mut |_| {}),
        Err(tensorpress::Error::Compensation { .. })
    ));
}

#[test]
fn adapters_write_a_peft_lora_folder() {
    let (_, report) = rtn_w2(Some(Compensation::lorc(4)));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    // A Hugging Face source folder: no row permutation. The tiny model has
    // no folder, so point at a directory (only `is_dir` matters here).
    let files = write_peft_adapter(dir.path(), &report, FloatDType::F32, &out).unwrap();
    assert_eq!(files.len(), 2);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 4);
    let mut targets: Vec<String> = config["target_modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj"
        ]
    );
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st
        .tensor("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight")
        .unwrap();
    let b = st
        .tensor("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight")
        .unwrap();
    assert_eq!(
        (a.shape(), b.shape()),
        ([4, 128].as_slice(), [64, 4].as_slice())
    );
    assert_eq!(st.len(), 28);
    // No adapters, or a non-empty output folder, are errors.
    let (_, plain) = rtn_w2(None);
    assert!(
        write_peft_adapter(dir.path(), &plain, FloatDType::F32, &dir.path().join("x")).is_err()
    );
    assert!(write_peft_adapter(dir.path(), &report, FloatDType::F32, &out).is_err());
}

fn factorized(
    method: FactorMethod,
    reduction: f64,
    alloc: RankAllocation,
) -> (LlamaModel, CompressReport) {
    let mut m = model();
    let options = Factorization::new(method, reduction).allocation(alloc);
    let report = factorize_llama(&mut m, &windows(), &options, &mut |_| {}).unwrap();
    (m, report)
}

fn params_kept(r: &CompressReport) -> (usize, usize) {
    let dense = r.layers.iter().map(|l| l.shape[0] * l.shape[1]).sum();
    (r.factors.values().map(|f| f.params()).sum(), dense)
}

#[test]
fn factorizations_meet_the_budget_and_svd_llm_has_the_least_output_error() {
    for reduction in [0.2, 0.5] {
        let runs: Vec<CompressReport> =
            [FactorMethod::Svd, FactorMethod::Asvd, FactorMethod::SvdLlm]
                .into_iter()
                .map(|m| factorized(m, reduction, RankAllocation::Uniform).1)
                .collect();
        for r in &runs {
            assert_eq!(r.factors.len(), 14);
            let (kept, dense) = params_kept(r);
            assert!(
                kept as f64 <= (1.0 - reduction) * dense as f64,
                "{kept} of {dense}"
            );
            assert!(kept as f64 > (1.0 - reduction) * dense as f64 - 2.0 * 14.0 * 192.0);
        }
        // Same ranks everywhere; SVD-LLM is the optimal rank-r output error
        // on the calibration inputs, layer by layer (Eckart–Young after
        // whitening); plain SVD the optimal weight error.
        let [svd, asvd, white] = [&runs[0], &runs[1], &runs[2]];
        for ((s, a), w) in svd.layers.iter().zip(&asvd.layers).zip(&white.layers) {
            assert_eq!(svd.factors[&s.name].rank(), white.factors[&w.name].rank());
            let (es, ea, ew) = (
                s.output_error.unwrap(),
                a.output_error.unwrap(),
                w.output_error.unwrap(),
            );
            assert!(
                ew <= es * (1.0 + 1e-4) && ew <= ea * (1.0 + 1e-4),
                "{}: {ew} {es} {ea}",
                s.name
            );
            assert!(s.weight_error <= w.weight_error * (1.0 + 1e-4));
        }
    }
    // One budget across layers: the same parameters, other ranks.
    let (_, uniform) = factorized(FactorMethod::SvdLlm, 0.5, RankAllocation::Uniform);
    let (_, spectrum) = factorized(FactorMethod::SvdLlm, 0.5, RankAllocation::Spectrum);
    let ((ku, dense), (ks, _)) = (params_kept(&uniform), params_kept(&spectrum));
    assert!(ks <= ku && ks + 192 > ku, "{ks} vs {ku} of {dense}");
    assert!(uniform
        .factors
        .iter()
        .any(|(n, f)| spectrum.factors[n].rank() != f.rank()));
}

#[test]
fn factorized_exports_reload_as_the_factorized_model_and_bad_options_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_hf_folder(&src);
    let mut m = LlamaModel::from_hf_dir(&src, Default::default()).unwrap();
    let options = Factorization::new(FactorMethod::SvdLlm, 0.4);
    let report = factorize_llama(&mut m, &windows(), &options, &mut |_| {}).unwrap();
    let out = dir.path().join("factorized");
    let export = ExportOptions {
        format: ExportFormat::Dequantized,
        dtype: FloatDType::F32,
    };
    let written = write_hf_checkpoint(&src, &report, &export, &out).unwrap();
    let (kept, dense) = params_kept(&report);
    assert!(kept < dense);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let ranks = &config["tensorpress_factorized"]["ranks"];
    assert_eq!(ranks.as_object().unwrap().len(), 14);
    let q = "model.layers.1.self_attn.q_proj";
    assert_eq!(ranks[q], report.factors[q].rank());
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor(&format!("{q}.weight")).is_err());
    let r = report.factors[q].rank();
    assert_eq!(
        st.tensor(&format!("{q}.u.weight")).unwrap().shape(),
        [64, r]
    );
    assert_eq!(
        st.tensor(&format!("{q}.v.weight")).unwrap().shape(),
        [r, 64]
    );
    // The tensors hold the factors plus everything else, and no more.
    let others: usize = written.parameters as usize - kept;
    assert_eq!(others, 64 * 64 * 2 + 64 * (2 * 2 + 1));

    let back = LlamaModel::from_hf_dir(&out, Default::default()).unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 7 % 64) as u32).collect();
    let gap = max_gap(
        &m.logits(&tokens, 0).unwrap(),
        &back.logits(&tokens, 0).unwrap(),
    );
    assert!(gap < 1e-4, "reloaded logits moved by {gap}");

    // Bad options.
    for reduction in [0.0, 1.0, -0.1, f64::NAN] {
        let e = factorize_llama(
            &mut model(),
            &windows(),
            &Factorization::new(FactorMethod::Svd, reduction),
            &mut |_| {},
        );
        assert!(
            matches!(e, Err(tensorpress::Error::InvalidReduction { .. })),
            "{e:?}"
        );
    }
    let e = factorize_llama(
        &mut model(),
        &[],
        &Factorization::new(FactorMethod::SvdLlm, 0.2),
        &mut |_| {},
    );
    assert!(matches!(e, Err(tensorpress::Error::NoCalibration)), "{e:?}");
    // Plain SVD needs no data.
    factorize_llama(
        &mut model(),
        &[],
        &Factorization::new(FactorMethod::Svd, 0.2),
        &mut |_| {},
    )
    .unwrap();
    // Factor pairs are float tensors: not a compressed-tensors checkpoint.
    let ct = ExportOptions {
        format: ExportFormat::CompressedTensors,
        dtype: FloatDType::F32,
    };
    let e = write_hf_checkpoint(&src, &report, &ct, &dir.path().join("ct"));
    assert!(matches!(e, Err(tensorpress::Error::Export { .. })), "{e:?}");
    assert!(!dir.path().join("ct").exists());
}

#[test]
fn bitstack_loads_any_budget_from_one_decomposition() {
    let original = model();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 5 % 64) as u32).collect();
    let reference = original.logits(&tokens, 0).unwrap();
    let config = BitStackConfig::new(5).magnitude_rank(2);
    let stacked = bitstack_llama(&mut model(), &windows(), &config, &mut |_| {}).unwrap();
    assert_eq!(stacked.layers.len(), 14);
    assert!(stacked
        .layers
        .iter()
        .all(|l| l.stack.len() == 5 && l.importance.len() == 5));
    let (lo, hi) = stacked.bits_per_weight_range();
    assert!(lo > 1.0 && hi > 4.0 * lo, "{lo} {hi}");

    let mut last_gap = f32::INFINITY;
    let mut last_blocks = 0;
    for budget in [lo, 1.6 * lo, 2.5 * lo, 3.5 * lo, hi] {
        let plan = stacked.allocate(budget).unwrap();
        assert!(stacked.plan_bits_per_weight(&plan) <= budget + 1e-9);
        assert!(plan.blocks.iter().all(|&b| (1..=5).contains(&b)));
        let total: usize = plan.blocks.iter().sum();
        assert!(total >= last_blocks);
        last_blocks = total;
        let mut m = model();
        stacked.assemble(&mut m, &plan).unwrap();
        let gap = max_gap(&m.logits(&tokens, 0).unwrap(), &reference);
        assert!(
            gap < last_gap * 1.05,
            "budget {budget}: gap {gap} after {last_gap}"
        );
        last_gap = gap;
    }
    assert_eq!(last_blocks, 14 * 5);

    // On disk: the same plans from the metadata alone, the same weights from
    // the blocks a plan reads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.safetensors");
    let bytes = stacked.write(&path).unwrap();
    let file = StackedFile::open(&path).unwrap();
    assert_eq!(file.layers().len(), 14);
    assert_eq!(file.weights(), stacked.weights());
    let plan = stacked.allocate(2.0 * lo).unwrap();
    assert_eq!(file.allocate(2.0 * lo).unwrap(), plan);
    let (mut from_memory, mut from_file) = (model(), model());
    stacked.assemble(&mut from_memory, &plan).unwrap();
    file.assemble(&mut from_file, &plan).unwrap();
    let gap = max_gap(
        &from_memory.logits(&tokens, 0).unwrap(),
        &from_file.logits(&tokens, 0).unwrap(),
    );
    assert_eq!(gap, 0.0);
    assert!(bytes as f64 >= hi * stacked.weights() as f64 / 8.0);
    // Hostile or foreign files are typed errors, never panics.
    let raw = std::fs::read(&path).unwrap();
    for cut in [7, 100, raw.len() / 2, raw.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&p, &raw[..cut]).unwrap();
        assert!(StackedFile::open(&p).is_err(), "cut at {cut}");
    }
    let foreign = dir.path().join("plain.safetensors");
    let mut w = tensorpress::io::safetensors::SafetensorsWriter::new();
    w.add_array("x", ndarray::ArrayD::<f32>::zeros(vec![2]).view())
        .unwrap();
    w.write_file(&foreign).unwrap();
    let e = StackedFile::open(&foreign).unwrap_err();
    assert!(e.to_string().contains("not a BitStack file"), "{e}");
    assert!(file.read_layer(0, 6).is_err() && file.read_layer(14, 1).is_err());
    // Random byte flips (header, metadata, data): an error or a model, never
    // a panic.
    let mut rng = tensorpress::tensor::SeededRng::new(3);
    let header = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize + 8;
    for trial in 0..64 {
        let mut bytes = raw.clone();
        for _ in 0..4 {
            let at = if trial % 2 == 0 {
                8 + rng.next_u64() as usize % (header - 8)
            } else {
                rng.next_u64() as usize % bytes.len()
            };
            bytes[at] ^= 1 << (rng.next_u64() % 8);
        }
        let p = dir.path().join("flipped.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(f) = StackedFile::open(&p) {
            if let Ok(plan) = f.allocate(hi) {
                let _ = f.assemble(&mut model(), &plan);
            }
        }
    }
    // Below one block per layer, or not a number: typed errors.
    for bad in [0.5 * lo, f64::NAN] {
        assert!(matches!(
            stacked.allocate(bad),
            Err(tensorpress::Error::Budget { .. })
        ));
    }
    let e = bitstack_llama(&mut model(), &[], &config, &mut |_| {});
    assert!(matches!(e, Err(tensorpress::Error::NoCalibration)), "{e:?}");
    let e = bitstack_llama(
        &mut model(),
        &windows(),
        &config.magnitude_rank(0),
        &mut |_| {},
    );
    assert!(
        matches!(e, Err(tensorpress::Error::Factorize { .. })),
        "{e:?}"
    );
}
