//! Whole weights in GGML block types: [`GgmlTensor`] and the quantizers that
//! make one ([`GgmlQuantizer`], [`GgmlRtn`]).

use ndarray::{Array2, ArrayView2};

use super::{dequantize_par, quantize_rows_par, GgmlType};
use crate::{check_finite, Calibration, Error, Result};

/// A `[rows, cols]` weight (`[out_features, in_features]`) encoded in one GGML
/// type, row by row: each row is `cols / block_size` blocks, as GGUF stores a
/// linear layer (GGUF's `ne0` is the input width).
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlTensor {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl GgmlTensor {
    /// Wraps encoded rows, checking that `bytes` is exactly `rows` rows of
    /// `cols` values.
    ///
    /// # Errors
    /// [`Error::NotBlockMultiple`] when `cols` is not whole blocks;
    /// [`Error::OutputLength`] when `bytes` has the wrong length.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self> {
        let expected = ty
            .row_bytes(cols)?
            .checked_mul(rows)
            .ok_or(Error::Overflow)?;
        if bytes.len() != expected {
            return Err(Error::OutputLength {
                expected,
                actual: bytes.len(),
            });
        }
        Ok(GgmlTensor {
            ty,
            rows,
            cols,
            bytes,
        })
    }

    /// The block type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The encoded rows, as a GGUF file stores them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Storage bits per weight (block scales included).
    pub fn bits_per_weight(&self) -> f64 {
        self.ty.type_size() as f64 * 8.0 / self.ty.block_size() as f64
    }

    /// The decoded weight.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a type without a decoder.
    pub fn dequantize(&self) -> Result<Array2<f32>> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        dequantize_par(self.ty, &self.bytes, &mut out)?;
        Array2::from_shape_vec((self.rows, self.cols), out).map_err(|_| Error::Overflow)
    }
}

/// A method that encodes an f32 weight `[out_features, in_features]` into a
/// GGML block type.
pub trait GgmlQuantizer: Send + Sync {
    /// The type it writes.
    fn ggml_type(&self) -> GgmlType;
    /// Whether it uses calibration data (then `cal` must be given).
    fn needs_calibration(&self) -> bool;
    /// Encodes `w`.
    fn quantize(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<GgmlTensor>;
}

/// llama.cpp's own encoders, row by row: the reference search of each type
/// (`quantize_row_*_ref`), or with `importance` its importance-weighted
/// variant driven by the mean squared activation of each input column, the
/// quantity llama.cpp's `llama-imatrix` collects (Kawrakow, llama.cpp PR 4861).
///
/// ```
/// use ndarray::Array2;
/// use tensorpress_quant_core::ggml::{GgmlQuantizer, GgmlRtn, GgmlType};
///
/// let w = Array2::from_shape_fn((4, 256), |(i, j)| ((i * 256 + j) as f32 * 0.1).sin());
/// let q = GgmlRtn::new(GgmlType::Q4K).quantize(w.view(), None)?;
/// assert_eq!(q.bytes().len(), 4 * 144);
/// assert_eq!(q.bits_per_weight(), 4.5);
/// let err = (&q.dequantize()? - &w).iter().fold(0.0f32, |m, e| m.max(e.abs()));
/// assert!(err < 0.08, "{err}");
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlRtn {
    /// The type to write.
    pub ty: GgmlType,
    /// Weight each column's rounding error by its mean squared activation
    /// (needs calibration statistics; types without an importance-weighted
    /// encoder ignore it, as llama.cpp does).
    pub importance: bool,
}

impl GgmlRtn {
    /// The reference encoder of `ty`, without importance.
    pub fn new(ty: GgmlType) -> Self {
        GgmlRtn {
            ty,
            importance: false,
        }
    }

