//! The CUDA kernels against the CPU kernels of `tensorpress-quant-core`:
//! dequantization bit for bit against the scalar reference, products within
//! float summation error of the CPU product, over several shapes up to
//! 11008 × 4096. Without a GPU the device tests print why and pass; the
//! no-driver test checks the error instead.

use tensorpress_cuda::{CudaDevice, CudaError, CudaFormat, CudaMatrix};
use tensorpress_quant_core::ggml::GgmlType;
use tensorpress_quant_core::kernels::{GgmlMatrix, Int4Matrix, Isa, QuantMatrix};

/// xorshift64*: reproducible test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whether `TENSORPRESS_CUDA_REQUIRED` is set (`scripts/cuda_check.sh` on a
/// GPU machine): then a missing GPU fails the tests instead of skipping them.
fn required() -> bool {
    std::env::var_os("TENSORPRESS_CUDA_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The device, or `None` (with the reason printed) when this machine has no GPU.
fn device() -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(dev) => {
            eprintln!("CUDA device: {:?}", dev.info());
            Some(dev)
        }
        Err(e) if e.is_not_available() && !required() => {
            eprintln!("skipping: no CUDA device here ({e})");
            None
        }
        Err(e) => panic!("CUDA device 0 failed: {e}"),
    }
}

#[test]
fn without_a_driver_new_is_not_available() {
    if CudaDevice::libraries_present() || required() {
        eprintln!("skipping: the CUDA libraries load here, or a GPU is required");
        return;
    }
    let err = CudaDevice::new(0).expect_err("no CUDA libraries, yet a device opened");
    assert!(
        matches!(err, CudaError::NotAvailable { .. }),
        "expected NotAvailable, got {err:?}"
    );
    assert!(err.is_not_available());
    assert!(err.to_string().contains("not available"), "{err}");
    let err = CudaDevice::count().expect_err("no CUDA libraries, yet a device count");
    assert!(matches!(err, CudaError::NotAvailable { .. }), "{err:?}");
}

#[test]
fn nvrtc_compiles_the_kernels() {
    // NVRTC alone (no driver needed): the source compiles for Ampere and
    // Hopper, and every kernel the crate loads is in the PTX.
    for arch in [80, 90] {
        match tensorpress_cuda::compile_ptx(arch) {
            Ok(ptx) => {
                for name in [
                    "tp_int4_gemv_s",
                    "tp_q4_0_gemv_s",
                    "tp_q8_0_gemv_s",
                    "tp_int4_gemv_g",
                    "tp_q4_0_gemv_g",
                    "tp_q8_0_gemv_g",
                    "tp_gather",
                    "tp_int4_dequant",
                    "tp_q4_0_dequant",
                    "tp_q8_0_dequant",
                    "tp_spin",
                ] {
                    assert!(
                        ptx.contains(&format!(".entry {name}(")),
                        "{name} missing from the PTX"
                    );
                }
            }
            Err(e) if e.is_not_available() && !required() => {
                eprintln!("skipping: no NVRTC here ({e})");
                return;
            }
            Err(e) => panic!("the kernels do not compile: {e}"),
        }
    }
}

/// A random int4 matrix; with `act_order`, a random column permutation as
/// GPTQ's `g_idx` makes.
fn int4(rng: &mut Rng, rows: usize, cols: usize, group: usize, act_order: bool) -> Int4Matrix {
    let groups = cols.div_ceil(group);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (rng.next() % 16) as u8).collect();
    let scales: Vec<f32> = (0..rows * groups)
        .map(|_| 0.01 + 0.05 * rng.f32().abs())
        .collect();
    let zeros: Vec<f32> = (0..rows * groups).map(|_| 7.5 + 4.0 * rng.f32()).collect();
    let g_idx = act_order.then(|| {
        let mut order: Vec<usize> = (0..cols).collect();
        for i in (1..cols).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut g_idx = vec![0u32; cols];
        for (j, &c) in order.iter().enumerate() {
            g_idx[c] = (j / group) as u32;
        }
        g_idx
    });
    Int4Matrix::from_codes(rows, cols, group, &codes, &scales, &zeros, g_idx.as_deref())
        .expect("valid int4 matrix")
}

