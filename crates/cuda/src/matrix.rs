//! [`CudaMatrix`]: a quantized weight in device memory.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use tensorpress_quant_core::ggml::GgmlType;
use tensorpress_quant_core::kernels::{GgmlMatrix, Int4Matrix, QuantMatrix, BLOCK};

use crate::device::guard;
use crate::{CudaDevice, CudaError, Result};

/// Threads per block of every kernel: 8 warps.
const THREADS: u32 = 256;
/// Rows per warp of the nibble GEMV kernels (`NIB_ROWS` in the source).
const NIB_ROWS: u32 = 4;
/// Rows per warp of the Q8_0 GEMV kernel (`Q8_ROWS` in the source).
const Q8_ROWS: u32 = 2;
/// Floats of shared memory per 32 activations (`XPAD` in the source): 4 of
/// padding keep the lanes' 16-byte reads free of bank conflicts.
const XPAD: usize = 36;
/// Largest `rows` or `cols` the kernels' 32-bit indices take.
const MAX_DIM: usize = (i32::MAX / 2) as usize;

/// The number format of a [`CudaMatrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CudaFormat {
    /// 4-bit integer codes with an f32 scale and min per group of columns.
    Int4 {
        /// Columns per group.
        group: usize,
    },
    /// GGML Q4_0: 4-bit codes, one f16 scale per 32 columns.
    Q4_0,
    /// GGML Q8_0: 8-bit codes, one f16 scale per 32 columns.
    Q8_0,
}

enum Store {
    Int4 {
        group: usize,
        qs: CudaSlice<u8>,
        params: CudaSlice<f32>,
        perm: Option<CudaSlice<u32>>,
    },
    /// Q4_0 (16 code bytes per block) or Q8_0 (32), scales apart.
    Ggml {
        ty: GgmlType,
        qs: CudaSlice<u8>,
        d: CudaSlice<u16>,
    },
}

/// A `[rows, cols]` quantized weight in device memory, uploaded from the
/// CPU kernels' types ([`Int4Matrix`], [`GgmlMatrix`]), with the same
/// meaning: [`dequantize`](Self::dequantize) gives what the scalar reference
/// of [`QuantMatrix::dequantize_rows_with`] gives, bit for bit, and
/// [`gemv`](Self::gemv) what [`QuantMatrix::gemv`] gives, up to float
/// summation order.
pub struct CudaMatrix {
    dev: CudaDevice,
    rows: usize,
    cols: usize,
    weight_bytes: usize,
    store: Store,
}

impl std::fmt::Debug for CudaMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaMatrix[{}, {}, {:?}] on device {}",
            self.rows,
            self.cols,
            self.format(),
            self.dev.info().ordinal
        )
    }
}

fn check_dims(rows: usize, cols: usize) -> Result<()> {
    for (what, value) in [("rows", rows), ("cols", cols)] {
        if value > MAX_DIM {
            return Err(CudaError::TooLarge {
                what,
                value,
                limit: MAX_DIM,
            });
        }
    }
    if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(CudaError::Unsupported {
            what: format!("[{rows}, {cols}]: rows > 0 and cols a positive multiple of {BLOCK}"),
        });
    }
    Ok(())
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(CudaError::Shape {
            what,
            expected,
            actual,
        })
    }
}

/// GGML blocks (an f16 scale, then `code_bytes` of codes) split into the
/// codes, contiguous, and the scales' bits.
fn split_blocks(bytes: &[u8], code_bytes: usize) -> (Vec<u8>, Vec<u16>) {
    let blocks = bytes.len() / (2 + code_bytes);
    let mut qs = Vec::with_capacity(blocks * code_bytes);
    let mut d = Vec::with_capacity(blocks);
    for blk in bytes.chunks_exact(2 + code_bytes) {
        d.push(u16::from_le_bytes([blk[0], blk[1]]));
        qs.extend_from_slice(&blk[2..]);
    }
    (qs, d)
}

