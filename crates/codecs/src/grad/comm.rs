//! The exchange protocol over a real communicator: one call per rank.
//!
//! [`exchange`](super::exchange) runs every worker of a layer in one process.
//! In a distributed run each process is one rank and holds only its own
//! compressor; [`exchange_over`] runs that rank's side of the same protocol
//! through a [`Communicator`]: the collectives an MPI engine provides
//! (`Mpi` with the `mpi` feature), or [`ThreadComm`] for ranks
//! that are threads of one process (tests, and machines without MPI).
//!
//! Every round starts with a small header all-gathered from every rank (its
//! status, collective, payload kind and length), so that ranks that disagree,
//! or a rank whose compressor failed, end the exchange with a typed error on
//! *every* rank instead of a collective that waits forever or reads past a
//! buffer.

use std::sync::{Arc, Barrier, Mutex, PoisonError};

use ndarray::{ArrayD, ArrayViewD};

use super::payload::Collective;
use super::{GradCompressor, Payload, Round};
use crate::{Error, Result};

/// The collectives a distributed exchange needs, over a group of `size` ranks.
///
/// Every rank calls the same methods in the same order (as with MPI); a
/// method returns once every rank has made the matching call.
pub trait Communicator {
    /// This process's index in the group, `0..size`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group (at least 1).
    fn size(&self) -> usize;

    /// Replaces `values` on every rank by their element-wise sum over ranks
    /// (`MPI_Allreduce` with `MPI_SUM`). Every rank passes the same length.
    ///
    /// # Errors
    /// Implementations report lengths they cannot send (e.g. past MPI's
    /// `int` counts) as [`Error::TooLarge`].
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()>;

    /// As [`all_reduce_sum_f32`](Communicator::all_reduce_sum_f32), for `f64`
    /// (Hessians and other calibration statistics).
    ///
    /// # Errors
    /// As [`all_reduce_sum_f32`](Communicator::all_reduce_sum_f32).
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;

    /// Every rank's `local` bytes, in rank order (`MPI_Allgatherv`); lengths
    /// may differ between ranks.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the gathered total cannot be sent.
    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>>;
}

/// One rank's result of [`exchange_over`].
#[derive(Debug, Clone, PartialEq)]
pub struct RankExchange {
    /// The gradient averaged over all ranks (the same on every rank).
    pub mean: ArrayD<f32>,
    /// Bytes this rank contributed: the sum of [`Payload::byte_len`] of its
    /// payloads over all rounds (as [`Exchange::bytes_sent`](super::Exchange)).
    pub bytes_sent: usize,
    /// Number of payload collectives run (2 for PowerSGD on a matrix, else 1).
    pub rounds: usize,
}

/// Largest number of rounds [`exchange_over`] runs before reporting a protocol error.
const MAX_ROUNDS: usize = 16;

/// Header statuses.
const SENDING: u8 = 0;
const FAILED: u8 = 1;
const FINISHED: u8 = 2;

/// What one rank says at the start of a round: 16 bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    status: u8,
    collective: u8,
    kind: u8,
    /// Values to all-reduce, or bytes to all-gather.
    len: u64,
}

impl Header {
    const LEN: usize = 16;

    fn failed() -> Header {
        Header {
            status: FAILED,
            collective: 0,
            kind: 0,
            len: 0,
        }
    }

    fn finished() -> Header {
        Header {
            status: FINISHED,
            collective: 0,
            kind: 0,
            len: 0,
        }
    }

