//! The scale searches of llama.cpp's k-quant encoders (`ggml-quants.c`).
//!
//! Each picks the scale (and minimum) of one small group of values by trying a
//! handful of candidate scales around the naive one and keeping the one with the
//! lowest weighted squared (or absolute) error, or by the equivalent test on
//! `Σwxl² / Σwl²`. The arithmetic order follows the C exactly, since the winner
//! can flip on the last bit.

use super::{c_max, nearest_int, GROUP_MAX_EPS};

/// The value of largest magnitude with its sign, the first on ties.
#[inline]
pub(crate) fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    (amax, max)
}

/// `make_qx_quants` with `rmse_type = 1`: symmetric codes `l ∈ [−nmax, nmax)`,
/// stored in `l_out` as `l + nmax`, for the scale among `−(nmax + 0.1·k)/max`,
/// `k ∈ −9..=9`, that maximises `(Σ w x l)² / Σ w l²`. The weights are
/// `weights[i]`, or `x[i]²` when there are none. Returns the least-squares scale.
pub(crate) fn make_qx_quants(
    x: &[f32],
    nmax: i32,
    l_out: &mut [i8],
    weights: Option<&[f32]>,
) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let w = |i: usize| weights.map_or(x[i] * x[i], |w| w[i]);
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, (lo, &xi)) in l_out.iter_mut().zip(x).enumerate() {
        let l = clamp(nearest_int(iscale * xi));
        *lo = (l + nmax) as i8;
        let (wi, lf) = (w(i), l as f32);
        sumlx += wi * xi * lf;
        suml2 += wi * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &xi) in x.iter().enumerate() {
            let lf = clamp(nearest_int(iscale * xi)) as f32;
            let wi = w(i);
            sumlx += wi * xi * lf;
            suml2 += wi * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (lo, &xi) in l_out.iter_mut().zip(x) {
                *lo = (nmax + clamp(nearest_int(iscale * xi))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse`: symmetric codes `l ∈ [−nmax, nmax)` from the
/// naive scale `−nmax/max`, then up to five sweeps that move single codes while
/// that raises `(Σ x³ l)² / Σ x² l²` (weights `x²`). Codes are stored as
/// `l + nmax`; returns the least-squares scale.
pub(crate) fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let (amax, max) = signed_absmax(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let l = clamp(nearest_int(iscale * x[i]));
        l_out[i] = l as i8;
        let (w, lf) = (x[i] * x[i], l as f32);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let w = x[i] * x[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = clamp(nearest_int(x[i] * sl2 / slx));
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l = l.wrapping_add(nmax as i8);
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The parameters of an asymmetric search (`make_qkx2_quants`/`make_qkx3_quants`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsymSearch {
    /// Largest code.
    pub nmax: u8,
    /// First candidate offset of `nmax` (the C's `rmin`).
    pub rmin: f32,
    /// Step between candidates (`rdelta`).
    pub rdelta: f32,
    /// Candidates after the first (`nstep`).
    pub nstep: i32,
    /// Absolute instead of squared error (`use_mad`).
    pub use_mad: bool,
}

/// `make_qkx2_quants` (identical to `make_qkx3_quants` when weights are given):
/// codes `l ∈ [0, nmax]` with `x ≈ scale·l − min`, `min ≥ 0`. Starts from the
/// range `[min(x, 0), max(x)]`, then for each candidate `iscale = (nmax + rmin +
/// rdelta·k)/(max − min)` solves weighted least squares for scale and minimum
/// and keeps the lowest weighted error. Returns `(scale, min)`, with `min`
/// positive (the C's `the_min`).
pub(crate) fn make_qkx_quants(
    x: &[f32],
    weights: &[f32],
    p: AsymSearch,
    l_out: &mut [u8],
    l_aux: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let nmax = p.nmax as f32;
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32, w: f32| w * if p.use_mad { d.abs() } else { d * d };
    let mut iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax as i32);
        l_out[i] = l as u8;
        best_error += err(scale * l as f32 + min - x[i], weights[i]);
    }
    if p.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, p.nmax as i32);
            l_aux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += err(this_scale * l_aux[i] as f32 + this_min - x[i], weights[i]);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&l_aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qp_quants`: codes `l ∈ [0, nmax]` for non-negative values `x` (the
/// sub-block scales or minima of a super-block) against one positive scale,
/// chosen among `(nmax + 0.1·k)/max`, `k ∈ −4..=4`, by weighted squared error,
/// then refined by up to five sweeps of single-code moves. Returns the scale.
///
/// Codes are stored into `u8` as the C does, so a negative code (possible only
/// for negative inputs) wraps exactly as it does there.
pub(crate) fn make_qp_quants(x: &[f32], nmax: i32, l_out: &mut [u8], weights: &[f32]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, &v| c_max(m, v));
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in l_out.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += weights[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..x.len() {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += weights[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..x.len() {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let (w, lf) = (weights[i], l as f32);
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for i in 0..x.len() {
            let w = weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qx_quants_recovers_an_exact_grid() {
        // Values on the grid 0.5·l, l ∈ −4..=3: the scale comes back exactly.
        let x: Vec<f32> = (0..16).map(|i| 0.5 * ((i % 8) as f32 - 4.0)).collect();
        let mut l = [0i8; 16];
        let d = make_qx_quants(&x, 4, &mut l, None);
        // The largest magnitude is −2, so the first guess is iscale = −4/−2 = 2
        // and the codes are l = 2x: x = 0.5·(L − 4).
        assert_eq!(d, 0.5);
        for (v, &q) in x.iter().zip(&l) {
            assert_eq!(d * (q as f32 - 4.0), *v);
        }
    }

    #[test]
    fn q3_quants_zero_group() {
        let mut l = [5i8; 16];
        assert_eq!(make_q3_quants(&[0.0; 16], 4, &mut l), 0.0);
        assert_eq!(l, [0; 16]);
    }

    #[test]
    fn qkx_quants_fits_an_affine_grid() {
        // x = 0.25·l − 1 for l = 0..15 cycles: recovered scale and minimum.
        let x: Vec<f32> = (0..32).map(|i| 0.25 * (i % 16) as f32 - 1.0).collect();
        let w = vec![1.0f32; 32];
        let (mut l, mut aux) = ([0u8; 32], [0u8; 32]);
        let p = AsymSearch {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (scale, min) = make_qkx_quants(&x, &w, p, &mut l, &mut aux);
        assert!((scale - 0.25).abs() < 1e-6, "{scale}");
        assert!((min - 1.0).abs() < 1e-6, "{min}");
        assert!(l
            .iter()
            .zip(&x)
            .all(|(&q, &v)| (scale * q as f32 - min - v).abs() < 1e-5));
    }

    #[test]
    fn qp_quants_codes_stay_in_range() {
        let x = [0.1f32, 0.9, 0.35, 0.0, 0.62, 0.71, 0.05, 0.88];
        let w = [1.0f32; 8];
        let mut l = [0u8; 8];
        let d = make_qp_quants(&x, 63, &mut l, &w);
        assert!(d > 0.0);
        for (&q, &v) in l.iter().zip(&x) {
            assert!(q <= 63);
            assert!((d * q as f32 - v).abs() <= d, "{v} -> {q}");
        }
    }
}
