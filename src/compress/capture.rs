//! Calibration capture: layer Hessians and channel statistics, gathered by an
//! [`Observer`] on the inputs of the linear layers it is asked about.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{Tensor, TensorId};
use tensorpress_codecs::grad::Communicator;
use tensorpress_models::linear::{to_matrix, Observer};
use tensorpress_tensor::{ChannelStats, Hessian};

/// What the collector accumulates for one input.
#[derive(Debug, Clone)]
pub struct Collected {
    /// `Σ x xᵀ` over the tokens seen.
    pub hessian: Hessian,
    /// Per-channel statistics of the same tokens.
    pub stats: ChannelStats,
}

#[derive(Debug, Default)]
struct State {
    /// Accumulators, keyed by the first layer that saw the input.
    inputs: BTreeMap<String, Collected>,
    /// Layer → the key of the accumulator that holds its input.
    alias: BTreeMap<String, String>,
    /// The last input tensor seen and its key: layers sharing an input
    /// (q/k/v, gate/up) see the same tensor back to back.
    last: Option<(TensorId, String)>,
    error: Option<String>,
}

/// Accumulates Hessians and channel statistics for a set of linear layers.
///
/// Layers that receive the same input tensor share one accumulator, so a
/// block's q/k/v projections cost one Hessian update, not three.
#[derive(Debug)]
pub struct HessianCollector {
    layers: BTreeSet<String>,
    state: Mutex<State>,
    nanos: AtomicU64,
}

impl HessianCollector {
    /// A collector for the layers named in `layers`.
    pub fn new(layers: impl IntoIterator<Item = String>) -> Self {
        HessianCollector {
            layers: layers.into_iter().collect(),
            state: Mutex::new(State::default()),
            nanos: AtomicU64::new(0),
        }
    }

    /// Seconds spent inside [`Observer::observe`] (copying inputs, updating
    /// the accumulators).
    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// The accumulator holding `layer`'s inputs.
    pub fn get(&self, layer: &str) -> Option<Collected> {
        let state = self.state.lock().ok()?;
        let key = state.alias.get(layer)?;
        state.inputs.get(key).cloned()
    }

    /// The first error an observation hit, if any.
    pub fn error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.error.clone())
    }

    /// Replaces every accumulator by its sum over the ranks of `comm` (each
    /// rank having observed its own calibration windows): Hessian sums,
    /// sample counts and channel sums are all-reduced, channel maxima
    /// all-gathered. Afterwards every rank holds what one process observing
    /// all the windows would, up to the order of the `f64` additions (exact
    /// whenever the sums are; see [`compress_llama_on`](super::compress_llama_on)).
    ///
    /// # Errors
    /// [`Error::DataParallel`](crate::Error::DataParallel) when the ranks observed different layers or
    /// widths; the communicator's errors.
    pub fn all_reduce<C: Communicator + ?Sized>(&self, comm: &C) -> crate::Result<()> {
        let mut state = self.state.lock().map_err(|_| crate::Error::DataParallel {
            reason: "the collector's lock is poisoned".into(),
        })?;
        // Every rank must hold the same accumulators (names and widths).
        let layout: String = state
            .inputs
            .iter()
            .map(|(k, c)| format!("{k}:{};", c.hessian.n_in()))
            .collect();
        let all = comm.all_gather_bytes(layout.as_bytes())?;
        if all.iter().any(|l| l.as_slice() != layout.as_bytes()) {
            return Err(crate::Error::DataParallel {
                reason: format!(
                    "rank {} observed layers {layout:?}, another rank observed different ones",
                    comm.rank()
                ),
            });
        }
        for collected in state.inputs.values_mut() {
            let (mut sum, n) = collected.hessian.clone().into_parts();
            let mut counts = [n as f64, collected.stats.count() as f64];
            comm.all_reduce_sum_f64(&mut counts)?;
            let flat = sum
                .as_slice_mut()
                .ok_or_else(|| crate::Error::DataParallel {
                    reason: "a Hessian sum is not contiguous".into(),
                })?;
            comm.all_reduce_sum_f64(flat)?;
            collected.hessian = Hessian::from_parts(sum, counts[0] as u64)?;
            let mut sum_abs = collected.stats.sum_abs().to_owned();
            let mut sum_sq = collected.stats.sum_sq().to_owned();
            let mut max_abs = collected.stats.abs_max().to_owned();
            for v in [&mut sum_abs, &mut sum_sq] {
                let flat = v.as_slice_mut().ok_or_else(|| crate::Error::DataParallel {
                    reason: "channel statistics are not contiguous".into(),
                })?;
                comm.all_reduce_sum_f64(flat)?;
            }
            let local: Vec<u8> = max_abs.iter().flat_map(|v| v.to_le_bytes()).collect();
            for other in comm.all_gather_bytes(&local)? {
                for (m, b) in max_abs.iter_mut().zip(other.chunks_exact(4)) {
                    *m = m.max(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            collected.stats = ChannelStats::from_parts(counts[1] as u64, sum_abs, sum_sq, max_abs)?;
        }
        Ok(())
    }
}

impl Observer for HessianCollector {
    fn wants(&self, layer: &str) -> bool {
        self.layers.contains(layer)
    }

    fn observe(&self, layer: &str, input: &Tensor) -> tensorpress_models::Result<()> {
        let start = Instant::now();
        let result = self.observe_inner(layer, input);
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
}

impl HessianCollector {
    fn observe_inner(&self, layer: &str, input: &Tensor) -> tensorpress_models::Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| observer_error(layer, "the collector's lock is poisoned".into()))?;
        if let Some((id, key)) = &state.last {
            if *id == input.id() {
                let key = key.clone();
                state.alias.insert(layer.to_string(), key);
                return Ok(());
            }
        }
        let x = to_matrix(input)?;
        let key = state
            .alias
            .get(layer)
            .cloned()
            .unwrap_or_else(|| layer.to_string());
        let n = x.ncols();
        let entry = state
            .inputs
            .entry(key.clone())
            .or_insert_with(|| Collected {
                hessian: Hessian::new(n),
                stats: ChannelStats::new(n),
            });
        let result = entry
            .hessian
            .update(x.view())
            .and_then(|_| entry.stats.update(x.view()));
        if let Err(e) = result {
            state.error.get_or_insert_with(|| format!("{layer}: {e}"));
            return Err(observer_error(layer, e.to_string()));
        }
        state.alias.insert(layer.to_string(), key.clone());
        state.last = Some((input.id(), key));
        Ok(())
    }
}

fn observer_error(layer: &str, message: String) -> tensorpress_models::Error {
    tensorpress_models::Error::Observer {
        layer: layer.to_string(),
        source: message.into(),
    }
}
