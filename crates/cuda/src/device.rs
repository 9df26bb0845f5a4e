//! [`CudaDevice`]: a context, its stream and the compiled kernels.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute as Attr, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys, Ptx};

use crate::{CudaError, Result};

/// Dynamic shared memory any kernel may take without opting in.
const SMEM_DEFAULT: usize = 48 * 1024;
/// Dynamic shared memory the GEMV kernels opt in to, where the device allows.
const SMEM_WANTED: usize = 96 * 1024;

/// The kernels' CUDA C source.
pub(crate) const KERNELS: &str = include_str!("kernels.cu");

/// File names tried for the driver library, as cudarc tries them.
const CUDA_LIBS: &[&str] = if cfg!(windows) {
    &["nvcuda.dll"]
} else {
    &["libcuda.so", "libcuda.so.1"]
};

/// File names tried for NVRTC: the ones cudarc (bound at CUDA 12) tries.
const NVRTC_LIBS: &[&str] = if cfg!(windows) {
    &["nvrtc64_120_0.dll", "nvrtc64_112_0.dll", "nvrtc.dll"]
} else {
    &[
        "libnvrtc.so",
        "libnvrtc.so.12",
        "libnvrtc.so.11",
        "libnvrtc.so.1",
    ]
};

/// Whether one of `names` loads.
fn loads(names: &[&str]) -> bool {
    names.iter().any(|name| {
        // SAFETY: loading the NVIDIA driver or NVRTC, the libraries cudarc
        // loads next anyway; their initializers take no arguments and have
        // no preconditions. The handle is closed again on drop.
        unsafe { libloading::Library::new(*name) }.is_ok()
    })
}

/// Fails with [`CudaError::NotAvailable`] unless the driver and NVRTC load.
fn check_libraries() -> Result<()> {
    check(&[("libcuda", CUDA_LIBS), ("libnvrtc", NVRTC_LIBS)])
}

