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
