//! Per-input-channel activation statistics (AWQ, SmoothQuant, Wanda).

use ndarray::{Array1, ArrayView1, ArrayView2, Zip};

use super::check_activations;
use crate::{Error, Result};

/// Per-channel statistics of activations `[tokens, channels]`: mean of `|x|`,
/// max of `|x|`, mean of `x²` and the token count.
///
/// These are what activation-aware methods read: AWQ scales by the abs-mean,
/// SmoothQuant by the abs-max, Wanda's score is `|W_ij| · ‖X_j‖₂` with
/// `‖X_j‖₂ = sqrt(Σ x²)` ([`l2_norm`](ChannelStats::l2_norm)). Sums are kept in f64.
///
/// ```
/// use ndarray::array;
/// use tensorpress_tensor::ChannelStats;
///
/// let mut s = ChannelStats::new(2);
/// s.update(array![[1.0f32, -4.0], [-3.0, 0.0]].view())?;
/// assert_eq!(s.abs_max().to_vec(), vec![3.0, 4.0]);
/// assert_eq!(s.abs_mean()?.to_vec(), vec![2.0, 2.0]);
/// assert_eq!(s.mean_square()?.to_vec(), vec![5.0, 8.0]);
/// assert_eq!(s.count(), 2);
/// # Ok::<(), tensorpress_tensor::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    sum_abs: Array1<f64>,
    sum_sq: Array1<f64>,
    max_abs: Array1<f32>,
    count: u64,
}

impl ChannelStats {
    /// Empty statistics for `channels` input channels.
    pub fn new(channels: usize) -> Self {
        ChannelStats {
            sum_abs: Array1::zeros(channels),
            sum_sq: Array1::zeros(channels),
            max_abs: Array1::zeros(channels),
            count: 0,
        }
    }

    /// Rebuilds statistics from saved parts (see the accessors of the same names).
    ///
    /// # Errors
    /// [`Error::InvalidParts`] when the lengths differ or a value is negative or
    /// not finite.
    pub fn from_parts(
        count: u64,
        sum_abs: Array1<f64>,
        sum_sq: Array1<f64>,
        max_abs: Array1<f32>,
    ) -> Result<Self> {
        let invalid = |detail| Error::InvalidParts {
            what: "ChannelStats",
            detail,
        };
        if sum_abs.len() != sum_sq.len() || sum_abs.len() != max_abs.len() {
            return Err(invalid("lengths of sum_abs, sum_sq and max_abs differ"));
        }
        let ok64 = |v: &f64| v.is_finite() && *v >= 0.0;
        let ok32 = |v: &f32| v.is_finite() && *v >= 0.0;
        if !(sum_abs.iter().all(ok64) && sum_sq.iter().all(ok64) && max_abs.iter().all(ok32)) {
            return Err(invalid("negative or non-finite statistic"));
        }
        Ok(ChannelStats {
            sum_abs,
            sum_sq,
            max_abs,
            count,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.max_abs.len()
    }

    /// Number of tokens (rows) seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds the rows of `x` (`[tokens, channels]`, any layout).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for the wrong width; [`Error::NonFinite`] naming
    /// the first NaN or infinity. On error the statistics are unchanged.
    pub fn update(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        if x.ncols() != self.channels() {
            return Err(Error::ShapeMismatch {
                op: "ChannelStats::update",
                lhs: vec![x.nrows(), x.ncols()],
                rhs: vec![x.nrows(), self.channels()],
            });
        }
        check_activations("ChannelStats::update", &x)?;
        for row in x.outer_iter() {
            Zip::from(&mut self.sum_abs)
                .and(&mut self.sum_sq)
                .and(&mut self.max_abs)
                .and(&row)
                .for_each(|sa, sq, mx, &v| {
                    let a = v.abs();
                    *sa += f64::from(a);
                    *sq += f64::from(a) * f64::from(a);
                    *mx = mx.max(a);
                });
        }
        self.count += x.nrows() as u64;
        Ok(())
    }

    /// Adds another accumulator's statistics.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the channel counts differ.
    pub fn merge(&mut self, other: &ChannelStats) -> Result<()> {
        if other.channels() != self.channels() {
            return Err(Error::ShapeMismatch {
                op: "ChannelStats::merge",
                lhs: vec![self.channels()],
                rhs: vec![other.channels()],
            });
        }
        self.sum_abs += &other.sum_abs;
        self.sum_sq += &other.sum_sq;
        Zip::from(&mut self.max_abs)
            .and(&other.max_abs)
            .for_each(|a, &b| *a = a.max(b));
        self.count += other.count;
        Ok(())
    }

    /// `max |x|` per channel (zero before any update).
    pub fn abs_max(&self) -> ArrayView1<'_, f32> {
        self.max_abs.view()
    }

    /// `Σ |x|` per channel.
    pub fn sum_abs(&self) -> ArrayView1<'_, f64> {
        self.sum_abs.view()
    }

