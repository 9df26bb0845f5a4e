//! Cache specifications as text (`f32`, `f16`, `int8`, `kivi-2`,
//! `kivi-4-g32-r128`), for command lines and configuration files.

use std::fmt;
use std::str::FromStr;

use crate::{Error, F16Cache, F32Cache, Int8Cache, KiviCache, KiviConfig, KvCache, Result};

/// Which cache to build.
///
/// ```
/// use tensorpress_kvcache::{CacheSpec, KiviConfig};
///
/// let spec: CacheSpec = "kivi-2-g32-r128".parse()?;
/// assert_eq!(spec, CacheSpec::Kivi(KiviConfig::new(2)));
/// assert_eq!(spec.to_string(), "kivi-2-g32-r128");
/// let cache = spec.build(3, 64)?;
/// assert!(cache.is_empty());
/// // The settings are checked against the head dimension when building.
/// assert!("kivi-2-g48".parse::<CacheSpec>()?.build(3, 64).is_err());
/// assert!("kivi-3".parse::<CacheSpec>().is_err());
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSpec {
    /// [`F32Cache`].
    F32,
    /// [`F16Cache`].
    F16,
    /// [`Int8Cache`].
    Int8,
    /// [`KiviCache`].
    Kivi(KiviConfig),
}

impl CacheSpec {
    /// A cache of this kind for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// [`Error::Config`] for settings the head dimension does not allow.
    pub fn build(&self, heads: usize, head_dim: usize) -> Result<Box<dyn KvCache>> {
        Ok(match self {
            CacheSpec::F32 => Box::new(F32Cache::new(heads, head_dim)),
            CacheSpec::F16 => Box::new(F16Cache::new(heads, head_dim)),
            CacheSpec::Int8 => Box::new(Int8Cache::new(heads, head_dim)),
            CacheSpec::Kivi(c) => Box::new(KiviCache::new(heads, head_dim, *c)?),
        })
    }
}

impl FromStr for CacheSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::Config {
            field: "cache spec",
            reason,
        };
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "f32" => return Ok(CacheSpec::F32),
            "f16" => return Ok(CacheSpec::F16),
            "int8" => return Ok(CacheSpec::Int8),
            _ => {}
        }
        let rest = lower.strip_prefix("kivi-").ok_or_else(|| {
            bad(format!(
                "`{s}`: expected f32, f16, int8 or kivi-BITS[-gGROUP][-rRESIDUAL], e.g. kivi-2-g32-r128"
            ))
        })?;
        let mut parts = rest.split('-');
        let bits: u8 = parts
            .next()
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| bad(format!("`{s}`: KIVI needs its bits, e.g. kivi-2")))?;
        let mut config = KiviConfig::new(bits);
        for p in parts {
            let number = |v: &str| -> Result<usize> {
                v.parse()
                    .map_err(|_| bad(format!("`{s}`: `{p}` is not a number after its letter")))
            };
            if let Some(g) = p.strip_prefix('g') {
                config.group = number(g)?;
            } else if let Some(r) = p.strip_prefix('r') {
                config.residual = number(r)?;
            } else {
                return Err(bad(format!(
                    "`{s}`: unknown part `{p}` (gGROUP or rRESIDUAL)"
                )));
            }
        }
        if !matches!(bits, 2 | 4 | 8) {
            return Err(bad(format!("`{s}`: KIVI codes are 2, 4 or 8 bits")));
        }
        Ok(CacheSpec::Kivi(config))
    }
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheSpec::F32 => write!(f, "f32"),
            CacheSpec::F16 => write!(f, "f16"),
            CacheSpec::Int8 => write!(f, "int8"),
            CacheSpec::Kivi(c) => write!(f, "kivi-{}-g{}-r{}", c.bits, c.group, c.residual),
        }
    }
}
