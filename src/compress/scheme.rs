//! Scheme strings: a whole quantization method in one short name, as the CLI
//! and the examples take it (`gptq-w4-g128`, `rtn-nf4`, `ggml-q4_0-imatrix`).

use std::sync::Arc;

use tensorpress_quant_core::ggml::{GgmlRtn, GgmlType};
use tensorpress_quant_core::gptq::GgmlGptq;
use tensorpress_quant_core::rotation::RotationKind;
use tensorpress_quant_core::{Awq, ClipSearch, Format, Gptq, Hqq, QuantSpec, Rtn, WeightQuantizer};
use tensorpress_sparsity::{Magnitude, PruneScope, SparseGpt, SparsityTarget, Wanda, WeightPruner};

use super::{ActivationQuant, CompressOptions, Method, RotateOptions, Smoothing};
use crate::{Error, Result};

/// A parsed scheme: the method and a readable label.
#[derive(Debug, Clone)]
pub struct Scheme {
    /// What the scheme does, for tables and logs (`GPTQ int4 sym g128 act-order`).
    pub label: String,
    /// The method.
    pub method: Method,
    /// Smoothing folded into the model first (AWQ, SmoothQuant).
    pub smoothing: Option<Smoothing>,
    /// Run-time quantization of the layers' inputs (`w8a8`).
    pub activations: Option<ActivationQuant>,
    /// Rotation applied first (`rot`, `rotorth`).
    pub rotation: Option<RotateOptions>,
}

impl Scheme {
    fn weight_only(label: String, method: Method) -> Self {
        Scheme {
            label,
            method,
            smoothing: None,
            activations: None,
            rotation: None,
        }
    }

    /// Compression options that apply this scheme to every linear layer but
    /// `lm_head`.
    pub fn options(&self) -> CompressOptions {
        let mut options = CompressOptions::with_method(self.method.clone());
        options.smoothing = self.smoothing.clone();
        options.activations = self.activations;
        options.rotation = self.rotation.clone();
        options
    }
}

/// Parses `METHOD-FORMAT[-OPTION...]`:
///
/// - METHOD: `rtn` (round to nearest), `rtnmse` (RTN with GPTQ's MSE clipping
///   search per group), `gptq` (Frantar et al., 2022), `hqq` (Badri & Shaji,
///   2023; always asymmetric), `awq` (Lin et al., 2024: scales searched and
///   folded into the norms, then a clipping search), `smoothquant` (Xiao et
///   al., 2023; with `w8a8` only), or `ggml` (llama.cpp's block encoders, for
///   GGUF files);
/// - FORMAT: `wB` for B-bit integers (2–8), or any [`Format`] name (`nf4`,
///   `mxfp4`, `nvfp4`, `fp8_e4m3`, `fp4`, …); after `ggml`, a GGML type name
///   (`q4_0`, `q4_k`, `iq4_nl`, …); `w8a8` for int8 weights per channel and
///   int8 activations per token at run time; after `gptq`, a GGML type name means GPTQ
///   onto that type's block grid ([`GgmlGptq`], for GGUF files);
/// - OPTION: `gN` (groups of N input columns), `ch` (per output channel),
///   `tensor`, `asym` (zero points), `act` (GPTQ act-order), `static` (GPTQ
///   static groups), `imatrix` (`ggml`: importance-weighted encoding from the
///   calibration activations, as `llama-quantize --imatrix`), `intzero`
///   (`hqq`: integer zero points, for compressed-tensors and GPTQ exports),
///   `alphaX` (`smoothquant`: migration strength, default 0.5), `rot` /
///   `rotorth` (any method: rotate the model first by randomized Hadamard /
///   random orthogonal matrices fused into the weights, QuaRot-style).
///
/// ```
/// use tensorpress::compress::parse_scheme;
///
/// let s = parse_scheme("gptq-w4-g128-act")?;
/// assert_eq!(s.label, "GPTQ int4 sym g128 act-order");
/// assert!(s.method.calibrates());
/// assert!(!parse_scheme("rtn-nf4")?.method.calibrates());
/// assert!(parse_scheme("ggml-q4_k-imatrix")?.method.calibrates());
/// assert!(parse_scheme("gptq-w9-g128").is_err());
/// let sq = parse_scheme("smoothquant-w8a8-alpha0.8")?;
/// assert_eq!(sq.options().activations.map(|a| a.bits), Some(8));
/// assert!(parse_scheme("awq-w4-g128")?.options().smoothing.is_some());
/// assert!(parse_scheme("gptq-w4-ch-rot")?.options().rotation.is_some());
/// # Ok::<(), tensorpress::Error>(())
/// ```
pub fn parse_scheme(scheme: &str) -> Result<Scheme> {
    // `rot` / `rotorth` may follow any method: a rotation first.
    let mut rotation = None;
    let parts: Vec<&str> = scheme
        .trim()
        .split('-')
        .filter(|p| match *p {
            "rot" => {
                rotation = Some(RotateOptions::default());
                false
            }
            "rotorth" => {
                rotation = Some(RotateOptions::default().kind(RotationKind::Orthogonal));
                false
            }
            _ => true,
        })
        .collect();
    let mut scheme = parse_parts(scheme, &parts)?;
    if let Some(r) = rotation {
        scheme.label.push_str(match r.kind {
            RotationKind::Orthogonal => " + random orthogonal rotation",
            _ => " + Hadamard rotation",
        });
        scheme.rotation = Some(r);
    }
    Ok(scheme)
}

