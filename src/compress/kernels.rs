//! Running a compressed model on the quantized kernels instead of its
//! dequantized f32 weights.

use std::path::Path;
use std::sync::Arc;

use tensorpress_io::gguf::GgufFile;
use tensorpress_io::import::QuantizedCheckpoint;
use tensorpress_models::linear::{KernelActivations, KernelLinear};
use tensorpress_models::llama::{is_quantized_checkpoint, LlamaModel, Naming};
use tensorpress_models::weights::LoadOptions;
use tensorpress_quant_core::kernels::{GgmlMatrix, Int4Matrix, Int8Matrix, QuantMatrix};
use tensorpress_quant_core::{Format, QuantizedTensor};

use super::{CompressReport, CompressedWeight};
use crate::{Error, Result};

/// Which layers [`attach_kernels`] moved onto the kernels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelReport {
    /// Layers that now run their quantized weights directly.
    pub attached: Vec<String>,
    /// Layers left on their dequantized f32 weights, with the reason (a
    /// format the kernels do not run yet).
    pub skipped: Vec<(String, String)>,
}

/// The kernel matrix for one compressed weight, or why there is none.
pub fn kernel_matrix(
    weight: &CompressedWeight,
) -> std::result::Result<Arc<dyn QuantMatrix>, String> {
    match weight {
        CompressedWeight::Quantized(q) => int_matrix(q),
        CompressedWeight::Ggml(g) => {
            let ty = g.ggml_type();
            if !GgmlMatrix::TYPES.contains(&ty) {
                return Err(format!(
                    "no kernel for GGML {ty} yet (runs {:?})",
                    GgmlMatrix::TYPES
                ));
            }
            let [rows, cols] = g.shape();
            GgmlMatrix::new(ty, rows, cols, g.bytes().to_vec())
                .map(|m| Arc::new(m) as Arc<dyn QuantMatrix>)
                .map_err(|e| e.to_string())
        }
    }
}

fn int_matrix(q: &QuantizedTensor) -> std::result::Result<Arc<dyn QuantMatrix>, String> {
    let matrix = match q.spec().format {
        Format::Int { bits: 4 } => {
            Int4Matrix::from_quantized(q).map(|m| Arc::new(m) as Arc<dyn QuantMatrix>)
        }
        Format::Int { bits: 8 } => {
            Int8Matrix::from_quantized(q).map(|m| Arc::new(m) as Arc<dyn QuantMatrix>)
        }
        _ => return Err(format!("no kernel for {} yet (runs int4, int8)", q.spec())),
    };
    matrix.map_err(|e| e.to_string())
}

/// Replaces every compressed layer of `model` whose format the kernels run
/// (int4 and int8 groups of any quantizer, the GGML types of
/// [`GgmlMatrix::TYPES`]) with a
/// [`KernelLinear`] over its quantized weight, so the model multiplies the
/// stored codes directly. Other layers keep their dequantized weights.
///
/// # Errors
/// [`Error::Models`] when the report names a layer the model does not have.
pub fn attach_kernels(
    model: &mut LlamaModel,
    report: &CompressReport,
    activations: KernelActivations,
) -> Result<KernelReport> {
    let mut out = KernelReport::default();
    for (name, weight) in &report.quantized {
        let matrix = match kernel_matrix(weight) {
            Ok(m) => m,
            Err(reason) => {
                out.skipped.push((name.clone(), reason));
                continue;
            }
        };
        replace_op(model, name, matrix, activations)?;
        out.attached.push(name.clone());
    }
    Ok(out)
}

/// Moves the linear layers of `model`, loaded from `gguf` with
/// [`LlamaModel::from_gguf`], onto the kernels wherever the file's tensor
/// type is one they run ([`GgmlMatrix::TYPES`]), reading the blocks straight
/// from the file: the model then multiplies the GGUF codes themselves, as
/// llama.cpp does. A tied `lm_head` runs on `token_embd.weight`. Layers of
/// other types (F32, F16, types without a kernel yet) keep their f32 weights
/// and are listed in [`KernelReport::skipped`].
///
/// The rows stay in the file's order: the model loaded from GGUF keeps
/// llama.cpp's query/key permutation and its RoPE layout matches it.
///
/// # Errors
/// [`Error::Io`] for a tensor that cannot be read, [`Error::Quant`] when its
/// bytes do not match its shape.
pub fn attach_gguf_kernels(
    model: &mut LlamaModel,
    gguf: &GgufFile,
    activations: KernelActivations,
) -> Result<KernelReport> {
    let mut out = KernelReport::default();
    let names = model.linear_names();
    for name in names {
        let mut tensor = Naming::Gguf.tensor(&name);
        if name == "lm_head" && gguf.tensor(&tensor).is_none() {
            tensor = Naming::Gguf.tensor("model.embed_tokens");
        }
        let Some(info) = gguf.tensor(&tensor) else {
            out.skipped
                .push((name, format!("the file has no tensor `{tensor}`")));
            continue;
        };
        let ty = info.ggml_type();
        if !GgmlMatrix::TYPES.contains(&ty) {
            out.skipped
                .push((name, format!("{tensor} is {ty}: no kernel")));
            continue;
        }
        let &[rows, cols] = info.shape() else {
            out.skipped.push((
                name,
                format!("{tensor} is not a matrix: {:?}", info.shape()),
            ));
            continue;
        };
        let matrix = GgmlMatrix::new(ty, rows, cols, gguf.tensor_bytes(&tensor)?.to_vec())?;
        replace_op(model, &name, Arc::new(matrix), activations)?;
        out.attached.push(name);
    }
    Ok(out)
}

