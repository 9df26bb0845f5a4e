//! Layer-wise pruning ratios: how much of each layer to remove so that the
//! whole model meets one target.
//!
//! - [`SapRule`]: the PQ Index of a layer's weights bounds how many of them
//!   carry the layer (Diao et al., *Pruning Deep Neural Networks from a
//!   Sparsity Perspective*, ICLR 2023). Sparsity-informed Adaptive Pruning
//!   (SAP) prunes each layer towards that bound; a scale `γ` shared by all
//!   layers is solved here so the ratios average to the target.
//! - [`global_threshold_ratios`]: one threshold over the importance scores of
//!   every layer, the compression-ratio view of PreCropping (Liu et al.,
//!   *Structured Pruning is All You Need for Pruning CNNs at
//!   Initialization*): the layer-wise ratios that a global unstructured
//!   ranking produces are what matters, and a structured method can crop
//!   whole channels at those ratios.
//!
//! ```
//! use tensorpress_sparsity::{global_threshold_ratios, pq_index, SapRule};
//!
//! // A flat layer (every weight alike) and a peaked one (a few carry it).
//! let flat: Vec<f64> = (0..64).map(|i| 1.0 + (i % 3) as f64 * 0.1).collect();
//! let peaked: Vec<f64> = (0..64).map(|i| if i < 4 { 10.0 } else { 0.01 }).collect();
//! assert!(pq_index(&peaked, 0.5, 1.0)? > pq_index(&flat, 0.5, 1.0)?);
//!
//! // SAP removes more of the peaked layer; the ratios average to 40 %.
//! let ratios = SapRule::default().ratios(&[&flat[..], &peaked[..]], 0.4)?;
//! assert!(ratios[1] > ratios[0]);
//! assert!(((ratios[0] + ratios[1]) / 2.0 - 0.4).abs() < 1e-6);
//!
//! // One threshold over both layers' scores: the flat layer keeps everything.
//! let ratios = global_threshold_ratios(&[&flat[..], &peaked[..]], 0.4, 0.95)?;
//! assert_eq!(ratios[0], 0.0);
//! # Ok::<(), tensorpress_sparsity::Error>(())
//! ```

use crate::{Error, Result};

fn invalid(option: &'static str, value: f64, reason: &'static str) -> Error {
    Error::InvalidOption {
        option,
        value: value.to_string(),
        reason,
    }
}

fn check_layer(values: &[f64]) -> Result<()> {
    if values.is_empty() {
        return Err(Error::EmptyLayer {
            what: "scores",
            removed: 0,
            total: 0,
        });
    }
    if let Some(col) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { row: 0, col });
    }
    Ok(())
}

/// The PQ Index of `values` (magnitudes are taken),
/// `I_{p,q}(w) = 1 − d^{1/q − 1/p} ‖w‖_p / ‖w‖_q` for `0 < p < q`: 0 when
/// every entry has the same magnitude, approaching 1 as a few entries
/// carry all of it. An all-zero vector has index 0.
///
/// # Errors
/// [`Error::InvalidOption`] unless `0 < p < q` (finite);
/// [`Error::EmptyLayer`] for no values; [`Error::NonFinite`] for NaN or
/// infinite values.
pub fn pq_index(values: &[f64], p: f64, q: f64) -> Result<f64> {
    if !(p > 0.0 && p.is_finite()) {
        return Err(invalid("p", p, "the PQ Index needs 0 < p < q"));
    }
    if !(q > p && q.is_finite()) {
        return Err(invalid("q", q, "the PQ Index needs 0 < p < q"));
    }
    check_layer(values)?;
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return Ok(0.0);
    }
    // Norms of w / max: the ratio is scale-free and this keeps the powers
    // in range.
    let norm = |r: f64| {
        values
            .iter()
            .map(|v| (v.abs() / max).powf(r))
            .sum::<f64>()
            .powf(1.0 / r)
    };
    let d = values.len() as f64;
    Ok(1.0 - d.powf(1.0 / q - 1.0 / p) * norm(p) / norm(q))
}