fn parse_parts(scheme: &str, parts: &[&str]) -> Result<Scheme> {
    let bad = |reason: String| Error::Scheme {
        scheme: scheme.to_string(),
        reason,
    };
    if parts.len() < 2 {
        return Err(bad(
            "expected METHOD-FORMAT[-OPTION...], e.g. gptq-w4-g128".into()
        ));
    }
    let (method, format, options) = (parts[0], parts[1], &parts[2..]);
    if matches!(method, "magnitude" | "wanda" | "sparsegpt") {
        return parse_pruning(scheme, method, format, options);
    }
    if method == "ggml" {
        let ty = GgmlType::from_name(format)
            .filter(|t| t.can_quantize())
            .ok_or_else(|| bad(format!("`{format}` is not a GGML type tensorpress encodes")))?;
        let mut q = GgmlRtn::new(ty);
        for &o in options {
            match o {
                "imatrix" if ty.can_quantize_weighted() => q = q.with_importance(),
                "imatrix" => {
                    return Err(bad(format!(
                        "{} has no importance-weighted encoder",
                        ty.name()
                    )))
                }
                other => return Err(bad(format!("unknown option `{other}` for ggml"))),
            }
        }
        let label = format!(
            "llama.cpp {}{}",
            ty.name(),
            if q.importance { " imatrix" } else { "" }
        );
        return Ok(Scheme::weight_only(label, Method::Ggml(Arc::new(q))));
    }

    if method == "gptq" && format.parse::<Format>().is_err() {
        if let Some(ty) = GgmlType::from_name(format).filter(|t| t.can_quantize()) {
            if let Some(o) = options.first() {
                return Err(bad(format!(
                    "unknown option `{o}` for GPTQ into {}",
                    ty.name()
                )));
            }
            return Ok(Scheme::weight_only(
                format!("GPTQ {}", ty.name()),
                Method::Ggml(Arc::new(GgmlGptq::new(ty))),
            ));
        }
    }
    // `w8a8`: int8 weights per output channel, int8 activations per token.
    let w8a8 = format == "w8a8";
    let fmt: Format = match format.strip_prefix('w').and_then(|b| b.parse::<u8>().ok()) {
        Some(bits) => Format::Int { bits },
        None if w8a8 => Format::Int { bits: 8 },
        None => format.parse().map_err(|e| bad(format!("{e}")))?,
    };
    let mut spec = QuantSpec::new(fmt);
    if w8a8 {
        spec = spec.channel();
    }
    let (mut act, mut stat, mut intzero, mut keep_zeros) = (false, false, false, false);
    let mut alpha: Option<f32> = None;
    if method == "hqq" {
        spec = spec.asymmetric();
    }
    for &o in options {
        match o {
            "ch" => spec = spec.channel(),
            "tensor" => spec = spec.tensor(),
            "asym" => spec = spec.asymmetric(),
            "act" => act = true,
            "static" => stat = true,
            "intzero" => intzero = true,
            "sparse" => keep_zeros = true,
            a if a.starts_with("alpha") => {
                let v: f32 = a[5..]
                    .parse()
                    .ok()
                    .filter(|v: &f32| (0.0..=1.0).contains(v))
                    .ok_or_else(|| bad(format!("`{a}`: expected alphaX with X in [0, 1]")))?;
                alpha = Some(v);
            }
            g if g.starts_with('g') => {
                let size = g[1..]
                    .parse()
                    .map_err(|_| bad(format!("`{g}`: expected gN, e.g. g128")))?;
                spec = spec.group(size);
            }
            other => return Err(bad(format!("unknown option `{other}`"))),
        }
    }
    spec.format.validate().map_err(|e| bad(e.to_string()))?;
    if (act || stat) && method != "gptq" {
        return Err(bad("`act` and `static` are GPTQ options".into()));
    }
    if keep_zeros && (method != "gptq" || act || stat) {
        return Err(bad(
            "`sparse` (keep the weight's zeros) is a GPTQ option without act-order or static groups"
                .into(),
        ));
    }
    if intzero && method != "hqq" {
        return Err(bad("`intzero` is an HQQ option".into()));
    }
    if alpha.is_some() && method != "smoothquant" {
        return Err(bad("`alphaX` is a SmoothQuant option".into()));
    }
    if method == "smoothquant" && !w8a8 {
        return Err(bad(
            "SmoothQuant is for W8A8: write smoothquant-w8a8[-alphaX]".into(),
        ));
    }
    let (quantizer, calibrate): (Arc<dyn WeightQuantizer>, bool) = match method {
        "rtn" => (Arc::new(Rtn::new(spec)), false),
        "rtnmse" => (
            Arc::new(Rtn::new(spec).with_clip_search(ClipSearch::default())),
            false,
        ),
        "gptq" if keep_zeros => (
            Arc::new(SparseGpt::new(SparsityTarget::KeepZeros).with_quant(spec)),
            true,
        ),
        "gptq" => (
            Arc::new(Gptq::new(spec).act_order(act).static_groups(stat)),
            true,
        ),
        "hqq" => (Arc::new(Hqq::new(spec).round_zero(intzero)), false),
        "awq" => (Arc::new(Awq::new(spec)), true),
        "smoothquant" => (Arc::new(Rtn::new(spec)), true),
        other => {
            return Err(bad(format!(
                "unknown method `{other}`: rtn, rtnmse, gptq, awq, hqq, smoothquant or ggml"
            )))
        }
    };
    let smoothing = match method {
        "awq" => Some(Smoothing::Awq(Awq::new(spec))),
        "smoothquant" => Some(Smoothing::SmoothQuant {
            alpha: alpha.unwrap_or(0.5),
        }),
        _ => None,
    };
    let activations = w8a8.then_some(ActivationQuant { bits: 8 });
    let mut label = format!("{} {spec}", method.to_uppercase());
    if act {
        label.push_str(" act-order");
    }
    if stat {
        label.push_str(" static-groups");
    }
    if intzero {
        label.push_str(" integer zeros");
    }
    if keep_zeros {
        label.push_str(" keeping zeros");
    }
    if w8a8 {
        label.push_str(" + int8 activations per token");
    }
    if let Some(Smoothing::SmoothQuant { alpha }) = &smoothing {
        label.push_str(&format!(" (α = {alpha})"));
    }
    Ok(Scheme {
        label,
        method: Method::Weight {
            quantizer,
            calibrate,
        },
        smoothing,
        activations,
        rotation: None,
    })
}

