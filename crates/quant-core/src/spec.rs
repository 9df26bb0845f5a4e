//! What a quantized weight looks like: the number format of its codes and how
//! scales are shared (per tensor, per output channel, or per group of input columns).

use crate::formats::{FloatFormat, MxFormat, Specials, MX_BLOCK, NVFP4_BLOCK};
use crate::{Error, Result};

/// The number format of quantized codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Integers of `bits` bits, 2 to 8: codes `0 ..= 2^bits − 1`, value
    /// `(code − zero) · scale`.
    Int {
        /// Bits per code.
        bits: u8,
    },
    /// A small float ([`FloatFormat`]: FP8 E4M3/E5M2, FP6 E2M3/E3M2, FP4 E2M1,
    /// or an all-finite format of LLM-FP4's search): value
    /// `element(code) · scale`, with one f32 scale per group chosen so that the
    /// group's largest magnitude maps to the format's largest value.
    Float(FloatFormat),
    /// NF4 (QLoRA's 4-bit NormalFloat): value `NF4_VALUES[code] · absmax`.
    Nf4,
    /// An OCP MX format: `element(code) · 2^(e − 127)` with an E8M0 exponent
    /// `e` shared by every 32 elements.
    Mx(MxFormat),
    /// NVFP4: `e2m1(code) · block_scale · tensor_scale`, with an E4M3 block
    /// scale per 16 elements and one f32 scale per tensor.
    Nvfp4,
}

impl Format {
    /// Bits per stored code.
    pub fn bits(self) -> u8 {
        match self {
            Format::Int { bits } => bits,
            Format::Float(f) => f.bits(),
            Format::Nf4 | Format::Nvfp4 => 4,
            Format::Mx(m) => m.bits(),
        }
    }

    /// Checks the format's own parameters.
    pub fn validate(self) -> Result<()> {
        match self {
            Format::Int { bits } if !(2..=8).contains(&bits) => Err(Error::InvalidBits { bits }),
            Format::Int { .. } => Ok(()),
            // A `FloatFormat` is checked when it is made.
            Format::Float(_) | Format::Nf4 | Format::Mx(_) | Format::Nvfp4 => Ok(()),
        }
    }

    /// The scale sharing the format prescribes, if any: groups of 32 for MX,
    /// 16 for NVFP4.
    pub fn required_granularity(self) -> Option<Granularity> {
        match self {
            Format::Mx(_) => Some(Granularity::Group(MX_BLOCK)),
            Format::Nvfp4 => Some(Granularity::Group(NVFP4_BLOCK)),
            Format::Int { .. } | Format::Float(_) | Format::Nf4 => None,
        }
    }

    /// The scale sharing a spec gets by default: per channel for integers and
    /// floats, groups of 64 for NF4 (bitsandbytes' blocksize), and the
    /// required groups for MX and NVFP4.
    pub fn default_granularity(self) -> Granularity {
        match self {
            Format::Nf4 => Granularity::Group(64),
            f => f.required_granularity().unwrap_or(Granularity::Channel),
        }
    }

