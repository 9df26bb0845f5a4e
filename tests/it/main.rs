//! The facade's integration tests, in one binary: each test file linked on
//! its own repeats the compile and link of the whole workspace, which
//! dominated CI time.

#[allow(dead_code)]
mod common;

mod compress;
mod convert;
mod curvature;
mod data_parallel;
mod export_smollm2;
mod gguf_export;
mod gguf_gptq_smollm2;
mod lowrank;
mod mixed;
mod rotate;
mod sparse_export;