fn ggml(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> GgmlMatrix {
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
    GgmlMatrix::quantize(ty, rows, cols, &w).expect("quantize")
}

/// Checks `gpu` against `cpu`: dequantization equal to the scalar reference,
/// the product within summation error of the CPU product.
fn check(dev: &CudaDevice, cpu: &dyn QuantMatrix, gpu: &CudaMatrix, rng: &mut Rng) {
    let (rows, cols) = (cpu.rows(), cpu.cols());
    let what = format!("{:?} [{rows}, {cols}]", gpu.format());
    assert_eq!((gpu.rows(), gpu.cols()), (rows, cols));
    assert_eq!(gpu.weight_bytes(), cpu.weight_bytes(), "{what}");

    let mut want = vec![0.0f32; rows * cols];
    cpu.dequantize_rows_with(Isa::Scalar, 0, &mut want)
        .expect("cpu dequantize");
    let got = gpu.dequantize().expect("gpu dequantize");
    let first_diff = got
        .iter()
        .zip(&want)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(
        first_diff.is_none(),
        "{what}: dequantized value {:?} differs: {} vs {}",
        first_diff,
        got[first_diff.unwrap_or(0)],
        want[first_diff.unwrap_or(0)]
    );

    let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
    let mut y_cpu = vec![0.0f32; rows];
    cpu.gemv(&x, &mut y_cpu).expect("cpu gemv");
    let y_gpu = gpu.gemv(&x).expect("gpu gemv");
    let x_abs: f32 = x.iter().map(|v| v.abs()).sum();
    let mut worst = 0.0f64;
    for r in 0..rows {
        let w = &want[r * cols..(r + 1) * cols];
        let mag: f32 = w.iter().zip(&x).map(|(w, x)| (w * x).abs()).sum();
        let wmax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Summation error of two f32 orders over `cols` terms, with room for
        // the per-group `min · Σx` split of the GPU kernels.
        let tol = 2e-5 * (mag + wmax * x_abs) + 1e-6;
        let err = (y_gpu[r] - y_cpu[r]).abs();
        worst = worst.max((err / tol) as f64);
        assert!(
            err <= tol,
            "{what}: row {r}: gpu {} vs cpu {} (tolerance {tol})",
            y_gpu[r],
            y_cpu[r]
        );
    }
    eprintln!("{what}: dequantize exact, gemv error at most {worst:.3} of tolerance");

    // Device-buffer variant and shape checks.
    let xd = dev.upload(&x).expect("upload");
    let mut yd = dev.zeros(rows).expect("alloc");
    gpu.gemv_device(&xd, &mut yd).expect("gemv_device");
    assert_eq!(dev.download(&yd).expect("download"), y_gpu, "{what}");
    let short = dev.zeros(cols - 1).expect("alloc");
    assert!(matches!(
        gpu.gemv_device(&short, &mut yd),
        Err(CudaError::Shape { what: "x", .. })
    ));
    assert!(matches!(
        gpu.gemv(&x[1..]),
        Err(CudaError::Shape { what: "x", .. })
    ));
}

/// Shapes swept: tails of the 4-row (2-row) warps, a narrower last group
/// (576 = 4·128 + 64), the acceptance shape, and rows too wide for the
/// activations to be staged in shared memory (22528 columns: 99 KB), which
/// take the global-memory kernels (and the gather kernel, with act-order).
const SHAPES: &[(usize, usize)] = &[
    (1, 32),
    (7, 256),
    (100, 576),
    (257, 1024),
    (5, 22528),
    (4096, 4096),
    (11008, 4096),
];

#[test]
fn int4_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for &(rows, cols) in SHAPES {
        // Group 128 on 576 columns leaves a last group of 64 (SmolLM2).
        for group in [32, 64, 128].into_iter().filter(|&g| g <= cols) {
            for act_order in [false, true] {
                // Act-order only where it is cheap to check twice.
                if act_order && rows * cols > 1 << 22 && group != 128 {
                    continue;
                }
                let cpu = int4(&mut rng, rows, cols, group, act_order);
                assert_eq!(cpu.input_order().is_some(), act_order && cols > 32);
                let gpu = CudaMatrix::from_int4(&dev, &cpu).expect("upload");
                assert_eq!(gpu.format(), CudaFormat::Int4 { group });
                check(&dev, &cpu, &gpu, &mut rng);
            }
        }
    }
}

#[test]
fn q4_0_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(0x0bad_cafe_f00d_0001);
    for &(rows, cols) in SHAPES {
        let cpu = ggml(&mut rng, GgmlType::Q4_0, rows, cols);
        let gpu = CudaMatrix::from_ggml(&dev, &cpu).expect("upload");
        assert_eq!(gpu.format(), CudaFormat::Q4_0);
        check(&dev, &cpu, &gpu, &mut rng);
    }
}

#[test]
fn q8_0_matches_cpu() {
    let Some(dev) = device() else { return };
    let mut rng = Rng(0x0bad_cafe_f00d_0002);
    for &(rows, cols) in SHAPES {
        let cpu = ggml(&mut rng, GgmlType::Q8_0, rows, cols);
        let gpu = CudaMatrix::from_ggml(&dev, &cpu).expect("upload");
        assert_eq!(gpu.format(), CudaFormat::Q8_0);
        check(&dev, &cpu, &gpu, &mut rng);
    }
}

#[test]
fn device_reports_bandwidth() {
    let Some(dev) = device() else { return };
    let info = dev.info();
    assert!(
        info.memory_bytes > 0 && info.multiprocessors > 0,
        "{info:?}"
    );
    if let Some(bw) = info.peak_bandwidth() {
        assert!(bw > 1e10 && bw < 1e14, "implausible bandwidth {bw}");
    }
}
