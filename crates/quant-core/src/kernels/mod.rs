//! Kernels that run quantized weights directly: row dequantization and fused
//! matrix-vector products `y = W x`, without materializing f32 weights.
//!
//! Token-by-token decoding reads every weight once per token, so its speed is
//! the speed at which the weight bytes stream through the core: a 4-bit
//! matrix should run about 4× faster than its f32 original. Two kinds of
//! product are offered for every matrix type:
//!
//! - [`QuantMatrix::gemv`]: f32 activations, weights expanded to f32 in
//!   registers and multiplied with FMA;
//! - [`QuantMatrix::gemv_q8`]: activations first quantized to int8 in blocks
//!   of 32 with one f32 scale each ([`Q8Vector`], GGML's Q8_0 scheme), then
//!   integer dot products (AVX2 `vpmaddubsw`, AVX-512 VNNI `vpdpbusd`), one
//!   float multiply per block.
//!
//! Matrix types: [`Int4Matrix`] (4-bit integer codes with a scale and zero
//! point per group of columns, as compressed-tensors' `pack-quantized`, GPTQ
//! and AWQ checkpoints store them, act-order included), [`Int8Matrix`] (the
//! same with 8-bit codes: W8A16/W8A8 weights, per group or per channel) and
//! [`GgmlMatrix`]
//! (GGUF tensors used in place, of type Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL,
//! Q4_K, Q5_K or Q6_K; the K-quants' int8 products run per activation block
//! of 32, with each 32- or 16-wide sub-block scale applied once per block).
//!
//! Every kernel has a plain scalar reference, and x86-64 variants for AVX2+FMA
//! and AVX-512 chosen at run time ([`Isa::detect`]). AVX-512 has dedicated
//! kernels for [`Int4Matrix`], GGML Q4_0/Q4_1 and the f32 products of
//! Q4_K/Q6_K; [`Int8Matrix`] and the other GGML kernels run their AVX2 code
//! at that level. The environment variable `TENSORPRESS_SIMD=scalar|avx2|avx512` caps the level, so each path can be
//! exercised on one machine; tests also call every available level directly
//! through the `*_with` methods. Rows are split across rayon's pool: run inside
//! `ThreadPool::install` to choose the thread count.
//!
//! # Quick start
//!
//! ```
//! use ndarray::Array2;
//! use tensorpress_quant_core::kernels::{Int4Matrix, QuantMatrix};
//! use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
//!
//! let w = Array2::from_shape_fn((64, 256), |(i, j)| ((i * 256 + j) as f32 * 0.37).sin());
//! let q = Rtn::new(QuantSpec::int(4).group(128)).quantize(w.view(), None)?;
//! let m = Int4Matrix::from_quantized(&q)?;
//!
//! let x: Vec<f32> = (0..256).map(|j| (j as f32 * 0.11).cos()).collect();
//! let mut y = vec![0.0f32; 64];
//! m.gemv(&x, &mut y)?;
//!
//! // The same product through the dequantized weights.
//! let dq = q.dequantize();
//! for (r, &y) in y.iter().enumerate() {
//!     let want: f32 = dq.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
//!     assert!((y - want).abs() < 1e-3 * (1.0 + want.abs()));
//! }
//!
//! // With int8 activations: within the activation rounding of the above.
//! let xq = m.quantize_input(&x)?;
//! let mut y8 = vec![0.0f32; 64];
//! m.gemv_q8(&xq, &mut y8)?;
//! assert!(y.iter().zip(&y8).all(|(a, b)| (a - b).abs() < 0.05 * (1.0 + a.abs())));
//! # Ok::<(), tensorpress_quant_core::Error>(())
//! ```

mod dense;
mod ggml;
mod ggml_rows;
mod groups;
mod int4;
mod int8;
mod q8;
mod scalar;
mod scalar_kquants;
mod scalar_legacy;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_int8;
#[cfg(target_arch = "x86_64")]
mod x86_kquants;
#[cfg(target_arch = "x86_64")]
mod x86_legacy;

pub use dense::F32Matrix;
pub use ggml::GgmlMatrix;
pub use int4::Int4Matrix;
pub use int8::Int8Matrix;
pub use q8::Q8Vector;

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::{Error, Result};

/// Values per block of the kernels' layouts and of [`Q8Vector`].
pub const BLOCK: usize = 32;

/// Columns in a unit of the AVX-512 nibble kernels: 4 blocks, 64 code bytes.
pub(crate) const UNIT: usize = 4 * BLOCK;

