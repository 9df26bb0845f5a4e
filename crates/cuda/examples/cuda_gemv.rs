//! GEMV bandwidth on the GPU: int4 g128 (natural and act-order), Q4_0 and
//! Q8_0 at 4096 × 4096 and 11008 × 4096, timed with CUDA events, reported as
//! GB/s of weight bytes and as a share of the device's memory bandwidth
//! (theoretical, from its attributes, and measured by a device-to-device
//! copy). Each result is checked against the CPU kernels first.
//!
//! ```text
//! cargo run --release -p tensorpress-cuda --example cuda_gemv [-- --require 0.7]
//! ```
//!
//! `--require F` exits with status 1 unless int4 g128 at 11008 × 4096
//! reaches the fraction `F` of the theoretical bandwidth (the acceptance
//! check; of the measured copy bandwidth when the driver reports no memory
//! clock). Without a GPU it prints why and exits with status 2.
//!
//! Several copies of each matrix (more bytes than 4× the L2 cache) are
//! multiplied in turn, so the figures are memory bandwidth, not L2.

use std::process::ExitCode;

use tensorpress_cuda::{CudaDevice, CudaError, CudaMatrix};
use tensorpress_quant_core::ggml::GgmlType;
use tensorpress_quant_core::kernels::{GgmlMatrix, Int4Matrix, QuantMatrix};

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn int4(rng: &mut Rng, rows: usize, cols: usize, act_order: bool) -> Int4Matrix {
    let group = 128;
    let groups = cols.div_ceil(group);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (rng.next() % 16) as u8).collect();
    let scales: Vec<f32> = (0..rows * groups)
        .map(|_| 0.01 + 0.05 * rng.f32().abs())
        .collect();
    let zeros: Vec<f32> = (0..rows * groups).map(|_| 7.5 + 4.0 * rng.f32()).collect();
    let g_idx = act_order.then(|| {
        let mut order: Vec<usize> = (0..cols).collect();
        for i in (1..cols).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
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

/// A CPU matrix of one of the kinds the GPU takes.
enum Cpu {
    Int4(Int4Matrix),
    Ggml(GgmlMatrix),
}

impl Cpu {
    fn matrix(&self) -> &dyn QuantMatrix {
        match self {
            Cpu::Int4(m) => m,
            Cpu::Ggml(m) => m,
        }
    }

    fn upload(&self, dev: &CudaDevice) -> Result<CudaMatrix, CudaError> {
        match self {
            Cpu::Int4(m) => CudaMatrix::from_int4(dev, m),
            Cpu::Ggml(m) => CudaMatrix::from_ggml(dev, m),
        }
    }
}

/// One benchmark row: the largest error against the CPU (relative to the
/// row's `Σ|w x|`) and the seconds per product.
fn run(dev: &CudaDevice, m: &Cpu, rng: &mut Rng) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let cpu = m.matrix();
    let upload = || m.upload(dev);
    let (rows, cols) = (cpu.rows(), cpu.cols());
    let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
    let first = upload()?;
    let y = first.gemv(&x)?;
    let mut want = vec![0.0f32; rows];
    cpu.gemv(&x, &mut want)?;
    let w = cpu.dequantize()?;
    let mut err = 0.0f64;
    for r in 0..rows {
        let mag: f32 = w[r * cols..(r + 1) * cols]
            .iter()
            .zip(&x)
            .map(|(w, x)| (w * x).abs())
            .sum();
        err = err.max(((y[r] - want[r]).abs() / mag.max(1e-30)) as f64);
    }
    // Copies to stream more than 4× the L2 cache per round.
    let l2 = dev.info().l2_cache_bytes.max(64 << 20);
    let copies = (4 * l2).div_ceil(first.weight_bytes()).clamp(1, 64);
    let mut mats = vec![first];
    for _ in 1..copies {
        mats.push(upload()?);
    }
    let xd = dev.upload(&x)?;
    let mut yd = dev.zeros(rows)?;
    let reps = 50 * copies.max(4);
    let mut i = 0;
    let t = dev.time(reps, || {
        i += 1;
        mats[i % copies].gemv_device(&xd, &mut yd)
    })?;
    Ok((err, t))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let require = args
        .iter()
        .position(|a| a == "--require")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok());
    let dev = match CudaDevice::new(0) {
        Ok(dev) => dev,
        Err(e) if e.is_not_available() => {
            eprintln!("cuda_gemv: no CUDA GPU on this machine: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("cuda_gemv: CUDA is present but failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match bench(&dev, require) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cuda_gemv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(dev: &CudaDevice, require: Option<f64>) -> Result<bool, Box<dyn std::error::Error>> {
    let info = dev.info();
    println!(
        "device {}: {} (sm_{}{}, {} SMs, {:.1} GiB, L2 {} MiB, kernels as {})",
        info.ordinal,
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.memory_bytes as f64 / (1u64 << 30) as f64,
        info.l2_cache_bytes >> 20,
        info.kernel_target,
    );
    let peak = info.peak_bandwidth();
    match peak {
        Some(bw) => println!(
            "theoretical bandwidth: {:.0} GB/s ({} MHz memory clock × 2 × {}-bit bus)",
            bw / 1e9,
            info.memory_clock_khz / 1000,
            info.bus_width_bits
        ),
        None => println!("theoretical bandwidth: not reported by the driver"),
    }
    // A device-to-device copy of 1 GiB: read + write bytes per second.
    let n = 1usize << 28;
    let src = dev.zeros(n)?;
    let mut dst = dev.zeros(n)?;
    let stream = dev.stream().clone();
    let t_copy = dev.time(10, || Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    let copy_bw = 2.0 * 4.0 * n as f64 / t_copy;
    drop((src, dst));
    println!(
        "device-to-device copy: {:.0} GB/s{}",
        copy_bw / 1e9,
        peak.map(|p| format!(" ({:.0}% of theoretical)", 100.0 * copy_bw / p))
            .unwrap_or_default()
    );
    println!();
    println!(
        "{:<22} {:>12} {:>10} {:>9} {:>9} {:>8} {:>8} {:>10}",
        "format", "shape", "MB", "µs", "GB/s", "% peak", "% copy", "max rel err"
    );

    let mut rng = Rng(0x5eed_0000_0000_0001);
    let mut ok = true;
    let mut acceptance = None;
    for (rows, cols) in [(4096usize, 4096usize), (11008, 4096)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32()).collect();
        let cases: Vec<(&str, Cpu)> = vec![
            ("int4 g128", Cpu::Int4(int4(&mut rng, rows, cols, false))),
            (
                "int4 g128 act-order",
                Cpu::Int4(int4(&mut rng, rows, cols, true)),
            ),
            (
                "Q4_0",
                Cpu::Ggml(GgmlMatrix::quantize(GgmlType::Q4_0, rows, cols, &w)?),
            ),
            (
                "Q8_0",
                Cpu::Ggml(GgmlMatrix::quantize(GgmlType::Q8_0, rows, cols, &w)?),
            ),
        ];
        for (name, cpu) in &cases {
            let (err, t) = run(dev, cpu, &mut rng)?;
            let cpu = cpu.matrix();
            let bytes = cpu.weight_bytes() as f64;
            let bw = bytes / t;
            let frac = peak.map(|p| bw / p);
            let pass = err < 1e-4;
            ok &= pass;
            println!(
                "{:<22} {:>12} {:>10.2} {:>9.2} {:>9.0} {:>8} {:>7.0}% {:>10.2e}{}",
                name,
                format!("{rows}x{cols}"),
                bytes / 1e6,
                t * 1e6,
                bw / 1e9,
                frac.map(|f| format!("{:.0}%", 100.0 * f))
                    .unwrap_or_else(|| "-".into()),
                100.0 * bw / copy_bw,
                err,
                if pass { "" } else { "  MISMATCH" }
            );
            if *name == "int4 g128" && rows == 11008 {
                acceptance = Some(match frac {
                    Some(f) => (f, "theoretical bandwidth"),
                    None => (bw / copy_bw, "device-to-device copy bandwidth"),
                });
            }
        }
    }
    println!();
    if !ok {
        println!("FAIL: a GPU product differs from the CPU product");
    }
    match (require, acceptance) {
        (Some(want), Some((got, reference))) => {
            let pass = got >= want;
            println!(
                "acceptance: int4 g128 11008x4096 at {:.1}% of the {reference}, target {:.0}%: {}",
                100.0 * got,
                100.0 * want,
                if pass { "PASS" } else { "FAIL" }
            );
            ok &= pass;
        }
        (Some(_), None) => {
            println!("acceptance: int4 g128 11008x4096 was not measured");
            ok = false;
        }
        _ => {}
    }
    Ok(ok)
}
