//! Scalar references of the sparse kernels.

/// Position of kept value `k` (0..4) of an index byte within its 8 columns.
#[inline]
pub(super) fn position(byte: u8, k: usize) -> usize {
    4 * (k / 2) + ((byte >> (2 * k)) & 3) as usize
}

/// One row of a 2:4 matrix times `x`.
pub(super) fn dot_24(values: &[f32], index: &[u8], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (q, &byte) in index.iter().enumerate() {
        for k in 0..4 {
            sum += values[4 * q + k] * x[8 * q + position(byte, k)];
        }
    }
    sum
}

/// One row of a 2:4 matrix, expanded to `cols` dense values.
pub(super) fn expand_24(values: &[f32], index: &[u8], out: &mut [f32]) {
    out.fill(0.0);
    for (q, &byte) in index.iter().enumerate() {
        for k in 0..4 {
            out[8 * q + position(byte, k)] = values[4 * q + k];
        }
    }
}

/// `y += Σ_k xs[k] · cols[k]`.
pub(super) fn axpy(cols: &[&[f32]], xs: &[f32; 4], y: &mut [f32]) {
    for (r, y) in y.iter_mut().enumerate() {
        for (c, x) in cols.iter().zip(xs) {
            *y += x * c[r];
        }
    }
}

/// A stored column index of a [`CsrMatrix`](super::CsrMatrix): 16 bits when
/// the matrix has at most 65,536 columns, 32 bits otherwise.
pub(super) trait ColIndex: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The column.
    fn col(self) -> usize;
}

impl ColIndex for u16 {
    #[inline]
    fn col(self) -> usize {
        self as usize
    }
}

impl ColIndex for u32 {
    #[inline]
    fn col(self) -> usize {
        self as usize
    }
}

/// One CSR row (its values and their columns) times `x`.
pub(super) fn csr_dot<I: ColIndex>(values: &[f32], cols: &[I], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    for (v, c) in values.iter().zip(cols) {
        sum += v * x[c.col()];
    }
    sum
}

/// One bitmask row times `x`: `mask` holds bit `j % 8` of byte `j / 8` for
/// each kept column `j`, `values` the kept values in column order.
pub(super) fn bitmask_dot(mask: &[u8], values: &[f32], x: &[f32]) -> f32 {
    let mut sum = 0.0f32;
    let mut k = 0;
    for (q, &byte) in mask.iter().enumerate() {
        let mut b = byte;
        while b != 0 {
            sum += values[k] * x[8 * q + b.trailing_zeros() as usize];
            k += 1;
            b &= b - 1;
        }
    }
    sum
}

/// One bitmask row, expanded to `out.len()` dense values.
pub(super) fn bitmask_expand(mask: &[u8], values: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    let mut k = 0;
    for (q, &byte) in mask.iter().enumerate() {
        let mut b = byte;
        while b != 0 {
            out[8 * q + b.trailing_zeros() as usize] = values[k];
            k += 1;
            b &= b - 1;
        }
    }
}
