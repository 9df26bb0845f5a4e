//! Locating the real test data that `scripts/fetch-testdata.sh` fetches.

#![allow(dead_code)]

use std::path::PathBuf;

/// `$TENSORPRESS_CACHE`, or `~/.cache/tensorpress`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TENSORPRESS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set and TENSORPRESS_CACHE is not set");
    PathBuf::from(home).join(".cache").join("tensorpress")
}

/// A file in the cache; panics with instructions when it is missing.
pub fn cached(relative: &str) -> PathBuf {
    let path = cache_dir().join(relative);
    assert!(
        path.exists(),
        "test data {} is missing: run scripts/fetch-testdata.sh (set TENSORPRESS_CACHE to use another cache)",
        path.display()
    );
    path
}

/// SmolLM2-135M-Instruct, GGUF Q4_1 with Q8_0 embeddings.
pub fn smollm2() -> PathBuf {
    cached("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// all-MiniLM-L6-v2's folder (model.safetensors, config.json, tokenizer.json).
pub fn minilm() -> PathBuf {
    cached("minilm/model.safetensors");
    cache_dir().join("minilm")
}
