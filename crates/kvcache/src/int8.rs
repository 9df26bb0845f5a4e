//! Symmetric int8 cache with one scale per token and head.

use ndarray::{Array3, ArrayView3, Axis};

use crate::cache::{check_append, KvCache};
use crate::float::build;
use crate::Result;

/// Keys and values quantized to int8, symmetric, with one f32 scale per
/// (token, head): `scale = max|x| / 127`, `q = round(x / scale)`.
///
/// Every dequantized value is within half a quantization step (`scale / 2`) of
/// the original. Memory is `head_dim + 4` bytes per token and head instead of
/// `4 · head_dim`: 3.76× smaller than [`F32Cache`](crate::F32Cache) at `head_dim = 64`.
#[derive(Debug, Clone)]
pub struct Int8Cache {
    heads: usize,
    head_dim: usize,
    tokens: usize,
    key_codes: Vec<i8>,
    key_scales: Vec<f32>,
    value_codes: Vec<i8>,
    value_scales: Vec<f32>,
}

impl Int8Cache {
    /// An empty cache for `heads` heads of `head_dim`.
    pub fn new(heads: usize, head_dim: usize) -> Self {
        Int8Cache {
            heads,
            head_dim,
            tokens: 0,
            key_codes: Vec::new(),
            key_scales: Vec::new(),
            value_codes: Vec::new(),
            value_scales: Vec::new(),
        }
    }

    /// Per-(token, head) key scales, `[len, heads]` row-major.
    pub fn key_scales(&self) -> &[f32] {
        &self.key_scales
    }

    /// Per-(token, head) value scales, `[len, heads]` row-major.
    pub fn value_scales(&self) -> &[f32] {
        &self.value_scales
    }

    fn dequantize(&self, codes: &[i8], scales: &[f32]) -> Array3<f32> {
        // Only called for existing elements, so head_dim > 0 inside the closure.
        let d = self.head_dim.max(1);
        build((self.tokens, self.heads, self.head_dim), |i| {
            f32::from(codes[i]) * scales[i / d]
        })
    }
}

/// Quantizes `x` (`[tokens, heads, head_dim]`) and appends codes and scales.
fn quantize_into(x: &ArrayView3<'_, f32>, codes: &mut Vec<i8>, scales: &mut Vec<f32>) {
    for token in x.axis_iter(Axis(0)) {
        for head in token.axis_iter(Axis(0)) {
            let amax = head.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            scales.push(scale);
            if scale == 0.0 {
                codes.extend(std::iter::repeat_n(0, head.len()));
            } else {
                codes.extend(
                    head.iter()
                        .map(|&v| (v / scale).round().clamp(-127.0, 127.0) as i8),
                );
            }
        }
    }
}

impl KvCache for Int8Cache {
    fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.head_dim
    }

    fn len(&self) -> usize {
        self.tokens
    }

    fn append(&mut self, keys: ArrayView3<'_, f32>, values: ArrayView3<'_, f32>) -> Result<()> {
        self.tokens += check_append(self.heads, self.head_dim, &keys, &values)?;
        quantize_into(&keys, &mut self.key_codes, &mut self.key_scales);
        quantize_into(&values, &mut self.value_codes, &mut self.value_scales);
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        self.dequantize(&self.key_codes, &self.key_scales)
    }

    fn values(&self) -> Array3<f32> {
        self.dequantize(&self.value_codes, &self.value_scales)
    }

    fn memory_bytes(&self) -> usize {
        self.key_codes.len()
            + self.value_codes.len()
            + 4 * (self.key_scales.len() + self.value_scales.len())
    }

    fn clear(&mut self) {
        self.tokens = 0;
        self.key_codes.clear();
        self.key_scales.clear();
        self.value_codes.clear();
        self.value_scales.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}
