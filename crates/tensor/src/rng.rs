//! A seeded, forkable random number generator with stable output.

use std::collections::HashSet;
use std::convert::Infallible;

use ndarray::{Array, ShapeBuilder};
use rand::{Rng, SeedableRng, TryRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Deterministic random numbers for every randomized algorithm in tensorpress.
///
/// The generator is ChaCha8 keyed by the seed, so the same seed gives the same
/// bytes on every platform and in every run; the conversions to floats, normals,
/// bounded integers and permutations are written here (not borrowed from
/// `rand`'s distributions), so they stay fixed across `rand` releases too.
///
/// [`fork`](SeededRng::fork) derives independent generators from one seed, e.g.
/// one per layer, so results do not depend on the order in which layers run.
///
/// `SeededRng` also implements [`rand::TryRng`] (hence [`rand::Rng`] and
/// `rand::RngExt`) for use with the rest of the `rand` ecosystem.
///
/// ```
/// use tensorpress_tensor::SeededRng;
///
/// let mut a = SeededRng::new(7);
/// let mut b = SeededRng::new(7);
/// assert_eq!(a.normal_f32().to_bits(), b.normal_f32().to_bits());
/// let mut layer3 = a.fork(3);
/// let perm = layer3.permutation(5);
/// let mut sorted = perm.clone();
/// sorted.sort();
/// assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
/// ```
#[derive(Debug, Clone)]
pub struct SeededRng {
    rng: ChaCha8Rng,
    /// The second value of the last Box–Muller pair, not yet returned.
    spare: Option<f64>,
}

/// The ChaCha stream (nonce) reserved for deriving the keys of forks; a
/// generator's own output uses stream 0.
const FORK_STREAM: u64 = u64::MAX;

impl SeededRng {
    /// A generator for `seed`: ChaCha8 with the key `seed` (little-endian) padded
    /// with zeros, stream 0.
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        Self::from_key(key)
    }

    /// A generator for a full 256-bit ChaCha key.
    pub fn from_key(key: [u8; 32]) -> Self {
        SeededRng {
            rng: ChaCha8Rng::from_seed(key),
            spare: None,
        }
    }

    /// The 256-bit key this generator was built from.
    pub fn key(&self) -> [u8; 32] {
        self.rng.get_seed()
    }

    /// An independent generator for sub-stream `stream`.
    ///
    /// The child's key is the ChaCha8 keystream of this generator's key at a
    /// reserved nonce, words `8·stream .. 8·stream + 8`: a function of the key
    /// and `stream` only, so it does not depend on how much of `self` has been
    /// consumed, and different streams (or nested forks) give unrelated keys.
    pub fn fork(&self, stream: u64) -> SeededRng {
        let mut kdf = ChaCha8Rng::from_seed(self.key());
        kdf.set_stream(FORK_STREAM);
        kdf.set_word_pos(u128::from(stream) * 8);
        let mut key = [0u8; 32];
        kdf.fill_bytes(&mut key);
        SeededRng::from_key(key)
    }

    /// The next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in `[0, 1)` with 24 random bits (every f32 multiple of 2⁻²⁴).
    #[inline]
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)` (for `lo < hi`).
    #[inline]
    pub fn uniform_range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform_f32()
    }

    /// A standard normal sample (Box–Muller in f64; pairs are used in turn).
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }

    /// A standard normal sample in f32.
    #[inline]
    pub fn normal_f32(&mut self) -> f32 {
        self.normal_f64() as f32
    }

    /// A uniform integer in `0..n`, unbiased (Lemire's multiply-and-reject).
    ///
    /// # Panics
    /// When `n == 0`.
    #[track_caller]
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SeededRng::below(0): empty range");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// An array of standard normals in f32, filled in logical (row-major) order.
    pub fn array_normal<Sh: ShapeBuilder>(&mut self, shape: Sh) -> Array<f32, Sh::Dim> {
        Array::from_shape_simple_fn(shape, || self.normal_f32())
    }

    /// An array uniform in `[0, 1)`, filled in logical (row-major) order.
    pub fn array_uniform<Sh: ShapeBuilder>(&mut self, shape: Sh) -> Array<f32, Sh::Dim> {
        Array::from_shape_simple_fn(shape, || self.uniform_f32())
    }

    /// Shuffles `items` in place (Fisher–Yates), every order equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// `k` distinct indices drawn uniformly from `0..n`, returned in ascending
    /// order (every subset equally likely).
    ///
    /// Uses a partial shuffle when `k` is a sizeable part of `n` and Floyd's
    /// algorithm (`O(k)` memory) otherwise.
    ///
    /// # Errors
    /// [`Error::SampleTooLarge`] when `k > n`.
    pub fn choose_indices(&mut self, n: usize, k: usize) -> Result<Vec<usize>> {
        if k > n {
            return Err(Error::SampleTooLarge { k, n });
        }
        let mut out = if k.saturating_mul(4) >= n {
            let mut p: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + self.below((n - i) as u64) as usize;
                p.swap(i, j);
            }
            p.truncate(k);
            p
        } else {
            let mut set = HashSet::with_capacity(k);
            for j in n - k..n {
                let t = self.below(j as u64 + 1) as usize;
                if !set.insert(t) {
                    set.insert(j);
                }
            }
            set.into_iter().collect()
        };
        out.sort_unstable();
        Ok(out)
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        Ok(self.rng.next_u32())
    }

    #[inline]
    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        Ok(self.rng.next_u64())
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        self.rng.fill_bytes(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        let xa: Vec<u32> = a
            .array_normal((17, 9))
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let xb: Vec<u32> = b
            .array_normal((17, 9))
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(xa, xb);
        assert_eq!(a.permutation(100), b.permutation(100));
        assert_eq!(
            a.choose_indices(1000, 10).unwrap(),
            b.choose_indices(1000, 10).unwrap()
        );
        let mut c = SeededRng::new(43);
        assert_ne!(a.next_u64(), c.next_u64());
    }

    #[test]
    fn output_is_pinned() {
        // Golden values: any change to the generator, its seeding or the float
        // conversions changes every seeded result downstream, so it must be deliberate.
        let mut r = SeededRng::new(2024);
        let got = [r.next_u32(), r.next_u32(), r.next_u32()];
        assert_eq!(got, GOLDEN_U32_2024);
        let mut r = SeededRng::new(2024);
        assert_eq!(r.normal_f32().to_bits(), GOLDEN_NORMAL_2024);
        assert_eq!(r.fork(1).next_u32(), GOLDEN_FORK_2024_1);
    }

    const GOLDEN_U32_2024: [u32; 3] = [1085743816, 2165922494, 2384696304];
    const GOLDEN_NORMAL_2024: u32 = 1057144412;
    const GOLDEN_FORK_2024_1: u32 = 1746846088;

    #[test]
    fn forks_are_independent_of_consumption_and_of_each_other() {
        let parent = SeededRng::new(9);
        let mut used = parent.clone();
        for _ in 0..1000 {
            used.next_u32();
        }
        assert_eq!(parent.fork(5).key(), used.fork(5).key());
        let keys = [
            parent.key(),
            parent.fork(0).key(),
            parent.fork(1).key(),
            parent.fork(1).fork(0).key(),
            parent.fork(0).fork(1).key(),
            SeededRng::new(10).fork(0).key(),
        ];
        for i in 0..keys.len() {
            for j in 0..i {
                assert_ne!(keys[i], keys[j], "keys {i} and {j} collide");
            }
        }
        let mut a = parent.fork(2);
        let mut b = parent.clone();
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn uniforms_cover_the_unit_interval() {
        let mut r = SeededRng::new(1);
        let n = 200_000;
        let mut bins = [0usize; 10];
        let mut sum = 0.0f64;
        for _ in 0..n {
            let u = r.uniform_f32();
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
            sum += u as f64;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.005);
        // Each bin expects 20 000 ± 134 (one σ); allow 5σ.
        assert!(bins.iter().all(|&b| b.abs_diff(n / 10) < 700), "{bins:?}");
        let v = r.uniform_range_f32(-3.0, -1.0);
        assert!((-3.0..-1.0).contains(&v));
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut r = SeededRng::new(2);
        let x = r.array_normal(100_000);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        let kurt = x.iter().map(|&v| (v as f64 - mean).powi(4)).sum::<f64>()
            / x.len() as f64
            / (var * var);
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn below_is_unbiased_and_in_range() {
        let mut r = SeededRng::new(3);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.below(3) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| c.abs_diff(10_000) < 450),
            "{counts:?}"
        );
        assert_eq!(r.below(1), 0);
        assert!(r.below(u64::MAX) < u64::MAX);
    }

    #[test]
    fn permutations_and_choices_are_valid() {
        let mut r = SeededRng::new(4);
        let p = r.permutation(1000);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, s, "a shuffle of 1000 items left them sorted");
        assert!(r.permutation(0).is_empty());

        for (n, k) in [(10, 10), (10, 0), (100, 30), (1_000_000, 50), (7, 1)] {
            let c = r.choose_indices(n, k).unwrap();
            assert_eq!(c.len(), k);
            assert!(c.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert!(c.iter().all(|&i| i < n));
        }
        assert!(matches!(
            r.choose_indices(3, 4),
            Err(Error::SampleTooLarge { k: 4, n: 3 })
        ));
        // Floyd's branch picks every index with probability k/n.
        let mut hits = [0usize; 40];
        for _ in 0..20_000 {
            for i in r.choose_indices(40, 4).unwrap() {
                hits[i] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h.abs_diff(2000) < 250), "{hits:?}");
    }

    #[test]
    fn works_with_rand_ext() {
        use rand::RngExt;
        let mut r = SeededRng::new(5);
        let x: f64 = r.random();
        assert!((0.0..1.0).contains(&x));
        let k = r.random_range(10..20u32);
        assert!((10..20).contains(&k));
    }
}
