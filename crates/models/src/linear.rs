//! Linear layers that can be observed and swapped.
//!
//! Every projection in the models of this crate is a [`Linear`]: a named slot
//! holding a [`LinearOp`]. The default op is [`DenseLinear`] (an f32 weight
//! `[out_features, in_features]` and an optional bias); compression methods
//! replace it with quantized, sparse or low-rank ops through
//! [`Linear::set_op`]. An [`Observer`] attached to the model sees the input of
//! every linear layer it asks for, as a `[tokens, in_features]` matrix, which is
//! how calibration statistics (Hessians, channel norms) are captured.

use std::fmt;
use std::sync::Arc;

use candle_core::{Tensor, D};
use tensorpress_quant_core::kernels::QuantMatrix;

use crate::{Error, Result};

/// A linear map `y = x Wᵀ + b` over the last dimension of `x`.
pub trait LinearOp: Send + Sync + fmt::Debug {
    /// Applies the map to `x` of shape `[..., in_features]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Input features.
    fn in_features(&self) -> usize;
    /// Output features.
    fn out_features(&self) -> usize;
    /// The weight as a dense f32 `[out_features, in_features]` tensor
    /// (dequantized or densified where the op stores it otherwise).
    fn dense_weight(&self) -> Result<Tensor>;
    /// The bias, if any.
    fn bias(&self) -> Option<&Tensor>;
}

/// A dense f32 linear layer.
#[derive(Debug, Clone)]
pub struct DenseLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl DenseLinear {
    /// Wraps a `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_f, _) = weight.dims2()?;
        if let Some(b) = &bias {
            let n = b.dims1()?;
            if n != out_f {
                return Err(Error::WeightShape {
                    name: "bias".into(),
                    expected: vec![out_f],
                    actual: vec![n],
                });
            }
        }
        Ok(DenseLinear { weight, bias })
    }

    /// The `[out, in]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl LinearOp for DenseLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = matmul_t(x, &self.weight)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn in_features(&self) -> usize {
        self.weight.dim(1).unwrap_or(0)
    }

    fn out_features(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    fn dense_weight(&self) -> Result<Tensor> {
        Ok(self.weight.clone())
    }

    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// Dynamic per-token symmetric quantization of a layer's input, as W8A8
/// runtimes do it (SmoothQuant's per-token setting; vLLM's and
/// compressed-tensors' `input_activations` with `strategy: token`,
/// `dynamic: true`): each token's vector `x` is scaled by
/// `max|x| / (2^(bits−1) − 1)`, rounded, clamped and scaled back before the
/// inner op multiplies it, so the model computes what the integer kernels do.
#[derive(Debug, Clone)]
pub struct InputQuantLinear {
    inner: Arc<dyn LinearOp>,
    bits: u8,
}

impl InputQuantLinear {
    /// Quantizes the input of `inner` to `bits`-bit integers (2–8) per token.
    ///
    /// # Errors
    /// [`Error::Config`] for bits outside 2–8.
    pub fn new(inner: Arc<dyn LinearOp>, bits: u8) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(Error::Config {
                field: "activation bits",
                reason: format!("{bits} is outside 2–8"),
            });
        }
        Ok(InputQuantLinear { inner, bits })
    }

    /// The bits of the input codes.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The op that multiplies the quantized input.
    pub fn inner(&self) -> &Arc<dyn LinearOp> {
        &self.inner
    }
}

/// A factorized linear layer `y = A (B x) + b`: a weight `W ≈ A·B` stored as
/// its two factors (`A: [out, r]`, `B: [r, in]`; truncated SVD, ASVD,
/// SVD-LLM), run as two thin matmuls. It pays off below the break-even rank
/// `out·in / (out + in)`.
///
/// ```
/// use std::sync::Arc;
/// use candle_core::{Device, Tensor};
/// use tensorpress_models::linear::{FactorizedLinear, LinearOp};
///
/// let a = Tensor::new(&[[1.0f32], [2.0]], &Device::Cpu)?; // [2, 1]
/// let b = Tensor::new(&[[1.0f32, -1.0, 0.5]], &Device::Cpu)?; // [1, 3]
/// let f = FactorizedLinear::new(a, b, None)?;
/// assert_eq!((f.out_features(), f.in_features(), f.rank()), (2, 3, 1));
/// let y = f.forward(&Tensor::new(&[[2.0f32, 1.0, 2.0]], &Device::Cpu)?)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[2.0, 4.0]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FactorizedLinear {
    /// `[out, r]`.
    a: Tensor,
    /// `[r, in]`.
    b: Tensor,
    bias: Option<Tensor>,
}

