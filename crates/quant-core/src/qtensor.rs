//! [`QuantizedTensor`]: codes, scales and zero points of a quantized weight,
//! in a layout-neutral form that every exporter packs its own way.

use ndarray::{Array2, ArrayView2};

use crate::formats::{mx, CodeGrid, FloatFormat, Grid};
use crate::int::GroupParams;
use crate::spec::{Format, QuantSpec};
use crate::{Error, Result};

/// A quantized `[rows, cols]` weight (`[out_features, in_features]`).
///
/// Codes are stored unpacked, one `u8` per weight, row-major. Scales and zero
/// points are `[rows, n_groups]`; column `c` belongs to group
/// `g_idx[c]` when a group index is present (GPTQ's act-order) and to
/// `c / group_size` otherwise.
///
/// What a code means depends on the format ([`Grid`] has the table): integer
/// codes are offset by a zero point; float, NF4, MX and NVFP4 codes are
/// scaled table values with zero points of 0. MX scales are the f32 powers of
/// two of their E8M0 exponents and NVFP4 block scales the f32 values of their
/// E4M3 codes ([`scale_codes`](Self::scale_codes) recovers both); NVFP4 also
/// has a [`global_scale`](Self::global_scale).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    spec: QuantSpec,
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    scales: Array2<f32>,
    zeros: Array2<f32>,
    g_idx: Option<Vec<u32>>,
    global_scale: Option<f32>,
}

impl QuantizedTensor {
    /// Assembles a quantized tensor, checking every size, code and scale.
    ///
    /// Beyond the sizes and the code range of the format's bits, codes must be
    /// finite values of float formats ([`Error::NonFiniteCode`]); scales must
    /// be finite and non-negative for float and NF4 formats, powers of two in
    /// E8M0's range for MX and E4M3 values for NVFP4
    /// ([`Error::InvalidScale`]); zero points must be 0 for formats without
    /// one ([`Error::ZeroPoint`]); and MX and NVFP4 blocks must be contiguous
    /// ([`Error::NonContiguousGroups`]). An NVFP4 tensor starts with tensor
    /// scale 1: set it with [`with_global_scale`](Self::with_global_scale).
    pub fn new(
        spec: QuantSpec,
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        scales: Array2<f32>,
        zeros: Array2<f32>,
        g_idx: Option<Vec<u32>>,
    ) -> Result<Self> {
        let groups = spec.n_groups(cols)?;
        let n = rows.checked_mul(cols).ok_or(Error::Overflow)?;
        if codes.len() != n {
            return Err(Error::Shape {
                what: "codes",
                expected: vec![rows, cols],
                actual: vec![codes.len()],
            });
        }
        for (what, a) in [("scales", &scales), ("zeros", &zeros)] {
            if a.dim() != (rows, groups) {
                return Err(Error::Shape {
                    what,
                    expected: vec![rows, groups],
                    actual: a.shape().to_vec(),
                });
            }
        }
        if let Some(g) = &g_idx {
            if g.len() != cols {
                return Err(Error::Shape {
                    what: "g_idx",
                    expected: vec![cols],
                    actual: vec![g.len()],
                });
            }
            if let Some(&bad) = g.iter().find(|&&x| x as usize >= groups) {
                return Err(Error::GroupIndex { index: bad, groups });
            }
        }
        let max_code = (1u32 << spec.bits()) - 1;
        if let Some(&bad) = codes.iter().find(|&&c| c as u32 > max_code) {
            return Err(Error::CodeRange {
                code: bad,
                bits: spec.bits(),
            });
        }
        check_format(&spec, cols, &codes, &scales, &zeros, g_idx.as_deref())?;
        let global_scale = (spec.format == Format::Nvfp4).then_some(1.0);
        Ok(QuantizedTensor {
            spec,
            rows,
            cols,
            codes,
            scales,
            zeros,
            g_idx,
            global_scale,
        })
    }

    /// Sets the NVFP4 tensor scale (positive and finite; an error for other
    /// formats, which have none).
    pub fn with_global_scale(mut self, scale: f32) -> Result<Self> {
        if self.spec.format != Format::Nvfp4 || !(scale > 0.0 && scale.is_finite()) {
            return Err(Error::GlobalScale {
                format: self.spec.format,
                value: scale,
            });
        }
        self.global_scale = Some(scale);
        Ok(self)
    }

