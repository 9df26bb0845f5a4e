//! Invertible discrete wavelet transforms: 1-D and 2-D, multi-level (Mallat)
//! and wavelet **packets**, with the Haar and the CDF 9/7 wavelets.
//!
//! Both wavelets are computed by lifting (Sweldens), in f64 internally:
//!
//! - [`Wavelet::Haar`]: `d = x₁ − x₀`, `s = x₀ + d/2`, then `s·√2`, `d/√2`
//!   (orthonormal: energy is preserved).
//! - [`Wavelet::Cdf97`]: the Cohen–Daubechies–Feauveau 9/7 biorthogonal
//!   wavelet of JPEG 2000's irreversible path, four lifting steps
//!   (α, β, γ, δ) and a scaling by `K = 1.230174…`: the low band is divided
//!   by `K` and the high band multiplied by `K/2`, so a constant comes out of
//!   the low band unchanged and a unit tone at the Nyquist frequency comes out
//!   of the high band with amplitude 1. This is the linear stage that WaLLoC
//!   (*Learned Compression for Compressed Learning*, `papers.txt`) sandwiches
//!   its autoencoder between, as a 2-D wavelet packet transform
//!   ([`packet_2d`]).
//!
//! # Lengths and boundaries
//!
//! A signal of any length `n` splits into `⌈n/2⌉` low coefficients (the even
//! samples' positions) and `⌊n/2⌋` high ones (the odd samples'), so the
//! coefficients are exactly as many as the samples. Boundaries use
//! whole-sample symmetric extension (`x[−k] = x[k]`, `x[n−1+k] = x[n−1−k]`),
//! as JPEG 2000 does; for odd `n` the last sample is even, has no high
//! partner, and goes to the low band only. For Haar with odd `n`, that last
//! sample is treated as paired with a copy of itself: its low coefficient is
//! `√2·x[n−1]`, its (zero) high coefficient is not stored. A length-1 signal
//! passes unchanged through CDF 9/7 (as in JPEG 2000) and is scaled by `√2`
//! by Haar. Each further level splits the low band (or, for packets,
//! every band) the same way, so any length and any number of levels invert
//! exactly (up to f32 rounding of the coefficients).
//!
//! ```
//! use tensorpress_codecs::wavelet::{packet_1d, wavedec, Wavelet};
//!
//! let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).sin()).collect();
//! let dec = wavedec(&x, Wavelet::Cdf97, 3)?;
//! assert_eq!(dec.approx.len(), 5); // 37 → 19 → 10 → 5
//! let back = dec.reconstruct()?;
//! assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-5));
//!
//! let p = packet_1d(&x, Wavelet::Haar, 2)?;
//! assert_eq!(p.leaves.len(), 4);
//! let back = p.reconstruct()?;
//! assert!(x.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-5));
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

use ndarray::{Array2, ArrayView2, Axis};

use crate::{Error, Result};

/// The wavelet of a transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wavelet {
    /// Haar (orthonormal, 2 taps).
    Haar,
    /// CDF 9/7 (biorthogonal, 9 analysis low-pass and 7 high-pass taps),
    /// JPEG 2000's irreversible wavelet.
    #[default]
    Cdf97,
}

// JPEG 2000 Part 1, Annex F, lifting coefficients of the 9/7 filter.
const ALPHA: f64 = -1.586_134_342_059_924;
const BETA: f64 = -0.052_980_118_572_961;
const GAMMA: f64 = 0.882_911_075_530_934;
const DELTA: f64 = 0.443_506_852_043_971;
const K: f64 = 1.230_174_104_914_001;

/// Most levels a transform accepts (a packet of `L` levels has `2^L` or `4^L` leaves).
pub const MAX_LEVELS: usize = 24;

/// `d[i] += c (s[i] + s[i+1])`, with `s[ns] = s[ns−1]` (symmetric extension).
fn predict(d: &mut [f64], s: &[f64], c: f64) {
    let ns = s.len();
    for (i, di) in d.iter_mut().enumerate() {
        let right = if i + 1 < ns { s[i + 1] } else { s[i] };
        *di += c * (s[i] + right);
    }
}