impl FactorizedLinear {
    /// The layer `x ↦ a (b x) + bias`, `a: [out, r]`, `b: [r, in]`,
    /// `bias: [out]`.
    ///
    /// # Errors
    /// [`Error::WeightShape`] when the factors or the bias disagree.
    pub fn new(a: Tensor, b: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, r) = a.dims2()?;
        let (rb, inp) = b.dims2()?;
        if rb != r {
            return Err(Error::WeightShape {
                name: "factor B".into(),
                expected: vec![r, inp],
                actual: vec![rb, inp],
            });
        }
        if let Some(bias) = &bias {
            if bias.dims() != [out] {
                return Err(Error::WeightShape {
                    name: "bias".into(),
                    expected: vec![out],
                    actual: bias.dims().to_vec(),
                });
            }
        }
        Ok(FactorizedLinear { a, b, bias })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.b.dims()[0]
    }

    /// The factors `(A [out, r], B [r, in])`.
    pub fn factors(&self) -> (&Tensor, &Tensor) {
        (&self.a, &self.b)
    }
}

impl LinearOp for FactorizedLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = matmul_t(&matmul_t(x, &self.b)?, &self.a)?;
        match &self.bias {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }

    fn in_features(&self) -> usize {
        self.b.dims()[1]
    }

    fn out_features(&self) -> usize {
        self.a.dims()[0]
    }

    fn dense_weight(&self) -> Result<Tensor> {
        Ok(self.a.matmul(&self.b)?)
    }

    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// A linear op plus a low-rank correction, `y = inner(x) + (x Bᵀ) Aᵀ`: a
/// compressed weight `W'` with a compensation adapter (EoRA, LoRC; a LoRA
/// adapter with `lora_B = A`, `lora_A = B`). The correction runs as two thin
/// matmuls, never as a dense `W' + A·B`.
#[derive(Debug, Clone)]
pub struct LowRankLinear {
    inner: Arc<dyn LinearOp>,
    /// `[out, r]`.
    a: Tensor,
    /// `[r, in]`.
    b: Tensor,
}

impl LowRankLinear {
    /// `inner` corrected by `a: [out, r]` times `b: [r, in]`.
    ///
    /// # Errors
    /// [`Error::WeightShape`] when the factors do not fit `inner` or each other.
    pub fn new(inner: Arc<dyn LinearOp>, a: Tensor, b: Tensor) -> Result<Self> {
        let (out, r) = a.dims2()?;
        let expected = vec![r, inner.in_features()];
        if out != inner.out_features() {
            return Err(Error::WeightShape {
                name: "adapter A".into(),
                expected: vec![inner.out_features(), r],
                actual: vec![out, r],
            });
        }
        if b.dims() != expected.as_slice() {
            return Err(Error::WeightShape {
                name: "adapter B".into(),
                expected,
                actual: b.dims().to_vec(),
            });
        }
        Ok(LowRankLinear { inner, a, b })
    }

    /// The op the adapter corrects.
    pub fn inner(&self) -> &Arc<dyn LinearOp> {
        &self.inner
    }

    /// The factors `(A [out, r], B [r, in])`.
    pub fn factors(&self) -> (&Tensor, &Tensor) {
        (&self.a, &self.b)
    }
}

impl LinearOp for LowRankLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.inner.forward(x)?;
        let low = matmul_t(&matmul_t(x, &self.b)?, &self.a)?;
        Ok((y + low)?)
    }

    fn in_features(&self) -> usize {
        self.inner.in_features()
    }

    fn out_features(&self) -> usize {
        self.inner.out_features()
    }

    fn dense_weight(&self) -> Result<Tensor> {
        Ok((self.inner.dense_weight()? + self.a.matmul(&self.b)?)?)
    }

    fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

/// `x` rounded per token (last dimension) onto a symmetric `bits`-bit grid.
pub fn quantize_per_token(x: &Tensor, bits: u8) -> Result<Tensor> {
    let qmax = f64::from((1u32 << (bits - 1)) - 1);
    let amax = x.abs()?.max_keepdim(D::Minus1)?;
    // An all-zero token keeps scale 1 (its codes are zero anyway).
    let zero = amax.eq(0.0)?.to_dtype(x.dtype())?;
    let scale = ((amax / qmax)? + zero)?;
    let codes = x.broadcast_div(&scale)?.round()?.clamp(-qmax, qmax)?;
    Ok(codes.broadcast_mul(&scale)?)
}