    fn to_bytes(self) -> [u8; Header::LEN] {
        let mut out = [0u8; Header::LEN];
        out[0] = self.status;
        out[1] = self.collective;
        out[2] = self.kind;
        out[8..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Header> {
        let bytes: &[u8; Header::LEN] = bytes.try_into().map_err(|_| Error::Protocol {
            what: "a rank sent a header of the wrong length",
        })?;
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[8..]);
        Ok(Header {
            status: bytes[0],
            collective: bytes[1],
            kind: bytes[2],
            len: u64::from_le_bytes(len),
        })
    }
}

/// What this rank sends in a round, or the error that stopped it.
enum Outgoing {
    Reduce(Payload),
    Gather(Payload, Vec<u8>),
    Done(ArrayD<f32>),
}

fn outgoing(payload: Result<Payload>) -> Result<Outgoing> {
    let payload = payload?;
    match payload.collective() {
        Collective::AllReduce => {
            if payload.reduce_values().is_none() {
                return Err(Error::Protocol {
                    what: "an all-reduce payload without values to sum",
                });
            }
            Ok(Outgoing::Reduce(payload))
        }
        Collective::AllGather => {
            let bytes = payload.to_bytes()?;
            Ok(Outgoing::Gather(payload, bytes))
        }
    }
}

fn header_of(out: &Result<Outgoing>) -> Header {
    match out {
        Err(_) => Header::failed(),
        Ok(Outgoing::Done(_)) => Header::finished(),
        Ok(Outgoing::Reduce(p)) => Header {
            status: SENDING,
            collective: 0,
            kind: kind_tag(p),
            len: p.reduce_values().map_or(0, |v| v.len() as u64),
        },
        Ok(Outgoing::Gather(p, bytes)) => Header {
            status: SENDING,
            collective: 1,
            kind: kind_tag(p),
            len: bytes.len() as u64,
        },
    }
}

fn kind_tag(p: &Payload) -> u8 {
    match p {
        Payload::Dense { .. } => 0,
        Payload::Factor { .. } => 1,
        Payload::Sparse { .. } => 2,
        Payload::Quantized { .. } => 3,
        Payload::Sign { .. } => 4,
    }
}

/// Runs this rank's side of one exchange of the [module protocol](super) for
/// one layer: compresses `grad`, runs the collectives each payload asks for
/// through `comm`, and returns the gradient averaged over all ranks.
///
/// Every rank of `comm` must call this for the same layer, with a compressor
/// of the same method and a gradient of the same shape. The result equals
/// what [`exchange`](super::exchange) computes for the same compressors and
/// gradients: all-gathered payloads are decoded and summed in rank order;
/// all-reduced ones are summed by the communicator (in rank order for
/// [`ThreadComm`]; in the MPI library's order for `Mpi`, which
/// may round differently in the last bits).
///
/// # Errors
/// This rank's compressor errors; on the other ranks of a round in which one
/// rank failed, [`Error::Protocol`]. Also [`Error::Protocol`] when ranks
/// choose different collectives, kinds or lengths, when some finish while
/// others send another round, or past 16 rounds; the payload decoding errors
/// of a gathered payload; and the communicator's errors.
pub fn exchange_over<M, C>(
    comm: &M,
    compressor: &mut C,
    grad: ArrayViewD<'_, f32>,
) -> Result<RankExchange>
where
    M: Communicator + ?Sized,
    C: GradCompressor + ?Sized,
{
    let size = comm.size();
    super::check_workers(size)?;
    let mut bytes_sent = 0;
    let mut local = outgoing(compressor.compress(grad));
    for rounds in 0..=MAX_ROUNDS {
        let headers = comm
            .all_gather_bytes(&header_of(&local).to_bytes())?
            .iter()
            .map(|b| Header::from_bytes(b))
            .collect::<Result<Vec<Header>>>()?;
        if headers.len() != size {
            return Err(Error::Protocol {
                what: "the communicator returned a header count other than its size",
            });
        }
        let out = local?;
        if headers.iter().any(|h| h.status == FAILED) {
            return Err(Error::Protocol {
                what: "another rank failed in this exchange",
            });
        }
        let first = headers[0];
        if headers.iter().any(|h| h.status != first.status) {
            return Err(Error::Protocol {
                what: "some ranks finished the exchange and others did not",
            });
        }
        let uniform = headers
            .iter()
            .all(|h| h.collective == first.collective && h.kind == first.kind);
        match out {
            Outgoing::Done(mean) => {
                return Ok(RankExchange {
                    mean,
                    bytes_sent,
                    rounds,
                })
            }
            _ if rounds == MAX_ROUNDS => {
                return Err(Error::Protocol {
                    what: "exchange ran past 16 rounds",
                })
            }
            _ if !uniform => {
                return Err(Error::Protocol {
                    what: "ranks chose different collectives or payload kinds",
                })
            }
            Outgoing::Gather(_, bytes) => {
                bytes_sent += bytes.len();
                let gathered = comm.all_gather_bytes(&bytes)?;
                if gathered.len() != size {
                    return Err(Error::Protocol {
                        what: "the communicator returned a payload count other than its size",
                    });
                }
                let mut mean: Option<ArrayD<f32>> = None;
                for b in &gathered {
                    let d = compressor.decompress(&Payload::from_bytes(b)?)?;
                    match mean.as_mut() {
                        None => mean = Some(d),
                        Some(m) if m.shape() == d.shape() => *m += &d,
                        Some(m) => {
                            return Err(Error::ShapeMismatch {
                                op: "exchange_over",
                                lhs: m.shape().to_vec(),
                                rhs: d.shape().to_vec(),
                            })
                        }
                    }
                }
                let mut mean = mean.ok_or(Error::Protocol {
                    what: "no payloads",
                })?;
                mean /= size as f32;
                // A last header round, so that every rank agrees the exchange is over.
                local = Ok(Outgoing::Done(mean));
            }
            Outgoing::Reduce(mut sum) => {
                if headers.iter().any(|h| h.len != first.len) {
                    return Err(Error::Protocol {
                        what: "ranks all-reduce different numbers of values",
                    });
                }
                bytes_sent += sum.byte_len();
                let values = sum.reduce_values_mut().ok_or(Error::Protocol {
                    what: "an all-reduce payload without values to sum",
                })?;
                comm.all_reduce_sum_f32(values)?;
                local = match compressor.after_allreduce(&sum, size) {
                    Ok(Round::Next(p)) => outgoing(Ok(p)),
                    Ok(Round::Done(mean)) => Ok(Outgoing::Done(mean)),
                    Err(e) => Err(e),
                };
            }
        }
    }
    Err(Error::Protocol {
        what: "exchange ran past 16 rounds",
    })
}

/// Ranks that are threads of one process: a [`Communicator`] for tests and
/// for data-parallel work on one machine without MPI.
///
/// [`ThreadComm::group`] makes one handle per rank; move each into its own
/// thread. Sums run in rank order, so results are deterministic and equal to
/// [`exchange`](super::exchange)'s.
///
/// ```
/// use ndarray::Array1;
/// use tensorpress_codecs::grad::{exchange_over, Communicator, ThreadComm, TopK};
///
/// let handles = ThreadComm::group(2)?;
/// let means = std::thread::scope(|s| {
///     let jobs: Vec<_> = handles
///         .iter()
///         .map(|comm| {
///             s.spawn(move || {
///                 let g = Array1::from(vec![comm.rank() as f32 + 1.0, 0.0, 0.0, 0.0]).into_dyn();
///                 let mut topk = TopK::new(0.25)?;
///                 exchange_over(comm, &mut topk, g.view()).map(|r| r.mean)
///             })
///         })
///         .collect();
///     jobs.into_iter().map(|j| j.join().unwrap()).collect::<Result<Vec<_>, _>>()
/// })?;
/// assert_eq!(means[0].as_slice().unwrap(), &[1.5, 0.0, 0.0, 0.0]);
/// assert_eq!(means[0], means[1]);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ThreadComm {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u8>>>,
}