/// Weight rows per task of [`QuantMatrix::gemm`]: each task dequantizes
/// this many rows into a buffer that stays in cache (64 × 1536 f32 = 384 KB)
/// and multiplies it with a single-threaded SGEMM, so a prompt reads the
/// quantized weights once and never writes the f32 matrix to memory.
const GEMM_TILE: usize = 64;

/// The output of a tiled GEMM, shared by the tasks that write disjoint
/// columns of it.
struct SharedOut(*mut f32);

// SAFETY: the tasks of `QuantMatrix::gemm` write disjoint elements through
// the pointer, and the buffer outlives them (the parallel loop joins before
// `gemm` returns).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer `offset` elements in; `wrapping_add` keeps this safe, the
    /// callers' SAFETY comments cover the writes.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Rows each rayon task takes in a matrix-vector product.
const ROWS_PER_TASK: usize = 16;

/// An instruction-set level the kernels can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, the reference every other level is tested against.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI (Ice Lake and later, Zen 4).
    Avx512,
}

impl Isa {
    /// The levels this CPU can run, lowest first (always starts with `Scalar`).
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                out.push(Isa::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    out.push(Isa::Avx512);
                }
            }
        }
        out
    }

    /// The level the kernels use by default: the highest available one,
    /// capped by `TENSORPRESS_SIMD` (`scalar`, `avx2` or `avx512`) when set.
    /// Read once per process.
    pub fn detect() -> Isa {
        static LEVEL: OnceLock<Isa> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            let best = *Isa::available().last().unwrap_or(&Isa::Scalar);
            match std::env::var("TENSORPRESS_SIMD") {
                Ok(v) => match Isa::from_name(&v) {
                    Some(cap) => best.min(cap),
                    None => best,
                },
                Err(_) => best,
            }
        })
    }

    /// Parses `scalar`, `avx2` or `avx512` (any case).
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// Whether this CPU can run the level.
    pub fn is_available(self) -> bool {
        Isa::available().contains(&self)
    }

    /// Fails with [`Error::InvalidOption`] when this CPU cannot run the level.
    pub(crate) fn check(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(Error::InvalidOption {
                option: "isa",
                value: format!("{self:?}"),
                expected: "a level this CPU supports (Isa::available)",
            })
        }
    }
}

/// A quantized `[rows, cols]` weight that multiplies vectors directly.
pub trait QuantMatrix: Send + Sync {
    /// Output features.
    fn rows(&self) -> usize;

    /// Input features.
    fn cols(&self) -> usize;

    /// Bytes the kernels read per product: codes, scales and zero points.
    fn weight_bytes(&self) -> usize;

    /// Dequantizes rows `first .. first + out.len() / cols` into `out`, at `isa`.
    fn dequantize_rows_with(&self, isa: Isa, first: usize, out: &mut [f32]) -> Result<()>;

