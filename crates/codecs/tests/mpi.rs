//! The gradient exchange over real MPI processes (feature `mpi`).
//!
//! The test relaunches its own binary under `mpirun` (OpenMPI; run as root in
//! CI, hence `--allow-run-as-root`, and `--oversubscribe` for more ranks than
//! cores). In the child processes every rank builds every rank's gradients
//! from one seed, so it can run the in-process [`exchange`] as the reference
//! and compare it with what [`exchange_over`] returned through MPI.
#![cfg(feature = "mpi")]

use std::process::Command;

use ndarray::ArrayD;
use tensorpress_codecs::grad::{
    exchange, exchange_over, Communicator, Dgc, DgcConfig, EfSignSgd, ErrorFeedback,
    GradCompressor, Identity, Mpi, PowerSgd, PowerSgdConfig, Qsgd, QsgdConfig, ScaledSign, TopK,
};
use tensorpress_codecs::Error;
use tensorpress_tensor::SeededRng;

const CHILD: &str = "TENSORPRESS_MPI_CHILD";

/// Runs `test` of this binary on `ranks` MPI processes; panics unless all succeed.
fn mpirun(test: &str, ranks: usize) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("mpirun not found: install OpenMPI (Debian: openmpi-bin libopenmpi-dev)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mpirun -np {ranks} {test} failed:\n{text}"
    );
    // Every rank ran the test body (the harness prints one line per process).
    let passed = text.matches("test result: ok. 1 passed").count();
    assert_eq!(passed, ranks, "{text}");
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

type Make = fn(usize) -> Box<dyn GradCompressor>;

fn methods() -> Vec<(&'static str, bool, Make)> {
    // (name, all-reduced, constructor for a rank)
    vec![
        ("identity", true, |_| Box::new(Identity)),
        ("powersgd", true, |_| {
            Box::new(PowerSgd::new(PowerSgdConfig::default()).unwrap())
        }),
        ("topk+ef", false, |_| {
            Box::new(ErrorFeedback::new(TopK::new(0.05).unwrap()))
        }),
        ("dgc", false, |_| {
            Box::new(Dgc::new(DgcConfig::default().with_sparsity(0.99)).unwrap())
        }),
        ("qsgd", false, |r| {
            Box::new(
                Qsgd::new(QsgdConfig {
                    seed: r as u64,
                    ..QsgdConfig::default()
                })
                .unwrap(),
            )
        }),
        ("ef-sign", false, |_| Box::new(EfSignSgd::new(ScaledSign))),
    ]
}

fn exchange_body() {
    let mpi = Mpi::init().unwrap();
    let (rank, size) = (mpi.rank(), mpi.size());
    let shapes: [&[usize]; 2] = [&[48, 40], &[300]];
    for (name, reduced, make) in methods() {
        for shape in shapes {
            let mut rng = SeededRng::new(5);
            let mut sim: Vec<Box<dyn GradCompressor>> = (0..size).map(make).collect();
            let mut mine = make(rank);
            for step in 0..3 {
                let grads: Vec<ArrayD<f32>> = (0..size)
                    .map(|_| rng.array_normal(shape.to_vec()).into_dyn())
                    .collect();
                let views: Vec<_> = grads.iter().map(|g| g.view()).collect();
                let want = exchange(&mut sim, &views).unwrap();
                let got = exchange_over(&mpi, &mut mine, grads[rank].view()).unwrap();
                let what = format!("{name} {shape:?} step {step} rank {rank}/{size}");
                assert_eq!(got.bytes_sent, want.bytes_sent[rank], "{what}");
                assert_eq!(got.rounds, want.rounds, "{what}");
                if reduced {
                    // MPI may sum in another order: equal up to rounding.
                    let scale = want.mean.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let diff = (&got.mean - &want.mean)
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    assert!(diff <= 1e-5 * scale, "{what}: {diff} vs scale {scale}");
                } else {
                    assert_eq!(got.mean, want.mean, "{what}");
                }
                // Every rank ends with the same bits.
                let bytes: Vec<u8> = got.mean.iter().flat_map(|v| v.to_le_bytes()).collect();
                let all = mpi.all_gather_bytes(&bytes).unwrap();
                assert!(all.iter().all(|b| *b == bytes), "{what}: ranks differ");
            }
        }
    }
    // Ranks that disagree get a typed error on every rank instead of a hang.
    let g = ArrayD::<f32>::ones(vec![16]);
    let mut c: Box<dyn GradCompressor> = if rank == 0 {
        Box::new(Identity)
    } else {
        Box::new(TopK::new(0.25).unwrap())
    };
    let err = exchange_over(&mpi, &mut c, g.view()).unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
    // Sums of f64 (the calibration statistics).
    let mut v = vec![rank as f64, 0.5];
    mpi.all_reduce_sum_f64(&mut v).unwrap();
    assert_eq!(v, vec![(size * (size - 1) / 2) as f64, 0.5 * size as f64]);
}

#[test]
fn exchange_over_mpi_matches_the_in_process_exchange() {
    if is_child() {
        exchange_body();
    } else {
        mpirun("exchange_over_mpi_matches_the_in_process_exchange", 2);
        mpirun("exchange_over_mpi_matches_the_in_process_exchange", 4);
    }
}
