//! Calibration statistics gathered over activations `[tokens, in_features]`.

mod hessian;
mod stats;

pub use hessian::{FinalizedHessian, Hessian};
pub use stats::ChannelStats;

use ndarray::ArrayView2;

use crate::{Error, Result};

/// Fails on the first NaN or infinity in the activations, naming its
/// (token, channel) position.
pub(crate) fn check_activations(op: &'static str, x: &ArrayView2<'_, f32>) -> Result<()> {
    for (row, r) in x.outer_iter().enumerate() {
        if let Some((col, &v)) = r.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                op,
                row,
                col,
                value: f64::from(v),
            });
        }
    }
    Ok(())
}
