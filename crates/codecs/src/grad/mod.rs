//! Gradient compression for data-parallel training.
//!
//! Each worker holds one [`GradCompressor`] per layer. For every step it
//! compresses its local gradient into a [`Payload`], the payload says which
//! collective the engine runs ([`Collective::AllReduce`] for dense values and
//! low-rank factors, [`Collective::AllGather`] for sparse, quantized and sign
//! codes), and the compressor turns the collective's result back into the
//! averaged gradient. [`exchange`] runs that protocol for all workers in one
//! process, for tests and for measuring; [`exchange_over`] runs one rank's side
//! of it over a [`Communicator`]: `Mpi` (the `mpi` feature: rsmpi over the
//! system's MPI library, e.g. Debian's OpenMPI) across processes and machines,
//! or [`ThreadComm`] across threads.
//!
//! # Protocol
//!
//! 1. `payload = compressor.compress(grad)` on every worker.
//! 2. `AllGather`: every worker receives all payloads; the averaged gradient is
//!    the mean of [`GradCompressor::decompress`] over them. Done.
//! 3. `AllReduce`: the engine sums the payloads (MPI_SUM on their `f32`s, or
//!    [`Payload::add_assign`]) and every worker calls
//!    [`GradCompressor::after_allreduce`] with the sum, which returns either
//!    [`Round::Done`] with the averaged gradient or [`Round::Next`] with the
//!    payload of a further round (PowerSGD sends `P`, then `Q`).
//!
//! # Methods
//!
//! | compressor | payload | reference |
//! |---|---|---|
//! | [`Identity`] | dense | plain data-parallel SGD |
//! | [`TopK`] | sparse | Aji & Heafield 2017; with [`ErrorFeedback`], Stich et al. 2018 |
//! | [`Dgc`] | sparse | Lin et al., *Deep Gradient Compression*, ICLR 2018 |
//! | [`RandomK`] | sparse | Stich et al., *Sparsified SGD with Memory*, NeurIPS 2018 |
//! | [`Threshold`] | sparse | Strom, *Scalable distributed DNN training using commodity GPU cloud computing*, Interspeech 2015 |
//! | [`Qsgd`] | quantized | Alistarh et al., *QSGD*, NeurIPS 2017 |
//! | [`TernGrad`] | quantized | Wen et al., *TernGrad*, NeurIPS 2017 |
//! | [`ScaledSign`], [`EfSignSgd`] | sign | Bernstein et al., *signSGD*, ICML 2018; Karimireddy et al., *Error Feedback Fixes SignSGD*, ICML 2019 |
//! | [`PowerSgd`] | factors | Vogels et al., *PowerSGD*, NeurIPS 2019 |
//!
//! [`lgreco`] picks per-layer compression parameters under a byte budget
//! (Markov et al., *L-GreCo*, MLSys 2024).
//!
//! Error feedback (keep what was not sent, add it to the next gradient) is the
//! [`ErrorFeedback`] wrapper for one-round compressors; [`Dgc`] and [`PowerSgd`]
//! keep their own residual, as their papers do.
//!
//! # Example
//!
//! ```
//! use ndarray::Array1;
//! use tensorpress_codecs::grad::{exchange, Collective, GradCompressor, TopK};
//!
//! // Two workers, each sending its 2 largest entries.
//! let mut workers = vec![TopK::new(0.25)?, TopK::new(0.25)?];
//! let g0 = Array1::from(vec![4.0f32, 0.0, 0.1, 0.0, 0.0, -2.0, 0.0, 0.0]).into_dyn();
//! let g1 = Array1::from(vec![0.0f32, 2.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.1]).into_dyn();
//! let p = workers[0].compress(g0.view())?;
//! assert_eq!(p.collective(), Collective::AllGather);
//! let out = exchange(&mut workers, &[g0.view(), g1.view()])?;
//! assert_eq!(out.mean.as_slice().unwrap(), &[2.0, 1.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0]);
//! // A tag, a shape (5 bytes), a count (4), two index varints and two f32s.
//! assert_eq!(out.bytes_sent, vec![20, 20]);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

mod comm;
mod exchange;
mod feedback;
pub mod lgreco;
#[cfg(feature = "mpi")]
mod mpi;
mod payload;
mod powersgd;
mod quant;
mod sparse;

use ndarray::{ArrayD, ArrayViewD};

pub use comm::{exchange_over, Communicator, RankExchange, ThreadComm};
pub use exchange::{exchange, Exchange};
pub use feedback::{EfSignSgd, ErrorFeedback};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
pub use payload::{bits_for_levels, Collective, Payload, MAX_ELEMENTS, MAX_NDIM};
pub use powersgd::{PowerSgd, PowerSgdConfig};
pub use quant::{Qsgd, QsgdConfig, ScaledSign, TernGrad, TernGradConfig};
pub use sparse::{Dgc, DgcConfig, RandomK, SparsityWarmup, Threshold, TopK};

