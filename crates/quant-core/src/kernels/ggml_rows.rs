//! Row kernels of the GGML types [`GgmlMatrix`](super::GgmlMatrix) keeps as
//! GGUF blocks (Q8_0, Q5_0, IQ4_NL, Q4_K, Q5_K, Q6_K), chosen by type and
//! level. AVX-512 runs the AVX2 kernels for these types (see `x86_legacy`
//! and `x86_kquants` for why), except the f32 products of Q4_K and Q6_K.

use super::{scalar, scalar_kquants as sk, scalar_legacy as sl, Isa, Q8Vector, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::{x86, x86_kquants as xk, x86_legacy as xl};
use crate::ggml::GgmlType;

/// A GGML type whose rows the kernels read as GGUF blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Q8_0,
    Q5_0,
    Iq4Nl,
    Q4K,
    Q5K,
    Q6K,
}

impl BlockKind {
    /// The kind of `ty`, if the kernels run it as blocks.
    pub(crate) fn of(ty: GgmlType) -> Option<BlockKind> {
        match ty {
            GgmlType::Q8_0 => Some(BlockKind::Q8_0),
            GgmlType::Q5_0 => Some(BlockKind::Q5_0),
            GgmlType::IQ4NL => Some(BlockKind::Iq4Nl),
            GgmlType::Q4K => Some(BlockKind::Q4K),
            GgmlType::Q5K => Some(BlockKind::Q5K),
            GgmlType::Q6K => Some(BlockKind::Q6K),
            _ => None,
        }
    }

    /// Whether the type has a minimum per block, whose products need the
    /// activations' block sums.
    fn has_min(self) -> bool {
        matches!(self, BlockKind::Q4K | BlockKind::Q5K)
    }
}

/// Per-block sums of `x` (blocks of 32).
pub(crate) fn block_sums_f32(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect()
}

/// Per-block `d_b · Σ q` of int8 activations: the factor of a block's minimum.
pub(crate) fn block_sums_q8(x: &Q8Vector) -> Vec<f32> {
    x.scales()
        .iter()
        .zip(x.block_sums())
        .map(|(&d, &s)| d * s as f32)
        .collect()
}

/// f32 activations with what the kernels of one kind share across rows.
pub(crate) struct XF32<'a> {
    x: &'a [f32],
    /// [`block_sums_f32`] for kinds with minima, else empty.
    sums: Vec<f32>,
}

impl<'a> XF32<'a> {
    /// Prepares `x` for rows of `kind`.
    pub(crate) fn new(kind: BlockKind, x: &'a [f32]) -> XF32<'a> {
        let sums = if kind.has_min() {
            block_sums_f32(x)
        } else {
            Vec::new()
        };
        XF32 { x, sums }
    }
}

/// int8 activations with what the kernels of one kind share across rows.
pub(crate) struct XQ8<'a> {
    x: &'a Q8Vector,
    /// [`block_sums_q8`] for kinds with minima, else empty.
    sums: Vec<f32>,
}

impl<'a> XQ8<'a> {
    /// Prepares `x` for rows of `kind`.
    pub(crate) fn new(kind: BlockKind, x: &'a Q8Vector) -> XQ8<'a> {
        let sums = if kind.has_min() {
            block_sums_q8(x)
        } else {
            Vec::new()
        };
        XQ8 { x, sums }
    }
}

/// Dequantizes the rows in `bytes` (whole rows of `kind`) into `out`.
pub(crate) fn dequant(kind: BlockKind, isa: Isa, bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: callers pass an `isa` that passed `Isa::check`, so the CPU
        // runs AVX2, FMA and F16C; `bytes` holds the blocks of `out`'s values.
        unsafe {
            match kind {
                BlockKind::Q8_0 => x86::q8_0_dequant(bytes, out),
                BlockKind::Q5_0 => xl::q5_0_dequant(bytes, out),
                BlockKind::Iq4Nl => xl::iq4_nl_dequant(bytes, out),
                BlockKind::Q4K => xk::k_dequant::<false>(bytes, out),
                BlockKind::Q5K => xk::k_dequant::<true>(bytes, out),
                BlockKind::Q6K => xk::q6_k_dequant(bytes, out),
            }
        }
        return;
    }
    let _ = isa;
    match kind {
        BlockKind::Q8_0 => scalar::q8_0_dequant(bytes, out),
        BlockKind::Q5_0 => sl::q5_0_dequant(bytes, out),
        BlockKind::Iq4Nl => sl::iq4_nl_dequant(bytes, out),
        BlockKind::Q4K => sk::k_dequant(bytes, false, out),
        BlockKind::Q5K => sk::k_dequant(bytes, true, out),
        BlockKind::Q6K => sk::q6_k_dequant(bytes, out),
    }
}