    /// Whether codes are offset by a zero point. Only integers have one;
    /// the other formats are symmetric by construction.
    pub fn has_zero_point(self) -> bool {
        matches!(self, Format::Int { .. })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Int { bits } => write!(f, "int{bits}"),
            Format::Float(x) => write!(f, "{x}"),
            Format::Nf4 => f.write_str("nf4"),
            Format::Mx(m) => write!(f, "{m}"),
            Format::Nvfp4 => f.write_str("nvfp4"),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;

    /// Parses the names [`Display`](std::fmt::Display) writes (`int4`,
    /// `fp8_e4m3`, `fp6_e2m3`, `fp4_e2m1`, `nf4`, `mxfp4`, `mxfp6_e3m2`,
    /// `mxfp8_e5m2`, `nvfp4`, …), case-insensitively, plus the short forms
    /// `fp4` (E2M1), `mxfp6` (E2M3) and `mxfp8` (E4M3), `fp<b>_e<e>m<m>` for
    /// any other split (all-finite), and the `ml_dtypes` names
    /// (`float8_e4m3fn`, …).
    fn from_str(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let unknown = || Error::UnknownFormat {
            name: name.to_string(),
        };
        let float = |e: u8, m: u8| FloatFormat::standard(e, m).map(Format::Float);
        let format = match lower.as_str() {
            "nf4" => Format::Nf4,
            "nvfp4" => Format::Nvfp4,
            "mxfp4" => Format::Mx(MxFormat::Fp4),
            "mxfp6" | "mxfp6_e2m3" => Format::Mx(MxFormat::Fp6E2M3),
            "mxfp6_e3m2" => Format::Mx(MxFormat::Fp6E3M2),
            "mxfp8" | "mxfp8_e4m3" => Format::Mx(MxFormat::Fp8E4M3),
            "mxfp8_e5m2" => Format::Mx(MxFormat::Fp8E5M2),
            "fp4" | "float4_e2m1fn" => Format::Float(FloatFormat::E2M1),
            "float6_e2m3fn" => Format::Float(FloatFormat::E2M3),
            "float6_e3m2fn" => Format::Float(FloatFormat::E3M2),
            "float8_e4m3fn" => Format::Float(FloatFormat::E4M3),
            "float8_e5m2" => Format::Float(FloatFormat::E5M2),
            s => {
                if let Some(bits) = s.strip_prefix("int") {
                    let bits: u8 = bits.parse().map_err(|_| unknown())?;
                    Format::Int { bits }
                } else if let Some(rest) = s.strip_prefix("fp") {
                    let (rest, specials) = [
                        ("_finite", Some(Specials::AllFinite)),
                        ("_fnan", Some(Specials::FiniteNan)),
                        ("_ieee", Some(Specials::Ieee)),
                    ]
                    .into_iter()
                    .find_map(|(suffix, sp)| rest.strip_suffix(suffix).map(|r| (r, sp)))
                    .unwrap_or((rest, None));
                    let (b, em) = rest.split_once("_e").ok_or_else(unknown)?;
                    let (e, m) = em.split_once('m').ok_or_else(unknown)?;
                    let parse = |t: &str| t.parse::<u8>().map_err(|_| unknown());
                    let (b, e, m) = (parse(b)?, parse(e)?, parse(m)?);
                    if u16::from(b) != 1 + u16::from(e) + u16::from(m) {
                        return Err(unknown());
                    }
                    match specials {
                        Some(sp) => Format::Float(FloatFormat::new(e, m, sp)?),
                        None => float(e, m)?,
                    }
                } else {
                    return Err(unknown());
                }
            }
        };
        format.validate()?;
        Ok(format)
    }
}

/// How many weights share one scale (and zero point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per output channel (row).
    Channel,
    /// One scale per row and per run of this many input columns. A last group
    /// may be shorter when the column count is not a multiple (576 columns in
    /// groups of 128 give four groups of 128 and one of 64); export formats
    /// that cannot store that say so.
    Group(usize),
}

/// A complete description of a weight quantization.
///
/// ```
/// use tensorpress_quant_core::{Format, Granularity, QuantSpec};
///
/// let spec = QuantSpec::int(4).group(128).asymmetric();
/// assert_eq!(spec.format, Format::Int { bits: 4 });
/// assert_eq!(spec.granularity, Granularity::Group(128));
/// assert!(!spec.symmetric);
/// assert_eq!(spec.n_groups(576)?, 5);
/// assert!(QuantSpec::int(9).validate(64).is_err());
/// # Ok::<(), tensorpress_quant_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantSpec {
    /// Number format of the codes.
    pub format: Format,
    /// Scale sharing.
    pub granularity: Granularity,
    /// Symmetric (zero point fixed at the middle of the code range) or
    /// asymmetric (a zero point per group).
    pub symmetric: bool,
}