/// `magnitude-50`, `wanda-2:4`, `sparsegpt-4:8`, `sparsegpt-50-w4[-gN|-ch][-asym]`
/// (joint pruning and quantization; `sparsegpt-2:4-w8a8` and
/// `sparsegpt-2:4-float8_e4m3fn-ch` are the pruned and quantized layouts
/// vLLM's 2:4 kernels load), `magnitude-50-row` (per output row).
fn parse_pruning(scheme: &str, method: &str, target: &str, options: &[&str]) -> Result<Scheme> {
    let bad = |reason: String| Error::Scheme {
        scheme: scheme.to_string(),
        reason,
    };
    let target = match target.split_once(':') {
        Some((n, m)) => {
            let (n, m) = n
                .parse()
                .ok()
                .zip(m.parse().ok())
                .ok_or_else(|| bad(format!("`{target}`: expected N:M, e.g. 2:4")))?;
            SparsityTarget::NM { n, m }
        }
        None => {
            let percent: f64 = target.parse().map_err(|_| {
                bad(format!(
                    "`{target}`: expected a percentage (50) or an N:M pattern (2:4)"
                ))
            })?;
            SparsityTarget::Unstructured(percent / 100.0)
        }
    };
    // The target's own checks that need no weight.
    match target {
        SparsityTarget::Unstructured(s) if !(s > 0.0 && s < 1.0) => {
            return Err(bad(format!("sparsity {}% is outside (0, 100)", s * 100.0)))
        }
        SparsityTarget::NM { n, m } if m == 0 || n > m => {
            return Err(bad(format!(
                "{n}:{m} keeps more than it has: N must be ≤ M"
            )))
        }
        _ => {}
    }
    let pruner: Arc<dyn WeightPruner> = match method {
        "magnitude" => {
            let mut p = Magnitude::new(target);
            for &o in options {
                match o {
                    "row" => p.scope = PruneScope::PerRow,
                    other => return Err(bad(format!("unknown option `{other}` for magnitude"))),
                }
            }
            Arc::new(p)
        }
        "wanda" => {
            if let Some(o) = options.first() {
                return Err(bad(format!("unknown option `{o}` for Wanda")));
            }
            Arc::new(Wanda::new(target))
        }
        _ if options.is_empty() => Arc::new(SparseGpt::new(target)),
        _ => {
            // Joint pruning and quantization: the rest is a quantization format.
            let spec = parse_spec(options).map_err(bad)?;
            let sg = SparseGpt::new(target).with_quant(spec);
            // `w8a8`: int8 activations per token too (compressed-tensors
            // `int-quantized`, which it then stores sparse).
            let w8a8 = options[0] == "w8a8";
            let mut scheme = Scheme::weight_only(
                sg.label(),
                Method::Weight {
                    quantizer: Arc::new(sg),
                    calibrate: true,
                },
            );
            if w8a8 {
                scheme.label.push_str(" + int8 activations per token");
                scheme.activations = Some(ActivationQuant { bits: 8 });
            }
            return Ok(scheme);
        }
    };
    Ok(Scheme::weight_only(pruner.label(), Method::Prune(pruner)))
}

