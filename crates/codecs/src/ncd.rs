//! Normalized compression distance and ZIP-FIT data selection.
//!
//! The normalized compression distance (Li, Chen, Li, Ma and Vitányi, 2004;
//! Cilibrasi and Vitányi, 2005) approximates the normalized information
//! distance with a real compressor `C`:
//!
//! ```text
//! NCD(x, y) = (C(xy) − min(C(x), C(y))) / max(C(x), C(y))
//! ```
//!
//! close to 0 for near-identical inputs and close to 1 (slightly above, for
//! a real compressor) for unrelated ones. *ZIP-FIT: Embedding-Free Data
//! Selection via Compression-Based Alignment* (`papers.txt`) selects
//! training data by its alignment `1 − NCD` to target-task examples,
//! computed with gzip (deflate); [`zipfit_select`] does that.
//!
//! [`Deflate`] is a real deflate coder (flate2's pure-Rust `miniz_oxide`
//! backend); only the compressed length is kept. Deflate looks back at most
//! [`Deflate::WINDOW`] = 32 KiB: when `x` is longer than that, compressing
//! `xy` cannot refer from `y` to most of `x` and NCD drifts towards 1 whatever
//! the texts are (Cebrián, Alfonseca and Ortega, 2005). Compare texts of at
//! most 16 KiB each (e.g. prefixes, or chunks whose distances you average).
//!
//! ```
//! use tensorpress_codecs::ncd::{ncd, rank_by_ncd, Deflate};
//!
//! let c = Deflate::new(9)?;
//! let a = b"the quick brown fox jumps over the lazy dog. ".repeat(8);
//! let b = b"the quick brown fox leaps over the lazy cat. ".repeat(8);
//! let z = b"0123456789 lorem ipsum dolor sit amet, consectetur. ".repeat(8);
//! assert!(ncd(&c, &a, &b)? < ncd(&c, &a, &z)?);
//! let ranked = rank_by_ncd(&c, &a, &[&z, &b])?;
//! assert_eq!(ranked[0].index, 1);
//! # Ok::<(), tensorpress_codecs::Error>(())
//! ```

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;
use rayon::prelude::*;

use crate::{Error, Result};

/// A compressor, as NCD sees it: the compressed size of a byte string.
pub trait Compressor: Sync {
    /// Compressed size of `data` in bytes.
    ///
    /// # Errors
    /// Whatever the compressor reports.
    fn compressed_len(&self, data: &[u8]) -> Result<usize>;
}

/// Raw deflate (RFC 1951) at a given level, counting the output bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    level: u32,
}

impl Deflate {
    /// Deflate's look-back window: 32 KiB.
    pub const WINDOW: usize = 32 * 1024;

    /// Deflate at `level` (`0..=9`; 0 stores, 9 searches hardest).
    ///
    /// # Errors
    /// [`Error::ParameterOutOfRange`] for a level above 9.
    pub fn new(level: u32) -> Result<Self> {
        if level > 9 {
            return Err(Error::ParameterOutOfRange {
                op: "deflate",
                name: "level",
                value: f64::from(level),
                range: "0..=9".into(),
            });
        }
        Ok(Deflate { level })
    }

    /// The compression level.
    pub fn level(&self) -> u32 {
        self.level
    }
}

impl Default for Deflate {
    /// Level 9, as Python's `gzip.compress` (which ZIP-FIT uses) defaults to.
    fn default() -> Self {
        Deflate { level: 9 }
    }
}

/// A sink that only counts bytes.
struct Count(usize);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Compressor for Deflate {
    fn compressed_len(&self, data: &[u8]) -> Result<usize> {
        let mut enc = DeflateEncoder::new(Count(0), Compression::new(self.level));
        enc.write_all(data)?;
        Ok(enc.finish()?.0)
    }
}

/// NCD from the three compressed sizes.
fn ncd_from(cx: usize, cy: usize, cxy: usize) -> f64 {
    let (lo, hi) = (cx.min(cy), cx.max(cy));
    if hi == 0 {
        return 0.0;
    }
    (cxy as f64 - lo as f64) / hi as f64
}

fn concat(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut xy = Vec::with_capacity(x.len() + y.len());
    xy.extend_from_slice(x);
    xy.extend_from_slice(y);
    xy
}

/// `NCD(x, y) = (C(xy) − min(C(x), C(y))) / max(C(x), C(y))`.
///
/// # Errors
/// Those of the compressor.
pub fn ncd<C: Compressor + ?Sized>(c: &C, x: &[u8], y: &[u8]) -> Result<f64> {
    let cx = c.compressed_len(x)?;
    let cy = c.compressed_len(y)?;
    let cxy = c.compressed_len(&concat(x, y))?;
    Ok(ncd_from(cx, cy, cxy))
}

/// A candidate's place in a ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Ranked {
    /// Index of the candidate in the slice given.
    pub index: usize,
    /// Its score: a distance for [`rank_by_ncd`], an alignment for
    /// [`zipfit_select`].
    pub score: f64,
}

/// NCD of every candidate to `target` (computed in parallel), as `[n]` in
/// the candidates' order.
///
/// # Errors
/// Those of the compressor.
pub fn ncd_to_target<C: Compressor + ?Sized>(
    c: &C,
    target: &[u8],
    candidates: &[&[u8]],
) -> Result<Vec<f64>> {
    let ct = c.compressed_len(target)?;
    candidates
        .par_iter()
        .map(|x| {
            let cx = c.compressed_len(x)?;
            let cxy = c.compressed_len(&concat(x, target))?;
            Ok(ncd_from(cx, ct, cxy))
        })
        .collect()
}