/// Fails with [`CudaError::NotAvailable`] unless each library loads.
fn check(libraries: &[(&'static str, &[&str])]) -> Result<()> {
    for &(library, names) in libraries {
        if !loads(names) {
            return Err(CudaError::NotAvailable {
                library,
                tried: names.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic of the bindings into [`CudaError::Panicked`]
/// (or [`CudaError::NotAvailable`] when a library failed to load).
pub(crate) fn guard<T>(op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".to_string());
            if message.contains("Unable to dynamically load") {
                let library = if message.contains("nvrtc") {
                    "libnvrtc"
                } else {
                    "libcuda"
                };
                Err(CudaError::NotAvailable {
                    library,
                    tried: vec![message],
                })
            } else {
                Err(CudaError::Panicked { op, message })
            }
        }
    }
}

/// What a device is, from its attributes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeviceInfo {
    /// The ordinal.
    pub ordinal: usize,
    /// The device's name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub multiprocessors: i32,
    /// Global memory, bytes.
    pub memory_bytes: usize,
    /// Peak memory clock in kHz as the driver reports it (0 when unknown).
    pub memory_clock_khz: i32,
    /// Memory bus width in bits (0 when unknown).
    pub bus_width_bits: i32,
    /// L2 cache, bytes (0 when unknown): a benchmark must stream more
    /// than this to measure memory rather than cache.
    pub l2_cache_bytes: usize,
    /// Peak SM clock in kHz (0 when unknown).
    pub sm_clock_khz: i32,
    /// What the kernels were compiled to: `sm_XY` (a CUBIN) or `compute_XY`
    /// (PTX, compiled by the driver).
    pub kernel_target: String,
}

impl DeviceInfo {
    /// Theoretical memory bandwidth in bytes per second: memory clock × 2
    /// (double data rate) × bus width in bytes, or `None` when the driver
    /// does not report the clock or the width. A datasheet figure can differ
    /// by some percent (HBM clocks are reported rounded).
    pub fn peak_bandwidth(&self) -> Option<f64> {
        (self.memory_clock_khz > 0 && self.bus_width_bits > 0)
            .then(|| self.memory_clock_khz as f64 * 1e3 * 2.0 * (self.bus_width_bits as f64 / 8.0))
    }
}

/// The compiled kernels of one device.
pub(crate) struct Kernels {
    /// GEMV with the activations staged in shared memory (`_s`).
    pub int4_gemv: CudaFunction,
    pub q4_0_gemv: CudaFunction,
    pub q8_0_gemv: CudaFunction,
    /// GEMV reading the activations from global memory (`_g`), for rows
    /// whose activations do not fit in `smem_limit` bytes.
    pub int4_gemv_g: CudaFunction,
    pub q4_0_gemv_g: CudaFunction,
    pub q8_0_gemv_g: CudaFunction,
    /// The dynamic shared memory the `_s` kernels may take, bytes.
    pub smem_limit: usize,
    pub gather: CudaFunction,
    pub int4_dequant: CudaFunction,
    pub q4_0_dequant: CudaFunction,
    pub q8_0_dequant: CudaFunction,
    pub spin: CudaFunction,
}

pub(crate) struct Inner {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    pub info: DeviceInfo,
}

/// One CUDA device: its primary context, the stream every call of this
/// crate runs on, and the kernels, compiled by NVRTC when the device is
/// opened. Cheap to clone (shared); open each device once.
#[derive(Clone)]
pub struct CudaDevice {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.inner.info)
            .finish()
    }
}

impl CudaDevice {
    /// Whether the CUDA driver and NVRTC libraries load on this machine (a
    /// device may still be missing).
    pub fn libraries_present() -> bool {
        check_libraries().is_ok()
    }

    /// Devices the driver sees; [`CudaError::NotAvailable`] without a driver.
    pub fn count() -> Result<usize> {
        check_libraries()?;
        guard("CudaDevice::count", || {
            Ok(CudaContext::device_count().map(|n| n.max(0) as usize)?)
        })
    }

    /// Opens device `ordinal` and compiles the kernels for it.
    ///
    /// Fails with [`CudaError::NotAvailable`] when the driver or NVRTC does
    /// not load, [`CudaError::NoDevice`] when there is no such device.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        check_libraries()?;
        guard("CudaDevice::new", || {
            let count = match CudaContext::device_count() {
                Ok(n) => n.max(0) as usize,
                Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
                Err(e) => return Err(e.into()),
            };
            if ordinal >= count {
                return Err(CudaError::NoDevice { ordinal, count });
            }
            let ctx = CudaContext::new(ordinal)?;
            let stream = ctx.default_stream();
            let cc = ctx.compute_capability()?;
            let (kernel_target, module) = compile(&ctx, cc)?;
            let f = |name: &str| module.load_function(name);
            let (int4_gemv, q4_0_gemv, q8_0_gemv) = (
                f("tp_int4_gemv_s")?,
                f("tp_q4_0_gemv_s")?,
                f("tp_q8_0_gemv_s")?,
            );
            // Past 48 KiB of dynamic shared memory a kernel must opt in; up
            // to 96 KiB (21,845 columns) three blocks still fit on an SM.
            let optin = ctx
                .attribute(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .unwrap_or(0)
                .max(0) as usize;
            let want = SMEM_WANTED.min(optin);
            let opted = want > SMEM_DEFAULT
                && [&int4_gemv, &q4_0_gemv, &q8_0_gemv].iter().all(|k| {
                    k.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        want as i32,
                    )
                    .is_ok()
                });
            let kernels = Kernels {
                int4_gemv,
                q4_0_gemv,
                q8_0_gemv,
                int4_gemv_g: f("tp_int4_gemv_g")?,
                q4_0_gemv_g: f("tp_q4_0_gemv_g")?,
                q8_0_gemv_g: f("tp_q8_0_gemv_g")?,
                smem_limit: if opted { want } else { SMEM_DEFAULT },
                gather: f("tp_gather")?,
                int4_dequant: f("tp_int4_dequant")?,
                q4_0_dequant: f("tp_q4_0_dequant")?,
                q8_0_dequant: f("tp_q8_0_dequant")?,
                spin: f("tp_spin")?,
            };
            let info = DeviceInfo {
                ordinal,
                name: ctx.name()?,
                compute_capability: cc,
                multiprocessors: ctx.attribute(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
                memory_bytes: ctx.total_mem()?,
                memory_clock_khz: ctx
                    .attribute(Attr::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
                    .unwrap_or(0),
                bus_width_bits: ctx
                    .attribute(Attr::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
                    .unwrap_or(0),
                l2_cache_bytes: ctx
                    .attribute(Attr::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
                    .unwrap_or(0)
                    .max(0) as usize,
                sm_clock_khz: ctx
                    .attribute(Attr::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
                    .unwrap_or(0),
                kernel_target,
            };
            Ok(CudaDevice {
                inner: Arc::new(Inner {
                    ctx,
                    stream,
                    kernels,
                    info,
                }),
            })
        })
    }

    /// The device's description.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// The cudarc context, for work this crate does not cover.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The stream every call of this crate enqueues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Copies `data` to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        guard("CudaDevice::upload", || {
            Ok(self.inner.stream.clone_htod(data)?)
        })
    }

    /// A new device buffer of `len` zeros.
    pub fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        guard("CudaDevice::zeros", || {
            Ok(self.inner.stream.alloc_zeros::<f32>(len)?)
        })
    }

    /// Copies a device buffer back (waits for the stream's work before it).
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        data: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        guard("CudaDevice::download", || {
            let out = self.inner.stream.clone_dtoh(data)?;
            // The copy is asynchronous in form: wait for it before the
            // vector is handed out.
            self.inner.stream.synchronize()?;
            Ok(out)
        })
    }

    /// Waits until the stream's work is done.
    pub fn synchronize(&self) -> Result<()> {
        guard("CudaDevice::synchronize", || {
            Ok(self.inner.stream.synchronize()?)
        })
    }

    /// Seconds per call of `f`, from CUDA events around `reps` calls after
    /// one warm-up call: `f` should only enqueue work on
    /// [`stream`](Self::stream). Before the first timed call the stream is
    /// kept busy (a spin kernel of about 20 µs per call) while the calls are
    /// enqueued, so they run back to back and the figure is GPU time, not
    /// launch overhead.
    pub fn time(&self, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        let reps = reps.max(1);
        guard("CudaDevice::time", || {
            let inner = &self.inner;
            let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
            let (start, end) = (inner.ctx.new_event(flags)?, inner.ctx.new_event(flags)?);
            f()?;
            let khz = if inner.info.sm_clock_khz > 0 {
                inner.info.sm_clock_khz as i64
            } else {
                2_000_000
            };
            // 20 µs of clocks per call, at most one second.
            let cycles: i64 = (khz * 20 / 1000)
                .saturating_mul(reps as i64)
                .min(khz * 1000);
            let mut b = inner.stream.launch_builder(&inner.kernels.spin);
            b.arg(&cycles);
            let one = LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: `tp_spin(long long cycles)` reads only its argument.
            unsafe { b.launch(one) }?;
            start.record(&inner.stream)?;
            for _ in 0..reps {
                f()?;
            }
            end.record(&inner.stream)?;
            let ms = start.elapsed_ms(&end)?;
            Ok(ms as f64 * 1e-3 / reps as f64)
        })
    }
}

/// Compiles the kernels to PTX for compute capability `arch` (`90` for
/// sm_90) with NVRTC alone: no driver or device needed, so it checks an
/// NVRTC install and the kernel source on a machine without a GPU.
/// [`CudaError::NotAvailable`] when NVRTC does not load,
/// [`CudaError::Compile`] with the compiler's log when the source fails.
pub fn compile_ptx(arch: u32) -> Result<String> {
    check(&[("libnvrtc", NVRTC_LIBS)])?;
    guard("compile_ptx", || {
        let ptx = build(&format!("compute_{arch}"), false)?;
        Ok(String::from_utf8_lossy(&ptx)
            .trim_end_matches('\0')
            .to_string())
    })
}

/// Compiles [`KERNELS`] for compute capability `cc` and loads the module:
/// a CUBIN for the device's own architecture when NVRTC knows it (loads on
/// any driver of the same major version), otherwise PTX for the newest
/// architecture NVRTC knows, compiled by the driver.
fn compile(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
) -> Result<(String, Arc<cudarc::driver::CudaModule>)> {
    let want = cc.0 * 10 + cc.1;
    let supported = supported_archs();
    let arch = match supported.iter().copied().filter(|&a| a <= want).max() {
        Some(a) => a,
        None => want,
    };
    if arch == want {
        let target = format!("sm_{want}");
        if let Ok(cubin) = build(&target, true) {
            if let Ok(module) = ctx.load_module(Ptx::from_binary(cubin)) {
                return Ok((target, module));
            }
        }
    }
    let target = format!("compute_{arch}");
    let ptx = build(&target, false)?;
    let src = CStr::from_bytes_until_nul(&ptx)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&ptx).into_owned());
    Ok((target, ctx.load_module(Ptx::from_src(src))?))
}