    /// Importance-weighted encoding from calibration statistics.
    pub fn with_importance(mut self) -> Self {
        self.importance = true;
        self
    }
}

/// The per-column mean squared activation from calibration statistics.
pub fn importance_from(cal: Option<&Calibration>, cols: usize) -> Result<Vec<f32>> {
    let stats = cal
        .and_then(|c| c.channel_stats.as_ref())
        .ok_or(Error::MissingCalibration {
            method: "importance-weighted GGML encoding",
            what: "per-channel activation statistics",
        })?;
    let ms = stats.mean_square()?;
    if ms.len() != cols {
        return Err(Error::Shape {
            what: "importance",
            expected: vec![cols],
            actual: vec![ms.len()],
        });
    }
    Ok(ms.to_vec())
}

impl GgmlQuantizer for GgmlRtn {
    fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    fn needs_calibration(&self) -> bool {
        self.importance && self.ty.can_quantize_weighted()
    }

    fn quantize(&self, w: ArrayView2<'_, f32>, cal: Option<&Calibration>) -> Result<GgmlTensor> {
        check_finite(w)?;
        let (rows, cols) = w.dim();
        let importance = if self.needs_calibration() {
            Some(importance_from(cal, cols)?)
        } else {
            None
        };
        let values: Vec<f32> = w.iter().copied().collect();
        let mut bytes = Vec::new();
        quantize_rows_par(self.ty, &values, cols, importance.as_deref(), &mut bytes)?;
        GgmlTensor::new(self.ty, rows, cols, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use tensorpress_tensor::{ChannelStats, SeededRng};

    #[test]
    fn round_trip_shapes_and_errors() {
        let mut rng = SeededRng::new(3);
        let w: Array2<f32> = rng.array_normal((3, 64));
        let q = GgmlRtn::new(GgmlType::Q8_0)
            .quantize(w.view(), None)
            .unwrap();
        assert_eq!(q.shape(), [3, 64]);
        let d = q.dequantize().unwrap();
        assert!((&d - &w).iter().all(|e| e.abs() < 0.05));
        // Q4_K needs rows of whole 256-blocks.
        assert!(matches!(
            GgmlRtn::new(GgmlType::Q4K).quantize(w.view(), None),
            Err(Error::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            GgmlTensor::new(GgmlType::Q8_0, 3, 64, vec![0; 10]),
            Err(Error::OutputLength { .. })
        ));
        let mut bad = w.clone();
        bad[[1, 2]] = f32::NAN;
        assert!(matches!(
            GgmlRtn::new(GgmlType::Q8_0).quantize(bad.view(), None),
            Err(Error::NonFinite { row: 1, col: 2, .. })
        ));
    }

    #[test]
    fn importance_needs_statistics_and_lowers_the_weighted_error() {
        let mut rng = SeededRng::new(4);
        let w: Array2<f32> = rng.array_normal((8, 256));
        let q = GgmlRtn::new(GgmlType::Q3K).with_importance();
        assert!(matches!(
            q.quantize(w.view(), None),
            Err(Error::MissingCalibration { .. })
        ));
        // Activations: a few loud columns.
        let x = Array2::from_shape_fn((64, 256), |(t, c)| {
            let loud = if c % 37 == 0 { 30.0 } else { 1.0 };
            loud * (((t * 256 + c) as f32) * 0.7).sin()
        });
        let mut stats = ChannelStats::new(256);
        stats.update(x.view()).unwrap();
        let imp = stats.mean_square().unwrap();
        let cal = Calibration {
            channel_stats: Some(stats),
            ..Default::default()
        };
        let weighted_err = |t: &GgmlTensor| {
            let d = t.dequantize().unwrap();
            let mut e = 0.0f64;
            for ((_, c), v) in (&d - &w).indexed_iter() {
                e += f64::from(imp[c]) * f64::from(v * v);
            }
            e
        };
        let plain = GgmlRtn::new(GgmlType::Q3K)
            .quantize(w.view(), None)
            .unwrap();
        let imp_q = q.quantize(w.view(), Some(&cal)).unwrap();
        assert!(weighted_err(&imp_q) < 0.9 * weighted_err(&plain));
    }
}