/// `s[i] += c (d[i−1] + d[i])`, with `d[−1] = d[0]` and `d[nd] = d[nd−1]`.
fn update(s: &mut [f64], d: &[f64], c: f64) {
    let nd = d.len();
    if nd == 0 {
        return;
    }
    for (i, si) in s.iter_mut().enumerate() {
        let left = d[i.saturating_sub(1)];
        let right = d[i.min(nd - 1)];
        *si += c * (left + right);
    }
}

/// One analysis level on f64 lines: `x` → (`s`, `d`).
fn forward_line(x: &[f64], wavelet: Wavelet, s: &mut Vec<f64>, d: &mut Vec<f64>) {
    s.clear();
    d.clear();
    s.extend(x.iter().step_by(2));
    d.extend(x.iter().skip(1).step_by(2));
    match wavelet {
        Wavelet::Haar => {
            for (i, si) in s.iter_mut().enumerate() {
                if let Some(di) = d.get_mut(i) {
                    *di -= *si;
                    *si += 0.5 * *di;
                    *si *= std::f64::consts::SQRT_2;
                    *di *= std::f64::consts::FRAC_1_SQRT_2;
                } else {
                    *si *= std::f64::consts::SQRT_2;
                }
            }
        }
        // A length-1 signal extends to a constant: it passes unchanged (as in JPEG 2000).
        Wavelet::Cdf97 if d.is_empty() => {}
        Wavelet::Cdf97 => {
            predict(d, s, ALPHA);
            update(s, d, BETA);
            predict(d, s, GAMMA);
            update(s, d, DELTA);
            s.iter_mut().for_each(|v| *v /= K);
            d.iter_mut().for_each(|v| *v *= K / 2.0);
        }
    }
}

/// One synthesis level: (`s`, `d`) → `x` (consumes the band buffers).
fn inverse_line(s: &mut [f64], d: &mut [f64], wavelet: Wavelet, x: &mut [f64]) {
    match wavelet {
        Wavelet::Haar => {
            for (i, si) in s.iter_mut().enumerate() {
                *si *= std::f64::consts::FRAC_1_SQRT_2;
                if let Some(di) = d.get_mut(i) {
                    *di *= std::f64::consts::SQRT_2;
                    *si -= 0.5 * *di;
                    *di += *si;
                }
            }
        }
        Wavelet::Cdf97 if d.is_empty() => {}
        Wavelet::Cdf97 => {
            s.iter_mut().for_each(|v| *v *= K);
            d.iter_mut().for_each(|v| *v /= K / 2.0);
            update(s, d, -DELTA);
            predict(d, s, -GAMMA);
            update(s, d, -BETA);
            predict(d, s, -ALPHA);
        }
    }
    for (i, v) in x.iter_mut().enumerate() {
        *v = if i % 2 == 0 { s[i / 2] } else { d[i / 2] };
    }
}

fn check_levels(levels: usize) -> Result<()> {
    if levels > MAX_LEVELS {
        return Err(Error::ParameterOutOfRange {
            op: "wavelet",
            name: "levels",
            value: levels as f64,
            range: format!("0..={MAX_LEVELS}"),
        });
    }
    Ok(())
}

/// One level of the 1-D analysis: `⌈n/2⌉` low and `⌊n/2⌋` high coefficients.
///
/// ```
/// use tensorpress_codecs::wavelet::{analyze, Wavelet};
///
/// let (low, high) = analyze(&[3.0, 3.0, 3.0, 3.0, 3.0], Wavelet::Cdf97);
/// assert_eq!((low.len(), high.len()), (3, 2));
/// assert!(low.iter().all(|v| (v - 3.0).abs() < 1e-5)); // DC gain 1
/// assert!(high.iter().all(|v| v.abs() < 1e-5)); // constants have no detail
/// ```
pub fn analyze(x: &[f32], wavelet: Wavelet) -> (Vec<f32>, Vec<f32>) {
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let (mut s, mut d) = (Vec::new(), Vec::new());
    forward_line(&x64, wavelet, &mut s, &mut d);
    (to_f32(&s), to_f32(&d))
}