impl ThreadComm {
    /// One handle per rank of a group of `size` threads.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `size == 0`.
    pub fn group(size: usize) -> Result<Vec<ThreadComm>> {
        super::check_workers(size)?;
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        Ok((0..size)
            .map(|rank| ThreadComm {
                rank,
                size,
                shared: Arc::clone(&shared),
            })
            .collect())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A rank that panicked while holding the lock left whole slots behind:
        // the vectors are replaced, never edited in place.
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sums `values` over ranks in rank order through the byte all-gather.
    fn reduce<T, const N: usize>(
        &self,
        values: &mut [T],
        to: fn(T) -> [u8; N],
        from: fn([u8; N]) -> T,
    ) -> Result<()>
    where
        T: Copy + std::ops::Add<Output = T>,
    {
        let bytes: Vec<u8> = values.iter().flat_map(|&v| to(v)).collect();
        let all = self.all_gather_bytes(&bytes)?;
        if all.iter().any(|b| b.len() != bytes.len()) {
            return Err(Error::Protocol {
                what: "ranks all-reduce different numbers of values",
            });
        }
        let value = |b: &[u8], i: usize| {
            let mut a = [0u8; N];
            a.copy_from_slice(&b[i * N..(i + 1) * N]);
            from(a)
        };
        for (i, v) in values.iter_mut().enumerate() {
            let mut s = value(&all[0], i);
            for b in &all[1..] {
                s = s + value(b, i);
            }
            *v = s;
        }
        Ok(())
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        self.reduce(values, f32::to_le_bytes, f32::from_le_bytes)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.reduce(values, f64::to_le_bytes, f64::from_le_bytes)
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.slots()[self.rank] = local.to_vec();
        // Everyone has written before anyone reads ...
        self.shared.barrier.wait();
        let all = self.slots().clone();
        // ... and everyone has read before anyone writes the next round.
        self.shared.barrier.wait();
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grad::{
        exchange, Dgc, DgcConfig, EfSignSgd, ErrorFeedback, Identity, PowerSgd, PowerSgdConfig,
        Qsgd, QsgdConfig, RandomK, ScaledSign, TopK,
    };
    use tensorpress_tensor::SeededRng;

    type Make = fn(usize) -> Box<dyn GradCompressor + Send>;

    fn methods() -> Vec<(&'static str, Make)> {
        vec![
            ("identity", |_| Box::new(Identity)),
            ("topk+ef", |_| {
                Box::new(ErrorFeedback::new(TopK::new(0.1).unwrap()))
            }),
            ("randomk", |r| {
                Box::new(RandomK::new(0.2, true, r as u64).unwrap())
            }),
            ("dgc", |_| {
                Box::new(Dgc::new(DgcConfig::default().with_sparsity(0.9)).unwrap())
            }),
            ("qsgd", |r| {
                Box::new(
                    Qsgd::new(QsgdConfig {
                        levels: 4,
                        bucket: 16,
                        seed: r as u64,
                    })
                    .unwrap(),
                )
            }),
            ("sign", |_| Box::new(ScaledSign)),
            ("ef-sign", |_| Box::new(EfSignSgd::new(ScaledSign))),
            ("powersgd", |_| {
                Box::new(
                    PowerSgd::new(PowerSgdConfig {
                        rank: 2,
                        ..PowerSgdConfig::default()
                    })
                    .unwrap(),
                )
            }),
        ]
    }

    /// Runs `steps` exchanges on `ranks` threads and in process with
    /// [`exchange`]; the means and byte counts must agree exactly.
    fn agree(ranks: usize, steps: usize, shape: &[usize]) {
        for (name, make) in methods() {
            let mut rng = SeededRng::new(11);
            let grads: Vec<Vec<ArrayD<f32>>> = (0..steps)
                .map(|_| {
                    (0..ranks)
                        .map(|_| rng.array_normal(shape.to_vec()).into_dyn())
                        .collect()
                })
                .collect();
            let mut sim: Vec<Box<dyn GradCompressor + Send>> = (0..ranks).map(make).collect();
            let expected: Vec<_> = grads
                .iter()
                .map(|g| {
                    let views: Vec<_> = g.iter().map(|a| a.view()).collect();
                    exchange(&mut sim, &views).unwrap()
                })
                .collect();
            let comms = ThreadComm::group(ranks).unwrap();
            let per_rank: Vec<Vec<RankExchange>> = std::thread::scope(|s| {
                let jobs: Vec<_> = comms
                    .iter()
                    .map(|comm| {
                        let grads = &grads;
                        s.spawn(move || {
                            let mut c = make(comm.rank());
                            grads
                                .iter()
                                .map(|g| {
                                    exchange_over(comm, &mut c, g[comm.rank()].view()).unwrap()
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                jobs.into_iter().map(|j| j.join().unwrap()).collect()
            });
            for (step, want) in expected.iter().enumerate() {
                for (rank, got) in per_rank.iter().enumerate() {
                    let got = &got[step];
                    assert_eq!(got.mean, want.mean, "{name}: step {step}, rank {rank}");
                    assert_eq!(got.bytes_sent, want.bytes_sent[rank], "{name}: bytes");
                    assert_eq!(got.rounds, want.rounds, "{name}: rounds");
                }
            }
        }
    }

    #[test]
    fn threads_agree_with_the_in_process_exchange() {
        agree(3, 4, &[12, 10]);
        agree(2, 3, &[40]);
        agree(1, 2, &[6, 5]);
    }

    /// Runs one exchange per rank with per-rank compressors and gradients.
    fn run(
        setups: Vec<(Box<dyn GradCompressor + Send>, ArrayD<f32>)>,
    ) -> Vec<Result<RankExchange>> {
        let comms = ThreadComm::group(setups.len()).unwrap();
        std::thread::scope(|s| {
            let jobs: Vec<_> = comms
                .iter()
                .zip(setups)
                .map(|(comm, (mut c, g))| s.spawn(move || exchange_over(comm, &mut c, g.view())))
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        })
    }

    fn protocol(r: &Result<RankExchange>) -> &'static str {
        match r {
            Err(Error::Protocol { what }) => what,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn disagreeing_ranks_get_typed_errors_on_every_rank() {
        let g = |n: usize| ArrayD::<f32>::ones(vec![n]);
        // Dense on one rank, sparse on the other.
        let out = run(vec![
            (Box::new(Identity), g(8)),
            (Box::new(TopK::new(0.5).unwrap()), g(8)),
        ]);
        assert!(protocol(&out[0]).contains("different collectives"));
        assert!(protocol(&out[1]).contains("different collectives"));
        // Dense payloads of different lengths: no all-reduce is attempted.
        let out = run(vec![(Box::new(Identity), g(8)), (Box::new(Identity), g(9))]);
        for r in &out {
            assert!(protocol(r).contains("different numbers"));
        }
    }

    #[test]
    fn a_failing_rank_does_not_hang_the_others() {
        let ok = ArrayD::<f32>::ones(vec![4]);
        let bad = ArrayD::<f32>::ones(vec![2, 2, 2]); // 3-D: UnsupportedRank
        let out = run(vec![
            (Box::new(Identity), ok.clone()),
            (Box::new(Identity), bad),
            (Box::new(Identity), ok),
        ]);
        assert!(matches!(
            out[1],
            Err(Error::UnsupportedRank { ndim: 3, .. })
        ));
        assert!(protocol(&out[0]).contains("another rank failed"));
        assert!(protocol(&out[2]).contains("another rank failed"));
    }

    #[test]
    fn thread_comm_collectives() {
        assert!(matches!(
            ThreadComm::group(0),
            Err(Error::InvalidConfig { .. })
        ));
        let comms = ThreadComm::group(3).unwrap();
        let out: Vec<(Vec<f64>, Vec<Vec<u8>>)> = std::thread::scope(|s| {
            let jobs: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut v = vec![c.rank() as f64, 1.5];
                        c.all_reduce_sum_f64(&mut v).unwrap();
                        let g = c.all_gather_bytes(&vec![c.rank() as u8; c.rank()]).unwrap();
                        (v, g)
                    })
                })
                .collect();
            jobs.into_iter().map(|j| j.join().unwrap()).collect()
        });
        for (v, g) in out {
            assert_eq!(v, vec![3.0, 4.5]);
            assert_eq!(g, vec![vec![], vec![1], vec![2, 2]]);
        }
    }
}
