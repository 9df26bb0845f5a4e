//! safetensors checkpoints: single files and sharded Hugging Face folders.
//!
//! [`SafetensorsModel::open`] maps every file, validates every header and then
//! serves tensors lazily as [`TensorView`](tensorpress_tensor::TensorView)s of
//! the mapped bytes. [`SafetensorsWriter`] writes single files or shards with a
//! `model.safetensors.index.json`, atomically.
//!
//! The reader treats files as untrusted: the header is capped at
//! [`MAX_HEADER_SIZE`], tensors must tile the data section exactly (contiguous
//! from offset 0, no gaps, no overlap, nothing after the last), byte counts must
//! match shapes, sizes are computed with overflow checks, and duplicate tensor
//! names and metadata keys are errors. Shard file names in an index must be
//! plain file names in the index's folder.

mod header;
mod model;
mod write;

pub use header::{TensorInfo, MAX_HEADER_SIZE};
pub use model::{SafetensorsModel, INDEX_FILE, SINGLE_FILE};
pub use write::{SafetensorsWriter, StoreElement};
