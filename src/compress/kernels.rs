//! Running a compressed model on the quantized kernels instead of its
//! dequantized f32 weights.

use std::sync::Arc;

use tensorpress_models::linear::{KernelActivations, KernelLinear};
use tensorpress_models::llama::LlamaModel;
use tensorpress_quant_core::kernels::{GgmlMatrix, Int4Matrix, QuantMatrix};
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
        CompressedWeight::Quantized(q) => int4_matrix(q),
        CompressedWeight::Ggml(g) => {
            let ty = g.ggml_type();
            if !GgmlMatrix::TYPES.contains(&ty) {
                return Err(format!("no kernel for GGML {ty} yet (runs Q4_0, Q8_0)"));
            }
            let [rows, cols] = g.shape();
            GgmlMatrix::new(ty, rows, cols, g.bytes().to_vec())
                .map(|m| Arc::new(m) as Arc<dyn QuantMatrix>)
                .map_err(|e| e.to_string())
        }
    }
}

fn int4_matrix(q: &QuantizedTensor) -> std::result::Result<Arc<dyn QuantMatrix>, String> {
    if q.spec().format != (Format::Int { bits: 4 }) {
        return Err(format!("no kernel for {} yet (runs int4)", q.spec()));
    }
    Int4Matrix::from_quantized(q)
        .map(|m| Arc::new(m) as Arc<dyn QuantMatrix>)
        .map_err(|e| e.to_string())
}

/// Replaces every compressed layer of `model` whose format the kernels run
/// (int4 groups of any quantizer, GGML Q4_0 and Q8_0) with a
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
        let linear = model.linear_mut(name).ok_or_else(|| {
            Error::Models(tensorpress_models::Error::Config {
                field: "layer",
                reason: format!("the model has no linear layer `{name}`"),
            })
        })?;
        let bias = linear.op().bias().cloned();
        linear.set_op(Arc::new(KernelLinear::new(matrix, bias, activations)?))?;
        out.attached.push(name.clone());
    }
    Ok(out)
}
