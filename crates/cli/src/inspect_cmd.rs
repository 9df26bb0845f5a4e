//! `tensorpress inspect`.

use std::path::Path;

use tensorpress::inspect::{inspect, Summary};

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn print_summary(s: &Summary) {
    println!(
        "{}: {} tensors, {} parameters, {:.2} MB in {} file(s); {:.3} bits per weight (file bytes × 8 / parameters), {:.3} for tensor data alone",
        s.format,
        s.tensors.len(),
        s.params(),
        s.file_bytes as f64 / 1e6,
        s.files.len(),
        s.bits_per_weight(),
        s.tensor_bytes() as f64 * 8.0 / s.params().max(1) as f64,
    );
    println!(
        "{:<10} {:>8} {:>14} {:>14} {:>8}",
        "type", "tensors", "parameters", "bytes", "bits/w"
    );
    for (ty, t) in s.by_type() {
        println!(
            "{:<10} {:>8} {:>14} {:>14} {:>8.3}",
            ty,
            t.tensors,
            t.params,
            t.bytes,
            t.bytes as f64 * 8.0 / t.params.max(1) as f64
        );
    }
}

pub fn run(path: &Path, metadata: bool, summary_only: bool, json: bool) -> crate::CliResult {
    let s = inspect(path)?;
    if json {
        let tensors: Vec<_> = s
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "type": t.storage, "shape": t.shape,
                    "params": t.params, "bytes": t.bytes,
                })
            })
            .collect();
        let v = serde_json::json!({
            "format": s.format,
            "files": s.files,
            "file_bytes": s.file_bytes,
            "params": s.params(),
            "bits_per_weight": s.bits_per_weight(),
            "tensors": if summary_only { serde_json::Value::Null } else { tensors.into() },
            "metadata": if metadata {
                serde_json::Value::Object(s.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect())
            } else {
                serde_json::Value::Null
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if metadata {
        for (k, v) in &s.metadata {
            println!("{k} = {v}");
        }
        println!();
    }
    if !summary_only {
        let width = s
            .tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!(
            "{:<width$} {:<8} {:<18} {:>12} {:>8}",
            "name", "type", "shape", "bytes", "bits/w"
        );
        for t in &s.tensors {
            println!(
                "{:<width$} {:<8} {:<18} {:>12} {:>8.3}",
                t.name,
                t.storage,
                shape_text(&t.shape),
                t.bytes,
                t.bits_per_weight()
            );
        }
        println!();
    }
    print_summary(&s);
    Ok(())
}
