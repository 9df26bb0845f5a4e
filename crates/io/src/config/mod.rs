//! Hugging Face `config.json` for the model families tensorpress runs.
//!
//! [`LlamaConfig`] (Llama, SmolLM, Mistral and other Llama-shaped models) and
//! [`BertConfig`] (BERT, MiniLM) hold the fields the model runners need, with
//! Hugging Face's defaults where a field may be absent, and keep every other key
//! in `extra` so that reading and writing a config loses nothing. `from_file`
//! parses and [`validate`](LlamaConfig::validate)s; `to_file` writes atomically.

mod bert;
mod llama;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use bert::{BertConfig, HiddenAct};
pub use llama::{LlamaConfig, TokenIds};

use crate::fs::{write_all, write_atomic};
use crate::{Error, Result};

/// Reads a JSON file into `T`.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })
}

/// Parses JSON text into `T`; errors name the path `<string>`.
fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: "<string>".into(),
        source,
    })
}

/// Writes `value` as indented JSON with a final newline, atomically.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    text.push('\n');
    write_atomic(path, |w| write_all(w, text.as_bytes(), path))
}

/// Fails with [`Error::ZeroField`] when `value` is zero.
fn positive(field: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::ZeroField { field });
    }
    Ok(())
}

/// Fails with [`Error::NotDivisible`] unless `divisor` divides `dividend`.
fn divides(
    dividend_field: &'static str,
    dividend: usize,
    divisor_field: &'static str,
    divisor: usize,
) -> Result<()> {
    if divisor == 0 || !dividend.is_multiple_of(divisor) {
        return Err(Error::NotDivisible {
            dividend_field,
            dividend,
            divisor_field,
            divisor,
        });
    }
    Ok(())
}

/// Fails with [`Error::InvalidFloat`] unless `value` is finite and positive.
fn positive_float(field: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::InvalidFloat { field, value });
    }
    Ok(())
}
