//! Writes quantized checkpoints of a tiny random Llama in every layout the
//! exporters produce, for the Python check that the real loaders read them
//! (`scripts/reference/check_quantized_exports.py`): compressed-tensors
//! folders for the `compressed-tensors` package and transformers, GPTQ folders
//! for transformers + optimum + GPTQModel, and next to each folder
//! `NAME.expected.safetensors` with the weights our `QuantizedTensor`s
//! dequantize to (f32), which the loaders must reproduce.
//!
//! ```text
//! cargo run -p tensorpress-io --example export_samples -- /tmp/tp-exports
//! ```

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use serde_json::{json, Value};
use tensorpress_io::export::{
    CompressedTensorsWriter, CtPacking, FloatDType, GptqOptions, GptqWriter,
};
use tensorpress_io::safetensors::SafetensorsWriter;
use tensorpress_quant_core::int::IntGrid;
use tensorpress_quant_core::{QuantSpec, QuantizedTensor, Rtn, WeightQuantizer};
use tensorpress_tensor::SeededRng;

const HIDDEN: usize = 64;
const INTER: usize = 128;
const LAYERS: usize = 2;
const VOCAB: usize = 128;
const KV: usize = 32; // 2 KV heads of 16

fn config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    })
}

/// The linear layers of the blocks, with their `[out, in]` shapes.
fn linears() -> Vec<(String, usize, usize)> {
    let mut v = Vec::new();
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        v.push((format!("{p}.self_attn.q_proj"), HIDDEN, HIDDEN));
        v.push((format!("{p}.self_attn.k_proj"), KV, HIDDEN));
        v.push((format!("{p}.self_attn.v_proj"), KV, HIDDEN));
        v.push((format!("{p}.self_attn.o_proj"), HIDDEN, HIDDEN));
        v.push((format!("{p}.mlp.gate_proj"), INTER, HIDDEN));
        v.push((format!("{p}.mlp.up_proj"), INTER, HIDDEN));
        v.push((format!("{p}.mlp.down_proj"), HIDDEN, INTER));
    }
    v
}

/// Random weights; the first two rows of every weight are made non-negative
/// so that asymmetric grids meet zero points of 0 (the edge of GPTQ v1).
fn weight(rng: &mut SeededRng, rows: usize, cols: usize) -> Array2<f32> {
    let mut w: Array2<f32> = rng.array_normal((rows, cols)) * 0.05;
    for mut row in w.axis_iter_mut(Axis(0)).take(2) {
        row.mapv_inplace(f32::abs);
    }
    w
}

/// GPTQ-style act-order without a Hessian: columns in a random order, groups
/// of `group` consecutive positions in that order, min–max scales per group.
fn act_order(
    w: &Array2<f32>,
    spec: QuantSpec,
    group: usize,
    rng: &mut SeededRng,
) -> QuantizedTensor {
    let (rows, cols) = w.dim();
    let perm = rng.permutation(cols);
    let mut g_idx = vec![0u32; cols];
    for (pos, &c) in perm.iter().enumerate() {
        g_idx[c] = (pos / group) as u32;
    }
    let groups = cols.div_ceil(group);
    let grid = IntGrid::new(spec.bits(), spec.symmetric);
    let mut codes = vec![0u8; rows * cols];
    let mut scales = Array2::zeros((rows, groups));
    let mut zeros = Array2::zeros((rows, groups));
    for r in 0..rows {
        for g in 0..groups {
            let vals: Vec<f32> = (0..cols)
                .filter(|&c| g_idx[c] as usize == g)
                .map(|c| w[[r, c]])
                .collect();
            let p = grid.params(&vals);
            // GPTQ stores f16 scales: use them from the start.
            let p = tensorpress_quant_core::int::GroupParams {
                scale: FloatDType::F16.round(p.scale),
                zero: p.zero,
            };
            scales[[r, g]] = p.scale;
            zeros[[r, g]] = p.zero;
            for c in (0..cols).filter(|&c| g_idx[c] as usize == g) {
                codes[r * cols + c] = grid.quantize(w[[r, c]], p);
            }
        }
    }
    QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, Some(g_idx)).expect("valid layer")
}

/// Rounds a layer's scales to `dtype` (the codes stay), so that what is
/// stored is exactly what the expected weights use.
fn round_scales(q: QuantizedTensor, dtype: FloatDType) -> QuantizedTensor {
    let [rows, cols] = q.shape();
    QuantizedTensor::new(
        *q.spec(),
        rows,
        cols,
        q.codes().to_vec(),
        q.scales().mapv(|s| dtype.round(s)),
        q.zeros().clone(),
        q.g_idx().map(<[u32]>::to_vec),
    )
    .expect("same layer")
}

enum Target {
    Ct {
        packing: CtPacking,
        dtype: FloatDType,
    },
    Gptq,
}

