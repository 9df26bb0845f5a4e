//! The MPI engine: a [`Communicator`] over rsmpi (feature `mpi`).

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives};
use mpi::Count;

use super::Communicator;
use crate::{Error, Result};

/// Elements per `MPI_Allreduce` call: MPI counts are C `int`s.
const CHUNK: usize = 1 << 28;

/// The world communicator of an MPI job (`mpirun -np N program`).
///
/// [`Mpi::init`] initializes MPI once per process; dropping the value
/// finalizes it. Run without `mpirun`, a program is a job of one rank.
///
/// ```no_run
/// use ndarray::Array1;
/// use tensorpress_codecs::grad::{exchange_over, Communicator, Mpi, PowerSgd, PowerSgdConfig};
///
/// let mpi = Mpi::init()?;
/// let grad = Array1::from(vec![mpi.rank() as f32; 8]).into_dyn();
/// let mut identity = tensorpress_codecs::grad::Identity;
/// let out = exchange_over(&mpi, &mut identity, grad.view())?;
/// println!("rank {} of {}: mean {}", mpi.rank(), mpi.size(), out.mean[0]);
/// # Ok::<(), tensorpress_codecs::Error>(())
/// ```
pub struct Mpi {
    // Dropped after `world` (fields drop in declaration order): finalizes MPI.
    world: SimpleCommunicator,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank())
            .field("size", &self.size())
            .finish()
    }
}

impl Mpi {
    /// Initializes MPI and returns the world communicator.
    ///
    /// # Errors
    /// [`Error::Protocol`] when MPI was already initialized in this process.
    pub fn init() -> Result<Mpi> {
        let universe = mpi::initialize().ok_or(Error::Protocol {
            what: "MPI was already initialized in this process",
        })?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// The rsmpi world communicator, for collectives this crate does not wrap.
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    fn reduce<T>(&self, values: &mut [T]) -> Result<()>
    where
        T: mpi::datatype::Equivalence + Copy + Default,
    {
        let mut recv = vec![T::default(); values.len().min(CHUNK)];
        for chunk in values.chunks_mut(CHUNK) {
            let recv = &mut recv[..chunk.len()];
            self.world
                .all_reduce_into(&chunk[..], recv, SystemOperation::sum());
            chunk.copy_from_slice(recv);
        }
        Ok(())
    }
}

fn count(what: &'static str, n: usize) -> Result<Count> {
    Count::try_from(n).map_err(|_| Error::TooLarge {
        what,
        requested: n as u128,
        limit: Count::MAX as u128,
    })
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        self.reduce(values)
    }

    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.reduce(values)
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let size = self.size();
        // Lengths first, as u64 (an all-gather of one value per rank).
        let mut lengths = vec![0u64; size];
        self.world
            .all_gather_into(&(local.len() as u64), &mut lengths[..]);
        let counts = lengths
            .iter()
            .map(|&n| count("gathered payload bytes", n as usize))
            .collect::<Result<Vec<Count>>>()?;
        let total: usize = lengths.iter().map(|&n| n as usize).sum();
        count("gathered payload bytes", total)?;
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |acc: &mut Count, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let mut buf = vec![0u8; total];
        {
            let mut partition = PartitionMut::new(&mut buf[..], counts.clone(), &displs[..]);
            self.world.all_gather_varcount_into(local, &mut partition);
        }
        Ok(displs
            .iter()
            .zip(&counts)
            .map(|(&d, &c)| buf[d as usize..(d + c) as usize].to_vec())
            .collect())
    }
}