/// Sparsity-informed Adaptive Pruning's rule (Diao et al., 2023). For a layer
/// of `d` weights with PQ Index `I`, at least
/// `m = d · (1 + η)^{−q/(q−p)} · (1 − I)^{qp/(q−p)}` weights must stay; SAP
/// removes the fraction `min(γ · (1 − m/d), β)`.
///
/// The defaults are the paper's: `p = 0.5`, `q = 1`, `η = 0`, `β = 0.9`.
/// [`SapRule::ratios`] solves for `γ` (one value for all layers) so that the
/// layers' ratios, weighted by their sizes, average to a target; the paper
/// fixes `γ` and iterates pruning and retraining instead, which a one-shot
/// compressor of a trained model cannot do.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SapRule {
    /// The smaller norm exponent.
    pub p: f64,
    /// The larger norm exponent.
    pub q: f64,
    /// The slack `η ≥ 0` of the bound (larger keeps fewer).
    pub eta: f64,
    /// The most any one layer may lose, in `(0, 1)`.
    pub beta: f64,
}

impl Default for SapRule {
    fn default() -> Self {
        SapRule {
            p: 0.5,
            q: 1.0,
            eta: 0.0,
            beta: 0.9,
        }
    }
}

impl SapRule {
    /// The rule with these exponents, slack and cap.
    pub fn new(p: f64, q: f64, eta: f64, beta: f64) -> Self {
        SapRule { p, q, eta, beta }
    }

    fn validate(&self) -> Result<()> {
        pq_index(&[1.0], self.p, self.q)?;
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(invalid("eta", self.eta, "SAP's slack η must be ≥ 0"));
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err(invalid(
                "beta",
                self.beta,
                "SAP's per-layer cap β must lie in (0, 1)",
            ));
        }
        Ok(())
    }

    /// The fraction of `values` that SAP's bound says can go, `1 − m/d`,
    /// in `[0, 1]`.
    ///
    /// # Errors
    /// As [`pq_index`]; an invalid rule.
    pub fn prunable_fraction(&self, values: &[f64]) -> Result<f64> {
        self.validate()?;
        let (p, q) = (self.p, self.q);
        let index = pq_index(values, p, q)?;
        let keep = (1.0 + self.eta).powf(-q / (q - p)) * (1.0 - index).powf(q * p / (q - p));
        Ok((1.0 - keep).clamp(0.0, 1.0))
    }

    /// One pruning ratio per layer (`layers[l]` holds the layer's weights or
    /// scores), `min(γ · (1 − m_l/d_l), β)` with `γ` chosen so that the
    /// ratios weighted by layer size average to `target`.
    ///
    /// # Errors
    /// [`Error::InvalidSparsity`] for a target outside `(0, 1)`;
    /// [`Error::InvalidOption`] when the target cannot be met under the cap
    /// `β`, or every layer is flat (nothing is prunable by the bound); as
    /// [`SapRule::prunable_fraction`].
    pub fn ratios(&self, layers: &[&[f64]], target: f64) -> Result<Vec<f64>> {
        if !(target > 0.0 && target < 1.0) {
            return Err(Error::InvalidSparsity { sparsity: target });
        }
        if layers.is_empty() {
            return Err(Error::EmptyLayer {
                what: "layers",
                removed: 0,
                total: 0,
            });
        }
        let base: Vec<f64> = layers
            .iter()
            .map(|l| self.prunable_fraction(l))
            .collect::<Result<_>>()?;
        let sizes: Vec<f64> = layers.iter().map(|l| l.len() as f64).collect();
        let total: f64 = sizes.iter().sum();
        let mean = |gamma: f64| {
            base.iter()
                .zip(&sizes)
                .map(|(b, d)| (gamma * b).min(self.beta) * d)
                .sum::<f64>()
                / total
        };
        let ceiling = base
            .iter()
            .zip(&sizes)
            .map(|(b, d)| if *b > 0.0 { self.beta * d } else { 0.0 })
            .sum::<f64>()
            / total;
        if target >= ceiling {
            return Err(invalid(
                "target",
                target,
                "SAP cannot remove that much: raise β, or lower the target (flat layers keep \
                 everything under the PQ bound)",
            ));
        }
        // mean(γ) is continuous and non-decreasing: bisect.
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        while mean(hi) < target {
            hi *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mean(mid) < target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(base.iter().map(|b| (hi * b).min(self.beta)).collect())
    }
}