/// One level of the 1-D synthesis, inverse of [`analyze`].
///
/// # Errors
/// [`Error::ShapeMismatch`] unless `low.len()` is `high.len()` or `high.len() + 1`.
pub fn synthesize(low: &[f32], high: &[f32], wavelet: Wavelet) -> Result<Vec<f32>> {
    if low.len() != high.len() && low.len() != high.len() + 1 {
        return Err(Error::ShapeMismatch {
            op: "wavelet synthesize",
            lhs: vec![low.len()],
            rhs: vec![high.len()],
        });
    }
    let mut s: Vec<f64> = low.iter().map(|&v| f64::from(v)).collect();
    let mut d: Vec<f64> = high.iter().map(|&v| f64::from(v)).collect();
    let mut x = vec![0.0f64; s.len() + d.len()];
    inverse_line(&mut s, &mut d, wavelet, &mut x);
    Ok(to_f32(&x))
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A multi-level 1-D decomposition (Mallat): the low band is split again at
/// every level.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decomposition1d {
    /// Length of the signal.
    pub len: usize,
    /// The wavelet.
    pub wavelet: Wavelet,
    /// The coarsest low band.
    pub approx: Vec<f32>,
    /// High bands, finest (level 1) first.
    pub details: Vec<Vec<f32>>,
}

/// `levels`-level 1-D wavelet decomposition of `x`.
///
/// # Errors
/// [`Error::ParameterOutOfRange`] for more than [`MAX_LEVELS`] levels.
pub fn wavedec(x: &[f32], wavelet: Wavelet, levels: usize) -> Result<Decomposition1d> {
    check_levels(levels)?;
    let mut approx = x.to_vec();
    let mut details = Vec::with_capacity(levels);
    for _ in 0..levels {
        let (low, high) = analyze(&approx, wavelet);
        details.push(high);
        approx = low;
    }
    Ok(Decomposition1d {
        len: x.len(),
        wavelet,
        approx,
        details,
    })
}

impl Decomposition1d {
    /// The signal back.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the band lengths do not fit `len` (a
    /// decomposition built or edited by hand).
    pub fn reconstruct(&self) -> Result<Vec<f32>> {
        let mut lens = vec![self.len];
        for _ in 0..self.details.len() {
            let n = *lens.last().expect("non-empty");
            lens.push(n.div_ceil(2));
        }
        let want_details = lens[..self.details.len()].iter().map(|n| n / 2);
        if self.approx.len() != *lens.last().expect("non-empty")
            || self.details.iter().map(Vec::len).ne(want_details)
        {
            return Err(Error::ShapeMismatch {
                op: "Decomposition1d::reconstruct",
                lhs: lens,
                rhs: std::iter::once(self.approx.len())
                    .chain(self.details.iter().map(Vec::len))
                    .collect(),
            });
        }
        let mut x = self.approx.clone();
        for high in self.details.iter().rev() {
            x = synthesize(&x, high, self.wavelet)?;
        }
        Ok(x)
    }
}

/// A 1-D wavelet packet: every band, low and high, split `levels` times.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Packet1d {
    /// Length of the signal.
    pub len: usize,
    /// The wavelet.
    pub wavelet: Wavelet,
    /// Depth of the tree.
    pub levels: usize,
    /// `2^levels` leaves in natural (tree) order: the bits of a leaf's index,
    /// most significant first, say low (0) or high (1) at each level.
    pub leaves: Vec<Vec<f32>>,
}

/// `levels`-level 1-D wavelet packet decomposition of `x`.
///
/// # Errors
/// [`Error::ParameterOutOfRange`] for more than [`MAX_LEVELS`] levels.
pub fn packet_1d(x: &[f32], wavelet: Wavelet, levels: usize) -> Result<Packet1d> {
    check_levels(levels)?;
    let mut bands = vec![x.to_vec()];
    for _ in 0..levels {
        bands = bands
            .iter()
            .flat_map(|b| {
                let (low, high) = analyze(b, wavelet);
                [low, high]
            })
            .collect();
    }
    Ok(Packet1d {
        len: x.len(),
        wavelet,
        levels,
        leaves: bands,
    })
}

/// Lengths of the `2^levels` leaves of a packet of a length-`n` signal.
fn packet_lengths(n: usize, levels: usize) -> Vec<usize> {
    let mut lens = vec![n];
    for _ in 0..levels {
        lens = lens.iter().flat_map(|&n| [n.div_ceil(2), n / 2]).collect();
    }
    lens
}