    /// `Σ x²` per channel.
    pub fn sum_sq(&self) -> ArrayView1<'_, f64> {
        self.sum_sq.view()
    }

    /// `mean |x|` per channel.
    ///
    /// # Errors
    /// [`Error::NoSamples`] before any update.
    pub fn abs_mean(&self) -> Result<Array1<f32>> {
        let n = self.nonzero_count("ChannelStats::abs_mean")?;
        Ok(self.sum_abs.mapv(|s| (s / n) as f32))
    }

    /// `mean x²` per channel.
    ///
    /// # Errors
    /// [`Error::NoSamples`] before any update.
    pub fn mean_square(&self) -> Result<Array1<f32>> {
        let n = self.nonzero_count("ChannelStats::mean_square")?;
        Ok(self.sum_sq.mapv(|s| (s / n) as f32))
    }

    /// `sqrt(Σ x²)` per channel: the column norm `‖X_j‖₂` of Wanda's score.
    pub fn l2_norm(&self) -> Array1<f32> {
        self.sum_sq.mapv(|s| s.sqrt() as f32)
    }

    fn nonzero_count(&self, op: &'static str) -> Result<f64> {
        if self.count == 0 {
            Err(Error::NoSamples { op })
        } else {
            Ok(self.count as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;
    use ndarray::{array, Axis};

    #[test]
    fn matches_direct_computation() {
        let mut rng = SeededRng::new(8);
        let x = rng.array_normal((123, 7));
        let mut s = ChannelStats::new(7);
        s.update(x.view()).unwrap();
        let abs_mean = x.mapv(f32::abs).mean_axis(Axis(0)).unwrap();
        let ms = x.mapv(|v| v * v).mean_axis(Axis(0)).unwrap();
        let norm = x.mapv(|v| v * v).sum_axis(Axis(0)).mapv(f32::sqrt);
        for j in 0..7 {
            assert!((s.abs_mean().unwrap()[j] - abs_mean[j]).abs() < 1e-5);
            assert!((s.mean_square().unwrap()[j] - ms[j]).abs() < 1e-5);
            assert!((s.l2_norm()[j] - norm[j]).abs() < 1e-4);
            let mx = x.column(j).iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(s.abs_max()[j], mx);
        }
    }

    #[test]
    fn merge_equals_one_update() {
        let mut rng = SeededRng::new(9);
        let x = rng.array_normal((100, 5));
        let mut whole = ChannelStats::new(5);
        whole.update(x.view()).unwrap();
        let mut a = ChannelStats::new(5);
        let mut b = ChannelStats::new(5);
        a.update(x.slice(ndarray::s![..40, ..])).unwrap();
        b.update(x.slice(ndarray::s![40.., ..])).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 100);
        assert_eq!(a.abs_max(), whole.abs_max());
        for j in 0..5 {
            assert!((a.sum_abs()[j] - whole.sum_abs()[j]).abs() < 1e-9);
            assert!((a.sum_sq()[j] - whole.sum_sq()[j]).abs() < 1e-9);
        }
        let back = ChannelStats::from_parts(
            a.count(),
            a.sum_abs().to_owned(),
            a.sum_sq().to_owned(),
            a.abs_max().to_owned(),
        )
        .unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn errors_are_typed() {
        let mut s = ChannelStats::new(2);
        assert!(matches!(s.abs_mean(), Err(Error::NoSamples { .. })));
        assert!(matches!(s.mean_square(), Err(Error::NoSamples { .. })));
        let bad = array![[0.0f32, 1.0], [f32::NAN, 2.0]];
        assert!(matches!(
            s.update(bad.view()),
            Err(Error::NonFinite { row: 1, col: 0, .. })
        ));
        assert_eq!(s.count(), 0);
        assert!(matches!(
            s.update(array![[1.0f32]].view()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            s.merge(&ChannelStats::new(3)),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            ChannelStats::from_parts(1, Array1::zeros(2), Array1::zeros(3), Array1::zeros(2)),
            Err(Error::InvalidParts { .. })
        ));
        assert!(matches!(
            ChannelStats::from_parts(1, array![-1.0], array![0.0], array![0.0]),
            Err(Error::InvalidParts { .. })
        ));
    }
}