/// The architectures NVRTC compiles for (`[90, 100, …]`), empty when it
/// cannot say (an NVRTC before 11.2 lacks the call: the bindings' panic for
/// the missing symbol is caught here).
fn supported_archs() -> Vec<i32> {
    catch_unwind(query_archs).unwrap_or_default()
}

fn query_archs() -> Vec<i32> {
    let mut n: std::ffi::c_int = 0;
    // SAFETY: `n` is a valid place for the count.
    if unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .is_err()
        || n <= 0
    {
        return Vec::new();
    }
    let mut archs = vec![0 as std::ffi::c_int; n as usize];
    // SAFETY: `archs` holds the `n` values NVRTC writes.
    match unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result() {
        Ok(()) => archs,
        Err(_) => Vec::new(),
    }
}

/// Compiles the kernels for `--gpu-architecture=target`; the CUBIN when
/// `cubin`, else the PTX (NUL-terminated).
fn build(target: &str, cubin: bool) -> Result<Vec<u8>> {
    let src = CString::new(KERNELS).map_err(|_| CudaError::Unsupported {
        what: "kernel source with a NUL byte".to_string(),
    })?;
    let name = c"tensorpress_kernels.cu";
    let prog = nvrtc::create_program(&src, Some(name)).map_err(|source| CudaError::Compile {
        arch: target.to_string(),
        source,
        log: String::new(),
    })?;
    let opts = [
        format!("--gpu-architecture={target}"),
        "--std=c++14".to_string(),
        "--fmad=true".to_string(),
    ];
    // SAFETY: `prog` comes from `create_program` and is destroyed once,
    // below, after its last use; `src` and `name` outlive it.
    let out = unsafe {
        match nvrtc::compile_program(prog, &opts) {
            Err(source) => {
                let log = nvrtc::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l
                            .iter()
                            .take_while(|&&c| c != 0)
                            .map(|&c| c as u8)
                            .collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    })
                    .unwrap_or_default();
                Err(CudaError::Compile {
                    arch: target.to_string(),
                    source,
                    log,
                })
            }
            Ok(()) if cubin => get_cubin(prog).map_err(|source| CudaError::Compile {
                arch: target.to_string(),
                source,
                log: String::new(),
            }),
            Ok(()) => nvrtc::get_ptx(prog)
                .map(|p| p.into_iter().map(|c: c_char| c as u8).collect())
                .map_err(|source| CudaError::Compile {
                    arch: target.to_string(),
                    source,
                    log: String::new(),
                }),
        }
    };
    // SAFETY: `prog` is live and not used after this.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    out
}

