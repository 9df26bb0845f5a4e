//! Cache specifications as text (`f32`, `f16`, `int8`, `kivi-2`,
//! `kivi-4-g32-r128`, `h2o-p50`, `snapkv-n512-w32-k7-s0`, `streaming-p25-s4`),
//! for command lines and configuration files.

use std::fmt;
use std::str::FromStr;

use crate::{
    Budget, Error, EvictingCache, Eviction, F16Cache, F32Cache, Fp8Cache, Fp8Scales, GearCache,
    GearConfig, Int8Cache, KiviCache, KiviConfig, KvCache, KvQuantConfig, Result, ZipCache,
    ZipConfig,
};

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
///
/// // Eviction: a budget of p<percent of the tokens seen> or n<tokens>.
/// let h2o: CacheSpec = "h2o-p50".parse()?;
/// assert_eq!(h2o.to_string(), "h2o-p50-r50");
/// assert_eq!("snapkv-n512".parse::<CacheSpec>()?.to_string(), "snapkv-n512-w32-k7-s0");
/// assert_eq!("streaming-p25".parse::<CacheSpec>()?.to_string(), "streaming-p25-s4");
/// assert!("h2o".parse::<CacheSpec>().is_err()); // no budget
/// // ZipVL's dynamic ratio: keep what covers 95 % of each step's attention.
/// assert_eq!("h2o-m95".parse::<CacheSpec>()?.to_string(), "h2o-m95-r50");
/// // p-MoD's progressive ratio decay over layers (see `build_layer`).
/// assert_eq!("snapkv-d40-f10".parse::<CacheSpec>()?.to_string(), "snapkv-d40-f10-c100-w32-k7-s0");
///
/// // GEAR: bits, then group, buffer, rank and outlier percentage.
/// assert_eq!("gear-2-r4".parse::<CacheSpec>()?.to_string(), "gear-2-g32-b128-r4-s0");
/// assert!("h2o-p150".parse::<CacheSpec>().is_err());
///
/// // ZipCache: high and low bits, the salient percentage, chunk, residual, probes.
/// assert_eq!("zipcache-4-2-s20".parse::<CacheSpec>()?.to_string(), "zipcache-4-2-s20-c64-r64-p100");
/// assert!("zipcache-2-4".parse::<CacheSpec>().is_err()); // low above high
///
/// // KVQuant: bits, outlier percentage, sinks, keys before RoPE, k-means
/// // levels, Q-Norm (calibrated on the model, so `build` refuses it).
/// let kvq: CacheSpec = "kvquant-3".parse()?;
/// assert_eq!(kvq.to_string(), "kvquant-3-o1-s1-p1-k1-n0-f1-h0");
/// assert!(kvq.build(3, 64).is_err());
/// assert!("kvquant-5".parse::<CacheSpec>().is_err());
/// # Ok::<(), tensorpress_kvcache::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheSpec {
    /// [`F32Cache`].
    F32,
    /// [`F16Cache`].
    F16,
    /// [`Int8Cache`].
    Int8,
    /// [`Fp8Cache`] with a scale per token and head.
    Fp8,
    /// [`Fp8Cache`] with static per-layer scales: they come from a
    /// calibration pass through the model ([`Fp8Scales::from_amax`] of an
    /// [`AmaxRecorder`](crate::AmaxRecorder) run), so [`build`](Self::build)
    /// refuses it; `tensorpress eval --kv-cache fp8-static --kv-calib FILE`
    /// calibrates.
    Fp8Static,
    /// [`KiviCache`].
    Kivi(KiviConfig),
    /// [`GearCache`].
    Gear(GearConfig),
    /// [`ZipCache`].
    Zip(ZipConfig),
    /// [`KvQuantCache`](crate::KvQuantCache): its per-layer datatypes come
    /// from a calibration pass through the model
    /// ([`KvQuantLayer::calibrate`](crate::KvQuantLayer::calibrate) on the
    /// model's keys and gradients), so [`build`](Self::build) refuses it;
    /// `tensorpress eval --kv-cache kvquant-3 --kv-calib FILE` calibrates.
    KvQuant(KvQuantConfig),
    /// [`EvictingCache`].
    Evict {
        /// Which tokens to keep.
        policy: Eviction,
        /// How many.
        budget: Budget,
    },
}

