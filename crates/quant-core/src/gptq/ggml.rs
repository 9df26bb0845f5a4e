//! GPTQ into GGML block types: [`GgmlGptq`].
//!
//! The column sweep of GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ:
//! Accurate Post-Training Quantization for Generative Pre-trained
//! Transformers", ICLR 2023, arXiv:2210.17323), with GGML's block layouts as
//! the grid. When the sweep reaches the first column of a block (32 values for
//! Q4_0 … Q8_0 and IQ4_NL, a 256-value super-block for the k-quants and
//! IQ4_XS), the block's scales (and minima) are chosen by the type's own
//! search on the weights *as updated so far*, weighted by the Hessian
//! diagonal `H_jj = 2·mean(x_j²)` (the quantity llama.cpp's imatrix holds):
//! llama.cpp's importance-weighted encoders for the k-quants and IQ4, and for
//! Q4_0/Q5_0 (Q4_1/Q5_1) its `make_qx_quants` (`make_qkx3_quants`) with the
//! weights `importance · sqrt(σ² + x²)` that `quantize_row_q4_0_impl` uses.
//! Each column is then rounded onto its block's grid, its error is fed
//! forward to the columns not yet quantized, and the codes are stored in the
//! type's layout, so llama.cpp decodes exactly the values GPTQ used.

use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;
use tensorpress_tensor::linalg::{cholesky_inverse_upper_damped, matmul, DampSchedule};
use tensorpress_tensor::FinalizedHessian;

use super::GptqReport;
use crate::ggml::grid::{set_code, sub_block_params, GridKind};
use crate::ggml::kquants::put_f16;
use crate::ggml::kquants::search::{make_qkx_quants, make_qx_quants, AsymSearch};
use crate::ggml::{encoder, weighted_encoder, GgmlQuantizer, GgmlTensor, GgmlType};
use crate::{check_finite, Calibration, Error, Result};

/// How GPTQ chooses a block's scales when the sweep reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BlockScales {
    /// The type's importance-weighted search, each column weighted by the
    /// Hessian diagonal (llama.cpp's imatrix search on the updated weights).
    #[default]
    HessianDiagonal,
    /// The type's reference search, without importance (what llama-quantize
    /// does without an imatrix).
    Reference,
}

/// GPTQ whose grid is a GGML block type: the bytes it returns are the type's
/// exact layout, decoding to the values GPTQ chose.
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::ggml::{GgmlQuantizer, GgmlRtn, GgmlType};
/// use tensorpress_quant_core::gptq::GgmlGptq;
/// use tensorpress_quant_core::Calibration;
/// use tensorpress_tensor::{ChannelStats, Hessian, SeededRng};
///
/// let mut rng = SeededRng::new(0);
/// // Correlated inputs: 512 tokens whose 64 features mix 8 latent factors.
/// let x = rng.array_normal((512, 8)).dot(&rng.array_normal((8, 64)));
/// let w = rng.array_normal((16, 64));
/// let mut h = Hessian::new(64);
/// h.update(x.view())?;
/// let mut stats = ChannelStats::new(64);
/// stats.update(x.view())?;
/// let cal = Calibration { hessian: Some(h.finalize(0.0)?), channel_stats: Some(stats) };
///
/// let gptq = GgmlGptq::new(GgmlType::Q4_0).quantize(w.view(), Some(&cal))?;
/// let rtn = GgmlRtn::new(GgmlType::Q4_0).quantize(w.view(), None)?;
/// assert_eq!(gptq.bytes().len(), rtn.bytes().len()); // 18 bytes per 32 weights
/// let out_err = |q: &tensorpress_quant_core::ggml::GgmlTensor| {
///     x.dot(&(&q.dequantize().unwrap() - &w).t()).mapv(|e| e * e).sum()
/// };
/// assert!(out_err(&gptq) < 0.5 * out_err(&rtn));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlGptq {
    /// The block type written.
    pub ty: GgmlType,
    /// Columns per lazy update (rounded up to whole GGML blocks; reference 128).
    pub block_size: usize,
    /// Dampening schedule (reference: 0.01 of the mean diagonal).
    pub damp: DampSchedule,
    /// How each block's scales are chosen.
    pub scales: BlockScales,
}

impl GgmlGptq {
    /// GPTQ into `ty` with lazy blocks of 128 columns (256 for the
    /// super-block types), damp 0.01 and Hessian-weighted block scales.
    pub fn new(ty: GgmlType) -> Self {
        GgmlGptq {
            ty,
            block_size: 128,
            damp: DampSchedule::default(),
            scales: BlockScales::HessianDiagonal,
        }
    }

    /// Chooses block scales with `scales`.
    pub fn scales(mut self, scales: BlockScales) -> Self {
        self.scales = scales;
        self
    }