/// The CUBIN of a compiled program.
///
/// # Safety
///
/// `prog` must be a live program compiled for a real architecture (`sm_XY`).
unsafe fn get_cubin(
    prog: nvrtc_sys::nvrtcProgram,
) -> std::result::Result<Vec<u8>, nvrtc::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: `prog` is live (the caller's contract); `size` is a valid place.
    unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) }.result()?;
    let mut out = vec![0u8; size];
    // SAFETY: `out` holds the `size` bytes NVRTC writes.
    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, out.as_mut_ptr().cast()) }.result()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_panics_into_errors() {
        // (The two panics print their messages; the hook is left alone, as
        // tests run in parallel.)
        let missing = guard("test", || -> Result<()> {
            panic!("Unable to dynamically load the \"nvrtc\" shared library")
        });
        let other = guard("test", || -> Result<()> { panic!("Missing symbol cuFoo") });
        assert!(
            matches!(
                missing,
                Err(CudaError::NotAvailable {
                    library: "libnvrtc",
                    ..
                })
            ),
            "{missing:?}"
        );
        assert!(
            matches!(&other, Err(CudaError::Panicked { op: "test", message }) if message.contains("cuFoo")),
            "{other:?}"
        );
        assert_eq!(guard("test", || Ok(7)).ok(), Some(7));
    }

    #[test]
    fn peak_bandwidth_from_attributes() {
        let mut info = DeviceInfo {
            ordinal: 0,
            name: "test".into(),
            compute_capability: (9, 0),
            multiprocessors: 132,
            memory_bytes: 80 << 30,
            // H100 SXM: 2619 MHz, 5120-bit HBM3: 3.35 TB/s.
            memory_clock_khz: 2_619_000,
            bus_width_bits: 5120,
            l2_cache_bytes: 50 << 20,
            sm_clock_khz: 1_980_000,
            kernel_target: "sm_90".into(),
        };
        let bw = info.peak_bandwidth().expect("reported");
        assert!((bw - 3.352e12).abs() < 1e9, "{bw}");
        info.memory_clock_khz = 0;
        assert_eq!(info.peak_bandwidth(), None);
    }
}