    /// `y = W x` with f32 activations, at `isa`.
    fn gemv_with(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()>;

    /// The input column each stored column reads when the matrix stores its
    /// columns permuted (GPTQ act-order), or `None` for the natural order.
    fn input_order(&self) -> Option<&[u32]> {
        None
    }

    /// The int8 activations [`gemv_q8`](Self::gemv_q8) takes for `x`: `x`
    /// in the matrix's stored column order (act-order), quantized by
    /// [`Q8Vector::quantize`].
    fn quantize_input(&self, x: &[f32]) -> Result<Q8Vector> {
        check_len("x", self.cols(), x.len())?;
        Q8Vector::quantize(x)
    }

    /// `y = W x̂` with `x̂` from [`quantize_input`](Self::quantize_input), at `isa`.
    fn gemv_q8_with(&self, isa: Isa, x: &Q8Vector, y: &mut [f32]) -> Result<()>;

    /// Dequantizes rows `first ..` into `out` (a whole number of rows).
    fn dequantize_rows(&self, first: usize, out: &mut [f32]) -> Result<()> {
        self.dequantize_rows_with(Isa::detect(), first, out)
    }

    /// `y = W x` with f32 activations.
    fn gemv(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.gemv_with(Isa::detect(), x, y)
    }

    /// `y = W x̂` with int8 activations from [`quantize_input`](Self::quantize_input).
    fn gemv_q8(&self, x: &Q8Vector, y: &mut [f32]) -> Result<()> {
        self.gemv_q8_with(Isa::detect(), x, y)
    }

    /// The whole weight as f32, `[rows, cols]` row-major.
    fn dequantize(&self) -> Result<Vec<f32>> {
        let n = self
            .rows()
            .checked_mul(self.cols())
            .ok_or(Error::Overflow)?;
        let mut out = vec![0.0f32; n];
        self.dequantize_rows(0, &mut out)?;
        Ok(out)
    }

    /// `Y = X Wᵀ` for a batch of `tokens` activation rows `x` (`[tokens, cols]`),
    /// written to `y` (`[tokens, rows]`): prompt processing. Tiles of 64
    /// weight rows are dequantized in parallel (at the SIMD level) into a
    /// cache-sized buffer and multiplied by the `gemm` crate's SGEMM
    /// (candle's CPU GEMM), so a prompt reads the quantized weights once and
    /// the f32 matrix never goes to memory; one token is a GEMV.
    fn gemm(&self, x: &[f32], tokens: usize, y: &mut [f32]) -> Result<()> {
        let (rows, cols) = (self.rows(), self.cols());
        check_len(
            "x",
            tokens.checked_mul(cols).ok_or(Error::Overflow)?,
            x.len(),
        )?;
        check_len(
            "y",
            tokens.checked_mul(rows).ok_or(Error::Overflow)?,
            y.len(),
        )?;
        if tokens == 1 {
            return self.gemv(x, y);
        }
        let isa = Isa::detect();
        let out = SharedOut(y.as_mut_ptr());
        (0..rows.div_ceil(GEMM_TILE))
            .into_par_iter()
            .try_for_each_init(Vec::new, |w: &mut Vec<f32>, t| {
                let (r0, n) = (t * GEMM_TILE, GEMM_TILE.min(rows - t * GEMM_TILE));
                w.resize(n * cols, 0.0);
                self.dequantize_rows_with(isa, r0, w)?;
                // SAFETY: `x` is `[tokens, cols]` (row stride `cols`) and `w`
                // the tile's `[n, cols]` rows, read as the `[cols, n]` matrix
                // Wᵀ (row stride 1, column stride `cols`); the destination is
                // columns `r0..r0 + n` of `y` (`[tokens, rows]`, row stride
                // `rows`), inside `y` (lengths checked above). Tiles write
                // disjoint columns, so no two tasks touch the same element,
                // and `y` does not alias the inputs.
                unsafe {
                    gemm::gemm(
                        tokens,
                        n,
                        cols,
                        out.at(r0),
                        1,
                        rows as isize,
                        false,
                        x.as_ptr(),
                        1,
                        cols as isize,
                        w.as_ptr(),
                        cols as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                Ok::<(), Error>(())
            })?;
        Ok(())
    }

    /// [`gemm`](Self::gemm) with int8 activations: each token quantized as
    /// [`quantize_input`](Self::quantize_input) does, so every token gets the
    /// values [`gemv_q8`](Self::gemv_q8) multiplies (products equal up to
    /// float summation order), through the f32 GEMM.
    fn gemm_q8(&self, x: &[f32], tokens: usize, y: &mut [f32]) -> Result<()> {
        let cols = self.cols();
        check_len(
            "x",
            tokens.checked_mul(cols).ok_or(Error::Overflow)?,
            x.len(),
        )?;
        if tokens == 1 {
            let xq = self.quantize_input(x)?;
            return self.gemv_q8(&xq, y);
        }
        // Tokens are quantized in parallel: on one thread this step alone
        // cost a third of a 512-token prompt's time on SmolLM2.
        let mut x_hat = vec![0.0f32; x.len()];
        x.par_chunks_exact(cols)
            .zip(x_hat.par_chunks_exact_mut(cols))
            .try_for_each(|(x, out)| {
                let stored = self.quantize_input(x)?.dequantize();
                match self.input_order() {
                    Some(order) => {
                        for (&c, v) in order.iter().zip(stored) {
                            out[c as usize] = v;
                        }
                    }
                    None => out.copy_from_slice(&stored),
                }
                Ok::<(), Error>(())
            })?;
        self.gemm(&x_hat, tokens, y)
    }
}

impl std::fmt::Debug for dyn QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuantMatrix[{}, {}]", self.rows(), self.cols())
    }
}

/// Fails with [`Error::Shape`] when a buffer has the wrong length.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            expected: vec![expected],
            actual: vec![actual],
        })
    }
}

