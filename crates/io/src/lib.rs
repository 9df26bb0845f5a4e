//! Checkpoint formats of tensorpress: safetensors (single files and sharded
//! Hugging Face folders), GGUF (llama.cpp) and Hugging Face `config.json`, and
//! quantized checkpoints that runtimes load: compressed-tensors
//! `pack-quantized` and GPTQ ([`export`] writes them, [`import`] reads them back).
//!
//! Readers memory-map their files, validate every header up front and hand out
//! tensors lazily; they treat input as untrusted and answer malformed files with
//! typed [`Error`]s, never a panic or an unbounded allocation. Writers write
//! atomically (a temporary file in the target folder, renamed into place).
//!
//! # Quick start
//!
//! ```
//! use ndarray::{arr2, Array2};
//! use tensorpress_io::gguf::{GgmlType, GgufFile, GgufWriter};
//! use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
//!
//! let dir = tempfile::tempdir()?;
//!
//! // safetensors: a Hugging Face model folder with one f32 and one bf16 tensor.
//! let w = arr2(&[[1.0f32, -2.0, 3.5], [0.25, 0.0, -1.0]]);
//! let mut st = SafetensorsWriter::new();
//! st.add_metadata("format", "pt")?;
//! st.add_array("layer.weight", w.view().into_dyn())?;
//! st.add_array("layer.bias", ndarray::arr1(&[half::bf16::from_f32(0.5)]).into_dyn().view())?;
//! st.write_dir(dir.path())?;
//!
//! let model = SafetensorsModel::open(dir.path())?;
//! assert_eq!(model.names(), ["layer.bias", "layer.weight"]);
//! assert_eq!(model.info("layer.weight").unwrap().shape, [2, 3]);
//! assert_eq!(model.to_f32("layer.weight")?, w.clone().into_dyn());
//! assert_eq!(model.to_f32("layer.bias")?.into_raw_vec_and_offset().0, [0.5]);
//! assert_eq!(model.metadata()["format"], "pt");
//!
//! // GGUF: metadata and a Q8_0 tensor, read back through the memory map.
//! let x = Array2::from_shape_fn((4, 64), |(i, j)| (i as f32 - 1.5) * (j as f32 / 64.0));
//! let mut gw = GgufWriter::new();
//! gw.add_metadata("general.architecture", "llama")?;
//! gw.add_metadata("llama.block_count", 30u32)?;
//! gw.add_f32("blk.0.ffn_up.weight", GgmlType::Q8_0, x.view().into_dyn())?;
//! let path = dir.path().join("model.gguf");
//! gw.write(&path)?;
//!
//! let gguf = GgufFile::open(&path)?;
//! assert_eq!(gguf.get_u32("llama.block_count")?, 30);
//! let info = gguf.tensor("blk.0.ffn_up.weight").unwrap();
//! assert_eq!((info.ggml_type(), info.shape()), (GgmlType::Q8_0, &[4usize, 64][..]));
//! let y = gguf.dequantize("blk.0.ffn_up.weight")?;
//! // Q8_0 keeps every value within half a step (amax / 127 / 2) of the original.
//! let max_err = (&y - &x.into_dyn()).iter().fold(0.0f32, |m, e| m.max(e.abs()));
//! assert!(max_err <= 1.5 / 127.0 / 2.0 + 1e-3, "{max_err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod fs;

pub mod config;
pub mod export;
pub mod gguf;
pub mod import;
pub mod safetensors;
pub mod testdata;

pub use error::{Error, IndexProblem, Result};
pub use fs::write_bytes_atomic;
