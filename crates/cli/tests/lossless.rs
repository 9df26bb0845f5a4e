//! `compress --lossless` on MiniLM: the `.tpz` folder is smaller and `eval`
//! reads it to bit-identical embeddings.

use std::path::Path;
use std::process::{Command, Output};

use tensorpress::io::testdata;

fn tensorpress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tensorpress"))
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("the binary runs")
}

fn success(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn embeddings(model: &Path) -> Vec<Vec<f32>> {
    let out = tensorpress(&[
        "eval",
        "-m",
        model.to_str().unwrap(),
        "--sentence",
        "The State of the Union is strong.",
        "--sentence",
        "A whale surfaced beside the ship.",
        "--json",
    ]);
    success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    serde_json::from_value(v["embeddings"].clone()).expect("embeddings: arrays of numbers")
}

#[test]
fn lossless_folder_is_smaller_and_embeds_identically() {
    let model = testdata::minilm_dir().expect("test data: run scripts/fetch-testdata.sh");
    let tmp = tempfile::tempdir().unwrap();
    let packed = tmp.path().join("minilm-tpz");
    let out = tensorpress(&[
        "compress",
        "--lossless",
        "-m",
        model.to_str().unwrap(),
        "-o",
        packed.to_str().unwrap(),
    ]);
    success(&out);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("ratio"), "{report}");

    let original = std::fs::metadata(model.join("model.safetensors"))
        .unwrap()
        .len();
    let tpz = std::fs::metadata(packed.join("model.tpz")).unwrap().len();
    assert!(
        (tpz as f64) < 0.9 * original as f64,
        "model.tpz {tpz} bytes vs model.safetensors {original}"
    );
    assert!(!packed.join("model.safetensors").exists());
    for f in ["config.json", "tokenizer.json", "1_Pooling/config.json"] {
        assert!(packed.join(f).is_file(), "{f} was not copied");
    }

    let a = embeddings(&model);
    let b = embeddings(&packed);
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].len(), 384);
    // The codec is lossless: every weight bit, hence every output bit, agrees.
    let bits = |e: &[Vec<f32>]| -> Vec<u32> { e.iter().flatten().map(|x| x.to_bits()).collect() };
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn lossless_refuses_a_non_empty_out_and_a_sharded_or_missing_checkpoint() {
    let model = testdata::minilm_dir().expect("test data: run scripts/fetch-testdata.sh");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "x").unwrap();
    let out = tensorpress(&[
        "compress",
        "--lossless",
        "-m",
        model.to_str().unwrap(),
        "-o",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert!(!tmp.path().join("model.tpz").exists());

    let sharded = tempfile::tempdir().unwrap();
    std::fs::write(sharded.path().join("model.safetensors.index.json"), "{}").unwrap();
    let out = tensorpress(&[
        "compress",
        "--lossless",
        "-m",
        sharded.path().to_str().unwrap(),
        "-o",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sharded"), "{err}");

    let out = tensorpress(&[
        "compress",
        "--lossless",
        "--scheme",
        "rtn-w8-ch",
        "-m",
        model.to_str().unwrap(),
        "-o",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "--lossless with --scheme is refused");
}
