//! An in-process stand-in for the distributed engine.

use ndarray::{ArrayD, ArrayViewD};

use super::{check_workers, Collective, GradCompressor, Payload, Round};
use crate::{Error, Result};

/// The result of one simulated exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The averaged gradient every worker ends with.
    pub mean: ArrayD<f32>,
    /// Bytes each worker put on the wire: the sum of [`Payload::byte_len`] of
    /// its payloads over all rounds (what it contributes to the collectives;
    /// the traffic an engine generates from it depends on the algorithm, e.g.
    /// about twice that for a ring all-reduce).
    pub bytes_sent: Vec<usize>,
    /// Number of collectives run (2 for PowerSGD on a matrix, else 1).
    pub rounds: usize,
}

/// Largest number of rounds [`exchange`] runs before reporting a protocol error.
const MAX_ROUNDS: usize = 16;

/// Runs one exchange of the [module protocol](super) over `workers` (one
/// compressor per worker, all for the same layer) with their local gradients,
/// in process.
///
/// For an all-gather, the payloads are decoded by each receiving compressor and
/// averaged (every worker gets the same values; this runs the decode once, on
/// worker 0). For an all-reduce, the payloads are summed with
/// [`Payload::add_assign`] and every worker's
/// [`after_allreduce`](GradCompressor::after_allreduce) is called, so each
/// updates its own state; the result is worker 0's.
///
/// # Errors
/// [`Error::InvalidConfig`] for no workers or a gradient count that differs
/// from the worker count; [`Error::Protocol`] when workers disagree on the
/// collective or on whether the exchange is over, or it runs past 16 rounds;
/// and the compressors' errors.
pub fn exchange<C: GradCompressor>(
    workers: &mut [C],
    grads: &[ArrayViewD<'_, f32>],
) -> Result<Exchange> {
    check_workers(workers.len())?;
    if grads.len() != workers.len() {
        return Err(Error::InvalidConfig {
            param: "grads",
            value: grads.len().to_string(),
            expected: "one gradient per worker",
        });
    }
    let n = workers.len();
    let mut bytes_sent = vec![0usize; n];
    let mut payloads = workers
        .iter_mut()
        .zip(grads)
        .map(|(w, g)| w.compress(g.view()))
        .collect::<Result<Vec<Payload>>>()?;
    for rounds in 1..=MAX_ROUNDS {
        for (b, p) in bytes_sent.iter_mut().zip(&payloads) {
            *b += p.byte_len();
        }
        let collective = payloads[0].collective();
        if payloads.iter().any(|p| p.collective() != collective) {
            return Err(Error::Protocol {
                what: "workers chose different collectives",
            });
        }
        match collective {
            Collective::AllGather => {
                let mut mean = workers[0].decompress(&payloads[0])?;
                for p in &payloads[1..] {
                    let d = workers[0].decompress(p)?;
                    if d.shape() != mean.shape() {
                        return Err(Error::ShapeMismatch {
                            op: "exchange",
                            lhs: mean.shape().to_vec(),
                            rhs: d.shape().to_vec(),
                        });
                    }
                    mean += &d;
                }
                mean /= n as f32;
                return Ok(Exchange {
                    mean,
                    bytes_sent,
                    rounds,
                });
            }
            Collective::AllReduce => {
                let mut iter = payloads.into_iter();
                let mut sum = iter.next().ok_or(Error::Protocol {
                    what: "no payloads",
                })?;
                for p in iter {
                    sum.add_assign(&p)?;
                }
                let steps = workers
                    .iter_mut()
                    .map(|w| w.after_allreduce(&sum, n))
                    .collect::<Result<Vec<Round>>>()?;
                let mut next = Vec::with_capacity(n);
                let mut done = None;
                for step in steps {
                    match step {
                        Round::Next(p) => next.push(p),
                        Round::Done(d) => {
                            done.get_or_insert(d);
                        }
                    }
                }
                match done {
                    Some(mean) if next.is_empty() => {
                        return Ok(Exchange {
                            mean,
                            bytes_sent,
                            rounds,
                        })
                    }
                    None => payloads = next,
                    Some(_) => {
                        return Err(Error::Protocol {
                            what: "some workers finished the exchange and others did not",
                        })
                    }
                }
            }
        }
    }
    Err(Error::Protocol {
        what: "exchange ran past 16 rounds",
    })
}
