//! Bit-exact comparison of the small-float formats with `ml_dtypes`.
//!
//! `tests/data/ml_dtypes_formats.json` was written by
//! `scripts/golden/ml_dtypes_formats.py` (see its docstring for what it holds).

use serde_json::Value;
use tensorpress_quant_core::formats::FloatFormat;

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
