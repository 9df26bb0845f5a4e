//! Bit-exact comparison of the small-float formats with `ml_dtypes`, and of
//! MXFP4/NVFP4 with the `gguf` package.
//!
//! `tests/data/ml_dtypes_formats.json` was written by
//! `scripts/golden/ml_dtypes_formats.py` (see its docstring for what it holds).

use ndarray::Array2;
use serde_json::Value;
use tensorpress_quant_core::formats::{mx, FloatFormat, MxFormat, MxRounding};
use tensorpress_quant_core::{QuantSpec, QuantizedTensor, Rtn, WeightQuantizer};

fn golden() -> Value {
    let text = include_str!("data/ml_dtypes_formats.json");
    serde_json::from_str(text).expect("golden file is valid JSON")
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex_f32(v: &Value) -> Vec<f32> {
    hex(v)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn format(name: &str) -> FloatFormat {
    match name {
        "float8_e4m3fn" => FloatFormat::E4M3,
        "float8_e5m2" => FloatFormat::E5M2,
        "float6_e2m3fn" => FloatFormat::E2M3,
        "float6_e3m2fn" => FloatFormat::E3M2,
        "float4_e2m1fn" => FloatFormat::E2M1,
        other => panic!("unknown format {other}"),
    }
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
fn every_code_decodes_as_ml_dtypes_does() {
    let g = golden();
    let formats = g["formats"].as_array().expect("formats");
    assert_eq!(formats.len(), 5);
    for f in formats {
        let name = f["name"].as_str().expect("name");
        let fmt = format(name);
        assert_eq!(u64::from(fmt.bits()), f["bits"].as_u64().expect("bits"));
        let want = hex_f32(&f["decoded"]);
        assert_eq!(want.len(), 1 << fmt.bits());
        let got: Vec<f32> = (0..want.len()).map(|c| fmt.decode(c as u8)).collect();
        assert_bits_eq(name, &got, &want);
    }
}

#[test]
fn every_input_encodes_as_ml_dtypes_does() {
    let g = golden();
    let inputs = hex_f32(&g["inputs"]);
    assert!(inputs.len() > 3000, "a few thousand inputs");
    assert!(inputs.iter().any(|x| x.is_nan()) && inputs.iter().any(|x| x.is_infinite()));
    for f in g["formats"].as_array().expect("formats") {
        let name = f["name"].as_str().expect("name");
        let fmt = format(name);
        let want = hex(&f["codes"]);
        assert_eq!(want.len(), inputs.len());
        let mut ties = 0;
        for (i, (&x, &w)) in inputs.iter().zip(&want).enumerate() {
            let got = fmt.encode(x);
            assert_eq!(
                got,
                w,
                "{name}: input {i} = {x:e} ({:#010x}): got {got:#04x}, want {w:#04x}",
                x.to_bits()
            );
            // The saturating encoder differs exactly where ml_dtypes leaves the
            // finite range for a non-NaN input.
            let sat = fmt.encode_saturating(x);
            if x.is_nan() || fmt.is_finite_code(w) {
                assert_eq!(sat, w, "{name}: saturating, input {x:e}");
            } else {
                let max = fmt.encode(fmt.max());
                let sign = if x < 0.0 { fmt.sign_mask() } else { 0 };
                assert_eq!(sat, max | sign, "{name}: saturating, input {x:e}");
            }
            // Count inputs exactly between two values: the golden covers ties.
            if x.is_finite() && x.abs() < fmt.max() {
                let v = fmt.decode(w);
                let other = 2.0 * f64::from(x) - f64::from(v);
                if other != f64::from(v) && fmt.decode(fmt.encode(other as f32)) as f64 == other {
                    ties += 1;
                }
            }
        }
        assert!(ties >= 10, "{name}: only {ties} ties among the inputs");
    }
}

#[test]
fn e8m0_scales_decode_as_ml_dtypes_does() {
    let g = golden();
    let want = hex_f32(&g["e8m0_decoded"]);
    let got: Vec<f32> = (0..=255u8).map(mx::e8m0_to_scale).collect();
    assert_bits_eq("float8_e8m0fnu", &got, &want);
}

/// Splits GGML MXFP4 blocks (1 exponent byte, 16 bytes of nibbles: element
/// `j` low, `j + 16` high) into exponents and codes.
fn mxfp4_unpack(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(bytes.len() % 17, 0);
    let mut es = Vec::new();
    let mut codes = Vec::new();
    for b in bytes.chunks_exact(17) {
        es.push(b[0]);
        let qs = &b[1..];
        codes.extend(qs.iter().map(|q| q & 0xf));
        codes.extend(qs.iter().map(|q| q >> 4));
    }
    (es, codes)
}

#[test]
fn mxfp4_matches_gguf_bit_for_bit() {
    let g = golden();
    let m = &g["mxfp4"];

    // Dequantization of quantized and random blocks.
    let bytes = hex(&m["dequant_blocks"]);
    let want = hex_f32(&m["dequantized"]);
    let (es, codes) = mxfp4_unpack(&bytes);
    let mut got = vec![0.0f32; codes.len()];
    for (b, (&e, c)) in es.iter().zip(codes.chunks_exact(32)).enumerate() {
        mx::dequantize_block(MxFormat::Fp4, e, c, &mut got[b * 32..(b + 1) * 32]);
    }
    assert_bits_eq("MXFP4 dequantize", &got, &want);

    // Quantization: llama.cpp's rounding reproduces the reference exactly.
    let inputs = hex_f32(&m["inputs"]);
    let (want_e, want_codes) = mxfp4_unpack(&hex(&m["quantized"]));
    let n_blocks = inputs.len() / 32;
    let mut ggml = vec![0u8; inputs.len()];
    let mut even = vec![0u8; inputs.len()];
    for b in 0..n_blocks {
        let x = &inputs[b * 32..(b + 1) * 32];
        let e = mx::quantize_block(
            MxFormat::Fp4,
            x,
            MxRounding::Ggml,
            &mut ggml[b * 32..][..32],
        );
        assert_eq!(e, want_e[b], "block {b}: shared exponent");
        let e2 = mx::quantize_block(
            MxFormat::Fp4,
            x,
            MxRounding::NearestEven,
            &mut even[b * 32..][..32],
        );
        assert_eq!(e2, e);
    }
    assert_eq!(ggml, want_codes, "MXFP4 codes with llama.cpp's rounding");

    // The OCP rounding, through Rtn, differs only on exact ties.
    let w = Array2::from_shape_vec((n_blocks, 32), inputs.clone()).expect("shape");
    let q = Rtn::new(QuantSpec::mxfp4())
        .quantize(w.view(), None)
        .expect("quantize");
    let scale_codes = q.scale_codes().expect("MX scale codes");
    assert_eq!(scale_codes.iter().copied().collect::<Vec<_>>(), want_e);
    assert_eq!(q.codes(), &even[..]);
    let differ = even.iter().zip(&want_codes).filter(|(a, b)| a != b).count();
    assert!(differ > 0, "the golden has ties");
    for (i, (&a, &b)) in even.iter().zip(&want_codes).enumerate() {
        if a != b {
            let s = mx::e8m0_to_scale(want_e[i / 32]);
            let (va, vb) = (FloatFormat::E2M1.decode(a), FloatFormat::E2M1.decode(b));
            let x = inputs[i] / s;
            assert_eq!((va - x).abs(), (vb - x).abs(), "element {i}: not a tie");
            assert!(
                vb.abs() < va.abs(),
                "element {i}: gguf rounds ties toward 0"
            );
        }
    }
}

#[test]
fn nvfp4_dequantizes_as_gguf_does() {
    let g = golden();
    let n = &g["nvfp4"];
    let bytes = hex(&n["blocks"]);
    let want = hex_f32(&n["dequantized"]);
    // GGML NVFP4: 64 elements per block, 4 E4M3 scales, then 4 × 8 bytes of
    // nibbles (sub-block j: low nibbles elements 0..8, high 8..16).
    let n_blocks = bytes.len() / 36;
    let rows = n_blocks;
    let mut codes = Vec::with_capacity(n_blocks * 64);
    let mut scales = Array2::<f32>::zeros((rows, 4));
    for (b, blk) in bytes.chunks_exact(36).enumerate() {
        for j in 0..4 {
            scales[[b, j]] = FloatFormat::E4M3.decode(blk[j]);
            let qs = &blk[4 + 8 * j..4 + 8 * (j + 1)];
            codes.extend(qs.iter().map(|q| q & 0xf));
            codes.extend(qs.iter().map(|q| q >> 4));
        }
    }
    let q = QuantizedTensor::new(
        QuantSpec::nvfp4(),
        rows,
        64,
        codes,
        scales,
        Array2::zeros((rows, 4)),
        None,
    )
    .expect("valid NVFP4 tensor");
    assert_eq!(q.global_scale(), Some(1.0));
    let got: Vec<f32> = q.dequantize().iter().copied().collect();
    assert_bits_eq("NVFP4 dequantize", &got, &want);
}
