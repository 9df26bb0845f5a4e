//! Writes sample files for the Python interoperability check
//! (`scripts/golden/gguf_interop.py`): a GGUF with every metadata value type and
//! every tensor type the writer encodes, a safetensors file with every dtype
//! numpy has, a sharded safetensors folder, and `manifest.json` describing what
//! they should contain.
//!
//! ```text
//! cargo run -p tensorpress-io --example interop_samples -- /tmp/interop
//! ```

use std::path::PathBuf;

use half::{bf16, f16};
use ndarray::{Array, ArrayD, IxDyn};
use serde_json::json;
use tensorpress_io::gguf::{GgmlType, GgufArray, GgufWriter};
use tensorpress_io::safetensors::SafetensorsWriter;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 20001) as f32 / 5000.0 - 2.0
        })
        .collect()
}

fn hex_f32(v: &[f32]) -> String {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: interop_samples OUT_DIR")?,
    );
    std::fs::create_dir_all(&dir)?;

    // ---- GGUF ----
    let mut g = GgufWriter::new();
    g.set_alignment(64)?;
    g.add_metadata("general.architecture", "llama")?;
    g.add_metadata("t.u8", 200u8)?;
    g.add_metadata("t.i8", -100i8)?;
    g.add_metadata("t.u16", 60000u16)?;
    g.add_metadata("t.i16", -30000i16)?;
    g.add_metadata("t.u32", 4_000_000_000u32)?;
    g.add_metadata("t.i32", -2_000_000_000i32)?;
    g.add_metadata("t.f32", 0.15625f32)?;
    g.add_metadata("t.bool", true)?;
    g.add_metadata("t.string", "héllo ✓")?;
    g.add_metadata("t.u64", u64::MAX)?;
    g.add_metadata("t.i64", i64::MIN)?;
    g.add_metadata("t.f64", -2.5e300f64)?;
    g.add_metadata("t.arr_str", vec!["a", "", "ü"])?;
    g.add_metadata("t.arr_i32", vec![1i32, -2, 3])?;
    g.add_metadata("t.arr_f32", vec![0.5f32, -1.25])?;
    g.add_metadata("t.arr_bool", vec![true, false])?;
    g.add_metadata(
        "t.arr_nested",
        vec![GgufArray::U8(vec![1, 2]), GgufArray::U8(vec![3])],
    )?;
    let mut tensors = Vec::new();
    for (i, &ty) in GgmlType::ALL
        .iter()
        .filter(|t| t.can_quantize())
        .enumerate()
    {
        let shape = [3usize, 64];
        let v = values(shape.iter().product(), i as u32 + 1);
        let name = format!("w.{}", ty.name().to_lowercase());
        g.add_f32(
            name.clone(),
            ty,
            ArrayD::from_shape_vec(IxDyn(&shape), v.clone())?.view(),
        )?;
        tensors
            .push(json!({"name": name, "type": ty.name(), "shape": shape, "values": hex_f32(&v)}));
    }
    g.write(dir.join("sample.gguf"))?;

    // ---- safetensors ----
    let mut s = SafetensorsWriter::new();
    s.add_metadata("format", "pt")?;
    let v = values(24, 99);
    let f32s = Array::from_shape_vec((2, 3, 4), v.clone())?.into_dyn();
    s.add_array("f32", f32s.view())?;
    s.add_array("f16", f32s.mapv(f16::from_f32).view())?;
    s.add_array("bf16", f32s.mapv(bf16::from_f32).view())?;
    s.add_array("f64", f32s.mapv(f64::from).view())?;
    s.add_array("i8", f32s.mapv(|x| (x * 50.0) as i8).view())?;
    s.add_array("i64", f32s.mapv(|x| (x * 1e6) as i64).view())?;
    s.add_array("u8", f32s.mapv(|x| (x.abs() * 100.0) as u8).view())?;
    s.add_array("bool", f32s.mapv(|x| x > 0.0).view())?;
    s.add_array("scalar", ndarray::arr0(7i32).into_dyn().view())?;
    s.write_file(dir.join("sample.safetensors"))?;
    s.max_shard_size(100);
    s.write_dir(dir.join("sharded"))?;

    let manifest = json!({
        "gguf": {"alignment": 64, "tensors": tensors},
        "safetensors": {"values": hex_f32(&v), "shape": [2, 3, 4]},
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    println!("wrote samples to {}", dir.display());
    Ok(())
}