impl Packet1d {
    /// The signal back.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the leaves do not fit `len` and `levels`.
    pub fn reconstruct(&self) -> Result<Vec<f32>> {
        check_levels(self.levels)?;
        let want = packet_lengths(self.len, self.levels);
        if self.leaves.iter().map(Vec::len).ne(want.iter().copied()) {
            return Err(Error::ShapeMismatch {
                op: "Packet1d::reconstruct",
                lhs: want,
                rhs: self.leaves.iter().map(Vec::len).collect(),
            });
        }
        let mut bands = self.leaves.clone();
        while bands.len() > 1 {
            bands = bands
                .chunks(2)
                .map(|p| synthesize(&p[0], &p[1], self.wavelet))
                .collect::<Result<_>>()?;
        }
        Ok(bands.pop().expect("one band"))
    }
}

/// The four bands of one 2-D level. The first letter is the filter along
/// axis 0 (down the rows), the second along axis 1 (across a row): `lh` is
/// low-pass vertically and high-pass horizontally (vertical edges).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Subbands2d {
    /// Low/low, `[⌈r/2⌉, ⌈c/2⌉]`.
    pub ll: Array2<f32>,
    /// Low along axis 0, high along axis 1, `[⌈r/2⌉, ⌊c/2⌋]`.
    pub lh: Array2<f32>,
    /// High along axis 0, low along axis 1, `[⌊r/2⌋, ⌈c/2⌉]`.
    pub hl: Array2<f32>,
    /// High/high, `[⌊r/2⌋, ⌊c/2⌋]`.
    pub hh: Array2<f32>,
}

/// Splits every lane of `x` along `axis` into (low, high).
fn analyze_axis(
    x: ArrayView2<'_, f32>,
    axis: Axis,
    wavelet: Wavelet,
) -> (Array2<f32>, Array2<f32>) {
    let n = x.len_of(axis);
    let (nl, nh) = (n.div_ceil(2), n / 2);
    let shape = |m: usize| {
        let mut s = [x.nrows(), x.ncols()];
        s[axis.index()] = m;
        (s[0], s[1])
    };
    let mut low = Array2::<f32>::zeros(shape(nl));
    let mut high = Array2::<f32>::zeros(shape(nh));
    let (mut line, mut s, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for ((lane, mut lo), mut hi) in x
        .lanes(axis)
        .into_iter()
        .zip(low.lanes_mut(axis))
        .zip(high.lanes_mut(axis))
    {
        line.clear();
        line.extend(lane.iter().map(|&v| f64::from(v)));
        forward_line(&line, wavelet, &mut s, &mut d);
        lo.iter_mut().zip(&s).for_each(|(o, &v)| *o = v as f32);
        hi.iter_mut().zip(&d).for_each(|(o, &v)| *o = v as f32);
    }
    (low, high)
}

/// Inverse of [`analyze_axis`]; the shapes must already be checked.
fn synthesize_axis(
    low: ArrayView2<'_, f32>,
    high: ArrayView2<'_, f32>,
    axis: Axis,
    wavelet: Wavelet,
) -> Array2<f32> {
    let n = low.len_of(axis) + high.len_of(axis);
    let mut s = [low.nrows(), low.ncols()];
    s[axis.index()] = n;
    let mut out = Array2::<f32>::zeros((s[0], s[1]));
    let mut x = vec![0.0f64; n];
    for ((lo, hi), mut o) in low
        .lanes(axis)
        .into_iter()
        .zip(high.lanes(axis))
        .zip(out.lanes_mut(axis))
    {
        let mut sv: Vec<f64> = lo.iter().map(|&v| f64::from(v)).collect();
        let mut dv: Vec<f64> = hi.iter().map(|&v| f64::from(v)).collect();
        inverse_line(&mut sv, &mut dv, wavelet, &mut x);
        o.iter_mut().zip(&x).for_each(|(o, &v)| *o = v as f32);
    }
    out
}

/// One level of the separable 2-D analysis (rows first, then columns).
pub fn analyze_2d(x: ArrayView2<'_, f32>, wavelet: Wavelet) -> Subbands2d {
    let (l1, h1) = analyze_axis(x, Axis(1), wavelet);
    let (ll, hl) = analyze_axis(l1.view(), Axis(0), wavelet);
    let (lh, hh) = analyze_axis(h1.view(), Axis(0), wavelet);
    Subbands2d { ll, lh, hl, hh }
}

impl Subbands2d {
    /// Shape of the image these bands came from, if they fit together.
    fn source_shape(&self) -> Option<(usize, usize)> {
        let (r0, c0) = self.ll.dim();
        let (r1, c1) = self.hh.dim();
        let fits = |a: usize, b: usize| a == b || a == b + 1;
        (fits(r0, r1) && fits(c0, c1) && self.lh.dim() == (r0, c1) && self.hl.dim() == (r1, c0))
            .then_some((r0 + r1, c0 + c1))
    }

    /// The image back, inverse of [`analyze_2d`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the four shapes do not come from one image.
    pub fn reconstruct(&self, wavelet: Wavelet) -> Result<Array2<f32>> {
        if self.source_shape().is_none() {
            return Err(Error::ShapeMismatch {
                op: "Subbands2d::reconstruct",
                lhs: [self.ll.shape(), self.lh.shape()].concat(),
                rhs: [self.hl.shape(), self.hh.shape()].concat(),
            });
        }
        let l1 = synthesize_axis(self.ll.view(), self.hl.view(), Axis(0), wavelet);
        let h1 = synthesize_axis(self.lh.view(), self.hh.view(), Axis(0), wavelet);
        Ok(synthesize_axis(l1.view(), h1.view(), Axis(1), wavelet))
    }
}

/// A multi-level 2-D decomposition (Mallat): the `ll` band is split again.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decomposition2d {
    /// The wavelet.
    pub wavelet: Wavelet,
    /// The coarsest `ll` band.
    pub approx: Array2<f32>,
    /// `(lh, hl, hh)` per level, finest first.
    pub details: Vec<(Array2<f32>, Array2<f32>, Array2<f32>)>,
}

