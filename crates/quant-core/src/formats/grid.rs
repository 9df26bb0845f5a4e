//! [`Grid`]: the values a format rounds onto and how a group's scale is
//! chosen, for every [`Format`] — what [`Rtn`](crate::Rtn), GPTQ and the
//! clipping searches round with.

use ndarray::ArrayView2;

use super::{mx, nf4, nvfp4, FloatFormat, MxFormat};
use crate::int::{min_max, GroupParams, IntGrid};
use crate::spec::{Format, QuantSpec};
use crate::Result;

/// Rounding onto a grid of codes, with a scale (and zero point) per group.
///
/// [`IntGrid`] and [`Grid`] implement it, so that searches over group
/// parameters such as [`ClipSearch`](crate::ClipSearch) work for every format.
pub trait CodeGrid {
    /// Parameters for a group whose values span `[lo, hi]`.
    fn params_for_range(&self, lo: f32, hi: f32) -> GroupParams;

    /// The code of `x`.
    fn quantize(&self, x: f32, p: GroupParams) -> u8;

    /// The value of `code`.
    fn dequantize(&self, code: u8, p: GroupParams) -> f32;

    /// Parameters from the min and max of `values`.
    fn params(&self, values: &[f32]) -> GroupParams {
        let (lo, hi) = min_max(values);
        self.params_for_range(lo, hi)
    }

    /// `x` rounded onto the grid.
    fn round_trip(&self, x: f32, p: GroupParams) -> f32 {
        self.dequantize(self.quantize(x, p), p)
    }
}

impl CodeGrid for IntGrid {
    fn params_for_range(&self, lo: f32, hi: f32) -> GroupParams {
        IntGrid::params_for_range(self, lo, hi)
    }

    fn quantize(&self, x: f32, p: GroupParams) -> u8 {
        IntGrid::quantize(self, x, p)
    }

    fn dequantize(&self, code: u8, p: GroupParams) -> f32 {
        IntGrid::dequantize(self, code, p)
    }
}

/// The grid of a [`Format`], ready to quantize one tensor.
///
/// Scales per format (the zero point is 0 except for integers):
///
/// | format | group scale | value of a code |
/// |---|---|---|
/// | `Int` | [`IntGrid`]'s | `(code − zero) · scale` |
/// | `Float(f)` | `amax / f.max()` | `f(code) · scale` |
/// | `Nf4` | `amax` (bitsandbytes' absmax) | `NF4[code] · scale` |
/// | `Mx(m)` | `2^(floor(log2 amax) − emax)`, an E8M0 power of two | `m(code) · scale` |
/// | `Nvfp4` | `e4m3(amax / (6 · g))`, an E4M3 value | `e2m1(code) · (scale · g)` |
///
/// `amax` is the group's largest magnitude and `g` the NVFP4 tensor scale.
/// An all-zero group gets scale 0 (E8M0 `2^−127` for MX) and zero codes.
/// Values that round to zero get the `+0` code, and zero codes dequantize to
/// `+0`, as GGML's tables do.
///
/// ```
/// use tensorpress_quant_core::formats::{CodeGrid, Grid, FloatFormat};
///
/// let grid = Grid::Float(FloatFormat::E2M1);
/// let p = grid.params(&[0.3, -1.2, 0.05]);
/// assert_eq!(p.scale, 0.2); // 1.2 maps to 6
/// assert_eq!(grid.round_trip(-1.2, p), -1.2);
/// assert_eq!(grid.round_trip(0.3, p), 0.3); // 1.5 · 0.2
/// assert_eq!(grid.round_trip(0.05, p), 0.0); // 0.25 ties to even: 0
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Grid {
    /// Integers with a scale and zero point per group.
    Int(IntGrid),
    /// A small float with an f32 scale per group.
    Float(FloatFormat),
    /// NF4 with an absmax per group.
    Nf4,
    /// An MX format with an E8M0 scale per group.
    Mx(MxFormat),
    /// NVFP4 with an E4M3 scale per group and this tensor scale.
    Nvfp4 {
        /// The f32 scale of the whole tensor.
        global_scale: f32,
    },
}

impl Grid {
    /// The grid of `spec`; NVFP4 gets the tensor scale `global_scale` (1 when
    /// `None`).
    pub fn new(spec: &QuantSpec, global_scale: Option<f32>) -> Grid {
        match spec.format {
            Format::Int { bits } => Grid::Int(IntGrid::new(bits, spec.symmetric)),
            Format::Float(f) => Grid::Float(f),
            Format::Nf4 => Grid::Nf4,
            Format::Mx(m) => Grid::Mx(m),
            Format::Nvfp4 => Grid::Nvfp4 {
                global_scale: global_scale.unwrap_or(1.0),
            },
        }
    }

    /// The grid to quantize `w` to `spec`: NVFP4 takes its tensor scale
    /// `amax(w) / (6 · 448)` from the weight. Checks the spec against `w`.
    pub fn for_weight(spec: &QuantSpec, w: ArrayView2<'_, f32>) -> Result<Grid> {
        spec.validate(w.ncols())?;
        let global = match spec.format {
            Format::Nvfp4 => {
                let amax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                Some(nvfp4::tensor_scale(amax))
            }
            _ => None,
        };
        Ok(Grid::new(spec, global))
    }

