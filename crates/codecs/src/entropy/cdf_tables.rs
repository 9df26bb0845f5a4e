//! Tables of quantized CDFs, one chosen per element by an index (CompressAI's
//! layout for its factorized and Gaussian-conditional entropy models).

use super::categorical::{check_precision, quantize_weights};
use super::quantized::{Gaussian, UnivariateCdf};
use super::{EntropyModel, Interval};
use crate::varint::{read_ivarint, read_uvarint, write_ivarint, write_uvarint};
use crate::{Error, Result};

/// Most tables a serialized [`CdfTables`] may declare.
const MAX_TABLES: usize = 1 << 16;

/// A set of quantized CDFs at one precision. Table `t` codes the integers
/// `offset_t ..= offset_t + len_t − 1`; an element picks its table by index.
///
/// The CDFs are integers, so a stream coded with them decodes the same
/// everywhere (unlike [`Quantized`](super::Quantized), which evaluates `f64` CDFs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdfTables {
    precision: u32,
    /// All CDFs, concatenated; table `t` is `cdfs[bounds[t]..bounds[t + 1]]`.
    cdfs: Vec<u32>,
    bounds: Vec<usize>,
    offsets: Vec<i32>,
}

/// One table of a [`CdfTables`]: an [`EntropyModel`] over integers.
#[derive(Debug, Clone, Copy)]
pub struct CdfTable<'a> {
    precision: u32,
    cdf: &'a [u32],
    offset: i32,
}

impl CdfTables {
    /// An empty set of tables at `precision` bits.
    ///
    /// # Errors
    /// [`Error::InvalidPrecision`] outside `1..=16`.
    pub fn new(precision: u32) -> Result<Self> {
        check_precision(precision)?;
        Ok(Self {
            precision,
            cdfs: Vec::new(),
            bounds: vec![0],
            offsets: Vec::new(),
        })
    }

    /// Adds a table from a quantized CDF (`0 = cdf[0] < cdf[1] < … = 2^precision`)
    /// for the symbols `offset ..= offset + cdf.len() − 2`; returns its index.
    ///
    /// # Errors
    /// [`Error::InvalidCdf`] for a CDF that breaks the rule, or whose symbols
    /// overflow `i32`.
    pub fn push_cdf(&mut self, cdf: &[u32], offset: i32) -> Result<usize> {
        let table = self.len();
        let full = 1u64 << self.precision;
        let bad = |entry| Error::InvalidCdf { table, entry };
        if cdf.len() < 2 || i64::from(offset) + cdf.len() as i64 - 2 > i64::from(i32::MAX) {
            return Err(bad(0));
        }
        if cdf[0] != 0 {
            return Err(bad(0));
        }
        if let Some(i) = cdf.windows(2).position(|w| w[1] <= w[0]) {
            return Err(bad(i + 1));
        }
        if u64::from(cdf[cdf.len() - 1]) != full {
            return Err(bad(cdf.len() - 1));
        }
        self.cdfs.extend_from_slice(cdf);
        self.bounds.push(self.cdfs.len());
        self.offsets.push(offset);
        Ok(table)
    }

    /// Adds a table quantized from a probability mass function over
    /// `offset ..`; every entry keeps frequency ≥ 1, whatever its mass.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a negative or non-finite mass,
    /// [`Error::TooManySymbolsForPrecision`], [`Error::InvalidCdf`].
    pub fn push_pmf(&mut self, pmf: &[f64], offset: i32) -> Result<usize> {
        if let Some(&p) = pmf.iter().find(|p| !(p.is_finite() && **p >= 0.0)) {
            return Err(Error::InvalidParameter {
                name: "probability",
                value: p,
            });
        }
        let floor = f64::MIN_POSITIVE;
        let weights: Vec<f64> = pmf.iter().map(|&p| p.max(floor)).collect();
        let freqs = quantize_weights(&weights, self.precision)?;
        let mut cdf = Vec::with_capacity(freqs.len() + 1);
        cdf.push(0);
        let mut acc = 0;
        for f in freqs {
            acc += f;
            cdf.push(acc);
        }
        self.push_cdf(&cdf, offset)
    }

    /// CompressAI's Gaussian-conditional tables: one zero-mean Gaussian per
    /// scale, over `−h ..= h` with `h = ⌈scale · z⌉` where `z` leaves `tail_mass`
    /// outside (the tails folded into the end symbols), `h` capped so the table
    /// fits the precision. Code `x − round(mean)` with the table of the scale
    /// nearest below the element's predicted scale.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a scale that is not finite and positive or a
    /// tail mass outside `(0, 1)`; [`Error::InvalidPrecision`].
    pub fn gaussian_scales(scales: &[f64], tail_mass: f64, precision: u32) -> Result<Self> {
        let mut tables = Self::new(precision)?;
        if !(tail_mass > 0.0 && tail_mass < 1.0) {
            return Err(Error::InvalidParameter {
                name: "tail mass",
                value: tail_mass,
            });
        }
        // z with 2·Φ(−z) = tail_mass, by bisection on the standard normal CDF.
        let unit = Gaussian::new(0.0, 1.0)?;
        let (mut lo, mut hi) = (0.0f64, 40.0f64);
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if 2.0 * unit.cdf(-mid) > tail_mass {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let cap = ((1i64 << precision) - 1) / 2;
        for &scale in scales {
            let g = Gaussian::new(0.0, scale)?;
            let h = ((scale * hi).ceil() as i64).clamp(0, cap.min(1 << 20));
            let pmf: Vec<f64> = (-h..=h)
                .map(|k| {
                    let below = if k == -h { 0.0 } else { g.cdf(k as f64 - 0.5) };
                    let above = if k == h { 1.0 } else { g.cdf(k as f64 + 0.5) };
                    (above - below).max(0.0)
                })
                .collect();
            tables.push_pmf(&pmf, -(h as i32))?;
        }
        Ok(tables)
    }

    /// Number of tables.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are no tables.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Bits of every table's frequencies.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// Table `index`, as an entropy model.
    ///
    /// # Errors
    /// [`Error::TableIndex`] out of range.
    pub fn table(&self, index: usize) -> Result<CdfTable<'_>> {
        if index >= self.len() {
            return Err(Error::TableIndex {
                index,
                tables: self.len(),
            });
        }
        Ok(CdfTable {
            precision: self.precision,
            cdf: &self.cdfs[self.bounds[index]..self.bounds[index + 1]],
            offset: self.offsets[index],
        })
    }

