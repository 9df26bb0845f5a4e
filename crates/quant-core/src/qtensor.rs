//! [`QuantizedTensor`]: codes, scales and zero points of a quantized weight,
//! in a layout-neutral form that every exporter packs its own way.

use ndarray::{Array2, ArrayView2};

use crate::int::{GroupParams, IntGrid};
use crate::spec::{Format, QuantSpec};
use crate::{Error, Result};

/// A quantized `[rows, cols]` weight (`[out_features, in_features]`).
///
/// Codes are stored unpacked, one `u8` per weight, row-major. Scales and zero
/// points are `[rows, n_groups]`; column `c` belongs to group
/// `g_idx[c]` when a group index is present (GPTQ's act-order) and to
/// `c / group_size` otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    spec: QuantSpec,
    rows: usize,
    cols: usize,
    codes: Vec<u8>,
    scales: Array2<f32>,
    zeros: Array2<f32>,
    g_idx: Option<Vec<u32>>,
}

impl QuantizedTensor {
    /// Assembles a quantized tensor, checking every size and code.
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
        Ok(QuantizedTensor {
            spec,
            rows,
            cols,
            codes,
            scales,
            zeros,
            g_idx,
        })
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
        let Format::Int { bits } = self.spec.format;
        let grid = IntGrid::new(bits, self.spec.symmetric);
        let groups: Vec<usize> = (0..self.cols).map(|c| self.group_of(c)).collect();
        Array2::from_shape_fn((self.rows, self.cols), |(r, c)| {
            grid.dequantize(self.codes[r * self.cols + c], self.params(r, groups[c]))
        })
    }

    /// Storage in bits per weight: codes plus one `scale_bits` scale per group
    /// (and a `bits`-bit zero point per group when asymmetric).
    pub fn bits_per_weight(&self, scale_bits: u32) -> f64 {
        let groups = self.scales.len() as f64;
        let zero_bits = if self.spec.symmetric {
            0.0
        } else {
            self.spec.bits() as f64
        };
        let n = (self.rows * self.cols).max(1) as f64;
        self.spec.bits() as f64 + groups * (scale_bits as f64 + zero_bits) / n
    }
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
