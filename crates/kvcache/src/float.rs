//! Uncompressed caches: f32 (the reference) and f16.

use half::f16;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

use crate::attend::{check_queries, softmax};
use crate::cache::{check_append, KvCache};
use crate::kernels::{self, Level};
use crate::Result;

/// Stores keys and values as f32: the exact reference cache.
#[derive(Debug, Clone)]
pub struct F32Cache {
    heads: usize,
    head_dim: usize,
    tokens: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl F32Cache {
    /// An empty cache for `heads` heads of `head_dim`.
    pub fn new(heads: usize, head_dim: usize) -> Self {
        F32Cache {
            heads,
            head_dim,
            tokens: 0,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

/// `[len, heads, head_dim]` whose element at flat row-major index `i` is `f(i)`;
/// every cache stores exactly `len · heads · head_dim` elements in that order.
pub(crate) fn build(
    (len, heads, head_dim): (usize, usize, usize),
    f: impl Fn(usize) -> f32,
) -> Array3<f32> {
    Array3::from_shape_fn((len, heads, head_dim), |(t, h, d)| {
        f((t * heads + h) * head_dim + d)
    })
}

impl F32Cache {
    fn dims(&self) -> (usize, usize, usize) {
        (self.tokens, self.heads, self.head_dim)
    }
}

impl KvCache for F32Cache {
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
        self.keys.extend(keys.iter());
        self.values.extend(values.iter());
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        build(self.dims(), |i| self.keys[i])
    }

    fn values(&self) -> Array3<f32> {
        build(self.dims(), |i| self.values[i])
    }

    fn memory_bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * 4
    }

    /// Straight over the stored rows, token by token in storage order (each
    /// key and value row read once for all the query heads that share it,
    /// with SIMD dot products and weighted sums): the f32 baseline of the
    /// kernels.
    fn attend(&self, queries: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (heads, d, n) = (self.heads, self.head_dim, self.tokens);
        let groups = check_queries(&queries, heads, d)?;
        let level = Level::detect();
        let row = heads * d;
        let qs: Vec<f32> = queries.iter().copied().collect();
        let mut p = vec![0f32; queries.nrows() * n];
        kernels::row_scores(level, &self.keys, row, &qs, d, groups, &mut p);
        if n > 0 {
            for pq in p.chunks_exact_mut(n) {
                softmax(pq);
            }
        }
        let mut out = Array2::zeros(queries.dim());
        let acc = out.as_slice_mut().expect("a fresh array is contiguous");
        kernels::row_sums(level, &self.values, row, &p, d, groups, acc);
        Ok(out)
    }

    fn clear(&mut self) {
        self.tokens = 0;
        self.keys.clear();
        self.values.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}

/// Stores keys and values as IEEE half precision (round to nearest even):
/// half the memory of [`F32Cache`], relative error at most 2⁻¹¹ in the normal range.
#[derive(Debug, Clone)]
pub struct F16Cache {
    heads: usize,
    head_dim: usize,
    tokens: usize,
    keys: Vec<f16>,
    values: Vec<f16>,
}

impl F16Cache {
    /// An empty cache for `heads` heads of `head_dim`.
    pub fn new(heads: usize, head_dim: usize) -> Self {
        F16Cache {
            heads,
            head_dim,
            tokens: 0,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl F16Cache {
    fn dims(&self) -> (usize, usize, usize) {
        (self.tokens, self.heads, self.head_dim)
    }
}

impl KvCache for F16Cache {
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
        self.keys.extend(keys.iter().map(|&v| f16::from_f32(v)));
        self.values.extend(values.iter().map(|&v| f16::from_f32(v)));
        Ok(())
    }

    fn keys(&self) -> Array3<f32> {
        build(self.dims(), |i| self.keys[i].to_f32())
    }

    fn values(&self) -> Array3<f32> {
        build(self.dims(), |i| self.values[i].to_f32())
    }

    fn memory_bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * 2
    }

    fn clear(&mut self) {
        self.tokens = 0;
        self.keys.clear();
        self.values.clear();
    }

    fn clone_box(&self) -> Box<dyn KvCache> {
        Box::new(self.clone())
    }
}
