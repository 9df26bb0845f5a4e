//! Calibration windows cut from a tokenized text.

use crate::{Error, Result};

/// `count` windows of `len` tokens from `tokens`, non-overlapping and spread
/// evenly over the text: window `k` starts at `⌊k · (n − len) / (count − 1)⌋`.
///
/// Fails with [`Error::NotEnoughCalibration`] when the text holds fewer than
/// `count · len` tokens.
///
/// ```
/// let tokens: Vec<u32> = (0..1000).collect();
/// let w = tensorpress::compress::calibration_windows(&tokens, 4, 100)?;
/// assert_eq!(w.len(), 4);
/// assert_eq!(w[0][0], 0);
/// assert_eq!(w[3][99], 999);
/// # Ok::<(), tensorpress::Error>(())
/// ```
pub fn calibration_windows(tokens: &[u32], count: usize, len: usize) -> Result<Vec<Vec<u32>>> {
    let need = count.saturating_mul(len);
    if count == 0 || len == 0 || tokens.len() < need {
        return Err(Error::NotEnoughCalibration {
            tokens: tokens.len(),
            windows: count,
            len,
        });
    }
    let span = tokens.len() - len;
    Ok((0..count)
        .map(|k| {
            let start = if count == 1 {
                0
            } else {
                k * span / (count - 1)
            };
            tokens[start..start + len].to_vec()
        })
        .collect())
}
