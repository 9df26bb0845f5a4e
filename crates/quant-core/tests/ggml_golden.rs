//! Bit-exact comparison with the `gguf` Python package's numpy codecs.
//!
//! `tests/data/gguf_codecs.json` was written by `scripts/golden/gguf_codecs.py`:
//! small deterministic inputs quantized and dequantized by `gguf.quants`, and
//! real blocks of SmolLM2-135M-Instruct with their reference dequantization.

use serde_json::Value;
use tensorpress_quant_core::ggml::{self, GgmlType};

fn golden() -> Value {
    let text = include_str!("data/gguf_codecs.json");
    serde_json::from_str(text).expect("golden file is valid JSON")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex_f32(s: &str) -> Vec<f32> {
    hex(s)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ty(v: &Value) -> GgmlType {
    let name = v["type"].as_str().expect("type name");
    GgmlType::from_name(name).expect("known type")
}

fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: got {g:e} ({:#010x}), want {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn codecs_match_gguf_py_bit_for_bit() {
    let g = golden();
    let cases = g["cases"].as_array().expect("cases");
    assert_eq!(
        cases.len(),
        11,
        "5 block types + 3 float types on blocks, 3 on floats"
    );
    for case in cases {
        let ty = ty(case);
        let input_name = case["input"].as_str().expect("input name");
        let what = format!("{ty} on {input_name}");
        let input = hex_f32(g["inputs"][input_name].as_str().expect("input"));
        let want_q = hex(case["quantized"].as_str().expect("quantized"));
        let want_dq = hex_f32(case["dequantized"].as_str().expect("dequantized"));

        let mut q = Vec::new();
        ggml::quantize(ty, &input, &mut q).expect("quantize");
        if let Some(i) = q.iter().zip(&want_q).position(|(a, b)| a != b) {
            let block = i / ty.type_size();
            panic!(
                "{what}: quantized byte {i} (block {block}) differs: got {:#04x}, want {:#04x}",
                q[i], want_q[i]
            );
        }
        assert_eq!(q.len(), want_q.len(), "{what}: quantized length");

        let mut dq = vec![0.0f32; input.len()];
        ggml::dequantize(ty, &want_q, &mut dq).expect("dequantize");
        assert_bits_eq(&what, &dq, &want_dq);
    }
}

#[test]
fn real_smollm2_blocks_match_gguf_py() {
    let g = golden();
    let real = g["real"].as_array().expect("real");
    let mut seen = Vec::new();
    for tensor in real {
        let ty = ty(tensor);
        seen.push(ty);
        let name = tensor["tensor"].as_str().expect("tensor name");
        for block in tensor["blocks"].as_array().expect("blocks") {
            let bytes = hex(block["bytes"].as_str().expect("bytes"));
            let want = hex_f32(block["dequantized"].as_str().expect("dequantized"));
            assert_eq!(bytes.len(), ty.type_size());
            let mut got = vec![f32::NAN; ty.block_size()];
            ggml::dequantize(ty, &bytes, &mut got).expect("dequantize");
            assert_bits_eq(&format!("{name} block {}", block["block"]), &got, &want);
            // Re-encoding reproduces the block up to the stored scale: decoding again is stable.
            let mut again = Vec::new();
            ggml::quantize(ty, &got, &mut again).expect("quantize");
            let mut got2 = vec![0.0f32; ty.block_size()];
            ggml::dequantize(ty, &again, &mut got2).expect("dequantize");
            let step = got.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 7.0;
            assert!(
                got.iter().zip(&got2).all(|(a, b)| (a - b).abs() <= step),
                "{name}: re-encoding drifted"
            );
        }
    }
    assert_eq!(seen, [GgmlType::Q4_1, GgmlType::Q8_0]);
}
