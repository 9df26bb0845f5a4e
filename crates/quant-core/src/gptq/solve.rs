//! The GPTQ column sweep.
//!
//! The weight is held transposed (`[cols, rows]`), so that every column of `W`
//! is a contiguous slice and the error-feedback updates are plain AXPYs.

use ndarray::{s, Array2, ArrayView2, Axis};
use tensorpress_tensor::linalg::{cholesky_inverse_upper_damped, matmul};
use tensorpress_tensor::FinalizedHessian;

use super::Gptq;
use crate::formats::{CodeGrid, Grid};
use crate::int::GroupParams;
use crate::qtensor::QuantizedTensor;
use crate::spec::Granularity;
use crate::{check_finite, Error, Result};

/// What GPTQ did on one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqReport {
    /// The relative damp that made the Hessian factorizable.
    pub damp: f64,
    /// Cholesky attempts, including the successful one.
    pub attempts: usize,
    /// GPTQ's loss estimate `Σ (w − q)² / (2 U_ii²)` (reference `Losses`).
    pub loss: f64,
    /// Input channels with no activation, whose weights were zeroed.
    pub dead: usize,
}

/// Chooses scale and zero for one group of values.
fn group_params(cfg: &Gptq, grid: &Grid, values: &[f32]) -> GroupParams {
    match &cfg.clip {
        Some(c) => c.search(grid, values),
        None => grid.params(values),
    }
}

