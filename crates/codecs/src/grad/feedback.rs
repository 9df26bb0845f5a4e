//! Error feedback: what a compressor did not send is added to the next gradient.

use ndarray::{ArrayD, ArrayViewD};

use super::{check_shape, Collective, GradCompressor, Payload, Round, ScaledSign};
use crate::{Error, Result};

/// Error-feedback memory around a one-round compressor (Seide et al. 2014;
/// Stich et al. 2018; Karimireddy et al. 2019).
///
/// Each step compresses `p = g + e` and keeps `e ← p − decompress(compress(p))`,
/// the part of the corrected gradient that was not sent, so that over time
/// every coordinate is sent in full. Biased compressors (top-k, scaled sign)
/// then converge like uncompressed SGD.
///
/// The inner compressor's payload must decode locally: a compressor that needs
/// more rounds ([`PowerSgd`](super::PowerSgd)) keeps its own memory, and here
/// gives [`Error::PayloadKind`].
#[derive(Debug, Clone)]
pub struct ErrorFeedback<C> {
    inner: C,
    residual: Option<ArrayD<f32>>,
    shape: Option<Vec<usize>>,
}

/// EF-SignSGD (Karimireddy et al. 2019): scaled sign with error feedback.
pub type EfSignSgd = ErrorFeedback<ScaledSign>;

impl<C> ErrorFeedback<C> {
    /// Wraps `inner` with an empty (zero) memory.
    pub fn new(inner: C) -> Self {
        ErrorFeedback {
            inner,
            residual: None,
            shape: None,
        }
    }

    /// The wrapped compressor.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The current memory `e` (`None` before the first step).
    pub fn residual(&self) -> Option<&ArrayD<f32>> {
        self.residual.as_ref()
    }

    /// Clears the memory.
    pub fn reset(&mut self) {
        self.residual = None;
    }
}

impl<C: Default> Default for ErrorFeedback<C> {
    fn default() -> Self {
        ErrorFeedback::new(C::default())
    }
}

impl<C: GradCompressor> GradCompressor for ErrorFeedback<C> {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_shape(&mut self.shape, &grad, "ErrorFeedback::compress")?;
        let mut corrected = grad.to_owned();
        if let Some(e) = &self.residual {
            corrected += e;
        }
        let payload = self.inner.compress(corrected.view())?;
        if matches!(payload, Payload::Factor { .. }) {
            return Err(Error::PayloadKind {
                op: "ErrorFeedback::compress",
                expected: "a payload that decodes on its own",
                got: payload.kind(),
            });
        }
        let sent = self.inner.decompress(&payload)?;
        corrected -= &sent;
        self.residual = Some(corrected);
        Ok(payload)
    }

    fn decompress(&self, payload: &Payload) -> Result<ArrayD<f32>> {
        self.inner.decompress(payload)
    }

    fn after_allreduce(&mut self, sum: &Payload, workers: usize) -> Result<Round> {
        debug_assert_eq!(sum.collective(), Collective::AllReduce);
        self.inner.after_allreduce(sum, workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::TopK;
    use ndarray::Array1;

    #[test]
    fn memory_holds_what_was_not_sent() {
        let mut ef = ErrorFeedback::new(TopK::new(0.5).unwrap());
        let g = Array1::from(vec![1.0f32, -3.0, 0.5, 2.0]).into_dyn();
        let p = ef.compress(g.view()).unwrap();
        assert_eq!(
            ef.decompress(&p).unwrap().as_slice().unwrap(),
            &[0.0, -3.0, 0.0, 2.0]
        );
        assert_eq!(
            ef.residual().unwrap().as_slice().unwrap(),
            &[1.0, 0.0, 0.5, 0.0]
        );
        // The next step sends the remembered entries once they dominate.
        let z = Array1::from(vec![0.0f32, 0.1, 0.0, 0.1]).into_dyn();
        let p = ef.compress(z.view()).unwrap();
        assert_eq!(
            ef.decompress(&p).unwrap().as_slice().unwrap(),
            &[1.0, 0.0, 0.5, 0.0]
        );
        // Sum of everything sent plus the memory equals the sum of the inputs.
        assert_eq!(
            ef.residual().unwrap().as_slice().unwrap(),
            &[0.0, 0.1, 0.0, 0.1]
        );
    }

    #[test]
    fn ef_sign_sends_everything_eventually() {
        let mut ef = EfSignSgd::default();
        let g = Array1::from(vec![4.0f32, -1.0, 0.5, 0.0]).into_dyn();
        let mut total = Array1::<f32>::zeros(4).into_dyn();
        let steps = 200;
        for _ in 0..steps {
            let p = ef.compress(g.view()).unwrap();
            assert_eq!(p.collective(), Collective::AllGather);
            total += &ef.decompress(&p).unwrap();
        }
        // Average sent per step approaches g: the memory stays bounded.
        for (t, x) in total.iter().zip(g.iter()) {
            assert!((t / steps as f32 - x).abs() < 0.05, "{t} vs {x}");
        }
    }
}