/// The layer-wise ratios of one global ranking: entries of every layer whose
/// score falls below a single threshold are removed, the threshold chosen
/// so that `target` of all entries go, with no layer losing more than
/// `max_ratio` (the excess goes to the other layers). The compression-ratio
/// view of PreCropping: a structured pruner then removes that fraction of
/// each layer's channels.
///
/// # Errors
/// [`Error::InvalidSparsity`] for a target or cap outside `(0, 1)` or a
/// target above the cap; [`Error::EmptyLayer`] for no layers or an empty
/// one; [`Error::NonFinite`] for NaN or infinite scores.
pub fn global_threshold_ratios(layers: &[&[f64]], target: f64, max_ratio: f64) -> Result<Vec<f64>> {
    for r in [target, max_ratio] {
        if !(r > 0.0 && r < 1.0) {
            return Err(Error::InvalidSparsity { sparsity: r });
        }
    }
    if target > max_ratio {
        return Err(invalid(
            "target",
            target,
            "the target is above the per-layer cap: raise the cap",
        ));
    }
    if layers.is_empty() {
        return Err(Error::EmptyLayer {
            what: "layers",
            removed: 0,
            total: 0,
        });
    }
    let sorted: Vec<Vec<f64>> = layers
        .iter()
        .map(|l| {
            check_layer(l)?;
            let mut s = l.to_vec();
            s.sort_by(f64::total_cmp);
            Ok(s)
        })
        .collect::<Result<_>>()?;
    let total: usize = sorted.iter().map(Vec::len).sum();
    let want = target * total as f64;
    // Removed from layer l at threshold t: its entries below t, capped.
    let ratios_at = |t: f64| -> Vec<f64> {
        sorted
            .iter()
            .map(|s| {
                let below = s.partition_point(|v| *v < t) as f64;
                (below / s.len() as f64).min(max_ratio)
            })
            .collect()
    };
    let removed =
        |r: &[f64]| -> f64 { r.iter().zip(&sorted).map(|(r, s)| r * s.len() as f64).sum() };
    let mut all: Vec<f64> = sorted.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    // The smallest threshold among the distinct scores that removes enough
    // (the removed count only grows with the threshold).
    let (mut lo, mut hi) = (0usize, all.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if removed(&ratios_at(all[mid])) >= want {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let t = all.get(lo).copied().unwrap_or(f64::INFINITY);
    Ok(ratios_at(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pq_index_bounds_and_scale_invariance() {
        let flat = vec![2.0; 100];
        assert!(pq_index(&flat, 0.5, 1.0).unwrap().abs() < 1e-12);
        let mut one_hot = vec![0.0; 100];
        one_hot[7] = -3.0;
        let i = pq_index(&one_hot, 0.5, 1.0).unwrap();
        // d^{1/q−1/p} = 100^{-1} for the one-hot vector: I = 1 − 1/100.
        assert!((i - 0.99).abs() < 1e-12, "{i}");
        let v: Vec<f64> = (1..50).map(|k| (k as f64).sin()).collect();
        let scaled: Vec<f64> = v.iter().map(|x| x * 1e6).collect();
        let (a, b) = (
            pq_index(&v, 0.5, 1.0).unwrap(),
            pq_index(&scaled, 0.5, 1.0).unwrap(),
        );
        assert!((a - b).abs() < 1e-12 && a > 0.0 && a < 1.0);
        assert_eq!(pq_index(&[0.0; 4], 0.5, 1.0).unwrap(), 0.0);
    }

    #[test]
    fn sap_bound_keeps_the_support_of_a_sparse_layer() {
        // k equal nonzeros in d: ‖w‖_½/‖w‖_1 = k, so 1 − I = sqrt(k/d) and
        // the bound keeps m = d·(k/d) = k (p = ½, q = 1, η = 0).
        let mut w = vec![0.0; 200];
        for v in w.iter_mut().take(30) {
            *v = 1.5;
        }
        let f = SapRule::default().prunable_fraction(&w).unwrap();
        assert!((f - 170.0 / 200.0).abs() < 1e-12, "{f}");
    }

    #[test]
    fn sap_ratios_meet_the_target_and_respect_the_cap() {
        let layers: Vec<Vec<f64>> = (0..6)
            .map(|l| {
                (0..300)
                    .map(|i| ((i * (l + 2)) as f64 * 0.37).sin().abs().powi(l + 1))
                    .collect()
            })
            .collect();
        let views: Vec<&[f64]> = layers.iter().map(Vec::as_slice).collect();
        let rule = SapRule::default();
        let ratios = rule.ratios(&views, 0.5).unwrap();
        let mean = ratios.iter().sum::<f64>() / 6.0;
        assert!((mean - 0.5).abs() < 1e-9, "{mean}");
        assert!(ratios.iter().all(|r| *r <= 0.9 + 1e-12));
        // Peakier layers (higher powers) lose more.
        assert!(
            ratios.windows(2).all(|w| w[0] <= w[1] + 1e-12),
            "{ratios:?}"
        );
        assert!(matches!(
            rule.ratios(&views, 0.95),
            Err(Error::InvalidOption {
                option: "target",
                ..
            })
        ));
    }

    #[test]
    fn global_threshold_matches_a_global_ranking_and_caps_layers() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let b: Vec<f64> = (0..100).map(|i| f64::from(i) + 50.0).collect();
        // The lowest 100 of the 200 scores: a's 0..75 (75) and b's 50..75 (25).
        let r = global_threshold_ratios(&[&a, &b], 0.5, 0.99).unwrap();
        assert!(
            (r[0] - 0.75).abs() < 1e-12 && (r[1] - 0.25).abs() < 1e-12,
            "{r:?}"
        );
        // With a cap of 60 % the excess moves to b.
        let r = global_threshold_ratios(&[&a, &b], 0.5, 0.6).unwrap();
        assert!((r[0] - 0.6).abs() < 1e-12 && r[1] >= 0.4 - 1e-12, "{r:?}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            pq_index(&[1.0], 1.0, 0.5),
            Err(Error::InvalidOption { option: "q", .. })
        ));
        assert!(matches!(
            pq_index(&[1.0, f64::NAN], 0.5, 1.0),
            Err(Error::NonFinite { col: 1, .. })
        ));
        assert!(matches!(
            pq_index(&[], 0.5, 1.0),
            Err(Error::EmptyLayer { .. })
        ));
        let l = [1.0, 2.0];
        for t in [0.0, 1.0, f64::NAN] {
            assert!(matches!(
                SapRule::default().ratios(&[&l], t),
                Err(Error::InvalidSparsity { .. })
            ));
            assert!(global_threshold_ratios(&[&l], t, 0.9).is_err());
        }
        assert!(matches!(
            SapRule::new(0.5, 1.0, 0.0, 1.0).ratios(&[&l], 0.3),
            Err(Error::InvalidOption { option: "beta", .. })
        ));
        assert!(global_threshold_ratios(&[&l], 0.5, 0.4).is_err());
    }
}