impl LinearOp for InputQuantLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(&quantize_per_token(x, self.bits)?)
    }

    fn in_features(&self) -> usize {
        self.inner.in_features()
    }

    fn out_features(&self) -> usize {
        self.inner.out_features()
    }

    fn dense_weight(&self) -> Result<Tensor> {
        self.inner.dense_weight()
    }

    fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }
}

/// What a [`KernelLinear`] multiplies its weights with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelActivations {
    /// f32 activations (the products of the dequantized weights, up to
    /// summation order).
    #[default]
    F32,
    /// Activations quantized to int8 per block of 32 (GGML's Q8_0 scheme)
    /// and integer dot products, as llama.cpp's CPU backend runs.
    Int8,
}

/// A linear layer that runs its quantized weight through the kernels of
/// [`tensorpress_quant_core::kernels`] without materializing f32 weights:
/// one fused matrix-vector product per token while decoding, tiles
/// dequantized once per call for a prompt.
#[derive(Debug, Clone)]
pub struct KernelLinear {
    matrix: Arc<dyn QuantMatrix>,
    bias: Option<Tensor>,
    activations: KernelActivations,
}

impl KernelLinear {
    /// Runs `matrix` (`[out, in]`) with an optional `[out]` bias.
    pub fn new(
        matrix: Arc<dyn QuantMatrix>,
        bias: Option<Tensor>,
        activations: KernelActivations,
    ) -> Result<Self> {
        if let Some(b) = &bias {
            let n = b.dims1()?;
            if n != matrix.rows() {
                return Err(Error::WeightShape {
                    name: "bias".into(),
                    expected: vec![matrix.rows()],
                    actual: vec![n],
                });
            }
        }
        Ok(KernelLinear {
            matrix,
            bias,
            activations,
        })
    }

    /// The quantized weight.
    pub fn matrix(&self) -> &Arc<dyn QuantMatrix> {
        &self.matrix
    }

    /// What the weights multiply.
    pub fn activations(&self) -> KernelActivations {
        self.activations
    }
}

impl LinearOp for KernelLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (in_f, out_f) = (self.matrix.cols(), self.matrix.rows());
        if dims.last() != Some(&in_f) {
            return Err(Error::WeightShape {
                name: "linear input".into(),
                expected: vec![in_f],
                actual: dims,
            });
        }
        let tokens: usize = dims[..dims.len() - 1].iter().product();
        let xs = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut y = vec![0.0f32; tokens * out_f];
        match self.activations {
            KernelActivations::F32 => self.matrix.gemm(&xs, tokens, &mut y)?,
            KernelActivations::Int8 => self.matrix.gemm_q8(&xs, tokens, &mut y)?,
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = out_f;
        let y = Tensor::from_vec(y, out_dims, x.device())?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    fn in_features(&self) -> usize {
        self.matrix.cols()
    }

    fn out_features(&self) -> usize {
        self.matrix.rows()
    }

    fn dense_weight(&self) -> Result<Tensor> {
        let w = self.matrix.dequantize()?;
        Ok(Tensor::from_vec(
            w,
            (self.matrix.rows(), self.matrix.cols()),
            &candle_core::Device::Cpu,
        )?)
    }

    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// `x Wᵀ` for `x: [..., in]` and `w: [out, in]`, flattening the leading dims
/// so the product is one large GEMM.
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_f = *dims.last().ok_or_else(|| Error::Config {
        field: "input",
        reason: "a linear layer needs at least one dimension".into(),
    })?;
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2 = x.reshape((rows, in_f))?;
    let y = x2.matmul(&w.t()?)?;
    let mut out_dims = dims;
    let last = out_dims.len() - 1;
    out_dims[last] = w.dim(0)?;
    Ok(y.reshape(out_dims)?)
}

/// `x: [..., n]` as an ndarray `[tokens, n]` matrix of f32 (copied off the device).
pub fn to_matrix(x: &Tensor) -> Result<ndarray::Array2<f32>> {
    let n = x.dim(D::Minus1)?;
    let flat = x.reshape(((), n))?.to_dtype(candle_core::DType::F32)?;
    let rows = flat.dim(0)?;
    let data = flat.flatten_all()?.to_vec1::<f32>()?;
    Ok(ndarray::Array2::from_shape_vec((rows, n), data)
        .expect("a [rows, n] tensor has rows·n elements"))
}