/// `levels`-level 2-D wavelet decomposition of `x`.
///
/// # Errors
/// [`Error::ParameterOutOfRange`] for more than [`MAX_LEVELS`] levels.
pub fn wavedec_2d(
    x: ArrayView2<'_, f32>,
    wavelet: Wavelet,
    levels: usize,
) -> Result<Decomposition2d> {
    check_levels(levels)?;
    let mut approx = x.to_owned();
    let mut details = Vec::with_capacity(levels);
    for _ in 0..levels {
        let b = analyze_2d(approx.view(), wavelet);
        details.push((b.lh, b.hl, b.hh));
        approx = b.ll;
    }
    Ok(Decomposition2d {
        wavelet,
        approx,
        details,
    })
}

impl Decomposition2d {
    /// The image back.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the bands do not fit together.
    pub fn reconstruct(&self) -> Result<Array2<f32>> {
        let mut x = self.approx.clone();
        for (lh, hl, hh) in self.details.iter().rev() {
            let bands = Subbands2d {
                ll: x,
                lh: lh.clone(),
                hl: hl.clone(),
                hh: hh.clone(),
            };
            x = bands.reconstruct(self.wavelet)?;
        }
        Ok(x)
    }
}

/// A 2-D wavelet packet: every band split into four, `levels` times.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Packet2d {
    /// Shape of the image.
    pub shape: (usize, usize),
    /// The wavelet.
    pub wavelet: Wavelet,
    /// Depth of the tree.
    pub levels: usize,
    /// `4^levels` leaves in tree order: each level's four children in the
    /// order `ll, lh, hl, hh` (base-4 digits of the index, most significant
    /// first).
    pub leaves: Vec<Array2<f32>>,
}

/// `levels`-level 2-D wavelet packet decomposition of `x` (WaLLoC's
/// analysis transform).
///
/// # Errors
/// [`Error::ParameterOutOfRange`] for more than [`MAX_LEVELS`] / 2 levels.
pub fn packet_2d(x: ArrayView2<'_, f32>, wavelet: Wavelet, levels: usize) -> Result<Packet2d> {
    check_levels(2 * levels)?;
    let mut bands = vec![x.to_owned()];
    for _ in 0..levels {
        bands = bands
            .iter()
            .flat_map(|b| {
                let s = analyze_2d(b.view(), wavelet);
                [s.ll, s.lh, s.hl, s.hh]
            })
            .collect();
    }
    Ok(Packet2d {
        shape: x.dim(),
        wavelet,
        levels,
        leaves: bands,
    })
}