impl QuantSpec {
    /// `bits`-bit integers, symmetric, one scale per output channel.
    pub fn int(bits: u8) -> Self {
        QuantSpec {
            format: Format::Int { bits },
            granularity: Granularity::Channel,
            symmetric: true,
        }
    }

    /// `format` with its default scale sharing ([`Format::default_granularity`]),
    /// symmetric.
    pub fn new(format: Format) -> Self {
        QuantSpec {
            format,
            granularity: format.default_granularity(),
            symmetric: true,
        }
    }

    /// A small float format, one scale per output channel.
    pub fn float(format: FloatFormat) -> Self {
        QuantSpec::new(Format::Float(format))
    }

    /// NF4 in blocks of 64 (bitsandbytes' default).
    pub fn nf4() -> Self {
        QuantSpec::new(Format::Nf4)
    }

    /// An MX format (blocks of 32).
    pub fn mx(format: MxFormat) -> Self {
        QuantSpec::new(Format::Mx(format))
    }

    /// MXFP4: FP4 E2M1 in blocks of 32 with an E8M0 scale.
    pub fn mxfp4() -> Self {
        QuantSpec::mx(MxFormat::Fp4)
    }

    /// NVFP4: FP4 E2M1 in blocks of 16 with an E4M3 scale and a tensor scale.
    pub fn nvfp4() -> Self {
        QuantSpec::new(Format::Nvfp4)
    }

    /// Groups of `size` input columns.
    pub fn group(mut self, size: usize) -> Self {
        self.granularity = Granularity::Group(size);
        self
    }

    /// One scale per output channel.
    pub fn channel(mut self) -> Self {
        self.granularity = Granularity::Channel;
        self
    }

    /// One scale for the whole tensor.
    pub fn tensor(mut self) -> Self {
        self.granularity = Granularity::Tensor;
        self
    }

    /// A zero point per group.
    pub fn asymmetric(mut self) -> Self {
        self.symmetric = false;
        self
    }

    /// Zero point fixed at the middle of the code range.
    pub fn symmetric(mut self) -> Self {
        self.symmetric = true;
        self
    }

    /// Bits per stored code.
    pub fn bits(&self) -> u8 {
        self.format.bits()
    }

    /// Checks the spec against a weight with `cols` input columns.
    ///
    /// Besides the format's own parameters and a nonzero group size, the MX
    /// formats need groups of 32 and NVFP4 groups of 16
    /// ([`Error::FormatGranularity`]), and formats without a zero point need a
    /// symmetric spec ([`Error::AsymmetricFormat`]).
    pub fn validate(&self, cols: usize) -> Result<()> {
        self.format.validate()?;
        if let Granularity::Group(g) = self.granularity {
            if g == 0 {
                return Err(Error::InvalidGroupSize { group: g, cols });
            }
        }
        if let Some(required) = self.format.required_granularity() {
            if self.granularity != required {
                return Err(Error::FormatGranularity {
                    format: self.format,
                    required,
                    actual: self.granularity,
                });
            }
        }
        if !self.symmetric && !self.format.has_zero_point() {
            return Err(Error::AsymmetricFormat {
                format: self.format,
            });
        }
        Ok(())
    }

    /// Columns per group for a weight with `cols` columns (the whole row for
    /// per-channel and per-tensor scales).
    pub fn group_size(&self, cols: usize) -> usize {
        match self.granularity {
            Granularity::Group(g) => g,
            Granularity::Channel | Granularity::Tensor => cols.max(1),
        }
    }

    /// Groups per row for a weight with `cols` columns.
    pub fn n_groups(&self, cols: usize) -> Result<usize> {
        self.validate(cols)?;
        Ok(cols.div_ceil(self.group_size(cols)).max(1))
    }
}