/// A 1-D launch of `n` threads.
fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaMatrix {
    /// Uploads an int4 matrix (any group size, a multiple of 32; act-order
    /// included: activations are gathered into the stored column order on
    /// the device before each product).
    pub fn from_int4(dev: &CudaDevice, m: &Int4Matrix) -> Result<CudaMatrix> {
        let (rows, cols, group) = (m.rows(), m.cols(), m.group_size());
        check_dims(rows, cols)?;
        if group == 0 || !group.is_multiple_of(BLOCK) || group > MAX_DIM {
            return Err(CudaError::Unsupported {
                what: format!("int4 group size {group}: a multiple of {BLOCK}"),
            });
        }
        guard("CudaMatrix::from_int4", || {
            let stream = dev.stream();
            let qs = stream.clone_htod(m.packed_codes())?;
            let params = stream.clone_htod(m.group_params())?;
            let perm = match m.input_order() {
                Some(p) => Some(stream.clone_htod(p)?),
                None => None,
            };
            Ok(CudaMatrix {
                dev: dev.clone(),
                rows,
                cols,
                weight_bytes: m.weight_bytes(),
                store: Store::Int4 {
                    group,
                    qs,
                    params,
                    perm,
                },
            })
        })
    }

    /// Uploads a GGML Q4_0 or Q8_0 matrix. The blocks are split on the way
    /// into their codes (contiguous, so each thread reads 16 aligned bytes)
    /// and their f16 scales (one array): the same bytes as the GGUF blocks.
    pub fn from_ggml(dev: &CudaDevice, m: &GgmlMatrix) -> Result<CudaMatrix> {
        let (rows, cols, ty) = (m.rows(), m.cols(), m.ggml_type());
        check_dims(rows, cols)?;
        let code_bytes = match ty {
            GgmlType::Q4_0 => BLOCK / 2,
            GgmlType::Q8_0 => BLOCK,
            _ => {
                return Err(CudaError::Unsupported {
                    what: format!("GGML type {ty:?}: the kernels run Q4_0 and Q8_0"),
                })
            }
        };
        let bytes = m.to_bytes();
        check_len(
            "GGML bytes",
            rows * (cols / BLOCK) * (2 + code_bytes),
            bytes.len(),
        )?;
        let (qs, d) = split_blocks(&bytes, code_bytes);
        guard("CudaMatrix::from_ggml", || {
            let stream = dev.stream();
            Ok(CudaMatrix {
                dev: dev.clone(),
                rows,
                cols,
                weight_bytes: bytes.len(),
                store: Store::Ggml {
                    ty,
                    qs: stream.clone_htod(&qs)?,
                    d: stream.clone_htod(&d)?,
                },
            })
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes a product reads from the weights: codes, scales and mins (the
    /// figure bandwidth is measured against).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The number format.
    pub fn format(&self) -> CudaFormat {
        match &self.store {
            Store::Int4 { group, .. } => CudaFormat::Int4 { group: *group },
            Store::Ggml {
                ty: GgmlType::Q4_0, ..
            } => CudaFormat::Q4_0,
            Store::Ggml { .. } => CudaFormat::Q8_0,
        }
    }

    /// The device the matrix lives on.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// The whole weight as f32, `[rows, cols]` row-major, columns in their
    /// natural order (act-order undone).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        guard("CudaMatrix::dequantize", || {
            let mut out = self
                .dev
                .stream()
                .alloc_zeros::<f32>(self.rows * self.cols)?;
            self.dequantize_device(&mut out)?;
            self.dev.download(&out)
        })
    }

    /// [`dequantize`](Self::dequantize) into a device buffer of `rows · cols`
    /// values; enqueued on the device's stream, not waited for.
    pub fn dequantize_device(&self, out: &mut CudaSlice<f32>) -> Result<()> {
        check_len("dequantize output", self.rows * self.cols, out.len())?;
        guard("CudaMatrix::dequantize_device", || {
            let k = &self.dev.inner.kernels;
            let stream = self.dev.stream();
            let (rows, cols) = (self.rows as i32, self.cols as i32);
            let cfg = grid(self.rows * (self.cols / BLOCK));
            match &self.store {
                Store::Int4 {
                    group,
                    qs,
                    params,
                    perm,
                } => {
                    let group = *group as i32;
                    let null = 0u64;
                    let mut b = stream.launch_builder(&k.int4_dequant);
                    b.arg(qs).arg(params);
                    match perm {
                        Some(p) => b.arg(p),
                        None => b.arg(&null),
                    };
                    b.arg(out).arg(&rows).arg(&cols).arg(&group);
                    // SAFETY: `tp_int4_dequant(qs, params, perm, out, rows,
                    // cols, group)`: `qs` holds rows·cols/2 code bytes,
                    // `params` 2·⌈cols/group⌉ floats per row, `perm` (or
                    // null) `cols` column indices below `cols`, `out`
                    // rows·cols floats (checked above); one thread per
                    // 32-column block, bounds-checked in the kernel.
                    unsafe { b.launch(cfg) }?;
                }
                Store::Ggml { ty, qs, d } => {
                    let f = if *ty == GgmlType::Q4_0 {
                        &k.q4_0_dequant
                    } else {
                        &k.q8_0_dequant
                    };
                    let mut b = stream.launch_builder(f);
                    b.arg(qs).arg(d).arg(out).arg(&rows).arg(&cols);
                    // SAFETY: `tp_q4_0_dequant`/`tp_q8_0_dequant(qs, d, out,
                    // rows, cols)`: `qs` holds 16 (Q4_0) or 32 (Q8_0) code
                    // bytes per block, `d` one scale per block, `out`
                    // rows·cols floats (checked above); bounds-checked in the
                    // kernel.
                    unsafe { b.launch(cfg) }?;
                }
            }
            Ok(())
        })
    }

    /// `y = W x`: uploads `x`, multiplies, waits and downloads `y`.
    pub fn gemv(&self, x: &[f32]) -> Result<Vec<f32>> {
        check_len("x", self.cols, x.len())?;
        let xd = self.dev.upload(x)?;
        let mut yd = self.dev.zeros(self.rows)?;
        self.gemv_device(&xd, &mut yd)?;
        self.dev.download(&yd)
    }

    /// `y = W x` on device buffers (`x` of `cols`, `y` of `rows` values),
    /// enqueued on the device's stream and not waited for: the call to time.
    pub fn gemv_device(&self, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        check_len("x", self.cols, x.len())?;
        check_len("y", self.rows, y.len())?;
        guard("CudaMatrix::gemv_device", || {
            let k = &self.dev.inner.kernels;
            let stream = self.dev.stream();
            let (rows, cols) = (self.rows as i32, self.cols as i32);
            // x staged in shared memory, 36 floats per 32 columns, unless
            // the row is too wide: then read from global memory.
            let smem = self.cols / BLOCK * XPAD * 4;
            let shared = smem <= k.smem_limit;
            let launch = |per_warp: u32| LaunchConfig {
                shared_mem_bytes: if shared { smem as u32 } else { 0 },
                ..grid(self.rows.div_ceil(per_warp as usize) * 32)
            };
            match &self.store {
                Store::Int4 {
                    group,
                    qs,
                    params,
                    perm,
                } => {
                    let group = *group as i32;
                    let null = 0u64;
                    let gathered;
                    // The shared-memory kernel gathers x itself (act-order);
                    // the global one reads it gathered by `tp_gather`.
                    let (x, perm) = match perm {
                        Some(p) if !shared => {
                            let mut xg = stream.alloc_zeros::<f32>(self.cols)?;
                            let mut b = stream.launch_builder(&k.gather);
                            b.arg(x).arg(p).arg(&mut xg).arg(&cols);
                            // SAFETY: `tp_gather(x, perm, out, n)`: `x` and
                            // `out` hold `cols` floats, `perm` `cols` indices
                            // below `cols`; bounds-checked in the kernel.
                            unsafe { b.launch(grid(self.cols)) }?;
                            gathered = xg;
                            (&gathered, None)
                        }
                        p => (x, p.as_ref()),
                    };
                    let f = if shared { &k.int4_gemv } else { &k.int4_gemv_g };
                    let mut b = stream.launch_builder(f);
                    b.arg(qs).arg(params);
                    match perm {
                        Some(p) => b.arg(p),
                        None => b.arg(&null),
                    };
                    b.arg(x).arg(y).arg(&rows).arg(&cols).arg(&group);
                    // SAFETY: `tp_int4_gemv_{s,g}(qs, params, perm, x, y,
                    // rows, cols, group)`: `qs` holds rows·cols/2 bytes
                    // (16-byte aligned rows: cols is a multiple of 32),
                    // `params` 2·⌈cols/group⌉ floats per row, `perm` (or
                    // null) `cols` indices below `cols`, `x` `cols` floats,
                    // `y` `rows` (checked above); the shared memory is the
                    // XPAD·cols/32 floats `_s` stages x in. The kernel clamps
                    // the rows it reads and writes only rows below `rows`.
                    unsafe { b.launch(launch(NIB_ROWS)) }?;
                }
                Store::Ggml { ty, qs, d } => {
                    let (f, per_warp) = match (*ty == GgmlType::Q4_0, shared) {
                        (true, true) => (&k.q4_0_gemv, NIB_ROWS),
                        (true, false) => (&k.q4_0_gemv_g, NIB_ROWS),
                        (false, true) => (&k.q8_0_gemv, Q8_ROWS),
                        (false, false) => (&k.q8_0_gemv_g, Q8_ROWS),
                    };
                    let mut b = stream.launch_builder(f);
                    b.arg(qs).arg(d).arg(x).arg(y).arg(&rows).arg(&cols);
                    // SAFETY: `tp_q4_0_gemv_{s,g}`/`tp_q8_0_gemv_{s,g}(qs, d,
                    // x, y, rows, cols)`: `qs` holds 16 or 32 code bytes per
                    // block (rows 16-byte aligned), `d` one scale per block,
                    // `x` `cols` floats, `y` `rows` (checked above), shared
                    // memory as above; rows clamped and bounds-checked in the
                    // kernel.
                    unsafe { b.launch(launch(per_warp)) }?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split layout the kernels read holds the GGUF blocks' bytes: the
    /// codes of block `i` at `i · code_bytes`, its scale at `d[i]`.
    #[test]
    fn split_blocks_keeps_every_byte() {
        let (rows, cols) = (3, 96);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.71).sin()).collect();
        for (ty, code_bytes) in [(GgmlType::Q4_0, 16), (GgmlType::Q8_0, 32)] {
            let m = GgmlMatrix::quantize(ty, rows, cols, &w).expect("quantize");
            let bytes = m.to_bytes();
            let (qs, d) = split_blocks(&bytes, code_bytes);
            assert_eq!(d.len(), rows * cols / BLOCK);
            assert_eq!(qs.len(), d.len() * code_bytes);
            let mut back = Vec::new();
            for (q, d) in qs.chunks_exact(code_bytes).zip(&d) {
                back.extend_from_slice(&d.to_le_bytes());
                back.extend_from_slice(q);
            }
            assert_eq!(back, bytes, "{ty:?}");
            assert_eq!(qs.len() + 2 * d.len(), m.weight_bytes(), "{ty:?}");
        }
    }
}