    /// Appends the tables: precision byte, varint count, then per table a
    /// zigzag-varint offset, a varint length and the varint frequencies.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.precision as u8);
        write_uvarint(self.len() as u64, out);
        for t in 0..self.len() {
            let cdf = &self.cdfs[self.bounds[t]..self.bounds[t + 1]];
            write_ivarint(self.offsets[t].into(), out);
            write_uvarint(cdf.len() as u64 - 1, out);
            for w in cdf.windows(2) {
                write_uvarint(u64::from(w[1] - w[0]), out);
            }
        }
    }

    /// Reads tables written by [`write_to`](Self::write_to); returns them and
    /// the bytes they took.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::InvalidPrecision`], [`Error::TooManySymbols`]
    /// for more than 65,536 tables, [`Error::InvalidCdf`], varint errors.
    pub fn read_from(bytes: &[u8]) -> Result<(Self, usize)> {
        let truncated = |needed| Error::Truncated {
            unit: "bytes",
            needed,
            available: bytes.len(),
        };
        let precision = u32::from(*bytes.first().ok_or(truncated(1))?);
        let mut tables = Self::new(precision)?;
        let mut pos = 1;
        let count = super::read_count(bytes, &mut pos, MAX_TABLES)?;
        let full = 1u64 << precision;
        for _ in 0..count {
            let (offset, used) = read_ivarint(&bytes[pos..])?;
            pos += used;
            let (len, used) = read_uvarint(&bytes[pos..])?;
            pos += used;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            // One byte at least per frequency, and no more symbols than slots.
            if len as u64 > full || len > bytes.len() - pos {
                return Err(truncated(pos.saturating_add(len)));
            }
            let offset = i32::try_from(offset).map_err(|_| Error::InvalidCdf {
                table: tables.len(),
                entry: 0,
            })?;
            let mut cdf = Vec::with_capacity(len + 1);
            cdf.push(0u32);
            let mut acc = 0u64;
            for _ in 0..len {
                let (f, used) = read_uvarint(&bytes[pos..])?;
                pos += used;
                acc = acc.saturating_add(f);
                cdf.push(acc.min(full + 1) as u32);
            }
            tables.push_cdf(&cdf, offset)?;
        }
        Ok((tables, pos))
    }
}

impl CdfTable<'_> {
    /// The symbols the table codes.
    pub fn range(&self) -> std::ops::RangeInclusive<i32> {
        self.offset..=self.offset + (self.cdf.len() as i32 - 2)
    }
}

impl EntropyModel for CdfTable<'_> {
    type Symbol = i32;

    fn precision(&self) -> u32 {
        self.precision
    }

    fn interval(&self, symbol: i32) -> Option<Interval> {
        let k = usize::try_from(i64::from(symbol) - i64::from(self.offset)).ok()?;
        let start = *self.cdf.get(k)?;
        let end = *self.cdf.get(k + 1)?;
        Some(Interval {
            start,
            freq: end - start,
        })
    }

    fn symbol_at(&self, slot: u32) -> Option<(i32, Interval)> {
        if slot >> self.precision != 0 {
            return None;
        }
        let k = self.cdf.partition_point(|&c| c <= slot) - 1;
        let symbol = self.offset + k as i32;
        Some((symbol, self.interval(symbol)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_validate_and_round_trip() {
        let mut t = CdfTables::new(4).unwrap();
        assert_eq!(t.push_cdf(&[0, 3, 16], -1).unwrap(), 0);
        assert!(t.push_cdf(&[0, 3, 3, 16], 0).is_err());
        assert!(t.push_cdf(&[1, 16], 0).is_err());
        assert!(t.push_cdf(&[0, 15], 0).is_err());
        t.push_pmf(&[0.0, 1.0, 0.0], 5).unwrap();
        let m = t.table(1).unwrap();
        assert_eq!(m.range(), 5..=7);
        assert!(m.interval(5).unwrap().freq >= 1);
        assert!(t.table(2).is_err());

        let mut bytes = Vec::new();
        t.write_to(&mut bytes);
        let (back, used) = CdfTables::read_from(&bytes).unwrap();
        assert_eq!((back, used), (t, bytes.len()));
        for cut in 0..bytes.len() {
            assert!(CdfTables::read_from(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn gaussian_scale_tables_widen_with_the_scale() {
        let t = CdfTables::gaussian_scales(&[0.11, 1.0, 10.0], 1e-9, 16).unwrap();
        let widths: Vec<_> = (0..3).map(|i| t.table(i).unwrap().range()).collect();
        assert_eq!(*widths[0].end(), 1);
        assert!(widths[1].end() < widths[2].end());
        assert_eq!(widths[2].start(), &-widths[2].end());
    }
}
