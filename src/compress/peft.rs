//! Compensation adapters as a PEFT LoRA folder: `adapter_config.json` and
//! `adapter_model.safetensors`, which `peft.PeftModel.from_pretrained` loads
//! onto the (dequantized) compressed model.
//!
//! PEFT computes `W x + (α / r) · lora_B (lora_A x)`; an [`Adapter`]'s `A`
//! (`[out, r]`) is `lora_B` and its `B` (`[r, in]`) is `lora_A`, and
//! `lora_alpha = r` makes the scale 1. Tensor names are PEFT's saved names,
//! `base_model.model.{module}.lora_A.weight`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde_json::json;
use tensorpress_io::export::FloatDType;
use tensorpress_io::gguf::GgufFile;
use tensorpress_io::safetensors::SafetensorsWriter;
use tensorpress_io::write_bytes_atomic;
use tensorpress_lowrank::Adapter;
use tensorpress_models::llama::LlamaParams;

use super::export::{gguf_to_hf_row_order, qk_heads, write_staged};
use super::CompressReport;
use crate::{Error, Result};

/// Writes `report`'s compensation adapters as a PEFT LoRA folder at `out`
/// (created; it must be missing or empty), for the model compressed from
/// `source` (a GGUF file: query/key rows go back to Hugging Face order, as
/// [`write_hf_checkpoint`](super::write_hf_checkpoint) writes the weights;
/// or a Hugging Face folder). Factors are stored in `dtype`. Returns the
/// paths written.
///
/// # Errors
/// No adapters in the report; adapters of different ranks (a PEFT config
/// holds one `r` unless patterned — not written here); a non-empty `out`;
/// file errors.
pub fn write_peft_adapter(
    source: &Path,
    report: &CompressReport,
    dtype: FloatDType,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let ranks: BTreeSet<usize> = report.adapters.values().map(Adapter::rank).collect();
    let rank = match ranks.iter().collect::<Vec<_>>().as_slice() {
        [r] => **r,
        [] => {
            return Err(Error::Export {
                layer: "adapters".into(),
                reason: "the report holds no compensation adapters".into(),
            })
        }
        _ => {
            return Err(Error::Export {
                layer: "adapters".into(),
                reason: format!("adapters of ranks {ranks:?}: a PEFT folder here holds one rank"),
            })
        }
    };
    let gguf_params = if source.is_dir() {
        None
    } else {
        Some(LlamaParams::from_gguf(&GgufFile::open(source)?)?)
    };
    let mut tensors = SafetensorsWriter::new();
    let mut modules = BTreeSet::new();
    for (module, adapter) in &report.adapters {
        let mut lora_b = adapter.lora_b().to_owned();
        if let Some(heads) = gguf_params
            .as_ref()
            .and_then(|p| qk_heads(module, lora_b.nrows(), p))
        {
            let order = gguf_to_hf_row_order(lora_b.nrows(), heads)?;
            lora_b = lora_b.select(ndarray::Axis(0), &order);
        }
        let prefix = format!("base_model.model.{module}");
        add(
            &mut tensors,
            &format!("{prefix}.lora_A.weight"),
            adapter.lora_a().to_owned(),
            dtype,
        )?;
        add(
            &mut tensors,
            &format!("{prefix}.lora_B.weight"),
            lora_b,
            dtype,
        )?;
        if let Some(short) = module.rsplit('.').next() {
            modules.insert(short.to_string());
        }
    }
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "base_model_name_or_path": null,
    });
    let text = serde_json::to_string_pretty(&config)?;
    write_staged(out, |dir| {
        std::fs::create_dir_all(dir).map_err(|source| Error::File {
            path: dir.to_path_buf(),
            source,
        })?;
        let weights = dir.join("adapter_model.safetensors");
        tensors.write_file(&weights)?;
        let config = dir.join("adapter_config.json");
        write_bytes_atomic(&config, text.as_bytes())?;
        Ok(vec![config, weights])
    })
}

fn add(w: &mut SafetensorsWriter<'_>, name: &str, m: Array2<f32>, dtype: FloatDType) -> Result<()> {
    let m = m.into_dyn();
    match dtype {
        FloatDType::F32 => w.add_array(name, m.view())?,
        FloatDType::F16 => w.add_array(name, m.mapv(half::f16::from_f32).view())?,
        FloatDType::BF16 => w.add_array(name, m.mapv(half::bf16::from_f32).view())?,
    }
    Ok(())
}
