//! [`CudaError`], the error of every call of this crate.

use cudarc::driver::DriverError;
use cudarc::nvrtc::result::NvrtcError;

/// What can go wrong on the GPU path. No call of this crate panics for want
/// of a GPU: a missing driver or NVRTC is [`CudaError::NotAvailable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// A CUDA library could not be loaded: no NVIDIA driver (`libcuda`) or no
    /// NVRTC (`libnvrtc`) on this machine, or not on the loader's path.
    #[error(
        "CUDA is not available: {library} could not be loaded (tried {tried:?}; \
         set LD_LIBRARY_PATH to the folder that holds it)"
    )]
    NotAvailable {
        /// The library, `"libcuda"` or `"libnvrtc"`.
        library: &'static str,
        /// The file names tried.
        tried: Vec<String>,
    },
    /// The driver is there but has no device of this ordinal.
    #[error("no CUDA device {ordinal}: the driver reports {count} device(s)")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// Devices the driver sees.
        count: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(#[from] DriverError),
    /// NVRTC could not compile the kernels.
    #[error("NVRTC compiling for {arch}: {source}; log:\n{log}")]
    Compile {
        /// The `--gpu-architecture` value.
        arch: String,
        /// The NVRTC status.
        source: NvrtcError,
        /// The compiler's log.
        log: String,
    },
    /// A buffer or matrix does not have the size the call needs.
    #[error("{what}: expected {expected} elements, got {actual}")]
    Shape {
        /// The argument.
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        actual: usize,
    },
    /// A matrix the kernels cannot run.
    #[error("unsupported matrix: {what}")]
    Unsupported {
        /// What is not supported.
        what: String,
    },
    /// A dimension does not fit the kernels' 32-bit indices.
    #[error("{what} = {value} exceeds the kernels' limit {limit}")]
    TooLarge {
        /// The dimension.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The largest value the kernels take.
        limit: usize,
    },
    /// From the CPU matrix types.
    #[error(transparent)]
    Quant(#[from] tensorpress_quant_core::Error),
    /// The CUDA bindings panicked (a symbol missing from an old driver, for
    /// example); the panic was caught and is reported here.
    #[error("CUDA bindings panicked in {op}: {message}")]
    Panicked {
        /// The call of this crate that was running.
        op: &'static str,
        /// The panic message.
        message: String,
    },
}

impl CudaError {
    /// Whether the error says there is no usable GPU here (no driver, no
    /// NVRTC, or no device): the condition under which GPU tests skip.
    pub fn is_not_available(&self) -> bool {
        matches!(
            self,
            CudaError::NotAvailable { .. } | CudaError::NoDevice { .. }
        ) || matches!(self, CudaError::Driver(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE)
    }
}

/// Result with [`CudaError`].
pub type Result<T, E = CudaError> = std::result::Result<T, E>;
