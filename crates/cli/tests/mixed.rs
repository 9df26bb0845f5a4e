//! `tensorpress compress --target-bpw` on SmolLM2 (the test GGUF), with RTN
//! candidates and a small calibration so it runs in CI: the plan, the report,
//! the checkpoint with one config group per scheme, and the errors. (GPTQ
//! candidates go through the same path; the facade's tests/it/mixed.rs
//! profiles them.)

use std::process::{Command, Output};

use tensorpress::compress::Recipe;
use tensorpress::io::testdata;

fn tensorpress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tensorpress"))
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn target_bpw_writes_a_plan_a_report_and_a_mixed_checkpoint() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, testdata::sotu_text(1990..=1991).unwrap()).unwrap();
    let plan = dir.path().join("plan.toml");
    let report = dir.path().join("report");
    let out = dir.path().join("out");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (calib_s, plan_s, report_s, out_s) = (p(&calib), p(&plan), p(&report), p(&out));
    let args = [
        "compress",
        "-m",
        model,
        "--target-bpw",
        "3.6",
        "--candidates",
        "rtn-w3-g64,rtn-w4-g64",
        "--calib",
        &calib_s,
        "--calib-windows",
        "2",
        "--calib-len",
        "64",
        "--fisher-windows",
        "1",
        "--evopress",
        "1",
        "--plan-out",
        &plan_s,
        "--report",
        &report_s,
        "-o",
        &out_s,
    ];
    let run = tensorpress(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");

    // The quantized layers average at most the target.
    let bits: f64 = stdout
        .split(" bits per weight in them")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bits in {stdout}"));
    assert!(bits <= 3.6 && bits > 3.3, "{bits}: {stdout}");

    // The plan reruns as a recipe, with both candidates in it.
    let recipe_text = std::fs::read_to_string(&plan).unwrap();
    assert!(recipe_text.contains("[[override]]"), "{recipe_text}");
    let recipe = Recipe::from_file(&plan).unwrap();
    assert_eq!(recipe.windows, 2);
    assert_eq!(recipe.options.overrides.len(), 1);

    let svg = std::fs::read_to_string(report.join("sensitivity.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let table = std::fs::read_to_string(report.join("sensitivity.md")).unwrap();
    assert!(table.contains("model.layers.29.mlp.down_proj"));

    // compressed-tensors: one config group per scheme used.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let groups = config["quantization_config"]["config_groups"]
        .as_object()
        .unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let mut bits: Vec<u64> = groups
        .values()
        .map(|g| g["weights"]["num_bits"].as_u64().unwrap())
        .collect();
    bits.sort();
    assert_eq!(bits, [3, 4]);
}

#[test]
fn target_bpw_refuses_what_it_cannot_do() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, testdata::sotu_text(1990..=1990).unwrap()).unwrap();
    let calib = calib.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let fails = |extra: &[&str]| {
        let mut args = vec!["compress", "-m", model, "-o", out];
        args.extend_from_slice(extra);
        let run = tensorpress(&args);
        assert!(!run.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&run.stderr).to_string()
    };
    // No calibration text.
    assert!(fails(&["--target-bpw", "3.5"]).contains("--calib"));
    // (An infeasible budget is refused after profiling: tests/it/mixed.rs in the facade.)
    // An unknown measure.
    let e = fails(&[
        "--target-bpw",
        "3.5",
        "--calib",
        calib,
        "--measure",
        "vibes",
    ]);
    assert!(e.contains("fisher-output"), "{e}");
    // --target-bpw does not combine with --scheme.
    assert!(!fails(&["--target-bpw", "3.5", "--scheme", "gptq-w4-g128"]).is_empty());
}