    /// Uses `schedule` to damp the Hessian.
    pub fn damp(mut self, schedule: DampSchedule) -> Self {
        self.damp = schedule;
        self
    }

    /// Whether GPTQ can write `ty` (the types with a known grid: Q4_0, Q4_1,
    /// Q5_0, Q5_1, Q8_0, Q2_K … Q6_K, IQ4_NL, IQ4_XS).
    pub fn supports(ty: GgmlType) -> bool {
        GridKind::of(ty).is_some()
    }

    /// Quantizes `w` and reports the damping and GPTQ's loss estimate.
    ///
    /// # Errors
    /// [`Error::MissingCalibration`] without a Hessian, [`Error::Unsupported`]
    /// for a type without a grid, [`Error::NotBlockMultiple`] when a row is not
    /// whole blocks, [`Error::Shape`] for a Hessian of the wrong size,
    /// [`Error::NonFinite`] for NaN or infinite weights, a linear algebra error
    /// when the damped Hessian never factorizes.
    pub fn quantize_with_report(
        &self,
        w: ArrayView2<'_, f32>,
        cal: &Calibration,
    ) -> Result<(GgmlTensor, GptqReport)> {
        let h = cal.hessian.as_ref().ok_or(Error::MissingCalibration {
            method: "GPTQ",
            what: "the layer Hessian",
        })?;
        let (t, report, _) = sweep(self, w, h)?;
        Ok((t, report))
    }
}

impl GgmlQuantizer for GgmlGptq {
    fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    fn needs_calibration(&self) -> bool {
        true
    }

    fn quantize(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<GgmlTensor> {
        let cal = cal.ok_or(Error::MissingCalibration {
            method: "GPTQ",
            what: "calibration data",
        })?;
        Ok(self.quantize_with_report(w, cal)?.0)
    }
}

/// Asymmetric search of Q4_1/Q5_1 with an importance matrix
/// (`make_qkx3_quants(…, -0.9, 0.05, 36, false)`).
const fn asym(nmax: u8) -> AsymSearch {
    AsymSearch {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        use_mad: false,
    }
}

/// Encodes one block of `x` into `out` with the type's search; `imp` is the
/// per-column importance of the block and `sigma2` the row's mean square
/// (llama.cpp's legacy weighted encoders use the row's, not the block's).
/// Only the block's scales matter: GPTQ overwrites the codes.
fn encode_block(ty: GgmlType, x: &[f32], imp: Option<&[f32]>, sigma2: f32, out: &mut [u8]) {
    let legacy = matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1
    );
    match imp {
        Some(imp) if legacy => {
            let n = x.len();
            let mut weight = [0.0f32; 32];
            for ((w, &q), &v) in weight.iter_mut().zip(imp).zip(x) {
                *w = q * (sigma2 + v * v).sqrt();
            }
            let weight = &weight[..n];
            match ty {
                GgmlType::Q4_0 | GgmlType::Q5_0 => {
                    let nmax = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                    let mut l = [0i8; 32];
                    let d = make_qx_quants(x, nmax, &mut l[..n], Some(weight));
                    put_f16(out, 0, d);
                }
                _ => {
                    let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
                    let (mut l, mut aux) = ([0u8; 32], [0u8; 32]);
                    let (d, min) = make_qkx_quants(x, weight, asym(nmax), &mut l, &mut aux);
                    put_f16(out, 0, d);
                    put_f16(out, 2, -min);
                }
            }
        }
        Some(imp) => match weighted_encoder(ty) {
            Ok(f) => f(x, imp, out),
            // Q8_0 has no weighted encoder, in llama.cpp either.
            Err(_) => reference(ty, x, out),
        },
        None => reference(ty, x, out),
    }
}

fn reference(ty: GgmlType, x: &[f32], out: &mut [u8]) {
    if let Ok(f) = encoder(ty) {
        f(x, out);
    }
}

