//! The `generate` and `eval --kernels` commands on SmolLM2 (the test GGUF), and
//! `factorize`'s refusals of bad settings (one test binary for the CLI's
//! SmolLM2 tests keeps CI's link time down).

use std::process::{Command, Output};

use tensorpress::io::testdata;

fn tensorpress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tensorpress"))
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn generate_writes_tokens_and_text_and_is_reproducible() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "-m",
            model,
            "-p",
            "The capital of France is",
            "--json",
        ];
        if !extra.contains(&"-n") {
            args.extend_from_slice(&["-n", "6"]);
        }
        args.extend_from_slice(extra);
        json(&tensorpress(&args))
    };
    let greedy = run(&["--kernels", "off"]);
    let tokens = greedy["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6, "{greedy}");
    assert!(!greedy["text"].as_str().unwrap().is_empty());
    assert!(greedy["decode_tokens_per_second"].as_f64().unwrap() > 0.0);

    let sampled = run(&["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]);
    let again = run(&["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"]);
    assert_eq!(sampled["tokens"], again["tokens"], "same seed, same text");

    let chat = run(&["--chat", "-n", "4"]);
    assert!(chat["prompt_tokens"].as_u64().unwrap() > greedy["prompt_tokens"].as_u64().unwrap());
}

#[test]
fn generate_refuses_bad_settings_with_a_message() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let out = tensorpress(&["generate", "-m", model]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prompt"));
    let out = tensorpress(&["generate", "-m", model, "-p", "x", "--top-p", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"));
}

#[test]
fn eval_on_the_kernels_matches_the_dequantized_model() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let text = testdata::sotu_dir()
        .unwrap()
        .join("2019_donald_j_trump_r.txt");
    let ppl = |kernels: &str| {
        let v = json(&tensorpress(&[
            "eval",
            "-m",
            model.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "-c",
            "128",
            "--chunks",
            "2",
            "--kernels",
            kernels,
            "--json",
        ]));
        assert_eq!(v["kernels"], kernels);
        v["perplexity"].as_f64().unwrap()
    };
    let (off, f32_act, int8) = (ppl("off"), ppl("f32"), ppl("int8"));
    assert!((f32_act / off - 1.0).abs() < 1e-4, "{off} vs {f32_act}");
    // int8 activations move it a little (0.4 % on 8 windows of 512).
    assert!((int8 / off - 1.0).abs() < 0.02, "{off} vs {int8}");
}

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

#[test]
fn eval_refuses_bad_kv_cache_specs_with_a_message() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    for (spec, says) in [
        ("kivi-3", "2, 4 or 8 bits"),
        ("kivi-2-x5", "unknown part"),
        ("lru", "expected f32, f16, int8, fp8"),
        ("h2o", "pPERCENT or nTOKENS"),
        ("h2o-x", "give the budget first"),
        ("h2o-p150", "attention share in (0, 1]"),
        ("h2o-m0", "attention share in (0, 1]"),
        ("h2o-d50-f90-c60", "attention share in (0, 1]"),
        ("h2o-p50-f10", "after a dPERCENT budget"),
        ("snapkv-p50-k4", "must be odd"),
        ("gear-3", "2, 4 or 8 bits"),
        ("zipcache-2-4", "salient tokens get the higher precision"),
        ("zipcache-4-2-s150", "salient share is in [0, 1]"),
        ("zipcache-4", "high and low bits"),
    ] {
        let e = stderr_of(&["eval", "-m", model, "-f", model, "--kv-cache", spec]);
        assert!(e.contains(says), "{spec}: {e}");
    }
    // A group that does not divide SmolLM2's head dimension (64) fails when
    // the first block's cache is built, before any window is scored.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "The State of the Union is strong. ".repeat(40)).unwrap();
    let e = stderr_of(&[
        "eval",
        "-m",
        model,
        "-f",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--chunks",
        "1",
        "--kv-cache",
        "kivi-2-g48-r96",
    ]);
    assert!(e.contains("must divide the head dimension 64"), "{e}");
    // Static FP8 scales are calibrated on a text the user names.
    let e = stderr_of(&[
        "eval",
        "-m",
        model,
        "-f",
        text.to_str().unwrap(),
        "-c",
        "64",
        "--kv-cache",
        "fp8-static",
    ]);
    assert!(e.contains("--kv-calib"), "{e}");
}

#[test]
fn compress_declares_calibrated_fp8_kv_cache_scales_that_eval_uses() {
    let model = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let model = model.to_str().unwrap();
    let text = testdata::sotu_text(2017..=2017).expect("test data: run scripts/fetch-testdata.sh");
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, &text).unwrap();
    let calib = calib.to_str().unwrap();
    // Only compressed-tensors declares KV-cache scales.
    let gptq = dir.path().join("gptq");
    let e = stderr_of(&[
        "compress",
        "-m",
        model,
        "--scheme",
        "rtn-w4-g64",
        "--format",
        "gptq",
        "--kv-cache-fp8",
        "--kv-calib",
        calib,
        "-o",
        gptq.to_str().unwrap(),
    ]);
    assert!(e.contains("use --format compressed-tensors"), "{e}");
    assert!(!gptq.exists());

    let out = dir.path().join("ct");
    let run = tensorpress(&[
        "compress",
        "-m",
        model,
        "--scheme",
        "rtn-w4-g64",
        "--kv-cache-fp8",
        "--kv-calib",
        calib,
        "--calib-len",
        "64",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let scheme = &config["quantization_config"]["kv_cache_scheme"];
    assert_eq!(scheme["type"], "float", "{scheme}");
    assert_eq!(scheme["strategy"], "tensor", "{scheme}");
    let ckpt = tensorpress::io::import::QuantizedCheckpoint::open(&out).unwrap();
    let scales = ckpt.kv_cache_scales();
    assert_eq!(scales.len(), 30);
    // Keys after RoPE reach magnitudes of a few to tens, values less: scales
    // are amax / 448, positive and well under 1.
    for (module, &(k, v)) in scales {
        assert!(
            k > 1e-4 && k < 1.0 && v > 1e-5 && v < 1.0,
            "{module}: {k} {v}"
        );
    }
    // eval takes the checkpoint's scales without --kv-calib.
    let eval = json(&tensorpress(&[
        "eval",
        "-m",
        out.to_str().unwrap(),
        "-f",
        calib,
        "-c",
        "64",
        "--chunks",
        "1",
        "--kv-cache",
        "fp8-static",
        "--json",
    ]));
    let ppl = eval["perplexity"].as_f64().unwrap();
    assert!(ppl.is_finite() && ppl > 1.0 && ppl < 200.0, "{eval}");
    assert_eq!(eval["kv_cache"], "fp8-static");
}