/// Sees the inputs of linear layers during a forward pass.
///
/// Implementations must be cheap to call when [`Observer::wants`] is false:
/// the model checks it before reshaping anything.
pub trait Observer: Send + Sync {
    /// Whether this observer wants the input of `layer` (default: every layer).
    fn wants(&self, layer: &str) -> bool {
        let _ = layer;
        true
    }

    /// Receives the input of `layer` exactly as the layer gets it, `[..., in_features]`.
    /// Layers that share an input (a block's query, key and value projections)
    /// receive the same tensor, with the same [`Tensor::id`], so an observer can
    /// do shared work once. [`to_matrix`] flattens it to `[tokens, in_features]`.
    fn observe(&self, layer: &str, input: &Tensor) -> Result<()>;
}

impl fmt::Debug for dyn Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Observer")
    }
}

/// A named linear layer: the slot that observers see and compression replaces.
#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    op: Arc<dyn LinearOp>,
}

impl Linear {
    /// A layer called `name` (e.g. `model.layers.0.self_attn.q_proj`) running `op`.
    pub fn new(name: impl Into<String>, op: Arc<dyn LinearOp>) -> Self {
        Linear {
            name: name.into(),
            op,
        }
    }

    /// The layer's name, in Hugging Face module naming.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The op currently in the slot.
    pub fn op(&self) -> &Arc<dyn LinearOp> {
        &self.op
    }

    /// Replaces the op, checking that the new one has the same shape.
    pub fn set_op(&mut self, op: Arc<dyn LinearOp>) -> Result<()> {
        if op.in_features() != self.op.in_features() || op.out_features() != self.op.out_features()
        {
            return Err(Error::WeightShape {
                name: self.name.clone(),
                expected: vec![self.op.out_features(), self.op.in_features()],
                actual: vec![op.out_features(), op.in_features()],
            });
        }
        self.op = op;
        Ok(())
    }

    /// Swaps in `op` whatever its shape: for structural changes that resize
    /// the neighbouring layers too (removing FFN neurons).
    pub(crate) fn replace_op(&mut self, op: Arc<dyn LinearOp>) {
        self.op = op;
    }

    /// Applies the layer, handing its input to `observer` first if it wants it.
    pub fn forward(&self, x: &Tensor, observer: Option<&dyn Observer>) -> Result<Tensor> {
        if let Some(obs) = observer {
            if obs.wants(&self.name) {
                obs.observe(&self.name, x)?;
            }
        }
        self.op.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn per_token_quantization_matches_a_scalar_reference() {
        let rows = [
            vec![0.5f32, -1.27, 0.013, 0.9],
            vec![0.0, 0.0, 0.0, 0.0],
            vec![100.0, -3.0, 2.5, -99.0],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (1, 3, 4), &Device::Cpu).unwrap();
        let q = quantize_per_token(&x, 8).unwrap();
        let got = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (r, row) in rows.iter().enumerate() {
            let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = if amax == 0.0 { 1.0 } else { amax / 127.0 };
            for (c, &v) in row.iter().enumerate() {
                let want = (v / scale).round().clamp(-127.0, 127.0) * scale;
                assert!((got[r * 4 + c] - want).abs() <= 1e-6 * want.abs().max(1.0));
            }
        }
        // The largest magnitude of each token is exact.
        assert_eq!(got[8], 100.0);
    }

    #[test]
    fn input_quantized_layer_multiplies_the_rounded_input() {
        let w = Tensor::from_vec(vec![1.0f32, 2.0, -1.0, 0.5], (1, 4), &Device::Cpu).unwrap();
        let dense: Arc<dyn LinearOp> = Arc::new(DenseLinear::new(w, None).unwrap());
        let op = InputQuantLinear::new(dense.clone(), 2).unwrap();
        let x = Tensor::from_vec(vec![1.0f32, 0.4, -0.2, 0.9], (1, 4), &Device::Cpu).unwrap();
        // 2 bits: codes in {-1, 0, 1}, scale 1 → x̂ = [1, 0, 0, 1].
        let y = op
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y, vec![1.5]);
        assert!(InputQuantLinear::new(dense, 9).is_err());
    }
}