    /// Takes the tensor scale of `grid` (NVFP4's), if it has one.
    pub(crate) fn on_grid(self, grid: &Grid) -> Result<Self> {
        match grid.global_scale() {
            Some(g) => self.with_global_scale(g),
            None => Ok(self),
        }
    }

    /// The same tensor with its rows reordered: row `i` of the result is row
    /// `order[i]` of `self` (codes, scales and zero points move together, so
    /// the dequantized weight is permuted exactly). Used to move a query/key
    /// projection between GGUF's and Hugging Face's row layouts.
    ///
    /// ```
    /// use ndarray::array;
    /// use tensorpress_quant_core::{QuantSpec, Rtn, WeightQuantizer};
    ///
    /// let w = array![[1.0f32, -2.0], [0.5, 0.25], [3.0, 1.0]];
    /// let q = Rtn::new(QuantSpec::int(4)).quantize(w.view(), None)?;
    /// let p = q.permute_rows(&[2, 0, 1])?;
    /// assert_eq!(p.dequantize().row(0), q.dequantize().row(2));
    /// # Ok::<(), tensorpress_quant_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Shape`] when `order` is not a permutation of `0..rows`.
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.rows];
        let valid = order.len() == self.rows
            && order
                .iter()
                .all(|&r| r < self.rows && !std::mem::replace(&mut seen[r], true));
        if !valid {
            return Err(Error::Shape {
                what: "row permutation",
                expected: vec![self.rows],
                actual: vec![order.len()],
            });
        }
        let mut codes = Vec::with_capacity(self.codes.len());
        for &r in order {
            codes.extend_from_slice(&self.codes[r * self.cols..(r + 1) * self.cols]);
        }
        let pick = |a: &Array2<f32>| a.select(ndarray::Axis(0), order);
        Ok(QuantizedTensor {
            codes,
            scales: pick(&self.scales),
            zeros: pick(&self.zeros),
            ..self.clone()
        })
    }

    /// The NVFP4 tensor scale (`None` for the other formats).
    pub fn global_scale(&self) -> Option<f32> {
        self.global_scale
    }

    /// The grid the codes live on.
    pub fn grid(&self) -> Grid {
        Grid::new(&self.spec, self.global_scale)
    }

    /// The stored form of the scales where the format fixes it: E8M0
    /// exponents for MX, E4M3 codes for NVFP4 block scales; `None` for the
    /// formats with f32 scales.
    pub fn scale_codes(&self) -> Option<Array2<u8>> {
        match self.spec.format {
            // `new` checked that every scale is representable.
            Format::Mx(_) => Some(
                self.scales
                    .mapv(|s| mx::e8m0_from_scale(s).unwrap_or(mx::E8M0_NAN)),
            ),
            Format::Nvfp4 => Some(self.scales.mapv(|s| FloatFormat::E4M3.encode(s))),
            _ => None,
        }
    }

    /// The quantization this tensor follows.
    pub fn spec(&self) -> &QuantSpec {
        &self.spec
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Codes, row-major.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// Codes as a `[rows, cols]` view.
    pub fn codes_2d(&self) -> ArrayView2<'_, u8> {
        ArrayView2::from_shape((self.rows, self.cols), &self.codes)
            .expect("codes length is checked at construction")
    }

    /// Scales, `[rows, n_groups]`.
    pub fn scales(&self) -> &Array2<f32> {
        &self.scales
    }

    /// Zero points in code units, `[rows, n_groups]`.
    pub fn zeros(&self) -> &Array2<f32> {
        &self.zeros
    }

    /// The group of each column when it is not `col / group_size` (act-order).
    pub fn g_idx(&self) -> Option<&[u32]> {
        self.g_idx.as_deref()
    }

    /// Columns per group.
    pub fn group_size(&self) -> usize {
        self.spec.group_size(self.cols)
    }

    /// The group column `col` belongs to.
    #[inline]
    pub fn group_of(&self, col: usize) -> usize {
        match &self.g_idx {
            Some(g) => g[col] as usize,
            None => col / self.group_size(),
        }
    }

    /// Scale and zero point of `(row, group)`.
    #[inline]
    pub fn params(&self, row: usize, group: usize) -> GroupParams {
        GroupParams {
            scale: self.scales[[row, group]],
            zero: self.zeros[[row, group]],
        }
    }

    /// The weight the codes represent.
    pub fn dequantize(&self) -> Array2<f32> {
        let grid = self.grid();
        let groups: Vec<usize> = (0..self.cols).map(|c| self.group_of(c)).collect();
        Array2::from_shape_fn((self.rows, self.cols), |(r, c)| {
            grid.dequantize(self.codes[r * self.cols + c], self.params(r, groups[c]))
        })
    }

    /// Storage in bits per weight: codes plus one `scale_bits` scale per group
    /// (and a `bits`-bit zero point per group when asymmetric). MX and NVFP4
    /// fix their scale width at 8 bits and ignore `scale_bits`; NVFP4 adds its
    /// 32-bit tensor scale.
    pub fn bits_per_weight(&self, scale_bits: u32) -> f64 {
        let groups = self.scales.len() as f64;
        let zero_bits = if self.spec.symmetric {
            0.0
        } else {
            self.spec.bits() as f64
        };
        let (scale_bits, tensor_bits) = match self.spec.format {
            Format::Mx(_) => (8.0, 0.0),
            Format::Nvfp4 => (8.0, 32.0),
            _ => (scale_bits as f64, 0.0),
        };
        let n = (self.rows * self.cols).max(1) as f64;
        self.spec.bits() as f64 + (groups * (scale_bits + zero_bits) + tensor_bits) / n
    }
}