impl Packet2d {
    /// The image back.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the leaves do not fit `shape` and `levels`.
    pub fn reconstruct(&self) -> Result<Array2<f32>> {
        check_levels(2 * self.levels)?;
        let rows = packet_lengths(self.shape.0, self.levels);
        let cols = packet_lengths(self.shape.1, self.levels);
        // Leaf index digits (base 4, MSB first): row bit then column bit per level.
        let want = (0..self.leaves.len()).map(|i| {
            let (mut r, mut c) = (0usize, 0usize);
            for l in 0..self.levels {
                let digit = (i >> (2 * (self.levels - 1 - l))) & 3;
                r = 2 * r + (digit >> 1);
                c = 2 * c + (digit & 1);
            }
            (rows[r], cols[c])
        });
        if self.leaves.len() != 1 << (2 * self.levels)
            || self.leaves.iter().map(Array2::dim).ne(want)
        {
            return Err(Error::ShapeMismatch {
                op: "Packet2d::reconstruct",
                lhs: vec![self.shape.0, self.shape.1, self.levels],
                rhs: self
                    .leaves
                    .iter()
                    .flat_map(|l| l.shape().to_vec())
                    .collect(),
            });
        }
        let mut bands = self.leaves.clone();
        while bands.len() > 1 {
            bands = bands
                .chunks(4)
                .map(|q| {
                    Subbands2d {
                        ll: q[0].clone(),
                        lh: q[1].clone(),
                        hl: q[2].clone(),
                        hh: q[3].clone(),
                    }
                    .reconstruct(self.wavelet)
                })
                .collect::<Result<_>>()?;
        }
        Ok(bands.pop().expect("one band"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn haar_is_orthonormal_and_exact_on_pairs() {
        let x = [1.0f32, 3.0, -2.0, 2.0, 5.0];
        let (low, high) = analyze(&x, Wavelet::Haar);
        let r2 = std::f32::consts::SQRT_2;
        let want_low = [4.0 / r2, 0.0, 5.0 * r2];
        let want_high = [2.0 / r2, 4.0 / r2];
        assert!(max_err(&low, &want_low) < 1e-6 && max_err(&high, &want_high) < 1e-6);
        // Energy is preserved for even lengths.
        let y = [1.0f32, 3.0, -2.0, 2.0];
        let (l, h) = analyze(&y, Wavelet::Haar);
        let e = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((e(&l) + e(&h) - e(&y)).abs() < 1e-5);
    }

    #[test]
    fn cdf97_vanishing_moments_and_gains() {
        // Constant: all in the low band, at gain 1, for every length.
        for n in 1..12 {
            let (low, high) = analyze(&vec![2.5f32; n], Wavelet::Cdf97);
            assert!(low.iter().all(|v| (v - 2.5).abs() < 1e-5), "n {n}: {low:?}");
            assert!(high.iter().all(|v| v.abs() < 1e-5), "n {n}: {high:?}");
        }
        // Cubic: the analysis high-pass has 4 vanishing moments (interior).
        let x: Vec<f32> = (0..32)
            .map(|i| {
                let t = i as f32 / 8.0;
                t * t * t - 2.0 * t + 1.0
            })
            .collect();
        let (_, high) = analyze(&x, Wavelet::Cdf97);
        for (i, h) in high.iter().enumerate().take(13).skip(2) {
            assert!(h.abs() < 1e-4, "high[{i}] = {h}");
        }
        // Nyquist tone: all in the high band at amplitude 1.
        let alt: Vec<f32> = (0..16)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let (low, high) = analyze(&alt, Wavelet::Cdf97);
        assert!(low.iter().all(|v| v.abs() < 1e-5), "{low:?}");
        assert!(high.iter().all(|v| (v + 1.0).abs() < 1e-5), "{high:?}");
    }

    #[test]
    fn symmetric_extension_matches_mirrored_signal() {
        // Transforming x and its mirror image gives mirrored coefficients
        // (odd length, so the centre sample stays even).
        let x: Vec<f32> = [0.3, -1.0, 2.0, 0.5, 4.0, -2.0, 1.0].to_vec();
        let mut m = x.clone();
        m.reverse();
        let (l, h) = analyze(&x, Wavelet::Cdf97);
        let (mut lm, mut hm) = analyze(&m, Wavelet::Cdf97);
        lm.reverse();
        hm.reverse();
        assert!(max_err(&l, &lm) < 1e-5 && max_err(&h, &hm) < 1e-5);
    }

    #[test]
    fn empty_and_tiny_inputs() {
        for w in [Wavelet::Haar, Wavelet::Cdf97] {
            for n in 0..4 {
                let x: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
                let back = wavedec(&x, w, 5).unwrap().reconstruct().unwrap();
                assert!(max_err(&x, &back) < 1e-6);
                let back = packet_1d(&x, w, 3).unwrap().reconstruct().unwrap();
                assert!(max_err(&x, &back) < 1e-6);
            }
            let e = Array2::<f32>::zeros((0, 3));
            assert_eq!(
                packet_2d(e.view(), w, 2)
                    .unwrap()
                    .reconstruct()
                    .unwrap()
                    .dim(),
                (0, 3)
            );
        }
    }

    #[test]
    fn bad_shapes_and_levels_are_errors() {
        assert!(synthesize(&[1.0; 4], &[1.0; 2], Wavelet::Haar).is_err());
        assert!(wavedec(&[1.0], Wavelet::Haar, MAX_LEVELS + 1).is_err());
        let mut p = packet_1d(&[1.0; 9], Wavelet::Cdf97, 2).unwrap();
        p.leaves[3].push(0.0);
        assert!(matches!(p.reconstruct(), Err(Error::ShapeMismatch { .. })));
        let x = SeededRng::new(1).array_normal((5, 7));
        let mut q = packet_2d(x.view(), Wavelet::Haar, 1).unwrap();
        q.leaves.swap(1, 2);
        assert!(matches!(q.reconstruct(), Err(Error::ShapeMismatch { .. })));
        let mut d = wavedec(&[1.0; 10], Wavelet::Haar, 2).unwrap();
        d.details[0].pop();
        assert!(d.reconstruct().is_err());
    }

    #[test]
    fn packet_2d_of_a_smooth_image_concentrates_in_ll() {
        let x = Array2::from_shape_fn((16, 16), |(i, j)| {
            ((i as f32) * 0.2).sin() + (j as f32) * 0.1
        });
        let p = packet_2d(x.view(), Wavelet::Cdf97, 2).unwrap();
        assert_eq!(p.leaves.len(), 16);
        let energy = |a: &Array2<f32>| a.iter().map(|v| f64::from(v * v)).sum::<f64>();
        let total: f64 = p.leaves.iter().map(energy).sum();
        assert!(energy(&p.leaves[0]) > 0.95 * total);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn one_d_inverts(x in proptest::collection::vec(-100.0f32..100.0, 0..200), levels in 0usize..6, haar: bool) {
            let w = if haar { Wavelet::Haar } else { Wavelet::Cdf97 };
            let scale = x.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let back = wavedec(&x, w, levels).unwrap().reconstruct().unwrap();
            prop_assert!(max_err(&x, &back) <= 1e-5 * scale);
            let back = packet_1d(&x, w, levels).unwrap().reconstruct().unwrap();
            prop_assert!(max_err(&x, &back) <= 1e-5 * scale);
        }

        #[test]
        fn two_d_inverts(seed in 0u64..10_000, r in 1usize..24, c in 1usize..24, levels in 0usize..4, haar: bool) {
            let w = if haar { Wavelet::Haar } else { Wavelet::Cdf97 };
            let x = SeededRng::new(seed).array_normal((r, c)).mapv(|v| 10.0 * v);
            let scale = x.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let back = wavedec_2d(x.view(), w, levels).unwrap().reconstruct().unwrap();
            prop_assert_eq!(back.dim(), x.dim());
            prop_assert!(max_err(x.as_slice().unwrap(), back.as_slice().unwrap()) <= 1e-5 * scale);
            let back = packet_2d(x.view(), w, levels).unwrap().reconstruct().unwrap();
            prop_assert!(max_err(x.as_slice().unwrap(), back.as_slice().unwrap()) <= 1e-5 * scale);
        }
    }
}