fn write_variant(
    out: &Path,
    name: &str,
    spec: QuantSpec,
    target: Target,
    actorder_group: Option<usize>,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = SeededRng::new(seed);
    let dir = out.join(name);
    let mut expected = SafetensorsWriter::new();
    let mut ct = match &target {
        Target::Ct { packing, dtype } => Some(
            CompressedTensorsWriter::new()
                .float_dtype(*dtype)
                .packing(*packing),
        ),
        Target::Gptq => None,
    };
    let mut gptq = match &target {
        Target::Gptq => Some(GptqWriter::new().options(GptqOptions {
            static_groups: false,
            ..GptqOptions::default()
        })),
        Target::Ct { .. } => None,
    };
    let scale_dtype = match &target {
        Target::Ct { dtype, .. } => *dtype,
        Target::Gptq => FloatDType::F16,
    };
    let mut plain =
        |name: String, a: ndarray::ArrayD<f32>| -> Result<(), Box<dyn std::error::Error>> {
            expected.add_array(name.clone(), a.view())?;
            if let Some(w) = ct.as_mut() {
                w.add_array(name.clone(), a.view())?;
            }
            if let Some(w) = gptq.as_mut() {
                w.add_array(name, a.view())?;
            }
            Ok(())
        };
    plain(
        "model.embed_tokens.weight".into(),
        (rng.array_normal((VOCAB, HIDDEN)) * 0.5).into_dyn(),
    )?;
    plain(
        "model.norm.weight".into(),
        ndarray::Array1::from_elem(HIDDEN, 1.0f32).into_dyn(),
    )?;
    plain(
        "lm_head.weight".into(),
        (rng.array_normal((VOCAB, HIDDEN)) * 0.1).into_dyn(),
    )?;
    for l in 0..LAYERS {
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let v = ndarray::Array1::from_shape_fn(HIDDEN, |i| 1.0 + (i as f32 * 0.01).sin() * 0.1);
            plain(format!("model.layers.{l}.{n}.weight"), v.into_dyn())?;
        }
    }
    for (module, rows, cols) in linears() {
        let w = weight(&mut rng, rows, cols);
        let q = match actorder_group {
            Some(g) => act_order(&w, spec, g, &mut rng),
            None => round_scales(Rtn::new(spec).quantize(w.view(), None)?, scale_dtype),
        };
        expected.add_array(format!("{module}.weight"), q.dequantize().into_dyn().view())?;
        if let Some(ctw) = ct.as_mut() {
            ctw.add_quantized(&module, &q, None)?;
        }
        if let Some(gw) = gptq.as_mut() {
            gw.add_quantized(&module, &q, None)?;
        }
    }
    let mut cfg = config();
    cfg["torch_dtype"] = json!(scale_dtype.torch_name());
    if let Some(w) = ct {
        w.write_dir(&dir, &cfg)?;
    }
    if let Some(w) = gptq {
        w.write_dir(&dir, &cfg)?;
    }
    expected.write_file(out.join(format!("{name}.expected.safetensors")))?;
    println!("{}", dir.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: export_samples OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let dense = CtPacking::Dense;
    let ct = |dtype| Target::Ct {
        packing: dense,
        dtype,
    };
    // For the current compressed-tensors (0.20) and transformers.
    write_variant(
        &out,
        "ct-w4g32-asym",
        QuantSpec::int(4).group(32).asymmetric(),
        ct(FloatDType::F32),
        None,
        1,
    )?;
    write_variant(
        &out,
        "ct-w3g32-sym",
        QuantSpec::int(3).group(32),
        ct(FloatDType::F16),
        None,
        2,
    )?;
    write_variant(
        &out,
        "ct-w2g16-asym",
        QuantSpec::int(2).group(16).asymmetric(),
        ct(FloatDType::BF16),
        None,
        3,
    )?;
    write_variant(
        &out,
        "ct-w8-channel-asym",
        QuantSpec::int(8).channel().asymmetric(),
        ct(FloatDType::F32),
        None,
        4,
    )?;
    write_variant(
        &out,
        "ct-w4-tensor-asym",
        QuantSpec::int(4).tensor().asymmetric(),
        ct(FloatDType::F32),
        None,
        5,
    )?;
    write_variant(
        &out,
        "ct-w5g32-asym",
        QuantSpec::int(5).group(32).asymmetric(),
        ct(FloatDType::F32),
        None,
        6,
    )?;
    write_variant(
        &out,
        "ct-w6-channel-sym",
        QuantSpec::int(6).channel(),
        ct(FloatDType::F32),
        None,
        7,
    )?;
    // For compressed-tensors before 0.20: act-order groups and aligned 3-bit words.
    write_variant(
        &out,
        "ctold-w4g32-sym-actorder",
        QuantSpec::int(4).group(32),
        ct(FloatDType::F16),
        Some(32),
        8,
    )?;
    let aligned = Target::Ct {
        packing: CtPacking::Aligned,
        dtype: FloatDType::F32,
    };
    write_variant(
        &out,
        "ctold-w3g32-sym-aligned",
        QuantSpec::int(3).group(32),
        aligned,
        None,
        9,
    )?;
    // GPTQ v1.
    write_variant(
        &out,
        "gptq-w4g32-sym",
        QuantSpec::int(4).group(32),
        Target::Gptq,
        None,
        10,
    )?;
    write_variant(
        &out,
        "gptq-w4g32-asym-actorder",
        QuantSpec::int(4).group(32).asymmetric(),
        Target::Gptq,
        Some(32),
        11,
    )?;
    write_variant(
        &out,
        "gptq-w3g32-asym",
        QuantSpec::int(3).group(32).asymmetric(),
        Target::Gptq,
        None,
        12,
    )?;
    write_variant(
        &out,
        "gptq-w2g32-asym",
        QuantSpec::int(2).group(32).asymmetric(),
        Target::Gptq,
        None,
        13,
    )?;
    write_variant(
        &out,
        "gptq-w8-channel-sym",
        QuantSpec::int(8).channel(),
        Target::Gptq,
        None,
        14,
    )?;
    write_variant(
        &out,
        "gptq-w4g48-sym-partial",
        QuantSpec::int(4).group(48),
        Target::Gptq,
        None,
        15,
    )?;
    write_variant(
        &out,
        "gptq-w3g48-asym-partial-actorder",
        QuantSpec::int(3).group(48).asymmetric(),
        Target::Gptq,
        Some(48),
        16,
    )?;
    Ok(())
}
