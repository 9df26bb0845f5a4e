//! Bit-exact comparison of the k-quant and IQ4 codecs with llama.cpp.
//!
//! `tests/data/gguf_kquants.json` was written by `scripts/golden/gguf_kquants.py`:
//!
//! - decoding: random blocks decoded by the `gguf` package's numpy code
//!   (which the script checks against ggml's C decoders);
//! - encoding: synthetic rows encoded by ggml's `ggml_quantize_chunk` (from
//!   llama.cpp's `libggml-base.so`), with and without an importance vector;
//! - real rows: `ffn_down` rows of SmolLM2-135M as `llama-quantize --pure`
//!   encoded them, with and without `--imatrix`, and the importance vector it
//!   used (`in_sum2 / counts` of the imatrix file).
//!
//! To keep the file small, most encodings and decodings are stored as FNV-1a 64
//! hashes of each block's bytes; the `gaussian` synthetic row's encodings and
//! the first decoded random block of each type are stored in full, so that a
//! failure there shows the differing bytes.
//!
//! The ignored test `full_llama_cpp_crosscheck` runs the same comparison on every
//! `ffn_down` row of the model and 2048 more synthetic rows, from a folder the
//! script writes with `--full DIR`.

use serde_json::Value;
use tensorpress_quant_core::ggml::{self, GgmlType};

fn golden() -> Value {
    serde_json::from_str(include_str!("data/gguf_kquants.json")).expect("golden file is valid JSON")
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn hex_f32(s: &str) -> Vec<f32> {
    f32s(&hex(s))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string {key}"))
}

fn ty(v: &Value) -> GgmlType {
    GgmlType::from_name(str_of(v, "type")).expect("known type")
}

/// FNV-1a 64 of `bytes`, as the script computes it.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// FNV-1a 64 of the little-endian bytes of `values`.
fn fnv1a64_f32(values: &[f32]) -> String {
    fnv1a64(values.iter().flat_map(|v| v.to_le_bytes()))
}

/// Checks an encoding against `entry["bytes"]` in full or, where the golden
/// only has them, against `entry["enc_fnv"]`, the hashes of its blocks.
fn check_encoding(what: &str, ty: GgmlType, got: &[u8], entry: &Value) {
    if let Some(want) = entry["bytes"].as_str() {
        return assert_bytes_eq(what, ty, got, &hex(want));
    }
    let hashes = entry["enc_fnv"].as_array().expect("bytes or enc_fnv");
    assert_eq!(got.len(), hashes.len() * ty.type_size(), "{what}: length");
    for (b, (block, want)) in got.chunks(ty.type_size()).zip(hashes).enumerate() {
        assert_eq!(
            fnv1a64(block.iter().copied()),
            want.as_str().expect("hash"),
            "{what}: encoded block {b} differs: got {block:02x?}"
        );
    }
}

fn assert_bytes_eq(what: &str, ty: GgmlType, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let size = ty.type_size();
        panic!(
            "{what}: byte {i} (block {}, offset {}) differs: got {:#04x}, want {:#04x}\n got block {:02x?}\nwant block {:02x?}",
            i / size,
            i % size,
            got[i],
            want[i],
            &got[i / size * size..(i / size + 1) * size],
            &want[i / size * size..(i / size + 1) * size],
        );
    }
}

/// Decodes `bytes` and checks every block's hash in `entry["fnv"]` and, where
/// the golden has it, the first block bit for bit.
fn check_decode(what: &str, ty: GgmlType, bytes: &[u8], entry: &Value) {
    let mut out = vec![f32::NAN; ty.elements_in(bytes.len()).expect("whole blocks")];
    ggml::dequantize(ty, bytes, &mut out).expect("dequantize");
    let first = entry["first"].as_str().map(hex_f32).unwrap_or_default();
    for (i, (g, w)) in out.iter().zip(&first).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: got {g:e}, want {w:e}"
        );
    }
    let hashes = entry["fnv"].as_array().expect("fnv");
    assert_eq!(hashes.len(), bytes.len() / ty.type_size(), "{what}: blocks");
    for (b, (block, want)) in out.chunks(ty.block_size()).zip(hashes).enumerate() {
        assert_eq!(
            fnv1a64_f32(block),
            want.as_str().expect("hash"),
            "{what}: block {b}"
        );
    }
}

const TYPES: [GgmlType; 7] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

#[test]
fn decoders_match_gguf_py_on_random_blocks() {
    let g = golden();
    let entries = g["decode"].as_array().expect("decode");
    let seen: Vec<GgmlType> = entries.iter().map(ty).collect();
    assert_eq!(seen, TYPES);
    for entry in entries {
        let ty = ty(entry);
        assert!(entry["first"].is_string(), "{ty}: first block in full");
        let bytes = hex(str_of(entry, "bytes"));
        check_decode(&format!("{ty} random blocks"), ty, &bytes, entry);
    }
}