impl CacheSpec {
    /// A cache of this kind for `heads` heads of `head_dim`.
    ///
    /// # Errors
    /// [`Error::Config`] for settings the head dimension does not allow, and
    /// for a per-layer schedule (a [`Budget::Decay`] eviction budget): use
    /// [`build_layer`](Self::build_layer).
    pub fn build(&self, heads: usize, head_dim: usize) -> Result<Box<dyn KvCache>> {
        if let CacheSpec::Evict {
            budget: Budget::Decay { .. },
            ..
        } = self
        {
            return Err(Error::Config {
                field: "cache spec",
                reason: format!(
                    "`{self}` gives each layer its own budget: build with \
                     CacheSpec::build_layer(layer, layers, heads, head_dim)"
                ),
            });
        }
        self.build_layer(0, 1, heads, head_dim)
    }

    /// The cache of layer `layer` of a model with `layers` layers: as
    /// [`build`](Self::build), with a [`Budget::Decay`] schedule resolved to
    /// the layer's ratio ([`Budget::for_layer`]).
    ///
    /// ```
    /// use tensorpress_kvcache::CacheSpec;
    ///
    /// // p-MoD's progressive ratio decay: 50 % on average over 30 layers.
    /// let spec: CacheSpec = "h2o-d50".parse()?;
    /// assert_eq!(spec.to_string(), "h2o-d50-f5-c100-r50");
    /// let first = spec.build_layer(0, 30, 3, 64)?;
    /// let last = spec.build_layer(29, 30, 3, 64)?;
    /// assert!(first.is_empty() && last.is_empty());
    /// assert!(spec.build(3, 64).is_err()); // which layer?
    /// # Ok::<(), tensorpress_kvcache::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`build`](Self::build), without the schedule's.
    pub fn build_layer(
        &self,
        layer: usize,
        layers: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Box<dyn KvCache>> {
        Ok(match self {
            CacheSpec::F32 => Box::new(F32Cache::new(heads, head_dim)),
            CacheSpec::F16 => Box::new(F16Cache::new(heads, head_dim)),
            CacheSpec::Int8 => Box::new(Int8Cache::new(heads, head_dim)),
            CacheSpec::Fp8 => Box::new(Fp8Cache::new(heads, head_dim, Fp8Scales::PerToken)?),
            CacheSpec::Fp8Static => {
                return Err(Error::Config {
                    field: "cache spec",
                    reason: "fp8-static needs per-layer scales calibrated on the model \
                             (Fp8Cache::new with Fp8Scales::from_amax, or the CLI's --kv-calib); \
                             `fp8` scales each token instead"
                        .into(),
                })
            }
            CacheSpec::KvQuant(_) => {
                return Err(Error::Config {
                    field: "cache spec",
                    reason: format!(
                        "{self} needs per-layer datatypes calibrated on the model (keys before \
                         RoPE, Fisher weights): KvQuantLayer::calibrate, or the CLI's --kv-calib"
                    ),
                })
            }
            CacheSpec::Kivi(c) => Box::new(KiviCache::new(heads, head_dim, *c)?),
            CacheSpec::Gear(c) => Box::new(GearCache::new(heads, head_dim, *c)?),
            CacheSpec::Zip(c) => Box::new(ZipCache::new(heads, head_dim, *c)?),
            CacheSpec::Evict { policy, budget } => Box::new(EvictingCache::new(
                heads,
                head_dim,
                *policy,
                budget.for_layer(layer, layers),
            )?),
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
            "fp8" => return Ok(CacheSpec::Fp8),
            "fp8-static" => return Ok(CacheSpec::Fp8Static),
            _ => {}
        }
        if let Some(rest) = lower.strip_prefix("gear-") {
            return parse_gear(s, rest);
        }
        if let Some(rest) = lower.strip_prefix("zipcache-") {
            return parse_zip(s, rest);
        }
        if let Some(rest) = lower.strip_prefix("kvquant-") {
            return parse_kvquant(s, rest);
        }
        for name in ["streaming-", "h2o-", "snapkv-", "ems-"] {
            if let Some(rest) = lower.strip_prefix(name) {
                return parse_eviction(s, name, rest);
            }
        }
        let rest = lower.strip_prefix("kivi-").ok_or_else(|| {
            bad(format!(
                "`{s}`: expected f32, f16, int8, fp8, fp8-static, kivi-BITS[-gGROUP][-rRESIDUAL] (e.g. \
                 kivi-2-g32-r128), gear-BITS[-gGROUP][-bBUFFER][-rRANK][-sOUTLIER_PERCENT], \
                 zipcache-HIGH-LOW-sSALIENT_PERCENT[-cCHUNK][-rRESIDUAL][-pPROBE_PERCENT], \
                 kvquant-BITS[-oOUTLIER_PERCENT][-sSINKS][-p0|1][-k0|1][-n0|1][-f0|1][-h0|1], \
                 or streaming|h2o|snapkv with a budget pPERCENT or nTOKENS \
                 (e.g. h2o-p50)"
            ))
        })?;
        let (bits, parts) = bits_then_parts(s, rest, "KIVI", "kivi-2")?;
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

/// A `-`-separated part of spec `s` as its letter and a parser of the
/// number after it (`g32` → `("g", 32)`); the number is read only when the
/// letter is known, so an unknown part is reported as such.
fn lettered<'p>(s: &'p str, p: &'p str) -> (&'p str, impl Fn() -> Result<f32> + 'p) {
    let (key, value) = p.split_at(p.chars().next().map_or(0, char::len_utf8));
    let number = move || {
        value.parse().map_err(|_| Error::Config {
            field: "cache spec",
            reason: format!("`{s}`: `{p}` is not a number after its letter"),
        })
    };
    (key, number)
}

/// The bits that open `rest` (the spec `s` after its name) and the
/// `-`-separated parts after them; `example` names a valid spec.
fn bits_then_parts<'r>(
    s: &str,
    rest: &'r str,
    name: &str,
    example: &str,
) -> Result<(u8, std::str::Split<'r, char>)> {
    let mut parts = rest.split('-');
    let bits = parts
        .next()
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| Error::Config {
            field: "cache spec",
            reason: format!("`{s}`: {name} needs its bits, e.g. {example}"),
        })?;
    Ok((bits, parts))
}

/// `gear-BITS[-gGROUP][-bBUFFER][-rRANK][-sOUTLIER_PERCENT]` after `gear-`.
fn parse_gear(s: &str, rest: &str) -> Result<CacheSpec> {
    let bad = |reason: String| Error::Config {
        field: "cache spec",
        reason: format!("`{s}`: {reason}"),
    };
    let (bits, parts) = bits_then_parts(s, rest, "GEAR", "gear-2")?;
    let mut config = GearConfig::new(bits);
    for p in parts {
        let (key, number) = lettered(s, p);
        match key {
            "g" => config.group = number()? as usize,
            "b" => config.buffer = number()? as usize,
            "r" => config.rank = number()? as usize,
            "s" => config.outliers = number()? / 100.0,
            _ => {
                return Err(bad(format!(
                    "unknown part `{p}` (gGROUP, bBUFFER, rRANK, sOUTLIER_PERCENT)"
                )))
            }
        }
    }
    if !matches!(bits, 2 | 4 | 8) {
        return Err(bad("GEAR codes are 2, 4 or 8 bits".into()));
    }
    Ok(CacheSpec::Gear(config))
}

/// `zipcache-HIGH-LOW[-sSALIENT_PERCENT][-cCHUNK][-rRESIDUAL][-pPROBE_PERCENT]`
/// after `zipcache-`.
fn parse_zip(s: &str, rest: &str) -> Result<CacheSpec> {
    let bad = |reason: String| Error::Config {
        field: "cache spec",
        reason: format!("`{s}`: {reason}"),
    };
    let mut parts = rest.split('-');
    let mut bits = || -> Result<u8> {
        parts.next().and_then(|b| b.parse().ok()).ok_or_else(|| {
            bad("ZipCache needs its high and low bits, e.g. zipcache-4-2-s20".into())
        })
    };
    let (high, low) = (bits()?, bits()?);
    let mut config = ZipConfig::new(high, low, 0.2);
    for p in parts {
        let (key, number) = lettered(s, p);
        match key {
            "s" => config.salient = number()? / 100.0,
            "c" => config.chunk = number()? as usize,
            "r" => config.residual = number()? as usize,
            "p" => config.probe = number()? / 100.0,
            _ => {
                return Err(bad(format!(
                    "unknown part `{p}` (sSALIENT_PERCENT, cCHUNK, rRESIDUAL, pPROBE_PERCENT)"
                )))
            }
        }
    }
    // Everything but the head dimension is checked here (64 fills bytes at any bits).
    config.validate(64)?;
    Ok(CacheSpec::Zip(config))
}

/// `kvquant-BITS[-oOUTLIER_PERCENT][-sSINKS][-pPRE_ROPE][-kKMEANS][-nQNORM][-fFISHER][-hHEAD_RANGES]`
/// after `kvquant-` (the last five 0 or 1).
fn parse_kvquant(s: &str, rest: &str) -> Result<CacheSpec> {
    let bad = |reason: String| Error::Config {
        field: "cache spec",
        reason: format!("`{s}`: {reason}"),
    };
    let (bits, parts) = bits_then_parts(s, rest, "KVQuant", "kvquant-3")?;
    let mut config = KvQuantConfig::new(bits);
    for p in parts {
        let (key, number) = lettered(s, p);
        let flag = || -> Result<bool> {
            let v = number()?;
            if v == 0.0 || v == 1.0 {
                Ok(v == 1.0)
            } else {
                Err(bad(format!("`{p}`: 0 or 1")))
            }
        };
        match key {
            "o" => config.outliers = number()? / 100.0,
            "s" => {
                let n = number()?;
                if n < 0.0 || n.fract() != 0.0 {
                    return Err(bad(format!("`{p}` is not a token count")));
                }
                config.sinks = n as usize;
            }
            "p" => config.pre_rope = flag()?,
            "k" => config.nuq = flag()?,
            "n" => config.qnorm = flag()?,
            "f" => config.fisher = flag()?,
            "h" => config.head_ranges = flag()?,
            _ => {
                return Err(bad(format!(
                    "unknown part `{p}` (oOUTLIER_PERCENT, sSINKS, p0|1 keys before RoPE, \
                     k0|1 k-means levels, n0|1 Q-Norm, f0|1 Fisher weights, h0|1 a value \
                     range per head)"
                )))
            }
        }
    }
    config.validate()?;
    Ok(CacheSpec::KvQuant(config))
}

/// `streaming-…`, `h2o-…`, `snapkv-…`, `ems-…` after the name: the budget first
/// (`pPERCENT` or `nTOKENS`), then the policy's options.
fn parse_eviction(s: &str, name: &str, rest: &str) -> Result<CacheSpec> {
    let bad = |reason: String| Error::Config {
        field: "cache spec",
        reason: format!("`{s}`: {reason}"),
    };
    let mut parts = rest.split('-');
    let budget = match parts.next().unwrap_or("") {
        b if b.starts_with('p') => Budget::Ratio(
            b[1..]
                .parse::<f32>()
                .map_err(|_| bad(format!("`{b}` is not a percentage")))?
                / 100.0,
        ),
        b if b.starts_with('m') => Budget::Mass(
            b[1..]
                .parse::<f32>()
                .map_err(|_| bad(format!("`{b}` is not a percentage of the attention")))?
                / 100.0,
        ),
        b if b.starts_with('d') => Budget::decay(
            b[1..]
                .parse::<f32>()
                .map_err(|_| bad(format!("`{b}` is not a mean percentage")))?
                / 100.0,
        ),
        b if b.starts_with('n') => Budget::Tokens(
            b[1..]
                .parse()
                .map_err(|_| bad(format!("`{b}` is not a token count")))?,
        ),
        b => {
            return Err(bad(format!(
                "`{b}`: give the budget first, as pPERCENT (of the tokens seen), nTOKENS, \
                 mPERCENT (of each step's attention, ZipVL's dynamic ratio) or dPERCENT (a \
                 mean ratio decaying over layers, p-MoD's schedule), e.g. {name}p50"
            )))
        }
    };
    let mut budget = budget;
    let mut policy = match name {
        "streaming-" => Eviction::streaming_llm(),
        "h2o-" => Eviction::h2o(),
        "ems-" => Eviction::ems(),
        _ => Eviction::snapkv(),
    };
    for p in parts {
        let (key, real) = lettered(s, p);
        let percent = || -> Result<f32> { Ok(real()? / 100.0) };
        let number = || -> Result<usize> {
            let n = real()?;
            if n >= 0.0 && n.fract() == 0.0 {
                Ok(n as usize)
            } else {
                Err(bad(format!("`{p}` is not a number after its letter")))
            }
        };
        match (&mut budget, key) {
            (Budget::Decay { floor, .. }, "f") => {
                *floor = percent()?;
                continue;
            }
            (Budget::Decay { ceiling, .. }, "c") => {
                *ceiling = percent()?;
                continue;
            }
            _ => {}
        }
        match (&mut policy, key) {
            (Eviction::StreamingLlm { sinks }, "s") => *sinks = number()?,
            (Eviction::H2o { recent }, "r") => *recent = number()? as f32 / 100.0,
            (Eviction::SnapKv { window, .. }, "w") => *window = number()?,
            (Eviction::SnapKv { kernel, .. }, "k") => *kernel = number()?,
            (Eviction::SnapKv { sinks, .. }, "s") => *sinks = number()?,
            (Eviction::Ems { window, .. }, "w") => *window = number()?,
            (Eviction::Ems { sinks, .. }, "s") => *sinks = number()?,
            (Eviction::Ems { merge, .. }, "m") => *merge = number()? as f32 / 100.0,
            _ => {
                return Err(bad(format!(
                    "unknown part `{p}` (streaming: sSINKS; h2o: rRECENT_PERCENT; snapkv: \
                     wWINDOW, kKERNEL, sSINKS; ems: wWINDOW, sSINKS, mMERGE_COSINE_PERCENT; \
                     after a dPERCENT budget: fFLOOR_PERCENT, cCEILING_PERCENT)"
                )))
            }
        }
    }
    // The settings are checked here so a bad spec fails on the command line.
    budget.validate()?;
    EvictingCache::new(1, 1, policy, budget.for_layer(0, 1))?;
    Ok(CacheSpec::Evict { policy, budget })
}

impl fmt::Display for CacheSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheSpec::F32 => write!(f, "f32"),
            CacheSpec::F16 => write!(f, "f16"),
            CacheSpec::Int8 => write!(f, "int8"),
            CacheSpec::Fp8 => write!(f, "fp8"),
            CacheSpec::Fp8Static => write!(f, "fp8-static"),
            CacheSpec::Kivi(c) => write!(f, "kivi-{}-g{}-r{}", c.bits, c.group, c.residual),
            CacheSpec::Gear(c) => write!(
                f,
                "gear-{}-g{}-b{}-r{}-s{}",
                c.bits,
                c.group,
                c.buffer,
                c.rank,
                c.outliers * 100.0
            ),
            CacheSpec::Zip(c) => write!(
                f,
                "zipcache-{}-{}-s{}-c{}-r{}-p{}",
                c.high_bits,
                c.low_bits,
                c.salient * 100.0,
                c.chunk,
                c.residual,
                c.probe * 100.0
            ),
            CacheSpec::KvQuant(c) => write!(
                f,
                "kvquant-{}-o{}-s{}-p{}-k{}-n{}-f{}-h{}",
                c.bits,
                c.outliers * 100.0,
                c.sinks,
                u8::from(c.pre_rope),
                u8::from(c.nuq),
                u8::from(c.qnorm),
                u8::from(c.fisher),
                u8::from(c.head_ranges)
            ),
            CacheSpec::Evict { policy, budget } => {
                let budget = match budget {
                    Budget::Tokens(n) => format!("n{n}"),
                    Budget::Ratio(r) => format!("p{}", r * 100.0),
                    Budget::Mass(r) => format!("m{}", r * 100.0),
                    Budget::Decay {
                        mean,
                        floor,
                        ceiling,
                    } => format!("d{}-f{}-c{}", mean * 100.0, floor * 100.0, ceiling * 100.0),
                };
                match policy {
                    Eviction::StreamingLlm { sinks } => write!(f, "streaming-{budget}-s{sinks}"),
                    Eviction::H2o { recent } => {
                        write!(f, "h2o-{budget}-r{}", (recent * 100.0).round())
                    }
                    Eviction::SnapKv {
                        window,
                        kernel,
                        sinks,
                    } => {
                        write!(f, "snapkv-{budget}-w{window}-k{kernel}-s{sinks}")
                    }
                    Eviction::Ems {
                        window,
                        sinks,
                        merge,
                    } => write!(
                        f,
                        "ems-{budget}-w{window}-s{sinks}-m{}",
                        (merge * 100.0).round()
                    ),
                }
            }
        }
    }
}