/// Moves the int4 and int8 layers of `model`, loaded from the compressed-tensors or
/// GPTQ folder `checkpoint` (with [`LlamaModel::from_hf_dir`]), onto the
/// kernels: each layer's packed codes, scales and zero points are unpacked
/// once into an [`Int4Matrix`] or [`Int8Matrix`] (act-order included), and the f32 weights
/// the loader dequantized are dropped. Layers in other formats, and layers
/// whose checkpoint declares input-activation quantization (which the
/// loaded model simulates), keep their f32 path and are listed in
/// [`KernelReport::skipped`].
///
/// # Errors
/// [`Error::Io`] for a layer that cannot be unpacked.
pub fn attach_checkpoint_kernels(
    model: &mut LlamaModel,
    checkpoint: &QuantizedCheckpoint,
    activations: KernelActivations,
) -> Result<KernelReport> {
    let mut out = KernelReport::default();
    let modules: Vec<String> = checkpoint.modules().into_iter().map(String::from).collect();
    for name in modules {
        if model.linear_mut(&name).is_none() {
            out.skipped
                .push((name, "not a linear layer of the model".into()));
            continue;
        }
        if checkpoint.input_activations(&name).is_some() {
            out.skipped.push((
                name,
                "declares quantized input activations (simulated on the f32 path)".into(),
            ));
            continue;
        }
        let q = checkpoint.layer(&name)?;
        match int_matrix(&q) {
            Ok(matrix) => {
                replace_op(model, &name, matrix, activations)?;
                out.attached.push(name);
            }
            Err(reason) => out.skipped.push((name, reason)),
        }
    }
    Ok(out)
}

/// Loads a Llama model from a `.gguf` file or a Hugging Face folder and
/// moves every layer the kernels run onto them ([`attach_gguf_kernels`],
/// [`attach_checkpoint_kernels`]); an unquantized folder loads as is, with
/// nothing attached.
///
/// ```no_run
/// use tensorpress::compress::load_llama_kernels;
/// use tensorpress::models::linear::KernelActivations;
/// use tensorpress::models::weights::LoadOptions;
///
/// let path = std::path::Path::new("SmolLM2-135M-Instruct.Q4_0.gguf");
/// let (model, report) = load_llama_kernels(path, LoadOptions::default(), KernelActivations::Int8)?;
/// println!("{} layers on the kernels", report.attached.len());
/// # Ok::<(), tensorpress::Error>(())
/// ```
///
/// # Errors
/// As [`crate::convert::load_llama`], [`attach_gguf_kernels`] and
/// [`attach_checkpoint_kernels`].
pub fn load_llama_kernels(
    path: &Path,
    options: LoadOptions,
    activations: KernelActivations,
) -> Result<(LlamaModel, KernelReport)> {
    if path.is_dir() {
        let mut model = LlamaModel::from_hf_dir(path, options)?;
        let report = if is_quantized_checkpoint(path)? {
            let checkpoint = QuantizedCheckpoint::open(path)?;
            attach_checkpoint_kernels(&mut model, &checkpoint, activations)?
        } else {
            KernelReport::default()
        };
        Ok((model, report))
    } else {
        let gguf = GgufFile::open(path)?;
        let mut model = LlamaModel::from_gguf(&gguf, options)?;
        let report = attach_gguf_kernels(&mut model, &gguf, activations)?;
        Ok((model, report))
    }
}

/// Puts a [`KernelLinear`] over `matrix` in place of layer `name`'s op,
/// keeping its bias.
fn replace_op(
    model: &mut LlamaModel,
    name: &str,
    matrix: Arc<dyn QuantMatrix>,
    activations: KernelActivations,
) -> Result<()> {
    let linear = model.linear_mut(name).ok_or_else(|| {
        Error::Models(tensorpress_models::Error::Config {
            field: "layer",
            reason: format!("the model has no linear layer `{name}`"),
        })
    })?;
    let bias = linear.op().bias().cloned();
    linear.set_op(Arc::new(KernelLinear::new(matrix, bias, activations)?))?;
    Ok(())
}