/// One row (`row`, the blocks of `x.len()` values) times f32 activations.
pub(crate) fn dot_f32(kind: BlockKind, isa: Isa, row: &[u8], x: &XF32<'_>) -> f32 {
    let (xs, sums) = (x.x, &x.sums);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: callers pass an `isa` that passed `Isa::check` (AVX2, FMA,
        // F16C); `row` holds the blocks of `xs.len()` values and `sums` is
        // `block_sums_f32(xs)` where the kind reads it.
        return unsafe {
            match kind {
                // AVX-512 F/BW/VL passed `Isa::check` too at that level.
                BlockKind::Q4K if isa == Isa::Avx512 => xk::q4_k_dot_f32_512(row, xs),
                BlockKind::Q6K if isa == Isa::Avx512 => xk::q6_k_dot_f32_512(row, xs),
                BlockKind::Q8_0 => x86::q8_0_dot_f32(row, xs),
                BlockKind::Q5_0 => xl::q5_0_dot_f32(row, xs),
                BlockKind::Iq4Nl => xl::iq4_nl_dot_f32(row, xs),
                BlockKind::Q4K => xk::k_dot_f32::<false>(row, xs, sums),
                BlockKind::Q5K => xk::k_dot_f32::<true>(row, xs, sums),
                BlockKind::Q6K => xk::q6_k_dot_f32(row, xs),
            }
        };
    }
    let _ = (isa, sums);
    match kind {
        BlockKind::Q8_0 => scalar::q8_0_dot_f32(row, xs),
        BlockKind::Q5_0 => sl::q5_0_dot_f32(row, xs),
        BlockKind::Iq4Nl => sl::iq4_nl_dot_f32(row, xs),
        BlockKind::Q4K => sk::k_dot_f32(row, false, xs),
        BlockKind::Q5K => sk::k_dot_f32(row, true, xs),
        BlockKind::Q6K => sk::q6_k_dot_f32(row, xs),
    }
}

/// One row times int8 activations.
pub(crate) fn dot_q8(kind: BlockKind, isa: Isa, row: &[u8], x: &XQ8<'_>) -> f32 {
    let (xq, xd, sums) = (x.x.codes(), x.x.scales(), &x.sums);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        // SAFETY: callers pass an `isa` that passed `Isa::check` (AVX2, FMA,
        // F16C); `row` holds the blocks of `xq.len()` values, `xd` one scale
        // per block of 32 and `sums` is `block_sums_q8(x)` where read.
        return unsafe {
            match kind {
                BlockKind::Q8_0 => x86::q8_0_dot_q8(row, xq, xd),
                BlockKind::Q5_0 => xl::q5_0_dot_q8(row, xq, xd),
                BlockKind::Iq4Nl => xl::iq4_nl_dot_q8(row, xq, xd),
                BlockKind::Q4K => xk::k_dot_q8::<false>(row, xq, xd, sums),
                BlockKind::Q5K => xk::k_dot_q8::<true>(row, xq, xd, sums),
                BlockKind::Q6K => xk::q6_k_dot_q8(row, xq, xd),
            }
        };
    }
    let _ = (isa, sums);
    let isums = x.x.block_sums();
    match kind {
        BlockKind::Q8_0 => scalar::q8_0_dot_q8(row, xq, xd),
        BlockKind::Q5_0 => sl::q5_0_dot_q8(row, xq, xd),
        BlockKind::Iq4Nl => sl::iq4_nl_dot_q8(row, xq, xd),
        BlockKind::Q4K => sk::k_dot_q8(row, false, xq, xd, isums),
        BlockKind::Q5K => sk::k_dot_q8(row, true, xq, xd, isums),
        BlockKind::Q6K => sk::q6_k_dot_q8(row, xq, xd),
    }
}