impl std::fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.format)?;
        if self.format.has_zero_point() {
            f.write_str(if self.symmetric { " sym" } else { " asym" })?;
        }
        match self.granularity {
            Granularity::Tensor => f.write_str(" per-tensor"),
            Granularity::Channel => f.write_str(" per-channel"),
            Granularity::Group(g) => write!(f, " g{g}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_groups() {
        let s = QuantSpec::int(3).group(128);
        assert_eq!(s.n_groups(576).unwrap(), 5);
        assert_eq!(s.n_groups(512).unwrap(), 4);
        assert_eq!(s.channel().n_groups(576).unwrap(), 1);
        assert_eq!(s.tensor().group_size(576), 576);
        assert_eq!(s.to_string(), "int3 sym g128");
        assert_eq!(
            QuantSpec::int(4).asymmetric().to_string(),
            "int4 asym per-channel"
        );
    }

    #[test]
    fn float_specs() {
        assert_eq!(QuantSpec::nf4().to_string(), "nf4 g64");
        assert_eq!(QuantSpec::mxfp4().to_string(), "mxfp4 g32");
        assert_eq!(QuantSpec::nvfp4().to_string(), "nvfp4 g16");
        assert_eq!(
            QuantSpec::float(FloatFormat::E4M3).to_string(),
            "fp8_e4m3 per-channel"
        );
        assert_eq!(QuantSpec::mx(MxFormat::Fp6E3M2).bits(), 6);
        for spec in [
            QuantSpec::nf4(),
            QuantSpec::mxfp4(),
            QuantSpec::nvfp4(),
            QuantSpec::float(FloatFormat::E2M1).group(128),
        ] {
            assert!(spec.validate(64).is_ok(), "{spec}");
        }
    }

    #[test]
    fn format_names_parse_back() {
        let mut formats = vec![Format::Nf4, Format::Nvfp4, Format::Int { bits: 3 }];
        formats.extend(MxFormat::ALL.map(Format::Mx));
        formats.extend(FloatFormat::OCP.map(Format::Float));
        formats.push(Format::Float(FloatFormat::standard(3, 0).unwrap()));
        formats.push(Format::Float(
            FloatFormat::new(4, 3, Specials::AllFinite).unwrap(),
        ));
        for f in formats {
            let name = f.to_string();
            assert_eq!(name.parse::<Format>().unwrap(), f, "{name}");
        }
        assert_eq!(
            "float8_e4m3fn".parse::<Format>().unwrap(),
            Format::Float(FloatFormat::E4M3)
        );
        assert_eq!(
            "MXFP4".parse::<Format>().unwrap(),
            Format::Mx(MxFormat::Fp4)
        );
        for bad in ["int9", "fp5_e2m3", "fp4_e0m3", "nf3", "", "fp8_e4"] {
            assert!(bad.parse::<Format>().is_err(), "{bad}");
        }
        assert!(matches!(
            "q4".parse::<Format>(),
            Err(Error::UnknownFormat { .. })
        ));
    }

    #[test]
    fn bad_specs_are_typed_errors() {
        assert!(matches!(
            QuantSpec::mxfp4().group(64).validate(128),
            Err(Error::FormatGranularity {
                required: Granularity::Group(32),
                actual: Granularity::Group(64),
                ..
            })
        ));
        assert!(matches!(
            QuantSpec::nvfp4().channel().validate(128),
            Err(Error::FormatGranularity {
                format: Format::Nvfp4,
                ..
            })
        ));
        assert!(matches!(
            QuantSpec::nf4().asymmetric().validate(128),
            Err(Error::AsymmetricFormat {
                format: Format::Nf4
            })
        ));
        assert!(matches!(
            QuantSpec::nf4().group(0).validate(128),
            Err(Error::InvalidGroupSize { group: 0, .. })
        ));
        assert!(matches!(
            QuantSpec::int(1).validate(8),
            Err(Error::InvalidBits { bits: 1 })
        ));
        assert!(matches!(
            QuantSpec::int(9).validate(8),
            Err(Error::InvalidBits { bits: 9 })
        ));
        assert!(matches!(
            QuantSpec::int(4).group(0).validate(8),
            Err(Error::InvalidGroupSize { group: 0, cols: 8 })
        ));
    }
}