/// Candidates sorted by NCD to `target`, nearest first (ties by index).
/// Each pair is compressed as candidate then target.
///
/// # Errors
/// Those of the compressor.
pub fn rank_by_ncd<C: Compressor + ?Sized>(
    c: &C,
    target: &[u8],
    candidates: &[&[u8]],
) -> Result<Vec<Ranked>> {
    let d = ncd_to_target(c, target, candidates)?;
    let mut ranked: Vec<Ranked> = d
        .into_iter()
        .enumerate()
        .map(|(index, score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.index.cmp(&b.index)));
    Ok(ranked)
}

/// ZIP-FIT alignment of `candidate` to a target set: the mean of
/// `1 − NCD(candidate, t)` over the targets `t` (higher is better aligned).
/// An empty target set gives 0.
///
/// # Errors
/// Those of the compressor.
pub fn zipfit_alignment<C: Compressor + ?Sized>(
    c: &C,
    targets: &[&[u8]],
    candidate: &[u8],
) -> Result<f64> {
    if targets.is_empty() {
        return Ok(0.0);
    }
    let cx = c.compressed_len(candidate)?;
    let mut sum = 0.0;
    for t in targets {
        let ct = c.compressed_len(t)?;
        let cxy = c.compressed_len(&concat(candidate, t))?;
        sum += 1.0 - ncd_from(cx, ct, cxy);
    }
    Ok(sum / targets.len() as f64)
}

/// ZIP-FIT selection: the `k` candidates best aligned to the targets
/// ([`zipfit_alignment`]), best first (ties by index); all of them when
/// `k ≥ n`. Candidates are scored in parallel.
///
/// # Errors
/// Those of the compressor.
pub fn zipfit_select<C: Compressor + ?Sized>(
    c: &C,
    targets: &[&[u8]],
    candidates: &[&[u8]],
    k: usize,
) -> Result<Vec<Ranked>> {
    let mut ranked = candidates
        .par_iter()
        .enumerate()
        .map(|(index, x)| {
            Ok(Ranked {
                index,
                score: zipfit_alignment(c, targets, x)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    ranked.truncate(k);
    Ok(ranked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_tensor::SeededRng;

    fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut rng = SeededRng::new(seed);
        (0..n).map(|_| rng.next_u32() as u8).collect()
    }

    #[test]
    fn deflate_really_compresses() {
        let c = Deflate::default();
        assert!(c.compressed_len(&[b'a'; 10_000]).unwrap() < 100);
        let noise = random_bytes(1, 10_000);
        assert!(c.compressed_len(&noise).unwrap() >= 10_000);
        // Level 0 stores.
        let stored = Deflate::new(0)
            .unwrap()
            .compressed_len(&[b'a'; 1000])
            .unwrap();
        assert!(stored >= 1000);
        assert!(matches!(
            Deflate::new(10),
            Err(Error::ParameterOutOfRange { name: "level", .. })
        ));
    }

    #[test]
    fn ncd_properties() {
        let c = Deflate::default();
        let x = random_bytes(2, 4000);
        let y = random_bytes(3, 4000);
        // Identical: near 0. Independent noise: near 1.
        assert!(ncd(&c, &x, &x).unwrap() < 0.05);
        let far = ncd(&c, &x, &y).unwrap();
        assert!((0.95..1.1).contains(&far), "{far}");
        // A noisy copy sits in between.
        let mut z = x.clone();
        for i in (0..z.len()).step_by(10) {
            z[i] ^= 0x55;
        }
        let mid = ncd(&c, &x, &z).unwrap();
        assert!(mid > 0.1 && mid < far, "{mid}");
        assert_eq!(ncd(&c, b"", b"").unwrap(), 0.0);
    }

    #[test]
    fn window_limit_is_real() {
        // Past 32 KiB, a text no longer recognises itself.
        let c = Deflate::default();
        let x = random_bytes(5, 40_000);
        assert!(ncd(&c, &x, &x).unwrap() > 0.5);
        let short = &x[..Deflate::WINDOW / 2];
        assert!(ncd(&c, short, short).unwrap() < 0.05);
    }

    #[test]
    fn ranking_and_zipfit() {
        let c = Deflate::default();
        let base = random_bytes(7, 3000);
        let mut near = base.clone();
        near.truncate(2000);
        let other = random_bytes(8, 3000);
        let cands: Vec<&[u8]> = vec![&other, &near, &base];
        let r = rank_by_ncd(&c, &base, &cands).unwrap();
        assert_eq!(r.iter().map(|r| r.index).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert!(r[0].score <= r[1].score && r[1].score <= r[2].score);
        let d = ncd_to_target(&c, &base, &cands).unwrap();
        assert_eq!(d[r[0].index], r[0].score);
        let sel = zipfit_select(&c, &[&base], &cands, 2).unwrap();
        assert_eq!(sel.len(), 2);
        assert_eq!(sel[1].index, 1);
        assert!(sel[0].score > 0.9 && sel[0].score > sel[1].score);
        assert_eq!(zipfit_alignment(&c, &[], &base).unwrap(), 0.0);
    }
}