use crate::{Error, Result};

/// What a compressor does with the sum of an all-reduce.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// Send this payload in a further round (same collective rules).
    Next(Payload),
    /// The exchange is over: the gradient averaged over workers.
    Done(ArrayD<f32>),
}

/// A gradient compressor: the state one worker keeps for one layer.
///
/// Gradients are 1-D or 2-D `f32` arrays; compressors that keep state
/// (momentum, residuals, warm starts) expect the same shape at every step.
pub trait GradCompressor {
    /// Compresses the local gradient into the first payload of an exchange.
    ///
    /// # Errors
    /// [`Error::UnsupportedRank`] for gradients that are not 1-D or 2-D,
    /// [`Error::ShapeMismatch`] when the shape differs from earlier steps.
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload>;

    /// Decodes one payload (one worker's, or a sum of all-reduced ones) into
    /// the dense gradient it stands for. The default is [`Payload::to_dense`].
    ///
    /// # Errors
    /// As [`Payload::validate`].
    fn decompress(&self, payload: &Payload) -> Result<ArrayD<f32>> {
        payload.to_dense()
    }

    /// Continues an exchange after an all-reduce: `sum` is the element-wise sum
    /// of the `workers` payloads of the round. The default decodes the sum and
    /// divides by `workers`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `workers == 0`, and those of
    /// [`decompress`](GradCompressor::decompress).
    fn after_allreduce(&mut self, sum: &Payload, workers: usize) -> Result<Round> {
        check_workers(workers)?;
        let mut dense = self.decompress(sum)?;
        dense /= workers as f32;
        Ok(Round::Done(dense))
    }
}

impl<C: GradCompressor + ?Sized> GradCompressor for Box<C> {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        (**self).compress(grad)
    }
    fn decompress(&self, payload: &Payload) -> Result<ArrayD<f32>> {
        (**self).decompress(payload)
    }
    fn after_allreduce(&mut self, sum: &Payload, workers: usize) -> Result<Round> {
        (**self).after_allreduce(sum, workers)
    }
}

/// No compression: the gradient as a dense payload, all-reduced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl GradCompressor for Identity {
    fn compress(&mut self, grad: ArrayViewD<'_, f32>) -> Result<Payload> {
        check_rank(&grad)?;
        Ok(Payload::Dense {
            shape: grad.shape().to_vec(),
            values: grad.iter().copied().collect(),
        })
    }
}

pub(crate) fn check_workers(workers: usize) -> Result<()> {
    if workers == 0 {
        return Err(Error::InvalidConfig {
            param: "workers",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    Ok(())
}

/// Checks that a gradient is 1-D or 2-D and within [`MAX_ELEMENTS`].
pub(crate) fn check_rank(grad: &ArrayViewD<'_, f32>) -> Result<()> {
    if !(1..=2).contains(&grad.ndim()) {
        return Err(Error::UnsupportedRank {
            ndim: grad.ndim(),
            expected: "1 or 2",
        });
    }
    if grad.len() > MAX_ELEMENTS {
        return Err(Error::TooLarge {
            what: "gradient element count",
            requested: grad.len() as u128,
            limit: MAX_ELEMENTS as u128,
        });
    }
    Ok(())
}

/// Checks that `shape` matches the one a stateful compressor saw before (and
/// records it on first use).
pub(crate) fn check_shape(
    remembered: &mut Option<Vec<usize>>,
    grad: &ArrayViewD<'_, f32>,
    op: &'static str,
) -> Result<()> {
    check_rank(grad)?;
    match remembered {
        Some(s) if s.as_slice() != grad.shape() => Err(Error::ShapeMismatch {
            op,
            lhs: s.clone(),
            rhs: grad.shape().to_vec(),
        }),
        Some(_) => Ok(()),
        None => {
            *remembered = Some(grad.shape().to_vec());
            Ok(())
        }
    }
}

/// Validates a fraction in `(0, 1]` (a density).
pub(crate) fn check_fraction(param: &'static str, value: f32) -> Result<()> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            param,
            value: value.to_string(),
            expected: "in (0, 1]",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array3};

    #[test]
    fn identity_averages_and_rejects_3d() {
        let mut w = vec![Identity, Identity];
        let a = Array1::from(vec![1.0f32, 2.0]).into_dyn();
        let b = Array1::from(vec![3.0f32, -2.0]).into_dyn();
        let out = exchange(&mut w, &[a.view(), b.view()]).unwrap();
        assert_eq!(out.mean.as_slice().unwrap(), &[2.0, 0.0]);
        assert_eq!(out.bytes_sent, vec![14, 14]);
        let c = Array3::<f32>::zeros((1, 1, 1)).into_dyn();
        assert!(matches!(
            Identity.compress(c.view()),
            Err(Error::UnsupportedRank { ndim: 3, .. })
        ));
    }
}
