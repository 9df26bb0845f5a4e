//! Low-rank compensation in the pipeline: EoRA and LoRC adapters after
//! quantization, run as `W'x + A(Bx)`, truncated per rank, and written as a
//! PEFT LoRA folder.

use std::sync::Arc;

use tensorpress::compress::{
    compress_llama, set_adapter_rank, write_peft_adapter, Compensation, CompressOptions,
    CompressReport,
};
use tensorpress::io::export::FloatDType;
use tensorpress::models::llama::LlamaModel;
use tensorpress::quant::{QuantSpec, Rtn};

mod common;
use common::{max_gap, model, windows};

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
