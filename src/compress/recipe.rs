//! Recipes: a compression run written down as TOML, so it can be reviewed,
//! versioned and rerun. A recipe builds the same [`CompressOptions`] the
//! library API does.
//!
//! ```toml
//! # The default method, in the scheme syntax of `parse_scheme`.
//! scheme = "gptq-w4-g128"
//! # Optional: which linear layers (globs on Hugging Face module names).
//! include = ["model.layers.*"]
//! exclude = ["lm_head"]            # the default
//!
//! [calibration]                    # optional; these are the defaults
//! windows = 128
//! tokens = 512
//!
//! # Per-layer methods; the first override whose pattern matches wins.
//! [[override]]
//! layers = ["*.mlp.down_proj"]
//! scheme = "gptq-w8-ch"
//! ```

use std::path::Path;

use toml::{Table, Value};

use super::{parse_scheme, CompressOptions, LayerFilter};
use crate::{Error, Result};

/// A parsed recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// What to compress and how.
    pub options: CompressOptions,
    /// A one-line description (the default scheme's label, plus overrides).
    pub label: String,
    /// Calibration windows.
    pub windows: usize,
    /// Tokens per calibration window.
    pub tokens: usize,
}

fn err(key: &str, reason: impl Into<String>) -> Error {
    Error::Recipe {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn string_list(table: &Table, key: &str, path: &str) -> Result<Option<Vec<String>>> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| err(path, "expected a list of strings"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(err(path, "expected a string or a list of strings")),
    }
}

fn positive(table: &Table, key: &str, path: &str, default: usize) -> Result<usize> {
    match table.get(key) {
        None => Ok(default),
        Some(Value::Integer(n)) if *n > 0 => Ok(*n as usize),
        Some(_) => Err(err(path, "expected a positive integer")),
    }
}

fn check_keys(table: &Table, allowed: &[&str], prefix: &str) -> Result<()> {
    for key in table.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(err(
                &format!("{prefix}{key}"),
                format!("unknown key (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

impl Recipe {
    /// Parses a recipe.
    ///
    /// ```
    /// use tensorpress::compress::Recipe;
    ///
    /// let r = Recipe::from_toml_str(r#"
    ///     scheme = "gptq-w4-g128"
    ///     [calibration]
    ///     windows = 64
    ///     [[override]]
    ///     layers = "*.mlp.down_proj"
    ///     scheme = "rtn-w8-ch"
    /// "#)?;
    /// assert_eq!(r.windows, 64);
    /// assert!(r.options.method.calibrates());
    /// assert!(!r.options.method_for("model.layers.3.mlp.down_proj").calibrates());
    /// assert!(Recipe::from_toml_str("scheme = 'gptq-w4-g128'\nwindow = 3").is_err());
    /// # Ok::<(), tensorpress::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Recipe`] naming the key for TOML syntax errors, unknown keys
    /// and wrong types; [`Error::Scheme`] for a scheme that does not parse;
    /// [`Error::Pattern`] for a malformed layer pattern.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("(syntax)", e.to_string().trim().to_string()))?;
        check_keys(
            &table,
            &["scheme", "include", "exclude", "calibration", "override"],
            "",
        )?;
        let scheme = table.get("scheme").and_then(Value::as_str).ok_or_else(|| {
            err(
                "scheme",
                "a recipe needs `scheme = \"...\"`, e.g. gptq-w4-g128",
            )
        })?;
        let scheme = parse_scheme(scheme)?;
        let include = string_list(&table, "include", "include")?.unwrap_or_default();
        let exclude =
            string_list(&table, "exclude", "exclude")?.unwrap_or_else(|| vec!["lm_head".into()]);
        let mut options = scheme.options();
        options.targets = LayerFilter::new(include, exclude)?;
        let mut label = scheme.label;

        let (mut windows, mut tokens) = (128, 512);
        if let Some(c) = table.get("calibration") {
            let c = c
                .as_table()
                .ok_or_else(|| err("calibration", "expected a table"))?;
            check_keys(c, &["windows", "tokens"], "calibration.")?;
            windows = positive(c, "windows", "calibration.windows", windows)?;
            tokens = positive(c, "tokens", "calibration.tokens", tokens)?;
        }
        if let Some(o) = table.get("override") {
            let list = o
                .as_array()
                .ok_or_else(|| err("override", "expected [[override]] tables"))?;
            for (i, item) in list.iter().enumerate() {
                let path = format!("override[{i}]");
                let t = item
                    .as_table()
                    .ok_or_else(|| err(&path, "expected a table"))?;
                check_keys(t, &["layers", "scheme"], &format!("{path}."))?;
                let layers = string_list(t, "layers", &format!("{path}.layers"))?
                    .ok_or_else(|| err(&format!("{path}.layers"), "missing"))?;
                let s = t
                    .get("scheme")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(&format!("{path}.scheme"), "missing"))?;
                let s = parse_scheme(s)?;
                if s.smoothing.is_some() || s.activations.is_some() {
                    return Err(err(
                        &format!("{path}.scheme"),
                        "smoothing (awq, smoothquant) and activation quantization (w8a8) \
                         apply to the whole model: use them as the top-level scheme",
                    ));
                }
                label.push_str(&format!("; {} → {}", layers.join(", "), s.label));
                options = options
                    .override_layers(LayerFilter::new(layers, Vec::<String>::new())?, s.method);
            }
        }
        Ok(Recipe {
            options,
            label,
            windows,
            tokens,
        })
    }

    /// Reads and parses a recipe file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?;
        Recipe::from_toml_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let key = |text: &str| match Recipe::from_toml_str(text) {
            Err(Error::Recipe { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(key("include = ['x']"), "scheme");
        assert_eq!(
            key("scheme = 'rtn-w4'\n[calibration]\nwindows = 0"),
            "calibration.windows"
        );
        assert_eq!(
            key("scheme = 'rtn-w4'\n[[override]]\nscheme = 'rtn-w8'"),
            "override[0].layers"
        );
        assert_eq!(
            key("scheme = 'rtn-w4'\n[[override]]\nlayers = 'a*'\nschem = 'x'"),
            "override[0].schem"
        );
        assert_eq!(key("scheme = "), "(syntax)");
        assert!(matches!(
            Recipe::from_toml_str("scheme = 'rtn-w11'"),
            Err(Error::Scheme { .. })
        ));
        let r = Recipe::from_toml_str("scheme = 'rtn-w4-g64'\ninclude = '*.mlp.*'").unwrap();
        assert!(r.options.targets.matches("model.layers.0.mlp.up_proj"));
        assert!(!r.options.targets.matches("model.layers.0.self_attn.q_proj"));
        assert_eq!((r.windows, r.tokens), (128, 512));
    }
}