/// The checks of [`QuantizedTensor::new`] that depend on the format.
fn check_format(
    spec: &QuantSpec,
    cols: usize,
    codes: &[u8],
    scales: &Array2<f32>,
    zeros: &Array2<f32>,
    g_idx: Option<&[u32]>,
) -> Result<()> {
    let format = spec.format;
    let element = match format {
        Format::Float(f) => Some(f),
        Format::Mx(m) => Some(m.element()),
        Format::Nvfp4 => Some(FloatFormat::E2M1),
        Format::Int { .. } | Format::Nf4 => None,
    };
    if let Some(f) = element {
        if let Some(&code) = codes.iter().find(|&&c| !f.is_finite_code(c)) {
            return Err(Error::NonFiniteCode { code, format });
        }
    }
    let scale_ok = |s: f32| match format {
        Format::Int { .. } => true,
        Format::Float(_) | Format::Nf4 => s.is_finite() && s >= 0.0,
        Format::Mx(_) => mx::e8m0_from_scale(s).is_some(),
        Format::Nvfp4 => s >= 0.0 && FloatFormat::E4M3.decode(FloatFormat::E4M3.encode(s)) == s,
    };
    if let Some(((row, group), &value)) = scales.indexed_iter().find(|(_, &s)| !scale_ok(s)) {
        return Err(Error::InvalidScale {
            format,
            row,
            group,
            value,
        });
    }
    if !format.has_zero_point() {
        if let Some(((row, group), &value)) = zeros.indexed_iter().find(|(_, &z)| z != 0.0) {
            return Err(Error::ZeroPoint {
                format,
                row,
                group,
                value,
            });
        }
    }
    if let (Some(g), Some(_)) = (g_idx, format.required_granularity()) {
        let gs = spec.group_size(cols);
        if let Some((col, &index)) = g.iter().enumerate().find(|&(c, &i)| i as usize != c / gs) {
            return Err(Error::NonContiguousGroups { format, col, index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_checks_sizes_and_codes() {
        let spec = QuantSpec::int(2).group(2);
        let ok = QuantizedTensor::new(
            spec,
            1,
            3,
            vec![0, 3, 1],
            Array2::ones((1, 2)),
            Array2::from_elem((1, 2), 2.0),
            None,
        )
        .unwrap();
        assert_eq!(ok.dequantize(), ndarray::arr2(&[[-2.0f32, 1.0, -1.0]]));
        assert!(matches!(
            QuantizedTensor::new(
                spec,
                1,
                3,
                vec![0, 4, 1],
                Array2::ones((1, 2)),
                Array2::zeros((1, 2)),
                None
            ),
            Err(Error::CodeRange { code: 4, bits: 2 })
        ));
        assert!(matches!(
            QuantizedTensor::new(
                spec,
                1,
                3,
                vec![0, 1, 1],
                Array2::ones((1, 1)),
                Array2::zeros((1, 2)),
                None
            ),
            Err(Error::Shape { what: "scales", .. })
        ));
        assert!(matches!(
            QuantizedTensor::new(
                spec,
                1,
                3,
                vec![0, 1, 1],
                Array2::ones((1, 2)),
                Array2::zeros((1, 2)),
                Some(vec![0, 2, 1])
            ),
            Err(Error::GroupIndex {
                index: 2,
                groups: 2
            })
        ));
    }
}
