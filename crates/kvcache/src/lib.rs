//! Key/value caches for tensorpress: a [`KvCache`] trait over keys and values
//! `[tokens, heads, head_dim]`, with an exact f32 cache, an f16 cache, a
//! per-token, per-head symmetric int8 cache and KIVI's 2/4-bit cache (keys per
//! channel, values per token, a full-precision residual window; see
//! [`KiviCache`]), GEAR's quantization plus low-rank error plus sparse
//! outliers ([`GearCache`]), FP8 E4M3 with calibrated per-layer or
//! per-token scales ([`Fp8Cache`]), and token eviction under a budget
//! (StreamingLLM, H2O, SnapKV, EMS-style evict-then-merge, with ZipVL's
//! attention-mass and p-MoD's per-layer budgets: [`EvictingCache`],
//! [`Budget`]), ZipCache's mixed precision by normalized attention score
//! ([`ZipCache`]), and KVQuant's calibrated non-uniform codes with pre-RoPE
//! keys and sparse outliers ([`KvQuantCache`]).
//!
//! # Quick start
//!
//! ```
//! use tensorpress_kvcache::{F32Cache, Int8Cache, KvCache};
//! use tensorpress_tensor::SeededRng;
//!
//! let (heads, head_dim) = (4, 64);
//! let mut rng = SeededRng::new(0);
//! let mut exact = F32Cache::new(heads, head_dim);
//! let mut int8 = Int8Cache::new(heads, head_dim);
//! for _step in 0..3 {
//!     // One decoding step of 5 tokens.
//!     let k = rng.array_normal((5, heads, head_dim));
//!     let v = rng.array_normal((5, heads, head_dim));
//!     exact.append(k.view(), v.view())?;
//!     int8.append(k.view(), v.view())?;
//! }
//! assert_eq!(int8.len(), 15);
//! // (64 + 4) bytes per token and head instead of 256.
//! assert_eq!(int8.memory_bytes(), 2 * 15 * heads * (head_dim + 4));
//! assert_eq!(exact.memory_bytes(), 2 * 15 * heads * head_dim * 4);
//! let err = (&int8.keys() - &exact.keys()).mapv(f32::abs).fold(0.0f32, |m, &e| m.max(e));
//! assert!(err < 0.03);
//! # Ok::<(), tensorpress_kvcache::Error>(())
//! ```

mod attend;
mod cache;
mod error;
mod evict;
mod float;
mod fp8;
mod gear;
mod int8;
mod kernels;
mod kivi;
mod kvquant;
mod spec;
pub mod tome;
mod zipcache;

