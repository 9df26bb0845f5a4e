//! What a quantized weight looks like: the number format of its codes and how
//! scales are shared (per tensor, per output channel, or per group of input columns).

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
}

impl Format {
    /// Bits per stored code.
    pub fn bits(self) -> u8 {
        match self {
            Format::Int { bits } => bits,
        }
    }

    /// Checks the format's own parameters.
    pub fn validate(self) -> Result<()> {
        match self {
            Format::Int { bits } if !(2..=8).contains(&bits) => Err(Error::InvalidBits { bits }),
            Format::Int { .. } => Ok(()),
        }
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
    pub fn validate(&self, cols: usize) -> Result<()> {
        self.format.validate()?;
        if let Granularity::Group(g) = self.granularity {
            if g == 0 {
                return Err(Error::InvalidGroupSize { group: g, cols });
            }
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
        match self.format {
            Format::Int { bits } => write!(f, "int{bits}")?,
        }
        f.write_str(if self.symmetric { " sym" } else { " asym" })?;
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
    fn bad_specs_are_typed_errors() {
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
