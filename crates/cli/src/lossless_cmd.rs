//! `tensorpress compress --lossless`: pack a Hugging Face folder's
//! `model.safetensors` into a lossless `.tpz` container, with the folder's
//! other files copied, so that `eval` and the loaders read the result as they
//! read the original.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tensorpress::codecs::lossless::{LosslessFile, LosslessWriter};
use tensorpress::io::safetensors::SafetensorsModel;
use tensorpress::models::lossless::{SAFETENSORS_METADATA_KEY, TPZ_FILE};

use crate::CliResult;

/// Extensions of weight files that are not copied next to the container.
const WEIGHT_EXTENSIONS: [&str; 11] = [
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "h5",
    "msgpack",
    "ot",
    "gguf",
    "tpz",
];

/// Packs `model` (a folder) into `out` (absent or empty).
pub(crate) fn run(model: &Path, out: &Path) -> CliResult {
    if !model.is_dir() {
        return Err(format!(
            "--lossless packs a Hugging Face folder: {} is not one",
            model.display()
        )
        .into());
    }
    let source = model.join("model.safetensors");
    if !source.is_file() {
        let what = if model.join("model.safetensors.index.json").is_file() {
            "a sharded checkpoint (model.safetensors.index.json); --lossless packs a single \
             model.safetensors"
        } else {
            "no model.safetensors"
        };
        return Err(format!("{}: {what}", model.display()).into());
    }
    if out.is_file() || std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} exists and is not empty: remove it or choose another --out",
            out.display()
        )
        .into());
    }

    let t0 = Instant::now();
    let weights = SafetensorsModel::open(&source)?;
    let mut writer = LosslessWriter::new();
    if !weights.metadata().is_empty() {
        writer.add_metadata(
            SAFETENSORS_METADATA_KEY,
            serde_json::to_string(weights.metadata())?,
        );
    }
    for name in weights.names() {
        let view = weights.view(name)?;
        let info = weights.info(name).ok_or("tensor listed without info")?;
        writer.add(name, info.dtype, &info.shape, view.data())?;
    }
    let bytes = writer.to_bytes()?;
    // Check that what is about to be written decodes to the same bytes.
    let check = LosslessFile::parse(&bytes)?;
    for name in weights.names() {
        if check.decode(name)? != weights.view(name)?.data() {
            return Err(
                format!("{name}: the container does not decode to the original bytes").into(),
            );
        }
    }
    let encode_s = t0.elapsed().as_secs_f64();

    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    tensorpress::io::write_bytes_atomic(&out.join(TPZ_FILE), &bytes)?;
    let copied = copy_side_files(model, out)?;

    let original = std::fs::metadata(&source)
        .map_err(|e| format!("{}: {e}", source.display()))?
        .len();
    let packed = bytes.len() as u64;
    println!(
        "{} tensors: model.safetensors {} bytes -> {TPZ_FILE} {} bytes, ratio {:.4} ({:.1} % saved)",
        weights.len(),
        original,
        packed,
        packed as f64 / original as f64,
        100.0 * (1.0 - packed as f64 / original as f64)
    );
    println!(
        "time: encode and verify {encode_s:.2} s, total {:.2} s; copied {} other files",
        t0.elapsed().as_secs_f64(),
        copied.len()
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// Copies every file of `from` (recursively, hidden entries excepted) that is
/// not a weight file into `to`; returns the paths copied, relative to `from`.
fn copy_side_files(from: &Path, to: &Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut copied = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = from.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let rel = rel.join(&name);
            let path = entry.path();
            if path.is_dir() {
                std::fs::create_dir_all(to.join(&rel))
                    .map_err(|e| format!("{}: {e}", to.join(&rel).display()))?;
                pending.push(rel);
                continue;
            }
            let is_weights = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| WEIGHT_EXTENSIONS.contains(&e))
                || name.to_string_lossy().ends_with(".safetensors.index.json");
            if is_weights {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            tensorpress::io::write_bytes_atomic(&to.join(&rel), &bytes)?;
            copied.push(rel);
        }
    }
    Ok(copied)
}