pub use attend::attend_reference;
pub use cache::KvCache;
pub use error::{Error, Result};
pub use evict::{Budget, EvictingCache, Eviction};
pub use float::{F16Cache, F32Cache};
pub use fp8::{Amax, AmaxRecorder, Fp8Cache, Fp8Scales, E4M3_MAX};
pub use gear::{GearCache, GearConfig};
pub use int8::Int8Cache;
pub use kivi::{KiviCache, KiviConfig};
pub use kvquant::{
    KvQuantCache, KvQuantConfig, KvQuantLayer, KvQuantSamples, Rotary, RotaryLayout,
};
pub use spec::CacheSpec;
pub use zipcache::{ZipCache, ZipConfig};

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3, Axis};
    use proptest::prelude::*;
    use tensorpress_tensor::SeededRng;

    fn caches(heads: usize, head_dim: usize) -> Vec<(&'static str, Box<dyn KvCache>)> {
        vec![
            ("f32", Box::new(F32Cache::new(heads, head_dim))),
            ("f16", Box::new(F16Cache::new(heads, head_dim))),
            ("int8", Box::new(Int8Cache::new(heads, head_dim))),
            (
                "fp8",
                Box::new(Fp8Cache::new(heads, head_dim, Fp8Scales::PerToken).unwrap()),
            ),
            (
                "fp8-static",
                Box::new(Fp8Cache::new(heads, head_dim, Fp8Scales::from_amax(8.0, 3.0)).unwrap()),
            ),
        ]
    }

    fn kv(
        rng: &mut SeededRng,
        tokens: usize,
        heads: usize,
        d: usize,
    ) -> (Array3<f32>, Array3<f32>) {
        (
            rng.array_normal((tokens, heads, d)) * 3.0,
            rng.array_normal((tokens, heads, d)),
        )
    }

    #[test]
    fn split_appends_equal_one_append() {
        let mut rng = SeededRng::new(1);
        let (k, v) = kv(&mut rng, 23, 3, 16);
        for ((name, mut whole), (_, mut parts)) in caches(3, 16).into_iter().zip(caches(3, 16)) {
            whole.append(k.view(), v.view()).unwrap();
            for (kc, vc) in k
                .axis_chunks_iter(Axis(0), 5)
                .zip(v.axis_chunks_iter(Axis(0), 5))
            {
                parts.append(kc, vc).unwrap();
            }
            assert_eq!(parts.len(), 23, "{name}");
            assert_eq!(parts.keys(), whole.keys(), "{name}");
            assert_eq!(parts.values(), whole.values(), "{name}");
            assert_eq!(parts.memory_bytes(), whole.memory_bytes(), "{name}");
            parts.clear();
            assert!(parts.is_empty() && parts.memory_bytes() == 0, "{name}");
            assert_eq!(parts.keys().dim(), (0, 3, 16));
        }
    }

    #[test]
    fn exactness_of_each_cache() {
        let mut rng = SeededRng::new(2);
        let (k, v) = kv(&mut rng, 9, 2, 32);
        let mut f32c = F32Cache::new(2, 32);
        f32c.append(k.view(), v.view()).unwrap();
        assert_eq!(f32c.keys(), k);
        assert_eq!(f32c.values(), v);
        let mut f16c = F16Cache::new(2, 32);
        f16c.append(k.view(), v.view()).unwrap();
        let rel = (&f16c.keys() - &k)
            .iter()
            .zip(k.iter())
            .map(|(e, x)| e.abs() / x.abs().max(1e-3))
            .fold(0.0f32, f32::max);
        assert!(rel <= 2f32.powi(-11) * 1.0001, "{rel}");
    }

    #[test]
    fn int8_error_is_within_half_a_step() {
        let mut rng = SeededRng::new(3);
        let (k, v) = kv(&mut rng, 40, 4, 64);
        let mut c = Int8Cache::new(4, 64);
        c.append(k.view(), v.view()).unwrap();
        for (orig, deq, scales) in [
            (&k, c.keys(), c.key_scales()),
            (&v, c.values(), c.value_scales()),
        ] {
            for t in 0..40 {
                for h in 0..4 {
                    let scale = scales[t * 4 + h];
                    let amax = orig.slice(s![t, h, ..]).fold(0.0f32, |m, x| m.max(x.abs()));
                    assert_eq!(scale, amax / 127.0);
                    for d in 0..64 {
                        let e = (orig[[t, h, d]] - deq[[t, h, d]]).abs();
                        assert!(
                            e <= scale * 0.5 * (1.0 + 1e-5),
                            "t{t} h{h} d{d}: {e} > {}",
                            scale / 2.0
                        );
                    }
                }
            }
        }
        // All-zero heads (scale 0) round-trip exactly.
        let zeros = Array3::<f32>::zeros((2, 4, 64));
        let mut z = Int8Cache::new(4, 64);
        z.append(zeros.view(), zeros.view()).unwrap();
        assert_eq!(z.keys(), zeros);
    }

    #[test]
    fn bad_appends_are_rejected_and_leave_the_cache_alone() {
        for (name, mut c) in caches(2, 8) {
            let good = Array3::<f32>::ones((1, 2, 8));
            c.append(good.view(), good.view()).unwrap();
            let before = c.memory_bytes();
            let wrong = Array3::<f32>::ones((1, 3, 8));
            assert!(
                matches!(
                    c.append(wrong.view(), good.view()),
                    Err(Error::Shape { what: "keys", .. })
                ),
                "{name}"
            );
            let two = Array3::<f32>::ones((2, 2, 8));
            assert!(matches!(
                c.append(good.view(), two.view()),
                Err(Error::TokenMismatch { keys: 1, values: 2 })
            ));
            let mut nan = good.clone();
            nan[[0, 1, 5]] = f32::NAN;
            assert!(matches!(
                c.append(good.view(), nan.view()),
                Err(Error::NonFinite {
                    what: "values",
                    token: 0,
                    head: 1,
                    dim: 5
                })
            ));
            assert_eq!((c.len(), c.memory_bytes()), (1, before), "{name}");
        }
    }

    #[test]
    fn bad_queries_are_typed_errors() {
        let c = F32Cache::new(2, 8);
        let wrong = ndarray::Array2::<f32>::zeros((3, 8));
        assert!(matches!(
            c.attend(wrong.view()),
            Err(Error::Config {
                field: "queries",
                ..
            })
        ));
        let mut nan = ndarray::Array2::<f32>::zeros((4, 8));
        nan[[1, 2]] = f32::NAN;
        assert!(matches!(c.attend(nan.view()), Err(Error::NonFinite { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Every cache's attention equals the reference on its own
        /// dequantized keys and values (the fused KIVI kernel included, over
        /// partly filled residuals, every bit width and unaligned groups).
        #[test]
        fn attention_matches_the_reference(
            tokens in 1usize..300,
            bits in prop::sample::select(vec![2u8, 4, 8]),
            group in prop::sample::select(vec![2usize, 4, 8, 16]),
            groups_per_residual in 1usize..5,
            query_groups in 1usize..4,
            seed in any::<u64>(),
        ) {
            let (heads, d) = (2, 16);
            let mut rng = SeededRng::new(seed);
            let (k, v) = kv(&mut rng, tokens, heads, d);
            let q = rng.array_normal((heads * query_groups, d)) * 0.5;
            let kivi = KiviConfig::new(bits).group(group).residual(group * groups_per_residual);
            let mut all = caches(heads, d);
            all.push(("kivi", Box::new(KiviCache::new(heads, d, kivi).unwrap())));
            all.push(("gear", Box::new(GearCache::new(heads, d, GearConfig::new(bits).group(group).buffer(group * 4).rank(1)).unwrap())));
            for (name, mut c) in all {
                c.append(k.view(), v.view()).unwrap();
                let fast = c.attend(q.view()).unwrap();
                let reference = attend_reference(c.keys().view(), c.values().view(), q.view()).unwrap();
                let gap = (&fast - &reference).mapv(f32::abs).fold(0f32, |m, &x| m.max(x));
                prop_assert!(gap < 1e-4, "{}: {}", name, gap);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_split_matches(heads in 1usize..4, d in 1usize..20, cuts in proptest::collection::vec(0usize..6, 1..5), seed in any::<u64>()) {
            let total: usize = cuts.iter().sum();
            let mut rng = SeededRng::new(seed);
            let (k, v) = kv(&mut rng, total, heads, d);
            for ((name, mut whole), (_, mut parts)) in caches(heads, d).into_iter().zip(caches(heads, d)) {
                whole.append(k.view(), v.view()).unwrap();
                let mut at = 0;
                for &n in &cuts {
                    parts.append(k.slice(s![at..at + n, .., ..]), v.slice(s![at..at + n, .., ..])).unwrap();
                    at += n;
                }
                prop_assert_eq!(parts.keys(), whole.keys(), "{}", name);
                prop_assert_eq!(parts.values(), whole.values(), "{}", name);
            }
        }
    }
}
