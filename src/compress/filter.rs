//! Which layers a compression touches: name patterns.

use crate::{Error, Result};

/// Include and exclude patterns over layer names. A pattern is a glob where
/// `*` matches any run of characters (`model.layers.*.mlp.*`), or a regular
/// expression when prefixed with `re:` (llm-compressor's convention)… with
/// globs only for now: `re:` patterns are refused with a typed error.
///
/// A layer is selected when it matches an include pattern (every layer when
/// there are none) and no exclude pattern.
///
/// ```
/// use tensorpress::compress::LayerFilter;
///
/// let f = LayerFilter::default(); // everything but lm_head
/// assert!(f.matches("model.layers.3.mlp.up_proj"));
/// assert!(!f.matches("lm_head"));
/// let only_mlp = LayerFilter::new(["*.mlp.*"], ["*.down_proj"]).unwrap();
/// assert!(only_mlp.matches("model.layers.0.mlp.gate_proj"));
/// assert!(!only_mlp.matches("model.layers.0.mlp.down_proj"));
/// assert!(!only_mlp.matches("model.layers.0.self_attn.q_proj"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Default for LayerFilter {
    /// Every layer but `lm_head` (the output projection is usually kept in
    /// full precision: it is tied to the embedding in many models).
    fn default() -> Self {
        LayerFilter {
            include: Vec::new(),
            exclude: vec!["lm_head".into()],
        }
    }
}

impl LayerFilter {
    /// Layers matching one of `include` (all when empty) and none of `exclude`.
    pub fn new<I, E, S, T>(include: I, exclude: E) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        E: IntoIterator<Item = T>,
        S: Into<String>,
        T: Into<String>,
    {
        let f = LayerFilter {
            include: include.into_iter().map(Into::into).collect(),
            exclude: exclude.into_iter().map(Into::into).collect(),
        };
        for p in f.include.iter().chain(&f.exclude) {
            if p.starts_with("re:") {
                return Err(Error::Pattern {
                    pattern: p.clone(),
                    reason: "regular expressions are not supported yet; use a glob with *",
                });
            }
            if p.is_empty() {
                return Err(Error::Pattern {
                    pattern: p.clone(),
                    reason: "an empty pattern matches nothing",
                });
            }
        }
        Ok(f)
    }

    /// Every layer, `lm_head` included.
    pub fn all() -> Self {
        LayerFilter {
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, name)))
            && !self.exclude.iter().any(|p| glob(p, name))
    }

    /// Fails with [`Error::PatternMatchesNothing`] when an include pattern
    /// matches none of `names` (a typo would otherwise silently skip layers).
    pub fn check_matches(&self, names: &[String]) -> Result<()> {
        for p in &self.include {
            if !names.iter().any(|n| glob(p, n)) {
                return Err(Error::PatternMatchesNothing { pattern: p.clone() });
            }
        }
        Ok(())
    }
}

/// Glob match with `*` as the only wildcard.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("a*c", "abc"));
        assert!(glob("a*c", "ac"));
        assert!(!glob("a*c", "ab"));
        assert!(glob("*.q_proj", "model.layers.1.self_attn.q_proj"));
        assert!(glob(
            "model.layers.*.self_attn.*",
            "model.layers.12.self_attn.o_proj"
        ));
        assert!(!glob("model.layers.1.*", "model.layers.12.mlp.up_proj"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*a", "aba"));
        assert!(!glob("a*b*a", "ab"));
    }

    #[test]
    fn patterns_that_match_nothing_are_errors() {
        let names = vec!["model.layers.0.mlp.up_proj".to_string()];
        let f = LayerFilter::new(["*.up_proj", "*.qproj"], Vec::<String>::new()).unwrap();
        assert!(matches!(
            f.check_matches(&names),
            Err(Error::PatternMatchesNothing { pattern }) if pattern == "*.qproj"
        ));
        assert!(matches!(
            LayerFilter::new(["re:.*"], Vec::<String>::new()),
            Err(Error::Pattern { .. })
        ));
    }
}
