//! CUDA kernels for tensorpress's quantized weights: dequantization and
//! matrix-vector products (`y = W x`, token-by-token decoding) of int4 group
//! weights (GPTQ, AWQ, compressed-tensors; act-order included) and GGML
//! Q4_0 / Q8_0 blocks, on an NVIDIA GPU.
//!
//! Nothing CUDA is needed to build this crate. The driver (`libcuda`) and
//! NVRTC (`libnvrtc`) are loaded at run time through
//! [cudarc](https://docs.rs/cudarc), and the kernels, CUDA C source held in
//! the crate, are compiled by NVRTC when a device is opened: to a CUBIN for
//! the device's architecture, or to PTX the driver compiles. Without a GPU,
//! every call returns an error ([`CudaError::NotAvailable`],
//! [`CudaError::NoDevice`]); none panics.
//!
//! The matrices are uploaded from the CPU kernels' types of
//! [`tensorpress_quant_core::kernels`], in the same layouts (GGML's nibble
//! order, per-group scales and mins), and mean the same:
//! [`CudaMatrix::dequantize`] equals the CPU scalar reference
//! ([`Isa::Scalar`](tensorpress_quant_core::kernels::Isa::Scalar)) bit for
//! bit, and [`CudaMatrix::gemv`] the CPU product up to float summation order.
//!
//! # Quick start
//!
//! ```no_run
//! use tensorpress_cuda::{CudaDevice, CudaMatrix};
//! use tensorpress_quant_core::ggml::GgmlType;
//! use tensorpress_quant_core::kernels::{GgmlMatrix, Isa, QuantMatrix};
//!
//! let (rows, cols) = (256, 512);
//! let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
//! let x: Vec<f32> = (0..cols).map(|j| (j as f32 * 0.11).cos()).collect();
//! let cpu = GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &w)?;
//!
//! let dev = match CudaDevice::new(0) {
//!     Ok(dev) => dev,
//!     Err(e) if e.is_not_available() => {
//!         eprintln!("no GPU here: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! let gpu = CudaMatrix::from_ggml(&dev, &cpu)?;
//! let y = gpu.gemv(&x)?;
//!
//! let mut want = vec![0.0f32; rows];
//! cpu.gemv(&x, &mut want)?;
//! for (a, b) in y.iter().zip(&want) {
//!     assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()));
//! }
//! let mut reference = vec![0.0f32; rows * cols];
//! cpu.dequantize_rows_with(Isa::Scalar, 0, &mut reference)?;
//! assert_eq!(gpu.dequantize()?, reference);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For timing without transfers, keep the activations on the device:
//! [`CudaDevice::upload`], [`CudaMatrix::gemv_device`] and [`CudaDevice::time`]
//! (CUDA events); `examples/cuda_gemv.rs` reports GB/s against
//! [`DeviceInfo::peak_bandwidth`].
//!
//! # Finding the libraries
//!
//! The driver is looked up as `libcuda.so` / `libcuda.so.1`, NVRTC as
//! `libnvrtc.so`, `libnvrtc.so.12`, `libnvrtc.so.11` (the bindings are built
//! for CUDA 12; a CUDA 13 NVRTC is used through a `libnvrtc.so` link on
//! `LD_LIBRARY_PATH`, as `scripts/cuda_check.sh` makes).
//!
//! # Kernels
//!
//! GEMV runs one warp per 4 rows (2 for Q8_0), 8 warps per block. The block
//! first stages the activations in shared memory, coalesced, with 4 floats
//! of padding per 32 so that the lanes' 16-byte reads hit distinct banks
//! (act-order gathers them on the way; rows wider than 21,845 columns read
//! them from global memory instead). Each lane then reads 16 bytes of a row
//! at a time, so a warp's load is 512 contiguous bytes, and a block's 32
//! activations serve the warp's 4 rows. Codes become floats by one byte
//! permute into the mantissa of 0.5 (`0.5 + q/256` for a nibble; int8 codes
//! into 2²³ and one subtraction), exact and without integer-to-float
//! conversions; f16 scales by `cvt.f32.f16`; each row ends with a
//! warp-shuffle reduction. Int4 groups use `Σ_g scale_g Σ q·x + min_g Σ x`,
//! as the CPU kernels do.

mod device;
mod error;
mod matrix;

pub use device::{compile_ptx, CudaDevice, DeviceInfo};
pub use error::{CudaError, Result};
pub use matrix::{CudaFormat, CudaMatrix};

/// The CUDA bindings this crate is built on, for work it does not cover
/// (device buffers are [`cudarc::driver::CudaSlice`]).
pub use cudarc;