    /// The NVFP4 tensor scale (`None` for the other formats).
    pub fn global_scale(&self) -> Option<f32> {
        match self {
            Grid::Nvfp4 { global_scale } => Some(*global_scale),
            _ => None,
        }
    }

    /// Parameters for a group whose largest magnitude is `amax` (not for
    /// asymmetric integers, which need the range: see
    /// [`CodeGrid::params_for_range`]).
    pub fn params_for_amax(&self, amax: f32) -> GroupParams {
        self.params_for_range(-amax, amax)
    }

    /// The spacing of the grid's values around `x` in a group with
    /// parameters `p`: the scale for integers, the format's local step times
    /// the scale otherwise. Round to nearest is within half of it for `x`
    /// inside the group's range.
    pub fn step_at(&self, x: f32, p: GroupParams) -> f32 {
        let scaled = |s: f32, step: &dyn Fn(f32) -> f32| {
            if s > 0.0 {
                step(x / s) * s
            } else {
                0.0
            }
        };
        match *self {
            Grid::Int(_) => p.scale,
            Grid::Float(f) => scaled(p.scale, &|y| f.step_at(y)),
            Grid::Mx(m) => scaled(p.scale, &|y| m.element().step_at(y)),
            Grid::Nf4 => scaled(p.scale, &nf4::nf4_step_at),
            Grid::Nvfp4 { global_scale } => {
                scaled(p.scale * global_scale, &|y| FloatFormat::E2M1.step_at(y))
            }
        }
    }
}

/// `+0` for either zero code of a float format.
#[inline]
fn positive_zero(f: FloatFormat, code: u8) -> u8 {
    if code & (f.sign_mask() - 1) == 0 {
        0
    } else {
        code
    }
}

impl CodeGrid for Grid {
    fn params_for_range(&self, lo: f32, hi: f32) -> GroupParams {
        let amax = lo.abs().max(hi.abs());
        let scale = match *self {
            Grid::Int(g) => return g.params_for_range(lo, hi),
            Grid::Float(f) => amax / f.max(),
            Grid::Nf4 => amax,
            Grid::Mx(m) => mx::e8m0_to_scale(mx::shared_exponent(m, amax)),
            Grid::Nvfp4 { global_scale } => {
                FloatFormat::E4M3.decode(nvfp4::block_scale_code(amax, global_scale))
            }
        };
        GroupParams { scale, zero: 0.0 }
    }

    #[inline]
    fn quantize(&self, x: f32, p: GroupParams) -> u8 {
        match *self {
            Grid::Int(g) => g.quantize(x, p),
            Grid::Float(f) if p.scale > 0.0 => positive_zero(f, f.encode_saturating(x / p.scale)),
            Grid::Float(_) => 0,
            // bitsandbytes multiplies by the reciprocal of the absmax.
            Grid::Nf4 if p.scale > 0.0 => nf4::nf4_encode(x * (1.0 / p.scale)),
            Grid::Nf4 => nf4::NF4_ZERO,
            Grid::Mx(m) => mx::encode_element(m, x, p.scale, mx::MxRounding::NearestEven),
            Grid::Nvfp4 { global_scale } => nvfp4::encode_element(x, p.scale, global_scale),
        }
    }

    #[inline]
    fn dequantize(&self, code: u8, p: GroupParams) -> f32 {
        match *self {
            Grid::Int(g) => g.dequantize(code, p),
            Grid::Float(f) => f.decode(code) * p.scale + 0.0,
            Grid::Nf4 => nf4::nf4_decode(code) * p.scale + 0.0,
            Grid::Mx(m) => m.element().decode(code) * p.scale + 0.0,
            Grid::Nvfp4 { global_scale } => nvfp4::decode_element(code, p.scale, global_scale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_groups_and_signed_zeros() {
        for grid in [
            Grid::Float(FloatFormat::E4M3),
            Grid::Nf4,
            Grid::Mx(MxFormat::Fp4),
            Grid::Nvfp4 { global_scale: 0.5 },
        ] {
            let p = grid.params(&[0.0, 0.0]);
            let c = grid.quantize(0.0, p);
            assert_eq!(grid.dequantize(c, p).to_bits(), 0, "{grid:?}");
            let p = grid.params(&[1.0, -1.0]);
            let c = grid.quantize(-1e-9, p);
            let v = grid.dequantize(c, p);
            assert_eq!(v.to_bits(), 0, "{grid:?}: −tiny → +0");
        }
    }

    #[test]
    fn nvfp4_scale_is_an_e4m3_value() {
        let grid = Grid::Nvfp4 {
            global_scale: nvfp4::tensor_scale(10.0),
        };
        let p = grid.params(&[0.37, -0.1]);
        let code = FloatFormat::E4M3.encode(p.scale);
        assert_eq!(FloatFormat::E4M3.decode(code), p.scale);
        assert!(grid.step_at(0.37, p) > 0.0);
    }
}