/// The sweep; also returns the values GPTQ rounded to (row-major), which the
/// returned bytes decode to.
fn sweep(
    cfg: &GgmlGptq,
    w: ArrayView2<'_, f32>,
    h: &FinalizedHessian,
) -> Result<(GgmlTensor, GptqReport, Vec<f32>)> {
    let (rows, cols) = w.dim();
    let ty = cfg.ty;
    let kind = GridKind::of(ty).ok_or(Error::Unsupported { op: "GPTQ", ty })?;
    let row_bytes = ty.row_bytes(cols)?;
    check_finite(w)?;
    if h.h.dim() != (cols, cols) {
        return Err(Error::Shape {
            what: "Hessian",
            expected: vec![cols, cols],
            actual: h.h.shape().to_vec(),
        });
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let subs = bs / kind.sub_len;
    let lazy = cfg.block_size.max(1).div_ceil(bs) * bs;

    let factor = cholesky_inverse_upper_damped(h.h.view(), &cfg.damp)?;
    let u: Array2<f32> = factor.factor.mapv(|v| v as f32);
    let mut dead = vec![false; cols];
    for &d in &h.dead {
        dead[d] = true;
    }
    // W transposed (row i is column i of W), dead inputs zeroed.
    let mut wt = w.t().to_owned();
    for (i, &is_dead) in dead.iter().enumerate() {
        if is_dead {
            wt.row_mut(i).fill(0.0);
        }
    }
    let importance: Option<Vec<f32>> = match cfg.scales {
        BlockScales::HessianDiagonal => Some(
            (0..cols)
                .map(|j| {
                    if dead[j] {
                        0.0
                    } else {
                        h.h[[j, j]].max(0.0) as f32
                    }
                })
                .collect(),
        ),
        BlockScales::Reference => None,
    };
    let sigma2: Vec<f32> = w
        .rows()
        .into_iter()
        .map(|r| r.iter().fold(0.0f32, |s, &v| s + v * v) / cols as f32)
        .collect();

    let mut bytes = vec![0u8; rows * row_bytes];
    let mut params = vec![(0.0f32, 0.0f32); rows * subs];
    let mut codes = vec![0u8; rows * cols];
    let mut used = vec![0.0f32; rows * cols];
    let mut loss = 0.0f64;
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + lazy).min(cols);
        let mut err = Array2::<f32>::zeros((i2 - i1, rows));
        for i in i1..i2 {
            if i % bs == 0 {
                // The block starts here: its scales come from the weights as updated so far.
                let blk = i / bs;
                let cols_view = wt.slice(s![i..i + bs, ..]);
                let imp = importance.as_ref().map(|v| &v[i..i + bs]);
                bytes
                    .par_chunks_mut(row_bytes)
                    .zip(params.par_chunks_mut(subs))
                    .enumerate()
                    .for_each(|(r, (row, p))| {
                        let x: Vec<f32> = cols_view.column(r).to_vec();
                        let block = &mut row[blk * ts..(blk + 1) * ts];
                        encode_block(ty, &x, imp, sigma2[r], block);
                        sub_block_params(ty, block, p);
                    });
            }
            let d = u[[i, i]];
            let sub = (i % bs) / kind.sub_len;
            let (mut head, mut tail) = wt.view_mut().split_at(Axis(0), i + 1);
            let col = head.row_mut(i);
            let mut e_row = err.row_mut(i - i1);
            for r in 0..rows {
                let p = params[r * subs + sub];
                let x = col[r];
                let q = kind.nearest(p, x);
                let v = kind.value(p, q);
                let diff = x - v;
                codes[r * cols + i] = q;
                used[r * cols + i] = v;
                loss += f64::from(diff * diff) / (2.0 * f64::from(d * d));
                e_row[r] = diff / d;
            }
            for j in i + 1..i2 {
                let coef = u[[i, j]];
                if coef != 0.0 {
                    tail.row_mut(j - i - 1).scaled_add(-coef, &e_row);
                }
            }
        }
        if i2 < cols {
            let ut = u.slice(s![i1..i2, i2..]).t().to_owned();
            let update = matmul(ut.view(), err.view())?;
            let mut rest = wt.slice_mut(s![i2.., ..]);
            rest -= &update;
        }
        i1 = i2;
    }

    // Store the codes in the type's layout.
    bytes
        .par_chunks_mut(row_bytes)
        .zip(codes.par_chunks(cols))
        .for_each(|(row, c)| {
            for (block, c) in row.chunks_exact_mut(ts).zip(c.chunks_exact(bs)) {
                for (e, &q) in c.iter().enumerate() {
                    set_code(ty, block, e, q);
                }
            }
        });
    let report = GptqReport {
        damp: factor.damp,
        attempts: factor.attempts,
        loss,
        dead: h.dead.len(),
    };
    Ok((GgmlTensor::new(ty, rows, cols, bytes)?, report, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml::GgmlRtn;
    use tensorpress_tensor::{ChannelStats, Hessian, SeededRng};

    struct Case {
        x: Array2<f32>,
        w: Array2<f32>,
        cal: Calibration,
    }

    /// Correlated inputs with uneven channel scales, as real activations have.
    fn case(rows: usize, cols: usize, tokens: usize, seed: u64) -> Case {
        let mut rng = SeededRng::new(seed);
        let basis = rng.array_normal((cols / 4, cols));
        let mut x = rng.array_normal((tokens, cols / 4)).dot(&basis);
        for (j, mut c) in x.columns_mut().into_iter().enumerate() {
            c *= 0.2 + (j % 7) as f32;
        }
        let w = rng.array_normal((rows, cols));
        let mut h = Hessian::new(cols);
        h.update(x.view()).unwrap();
        let mut stats = ChannelStats::new(cols);
        stats.update(x.view()).unwrap();
        let cal = Calibration {
            hessian: Some(h.finalize(0.0).unwrap()),
            channel_stats: Some(stats),
        };
        Case { x, w, cal }
    }

    fn output_error(c: &Case, q: &GgmlTensor) -> f32 {
        c.x.dot(&(&q.dequantize().unwrap() - &c.w).t())
            .mapv(|e| e * e)
            .sum()
    }

    const SMALL: [GgmlType; 6] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::IQ4NL,
    ];
    const SUPER: [GgmlType; 6] = [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::IQ4XS,
    ];

    #[test]
    fn bytes_decode_to_exactly_the_values_gptq_used() {
        for (types, cols) in [(SMALL, 96), (SUPER, 512)] {
            let c = case(6, cols, 4 * cols, 3);
            for ty in types {
                let h = c.cal.hessian.as_ref().unwrap();
                for scales in [BlockScales::HessianDiagonal, BlockScales::Reference] {
                    let cfg = GgmlGptq::new(ty).scales(scales);
                    let (t, rep, used) = sweep(&cfg, c.w.view(), h).unwrap();
                    assert_eq!(t.ggml_type(), ty);
                    assert_eq!(t.bytes().len(), 6 * ty.row_bytes(cols).unwrap());
                    let d = t.dequantize().unwrap();
                    let same = d.iter().zip(&used).all(|(a, b)| a == b);
                    assert!(same, "{ty} {scales:?}: decoded values differ from GPTQ's");
                    assert!(rep.loss > 0.0 && rep.attempts == 1);
                }
            }
        }
    }

    #[test]
    fn beats_importance_weighted_rtn_on_the_outputs() {
        for (types, cols) in [(SMALL, 128), (SUPER, 512)] {
            let c = case(16, cols, 4 * cols, 7);
            for ty in types {
                let gptq = GgmlGptq::new(ty)
                    .quantize(c.w.view(), Some(&c.cal))
                    .unwrap();
                let rtn = GgmlRtn::new(ty)
                    .with_importance()
                    .quantize(c.w.view(), Some(&c.cal))
                    .unwrap();
                let (eg, er) = (output_error(&c, &gptq), output_error(&c, &rtn));
                assert!(eg < 0.6 * er, "{ty}: gptq {eg} rtn {er}");
            }
        }
    }

    #[test]
    fn errors_are_typed() {
        let c = case(4, 64, 128, 1);
        let q = GgmlGptq::new(GgmlType::Q4_0);
        assert!(matches!(
            q.quantize(c.w.view(), None),
            Err(Error::MissingCalibration { .. })
        ));
        assert!(matches!(
            GgmlGptq::new(GgmlType::Q4K).quantize(c.w.view(), Some(&c.cal)),
            Err(Error::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            GgmlGptq::new(GgmlType::F16).quantize(c.w.view(), Some(&c.cal)),
            Err(Error::Unsupported { .. })
        ));
        assert!(!GgmlGptq::supports(GgmlType::Q8K));
        let narrow = c.w.slice(s![.., ..32]).to_owned();
        assert!(matches!(
            q.quantize(narrow.view(), Some(&c.cal)),
            Err(Error::Shape {
                what: "Hessian",
                ..
            })
        ));
        let mut nan = c.w.clone();
        nan[[1, 5]] = f32::NAN;
        assert!(matches!(
            q.quantize(nan.view(), Some(&c.cal)),
            Err(Error::NonFinite { row: 1, col: 5, .. })
        ));
    }

    #[test]
    fn dead_inputs_get_zero_weight() {
        let mut c = case(4, 64, 256, 9);
        c.x.column_mut(3).fill(0.0);
        let mut h = Hessian::new(64);
        h.update(c.x.view()).unwrap();
        let cal = Calibration {
            hessian: Some(h.finalize(0.0).unwrap()),
            ..Default::default()
        };
        let (t, rep) = GgmlGptq::new(GgmlType::Q4_1)
            .quantize_with_report(c.w.view(), &cal)
            .unwrap();
        assert_eq!(rep.dead, 1);
        let d = t.dequantize().unwrap();
        // Q4_1 decodes a zero as its block minimum; the dead column sits on the
        // grid point nearest 0.
        let col = d.column(3);
        for (r, &v) in col.iter().enumerate() {
            let row = d.row(r);
            let step = row.iter().fold(0.0f32, |m, &u| m.max(u.abs())) / 7.0;
            assert!(v.abs() <= step, "row {r}: {v}");
        }
    }
}
