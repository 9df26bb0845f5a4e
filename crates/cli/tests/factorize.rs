//! `tensorpress factorize`: bad settings are refused with a message before
//! any work (the SmolLM2 figures come from `examples/factorize_table.rs`).

use std::process::Command;

use tensorpress::io::testdata;

fn stderr_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tensorpress"))
        .args(args)
        .output()
        .expect("the binary runs");
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn factorize_refuses_bad_settings_with_a_message() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let base = ["factorize", "-m", model, "-o", out];
    let run = |extra: &[&str]| stderr_of(&[&base[..], extra].concat());

    let e = run(&["--method", "svd", "--reduction", "1.5"]);
    assert!(e.contains("in (0, 1)"), "{e}");
    let e = run(&["--method", "svd-llm", "--reduction", "0.2"]);
    assert!(e.contains("--calib"), "{e}");
    let e = run(&["--method", "pca", "--reduction", "0.2"]);
    assert!(e.contains("svd-llm"), "{e}");
    let e = run(&[
        "--method",
        "svd",
        "--reduction",
        "0.2",
        "--allocation",
        "greedy",
    ]);
    assert!(e.contains("uniform"), "{e}");
    // Nothing was written.
    assert!(!dir.path().join("out").exists());
    // A non-empty output folder is refused.
    std::fs::create_dir_all(dir.path().join("full")).unwrap();
    std::fs::write(dir.path().join("full/x"), b"x").unwrap();
    let full = dir.path().join("full");
    let e = stderr_of(&[
        "factorize",
        "-m",
        model,
        "-o",
        full.to_str().unwrap(),
        "--method",
        "svd",
        "--reduction",
        "0.2",
    ]);
    assert!(e.contains("not empty"), "{e}");
}