/// Checks a dequantization request: `out` is a whole number of rows from `first`.
pub(crate) fn check_rows(rows: usize, cols: usize, first: usize, out: &[f32]) -> Result<usize> {
    if cols == 0 || !out.len().is_multiple_of(cols) {
        return Err(Error::RowLength {
            len: out.len(),
            row_len: cols,
        });
    }
    let n = out.len() / cols;
    if first.checked_add(n).is_none_or(|end| end > rows) {
        return Err(Error::Shape {
            what: "rows to dequantize",
            expected: vec![rows],
            actual: vec![first + n],
        });
    }
    Ok(n)
}

/// Weight bytes below which a product runs on the calling thread: waking
/// rayon's workers costs tens of microseconds, as much as streaming a few
/// hundred kilobytes (SmolLM2's per-layer matrices are 60–500 KB at 4 bits;
/// decoding it ran best at 1 MiB on 2 cores).
/// `TENSORPRESS_PAR_BYTES` overrides it.
fn serial_bytes() -> usize {
    static BYTES: OnceLock<usize> = OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("TENSORPRESS_PAR_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SERIAL_BYTES)
    })
}

/// Default of [`serial_bytes`].
const DEFAULT_SERIAL_BYTES: usize = 1 << 20;

/// Runs `row_dot(r)` for every row into `y`, split across rayon's pool when
/// the rows hold at least [`serial_bytes`] of weights (`row_bytes` each).
pub(crate) fn par_rows(y: &mut [f32], row_bytes: usize, row_dot: impl Fn(usize) -> f32 + Sync) {
    if y.len().saturating_mul(row_bytes) < serial_bytes() {
        for (r, y) in y.iter_mut().enumerate() {
            *y = row_dot(r);
        }
        return;
    }
    y.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(t, ys)| {
            for (i, y) in ys.iter_mut().enumerate() {
                *y = row_dot(t * ROWS_PER_TASK + i);
            }
        });
}

/// The f32 dot product at `isa`.
pub(crate) fn dot_f32(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => {
            // SAFETY: every caller passes an `isa` that passed `Isa::check` or
            // came from `Isa::detect`, so the CPU runs AVX2 and FMA.
            unsafe { x86::dot_f32(a, b) }
        }
        _ => scalar::dot_f32(a, b),
    }
}

/// f32 activations of the whole units of a row (columns `0..128·⌊cols/128⌋`)
/// in the order the AVX-512 unit kernel reads codes: lane `j` of step `n`
/// (the `4n`-bit shift of the unit's 16 little-endian words) holds the code
/// in nibble `n % 2` of byte `4j + n / 2`, and byte `t` of a block holds
/// codes `t` (low nibble) and `t + 16` (high).
pub(crate) fn unit_x_f32(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() / UNIT * UNIT);
    for xu in x.chunks_exact(UNIT) {
        for n in 0..8 {
            for j in 0..16 {
                let byte = 4 * j + n / 2;
                out.push(
                    xu[(byte / scalar::NIB_BYTES) * BLOCK
                        + byte % scalar::NIB_BYTES
                        + scalar::NIB_BYTES * (n % 2)],
                );
            }
        }
    }
    out
}

/// int8 activations of the whole units in the order of the unit kernel's
/// two products: the first 16 codes of each of the 4 blocks, then the last
/// 16 of each; and each block's scale repeated over the 4 lanes its
/// products land in.
pub(crate) fn unit_x_q8(xq: &[i8], xd: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let units = xq.len() / UNIT;
    let mut codes = Vec::with_capacity(units * UNIT);
    let mut scales = Vec::with_capacity(units * 16);
    for (xu, du) in xq.chunks_exact(UNIT).zip(xd.chunks_exact(4)) {
        for half in 0..2 {
            for blk in xu.chunks_exact(BLOCK) {
                codes.extend(
                    blk[half * scalar::NIB_BYTES..][..scalar::NIB_BYTES]
                        .iter()
                        .map(|&q| q as u8),
                );
            }
        }
        scales.extend(du.iter().flat_map(|&d| [d; 4]));
    }
    (codes, scales)
}

/// For the int8 unit kernels of codes stored with an offset (Q4_0's
/// `code − 8`): each block's `−8 Σ x_q` spread over the 4 lanes its products
/// land in (`−2 Σ x_q` each), the starting value of the integer sums.
pub(crate) fn unit_offsets_q8(sums: &[i32], offset: i32) -> Vec<i32> {
    sums.chunks_exact(4)
        .flat_map(|s| s.iter().flat_map(move |&s| [-offset / 4 * s; 4]))
        .collect()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ggml;
