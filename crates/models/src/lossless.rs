//! Checkpoint folders whose weights are a lossless `.tpz` container
//! (`tensorpress compress --lossless`) instead of `model.safetensors`.
//!
//! [`open_weights`] opens either kind of folder as a [`SafetensorsModel`]: a
//! container is decoded in full into one safetensors buffer in memory (the
//! codec is lossless, so the model computes bit for bit what the original
//! checkpoint computes).

use std::path::Path;

use tensorpress_codecs::lossless::LosslessFile;
use tensorpress_io::safetensors::SafetensorsModel;

use crate::{Error, Result};

/// The container file of a losslessly packed folder.
pub const TPZ_FILE: &str = "model.tpz";

/// The safetensors files a folder may hold; any of them takes precedence over
/// [`TPZ_FILE`].
const SAFETENSORS_FILES: [&str; 2] = ["model.safetensors", "model.safetensors.index.json"];

/// The container key that holds the source checkpoint's safetensors
/// `__metadata__` (a JSON object of strings), restored on load.
pub const SAFETENSORS_METADATA_KEY: &str = "safetensors.metadata";

/// Opens a model's weights: `path` as [`SafetensorsModel::open`] takes it, or
/// a folder holding [`TPZ_FILE`] and no safetensors checkpoint, or a `.tpz`
/// file. A container is read, every tensor checked and decoded, and the
/// result served from one safetensors buffer in memory.
///
/// # Errors
/// [`Error::File`] when the container cannot be read, [`Error::Container`]
/// when it is malformed or a tensor fails its checksum, [`Error::Io`] for the
/// safetensors side.
pub fn open_weights(path: &Path) -> Result<SafetensorsModel> {
    match tpz_path(path) {
        Some(tpz) => open_tpz(&tpz),
        None => Ok(SafetensorsModel::open(path)?),
    }
}

/// The container to read for `path`, if `path` is one or is a folder whose
/// weights are one.
fn tpz_path(path: &Path) -> Option<std::path::PathBuf> {
    if path.is_dir() {
        let tpz = path.join(TPZ_FILE);
        let has_safetensors = SAFETENSORS_FILES.iter().any(|f| path.join(f).is_file());
        return (!has_safetensors && tpz.is_file()).then_some(tpz);
    }
    let is_tpz = path.extension().is_some_and(|e| e == "tpz");
    (is_tpz && path.is_file()).then(|| path.to_owned())
}

/// Reads and decodes the container at `path`.
fn open_tpz(path: &Path) -> Result<SafetensorsModel> {
    let bytes = std::fs::read(path).map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })?;
    let container = |source| Error::Container {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let file = LosslessFile::parse(&bytes).map_err(container)?;
    let buffer = safetensors_bytes(&file).map_err(container)?;
    Ok(SafetensorsModel::from_bytes(buffer)?)
}

/// One safetensors file with every tensor of `file`, decoded, in the
/// container's order: the header, then each tensor's bytes decoded in place.
pub fn safetensors_bytes(file: &LosslessFile<'_>) -> tensorpress_codecs::Result<Vec<u8>> {
    use tensorpress_codecs::Error as CodecError;
    let overflow = || CodecError::TooLarge {
        what: "decoded checkpoint size",
        requested: u128::MAX,
        limit: usize::MAX as u128,
    };
    let malformed = |what| move |_| CodecError::Malformed { what };
    let mut parts = Vec::with_capacity(file.tensors().len() + 1);
    if let Some(meta) = file.metadata().get(SAFETENSORS_METADATA_KEY) {
        // Re-serialized so that the stored text cannot add header entries.
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(meta).map_err(
            malformed("safetensors metadata is not a JSON object of strings"),
        )?;
        let json = serde_json::to_string(&map).map_err(malformed("safetensors metadata"))?;
        parts.push(format!("\"__metadata__\":{json}"));
    }
    let mut offset = 0usize;
    for t in file.tensors() {
        let end = offset.checked_add(t.decoded_len()).ok_or_else(overflow)?;
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let name = serde_json::to_string(&t.name).map_err(malformed("tensor name"))?;
        parts.push(format!(
            "{name}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            t.dtype.safetensors_name(),
            shape.join(",")
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", parts.join(",")).into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let start = 8 + header.len();
    let total = start.checked_add(offset).ok_or_else(overflow)?;
    let mut out = Vec::new();
    out.try_reserve_exact(total).map_err(|_| overflow())?;
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.resize(total, 0);
    let mut at = start;
    for t in file.tensors() {
        let end = at + t.decoded_len();
        file.decode_into(&t.name, &mut out[at..end])?;
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tensorpress_codecs::lossless::LosslessWriter;
    use tensorpress_tensor::{DType, Tensor};

    use super::*;

    #[test]
    fn container_decodes_to_the_same_safetensors_tensors() {
        let weights: Vec<f32> = (0..96).map(|i| (i as f32 * 0.37).sin()).collect();
        let w_bytes: Vec<u8> = weights.iter().flat_map(|v| v.to_le_bytes()).collect();
        let codes: Vec<u8> = (0..40u8).map(|i| i % 7).collect();
        let mut writer = LosslessWriter::new();
        writer
            .add("layer.weight", DType::F32, &[8, 12], &w_bytes)
            .unwrap();
        writer.add("layer.codes", DType::U8, &[40], &codes).unwrap();
        writer.add_metadata(SAFETENSORS_METADATA_KEY, r#"{"format":"pt"}"#);
        let bytes = writer.to_bytes().unwrap();

        let dir = std::env::temp_dir().join(format!("tp-lossless-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(TPZ_FILE), &bytes).unwrap();
        let model = open_weights(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(model.len(), 2);
        assert_eq!(model.metadata()["format"], "pt");
        let w = model.view("layer.weight").unwrap();
        assert_eq!(w.shape(), &[8, 12]);
        assert_eq!(w.data(), &w_bytes[..]);
        let c = model.view("layer.codes").unwrap();
        assert_eq!(c.dtype(), DType::U8);
        assert_eq!(c.data(), &codes[..]);
    }

    #[test]
    fn a_corrupt_container_is_a_typed_error() {
        let dir = std::env::temp_dir().join(format!("tp-lossless-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(TPZ_FILE), b"TPZLOSS\0garbage").unwrap();
        let err = open_weights(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(err, Error::Container { .. }), "{err}");
    }
}