/// `wB[-gN|-ch|-tensor][-asym]`, `w8a8` (int8 per channel) or a float
/// format name, for SparseGPT's joint mode.
fn parse_spec(parts: &[&str]) -> std::result::Result<QuantSpec, String> {
    let format = parts[0];
    let fmt: Format = match format.strip_prefix('w').and_then(|b| b.parse::<u8>().ok()) {
        Some(bits) => Format::Int { bits },
        None if format == "w8a8" => Format::Int { bits: 8 },
        None => format.parse().map_err(|e| format!("{e}"))?,
    };
    let mut spec = QuantSpec::new(fmt);
    if format == "w8a8" {
        spec = spec.channel();
    }
    for &o in &parts[1..] {
        match o {
            "ch" => spec = spec.channel(),
            "tensor" => spec = spec.tensor(),
            "asym" => spec = spec.asymmetric(),
            g if g.starts_with('g') => {
                let size = g[1..]
                    .parse()
                    .map_err(|_| format!("`{g}`: expected gN, e.g. g128"))?;
                spec = spec.group(size);
            }
            other => {
                return Err(format!(
                    "unknown option `{other}` for SparseGPT's quantization"
                ))
            }
        }
    }
    spec.format.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_errors() {
        let label = |s: &str| parse_scheme(s).unwrap().label;
        assert_eq!(label("rtn-w3-g128"), "RTN int3 sym g128");
        assert_eq!(label("gptq-w4-ch-asym"), "GPTQ int4 asym per-channel");
        assert_eq!(label("rtnmse-w2-g64-asym"), "RTNMSE int2 asym g64");
        assert_eq!(label("ggml-q4_k-imatrix"), "llama.cpp Q4_K imatrix");
        assert_eq!(label("hqq-w4-g64"), "HQQ int4 asym g64");
        assert_eq!(label("gptq-q4_0"), "GPTQ Q4_0");
        assert_eq!(label("sparsegpt-50"), "SparseGPT 50%");
        assert_eq!(label("wanda-2:4"), "Wanda 2:4");
        assert_eq!(label("magnitude-4:8"), "magnitude 4:8");
        assert_eq!(
            label("sparsegpt-50-w4"),
            "SparseGPT 50% + int4 sym per-channel joint"
        );
        assert_eq!(
            label("gptq-w4-ch-sparse"),
            "GPTQ int4 sym per-channel keeping zeros"
        );
        for bad in [
            "sparsegpt-0",
            "sparsegpt-100",
            "wanda-5:4",
            "wanda-2:0",
            "magnitude-x",
            "wanda-50-row",
            "sparsegpt-50-w9",
            "gptq-w4-g128-act-sparse",
        ] {
            assert!(parse_scheme(bad).is_err(), "{bad}");
        }
        assert!(parse_scheme("gptq-iq4_nl").unwrap().method.calibrates());
        for bad in [
            "gptq",
            "foo-w4",
            "rtn-w4-g",
            "rtn-w4-act",
            "rtn-w1",
            "ggml-q8_0-imatrix",
            "ggml-iq2_xxs",
            "rtn-w4-blah",
        ] {
            assert!(
                matches!(parse_scheme(bad), Err(Error::Scheme { .. })),
                "{bad}"
            );
        }
    }
}