pub(super) fn run(
    cfg: &Gptq,
    w: ArrayView2<'_, f32>,
    h: &FinalizedHessian,
) -> Result<(QuantizedTensor, GptqReport)> {
    let (rows, cols) = w.dim();
    let spec = cfg.spec;
    spec.validate(cols)?;
    check_finite(w)?;
    if h.h.dim() != (cols, cols) {
        return Err(Error::Shape {
            what: "Hessian",
            expected: vec![cols, cols],
            actual: h.h.shape().to_vec(),
        });
    }
    if cfg.block_size == 0 {
        return Err(Error::InvalidGroupSize {
            group: cfg.block_size,
            cols,
        });
    }
    let grid = Grid::for_weight(&spec, w)?;
    let gs = spec.group_size(cols);
    let n_groups = spec.n_groups(cols)?;
    let is_group = matches!(spec.granularity, Granularity::Group(_));

    // Parameters fixed before the sweep: per channel, per tensor, or static groups.
    let mut scales = Array2::<f32>::zeros((rows, n_groups));
    let mut zeros = Array2::<f32>::zeros((rows, n_groups));
    let set =
        |scales: &mut Array2<f32>, zeros: &mut Array2<f32>, r: usize, g: usize, p: GroupParams| {
            scales[[r, g]] = p.scale;
            zeros[[r, g]] = p.zero;
        };
    match spec.granularity {
        Granularity::Tensor => {
            let all: Vec<f32> = w.iter().copied().collect();
            let p = group_params(cfg, &grid, &all);
            for r in 0..rows {
                set(&mut scales, &mut zeros, r, 0, p);
            }
        }
        Granularity::Channel => {
            for r in 0..rows {
                let row: Vec<f32> = w.row(r).to_vec();
                set(
                    &mut scales,
                    &mut zeros,
                    r,
                    0,
                    group_params(cfg, &grid, &row),
                );
            }
        }
        Granularity::Group(_) if cfg.static_groups => {
            for r in 0..rows {
                let row: Vec<f32> = w.row(r).to_vec();
                for g in 0..n_groups {
                    let (a, b) = (g * gs, ((g + 1) * gs).min(cols));
                    set(
                        &mut scales,
                        &mut zeros,
                        r,
                        g,
                        group_params(cfg, &grid, &row[a..b]),
                    );
                }
            }
        }
        Granularity::Group(_) => {}
    }

    // Column order: decreasing Hessian diagonal for act-order (stable ties).
    let mut perm: Vec<usize> = (0..cols).collect();
    if cfg.act_order {
        perm.sort_by(|&a, &b| h.h[[b, b]].total_cmp(&h.h[[a, a]]));
    }
    let hp = Array2::from_shape_fn((cols, cols), |(i, j)| h.h[[perm[i], perm[j]]]);
    let factor = cholesky_inverse_upper_damped(hp.view(), &cfg.damp)?;
    let u: Array2<f32> = factor.factor.mapv(|v| v as f32);

    // W transposed and permuted: row i is column perm[i] of W; dead inputs zeroed.
    let mut wt = Array2::<f32>::zeros((cols, rows));
    for (i, &c) in perm.iter().enumerate() {
        wt.row_mut(i).assign(&w.column(c));
    }
    let mut dead = vec![false; cols];
    for &d in &h.dead {
        dead[d] = true;
    }
    for (i, &c) in perm.iter().enumerate() {
        if dead[c] {
            wt.row_mut(i).fill(0.0);
        }
    }

    // Group of each permuted position.
    let group_at = |i: usize| -> usize {
        if !is_group {
            0
        } else if cfg.static_groups {
            perm[i] / gs
        } else {
            i / gs
        }
    };

    let mut codes_t = vec![0u8; cols * rows];
    let mut loss = 0.0f64;
    let bs = cfg.block_size;
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + bs).min(cols);
        let count = i2 - i1;
        let mut err = Array2::<f32>::zeros((count, rows));
        for i in i1..i2 {
            let g = group_at(i);
            if is_group && !cfg.static_groups && i % gs == 0 {
                // The group starts here: its scale comes from the weights as updated so far.
                let end = (i + gs).min(cols);
                let block = wt.slice(s![i..end, ..]);
                let mut values = vec![0.0f32; end - i];
                for r in 0..rows {
                    for (k, v) in values.iter_mut().enumerate() {
                        *v = block[[k, r]];
                    }
                    set(
                        &mut scales,
                        &mut zeros,
                        r,
                        g,
                        group_params(cfg, &grid, &values),
                    );
                }
            }
            let d = u[[i, i]];
            let (mut head, mut tail) = wt.view_mut().split_at(Axis(0), i + 1);
            let col = head.row_mut(i);
            let mut e_row = err.row_mut(i - i1);
            let code_row = &mut codes_t[i * rows..(i + 1) * rows];
            for r in 0..rows {
                let p = GroupParams {
                    scale: scales[[r, g]],
                    zero: zeros[[r, g]],
                };
                let x = col[r];
                let q = grid.quantize(x, p);
                let diff = x - grid.dequantize(q, p);
                code_row[r] = q;
                loss += f64::from(diff * diff) / (2.0 * f64::from(d * d));
                e_row[r] = diff / d;
            }
            // Feed the error forward to the rest of the block.
            for j in i + 1..i2 {
                let coef = u[[i, j]];
                if coef != 0.0 {
                    let mut target = tail.row_mut(j - i - 1);
                    target.scaled_add(-coef, &e_row);
                }
            }
        }
        // Lazy batch update of every column after the block: W[i2:] −= U[i1:i2, i2:]ᵀ · E.
        if i2 < cols {
            let ut = u.slice(s![i1..i2, i2..]).t().to_owned();
            let update = matmul(ut.view(), err.view())?;
            let mut rest = wt.slice_mut(s![i2.., ..]);
            rest -= &update;
        }
        i1 = i2;
    }

    // Undo the permutation.
    let mut codes = vec![0u8; rows * cols];
    for (i, &c) in perm.iter().enumerate() {
        let src = &codes_t[i * rows..(i + 1) * rows];
        for (r, &q) in src.iter().enumerate() {
            codes[r * cols + c] = q;
        }
    }
    let g_idx = if cfg.act_order && is_group {
        let mut g = vec![0u32; cols];
        for (i, &c) in perm.iter().enumerate() {
            g[c] = group_at(i) as u32;
        }
        Some(g)
    } else {
        None
    };
    let report = GptqReport {
        damp: factor.damp,
        attempts: factor.attempts,
        loss,
        dead: h.dead.len(),
    };
    let q = QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, g_idx)?.on_grid(&grid)?;
    Ok((q, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Calibration, QuantSpec, Rtn, WeightQuantizer};
    use tensorpress_tensor::{Hessian, SeededRng};

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
        let cal = Calibration {
            hessian: Some(h.finalize(0.0).unwrap()),
            ..Default::default()
        };
        Case { x, w, cal }
    }

    fn output_error(c: &Case, q: &QuantizedTensor) -> f32 {
        c.x.dot(&(&q.dequantize() - &c.w).t()).mapv(|e| e * e).sum()
    }

    #[test]
    fn beats_rtn_in_every_mode() {
        let c = case(24, 256, 1024, 7);
        for spec in [
            QuantSpec::int(3).group(64),
            QuantSpec::int(4).group(64).asymmetric(),
            QuantSpec::int(4),
            QuantSpec::int(2).group(32).asymmetric(),
        ] {
            let rtn = Rtn::new(spec).quantize(c.w.view(), None).unwrap();
            for (act, stat) in [(false, false), (true, false), (true, true), (false, true)] {
                let g = Gptq::new(spec).act_order(act).static_groups(stat);
                let (q, rep) = g.quantize_with_report(c.w.view(), &c.cal).unwrap();
                let (eg, er) = (output_error(&c, &q), output_error(&c, &rtn));
                assert!(
                    eg < 0.7 * er,
                    "{spec} act {act} static {stat}: gptq {eg} rtn {er}"
                );
                assert_eq!(rep.attempts, 1);
                assert_eq!(
                    q.g_idx().is_some(),
                    act && spec.granularity != Granularity::Channel
                );
            }
        }
    }

    #[test]
    fn block_size_does_not_change_the_result_much() {
        // Lazy updates are exact algebra; only float rounding differs.
        let c = case(8, 96, 256, 3);
        let spec = QuantSpec::int(4).group(32);
        let a = Gptq::new(spec).quantize(c.w.view(), Some(&c.cal)).unwrap();
        let mut small = Gptq::new(spec);
        small.block_size = 16;
        let b = small.quantize(c.w.view(), Some(&c.cal)).unwrap();
        let same = a
            .codes()
            .iter()
            .zip(b.codes())
            .filter(|(x, y)| x == y)
            .count();
        assert!(same as f32 >= 0.99 * a.codes().len() as f32, "{same}");
    }

    #[test]
    fn act_order_records_groups_in_sweep_order() {
        let c = case(4, 64, 128, 5);
        let q = Gptq::new(QuantSpec::int(4).group(16))
            .act_order(true)
            .quantize(c.w.view(), Some(&c.cal))
            .unwrap();
        let g = q.g_idx().unwrap();
        // Each group holds exactly 16 columns, the 16 with the largest H_ii first.
        for k in 0..4u32 {
            assert_eq!(g.iter().filter(|&&x| x == k).count(), 16);
        }
        let h = &c.cal.hessian.as_ref().unwrap().h;
        let top = (0..64)
            .max_by(|&a, &b| h[[a, a]].total_cmp(&h[[b, b]]))
            .unwrap();
        assert_eq!(g[top], 0);
    }

    #[test]
    fn dead_inputs_get_zero_weight_and_errors_are_typed() {
        let mut c = case(4, 32, 64, 9);
        c.x.column_mut(3).fill(0.0);
        let mut h = Hessian::new(32);
        h.update(c.x.view()).unwrap();
        let fh = h.finalize(0.0).unwrap();
        assert_eq!(fh.dead, vec![3]);
        let cal = Calibration {
            hessian: Some(fh),
            ..Default::default()
        };
        let spec = QuantSpec::int(4).asymmetric();
        let (q, rep) = Gptq::new(spec)
            .quantize_with_report(c.w.view(), &cal)
            .unwrap();
        assert_eq!(rep.dead, 1);
        assert!(q.dequantize().column(3).iter().all(|&v| v == 0.0));

        assert!(matches!(
            Gptq::new(spec).quantize(c.w.view(), None),
            Err(Error::MissingCalibration { .. })
        ));
        let small = Calibration {
            hessian: Some(
                Hessian::from_parts(Array2::eye(8), 2)
                    .unwrap()
                    .finalize(0.0)
                    .unwrap(),
            ),
            ..Default::default()
        };
        assert!(matches!(
            Gptq::new(spec).quantize(c.w.view(), Some(&small)),
            Err(Error::Shape {
                what: "Hessian",
                ..
            })
        ));
        let mut nan = c.w.clone();
        nan[[2, 7]] = f32::INFINITY;
        assert!(matches!(
            Gptq::new(spec).quantize(nan.view(), Some(&cal)),
            Err(Error::NonFinite { row: 2, col: 7, .. })
        ));
    }

    #[test]
    fn singular_hessian_after_damping_is_a_typed_error() {
        let c = case(4, 16, 64, 11);
        // Unit diagonal, −5 everywhere else: indefinite even after damping by 1·mean(diag).
        let sum = Array2::from_shape_fn((16, 16), |(i, j)| if i == j { 1.0 } else { -5.0 });
        let bad = Calibration {
            hessian: Some(Hessian::from_parts(sum, 2).unwrap().finalize(0.0).unwrap()),
            ..Default::default()
        };
        let err = Gptq::new(QuantSpec::int(4))
            .quantize(c.w.view(), Some(&bad))
            .unwrap_err();
        assert!(matches!(err, Error::Linalg(_)), "{err}");
    }
}