#[test]
fn encoders_match_ggml_on_synthetic_rows() {
    let g = golden();
    let syn = &g["synthetic"];
    let cases = syn["cases"].as_array().expect("cases");
    assert_eq!(
        cases.len(),
        7 * (13 * 2 + 2),
        "7 types × (13 inputs × 2 + 2)"
    );
    let full = cases.iter().filter(|c| c["bytes"].is_string()).count();
    assert_eq!(full, 7 * 3, "the gaussian row's encodings in full");
    for case in cases {
        let ty = ty(case);
        let input = str_of(case, "input");
        let x = hex_f32(str_of(&syn["inputs"], input));
        let importance = case["importance"]
            .as_str()
            .map(|name| hex_f32(str_of(&syn["importance"], name)));
        let mut got = Vec::new();
        ggml::quantize_rows(ty, &x, x.len(), importance.as_deref(), &mut got).expect("quantize");
        let what = format!("{ty} on {input}, importance {}", case["importance"]);
        check_encoding(&what, ty, &got, case);
    }
}

#[test]
fn encoders_match_llama_quantize_on_smollm2_rows() {
    let g = golden();
    let rows = g["real"]["rows"].as_array().expect("rows");
    let cases = g["real"]["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 7 * 2 * rows.len());
    for case in cases {
        let ty = ty(case);
        let row = &rows[case["row"].as_u64().expect("row") as usize];
        let with_imatrix = case["imatrix"].as_bool().expect("imatrix flag");
        let x = hex_f32(str_of(row, "values"));
        let importance = with_imatrix
            .then(|| hex_f32(str_of(&g["real"]["importance"], str_of(row, "importance"))));
        let what = format!(
            "{ty} on {} row {}, imatrix {with_imatrix}",
            str_of(row, "tensor"),
            row["row"]
        );
        let mut got = Vec::new();
        ggml::quantize_rows(ty, &x, x.len(), importance.as_deref(), &mut got).expect("quantize");
        check_encoding(&what, ty, &got, case);
        check_decode(&what, ty, &got, case);
    }
}

/// On the real rows, llama.cpp's importance-weighted encoders lower the
/// importance-weighted squared error `Σ importance · (x − x̂)²` (what an imatrix
/// is meant to protect) against the plain encoders, for every type.
#[test]
fn importance_lowers_weighted_error_on_smollm2_rows() {
    let g = golden();
    let real = &g["real"];
    for row in real["rows"].as_array().expect("rows") {
        let x = hex_f32(str_of(row, "values"));
        let imp = hex_f32(str_of(&real["importance"], str_of(row, "importance")));
        let weighted_error = |y: &[f32]| -> f64 {
            x.iter()
                .zip(y)
                .zip(&imp)
                .map(|((a, b), w)| f64::from(*w) * f64::from(a - b).powi(2))
                .sum()
        };
        for ty in TYPES {
            let mut errors = [0.0f64; 2];
            for (e, importance) in errors.iter_mut().zip([None, Some(imp.as_slice())]) {
                let mut enc = Vec::new();
                ggml::quantize_rows(ty, &x, x.len(), importance, &mut enc).expect("quantize");
                let mut y = vec![0.0f32; x.len()];
                ggml::dequantize(ty, &enc, &mut y).expect("dequantize");
                *e = weighted_error(&y);
            }
            let [plain, weighted] = errors;
            assert!(
                weighted < plain,
                "{ty} on {} row {}: weighted error {weighted:e} with the imatrix, {plain:e} without",
                str_of(row, "tensor"),
                row["row"]
            );
        }
    }
}

/// Reads a file of the `--full` set.
fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[test]
#[ignore = "needs the --full set of scripts/golden/gguf_kquants.py (about 330 MB, made with llama.cpp)"]
fn full_llama_cpp_crosscheck() {
    let dir = std::env::var_os("TENSORPRESS_KQUANTS_FULL").expect(
        "set TENSORPRESS_KQUANTS_FULL to the folder written by \
         `scripts/golden/gguf_kquants.py --full DIR` (needs a llama.cpp build)",
    );
    let dir = std::path::Path::new(&dir);
    let manifest: Value = serde_json::from_slice(&read(dir, "manifest.json")).expect("manifest");
    let mut checked = 0usize;
    for entry in manifest["files"].as_array().expect("files") {
        let ty = ty(entry);
        let input = str_of(entry, "input");
        let shape = manifest[input].as_array().expect("shape");
        let row_len = shape[1].as_u64().expect("row length") as usize;
        let x = f32s(&read(dir, input));
        let importance = entry["importance"].as_str().map(|n| f32s(&read(dir, n)));
        let rows_per = entry["rows_per_importance"].as_u64().expect("rows") as usize;
        let want = read(dir, str_of(entry, "bytes"));
        let mut got = Vec::new();
        for (k, chunk) in x.chunks(rows_per * row_len).enumerate() {
            let imp = importance
                .as_ref()
                .map(|v| &v[k * row_len..(k + 1) * row_len]);
            ggml::quantize_rows_par(ty, chunk, row_len, imp, &mut got).expect("quantize");
        }
        let row_bytes = ty.row_bytes(row_len).expect("row bytes");
        let bad: Vec<usize> = got
            .chunks(row_bytes)
            .zip(want.chunks(row_bytes))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        let what = format!("{ty} on {input}, importance {}", entry["importance"]);
        assert_eq!(got.len(), want.len(), "{what}: length");
        assert!(
            bad.is_empty(),
            "{what}: {} of {} rows differ, first {:?}",
            bad.len(),
            got.len() / row_bytes,
            &bad[..bad.len().min(8)]
        );
        checked += got.len() / row_bytes;
        eprintln!("{what}: {} rows identical", got.len() / row_bytes);
    }
    assert!(checked > 0, "the manifest lists no files");
}
