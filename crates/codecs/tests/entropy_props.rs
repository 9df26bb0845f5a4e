//! Property tests of the entropy coders: every round trip is exact, and every
//! decoder answers arbitrary bytes with a value or an error, never a panic.

use proptest::prelude::*;
use tensorpress_codecs::entropy::huffman::{self, HuffmanCode};
use tensorpress_codecs::entropy::range::{self, AdaptiveModel, RangeDecoder, RangeEncoder};
use tensorpress_codecs::entropy::rans::{self, DefaultRans, Rans};
use tensorpress_codecs::entropy::{symbol_counts, Categorical, CdfTables, EntropyModel, Quantized};

/// Symbols from a skewed distribution over an alphabet of `k`.
fn skewed(k: u16) -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec((0u16..k, 0u16..k), 0..600)
        .prop_map(|v| v.into_iter().map(|(a, b)| a.min(b)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn rans_compress_round_trips(symbols in skewed(300), precision in 9u32..=16) {
        let packed = rans::compress(&symbols, precision).unwrap();
        prop_assert_eq!(rans::decompress::<u16>(&packed, symbols.len()).unwrap(), symbols);
    }

    #[test]
    fn rans_lanes_agree(symbols in prop::collection::vec(0u8..6, 1..300), precision in 3u32..=16) {
        let model = Categorical::from_counts(&symbol_counts(&symbols), precision).unwrap();
        let table = model.decode_table();
        let mut out = vec![0u8; symbols.len()];
        let w1 = Rans::<1>::encode_categorical(&model, &symbols).unwrap();
        Rans::<1>::decode_categorical(&table, &w1, &mut out).unwrap();
        prop_assert_eq!(&out, &symbols);
        let w5 = Rans::<5>::encode_categorical(&model, &symbols).unwrap();
        Rans::<5>::decode_categorical(&table, &w5, &mut out).unwrap();
        prop_assert_eq!(&out, &symbols);
        // The general path writes the same words as the fast path.
        let idx: Vec<usize> = symbols.iter().map(|&s| usize::from(s)).collect();
        prop_assert_eq!(DefaultRans::encode_with(&idx, |_| Ok(&model)).unwrap(),
            DefaultRans::encode_categorical(&model, &symbols).unwrap());
    }

    #[test]
    fn rans_per_element_gaussian_and_laplace(
        elems in prop::collection::vec((-30i32..30, -30.0f64..30.0, 0.05f64..20.0, any::<bool>()), 0..200),
        precision in 8u32..=16,
    ) {
        let model_at = |i: usize| {
            let (_, mean, scale, laplace) = elems[i];
            let range = -64..=64;
            if laplace {
                Quantized::laplace(mean, scale, range, precision).map(Either::L)
            } else {
                Quantized::gaussian(mean, scale, range, precision).map(Either::G)
            }
        };
        let values: Vec<i32> = elems.iter().map(|e| e.0).collect();
        let words = DefaultRans::encode_with(&values, model_at).unwrap();
        prop_assert_eq!(DefaultRans::decode_with(&words, values.len(), model_at).unwrap(), values);
    }

    #[test]
    fn rans_cdf_tables(values in prop::collection::vec((-40i32..40, 0usize..4), 0..300)) {
        let tables = CdfTables::gaussian_scales(&[0.3, 2.0, 8.0, 30.0], 1e-9, 16).unwrap();
        let clamp = |(v, t): (i32, usize)| {
            let r = tables.table(t).unwrap().range();
            v.clamp(*r.start(), *r.end())
        };
        let symbols: Vec<i32> = values.iter().map(|&e| clamp(e)).collect();
        let words = DefaultRans::encode_with(&symbols, |i| tables.table(values[i].1)).unwrap();
        let back = DefaultRans::decode_with(&words, symbols.len(), |i| tables.table(values[i].1)).unwrap();
        prop_assert_eq!(back, symbols);
    }

    #[test]
    fn huffman_round_trips(symbols in skewed(200), max_length in 8u32..=15) {
        let packed = huffman::compress(&symbols, max_length).unwrap();
        prop_assert_eq!(huffman::decompress::<u16>(&packed, symbols.len()).unwrap(), symbols);
    }

    #[test]
    fn huffman_pairs_round_trip(bytes in prop::collection::vec(0u8..12, 0..300), max_length in 9u32..=15) {
        let packed = huffman::compress_pairs(&bytes, max_length).unwrap();
        prop_assert_eq!(huffman::decompress_pairs(&packed, bytes.len()).unwrap(), bytes.clone());
        if bytes.len() > 1 {
            prop_assert!(huffman::decompress_pairs(&packed, bytes.len() - 2).is_err());
        }
    }

    #[test]
    fn huffman_lengths_respect_the_limit(counts in prop::collection::vec(0u64..1_000_000, 1..300), max in 9u32..=15) {
        prop_assume!(counts.iter().any(|&c| c > 0));
        let code = HuffmanCode::from_counts(&counts, max).unwrap();
        prop_assert!(code.max_length() <= max);
        let kraft: f64 = code.lengths().iter().filter(|&&l| l > 0).map(|&l| 0.5f64.powi(l.into())).sum();
        prop_assert!(kraft <= 1.0 + 1e-12);
    }

    #[test]
    fn range_adaptive_round_trips(symbols in skewed(1000)) {
        let packed = range::compress(&symbols).unwrap();
        prop_assert_eq!(range::decompress::<u16>(&packed, symbols.len()).unwrap(), symbols);
    }

    #[test]
    fn range_static_model_round_trips(symbols in prop::collection::vec(0usize..5, 0..400), precision in 4u32..=16) {
        let mut counts = vec![1u64; 5];
        for &s in &symbols { counts[s] += 7; }
        let model = Categorical::from_counts(&counts, precision).unwrap();
        let mut enc = RangeEncoder::new();
        for &s in &symbols { enc.encode_model(&model, s).unwrap(); }
        let bytes = enc.finish();
        let mut dec = RangeDecoder::new(&bytes).unwrap();
        for &s in &symbols { prop_assert_eq!(dec.decode_model(&model).unwrap(), s); }
        dec.finish().unwrap();
    }

    #[test]
    fn decoders_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = rans::decompress::<u8>(&bytes, 10_000);
        let _ = rans::decompress::<u16>(&bytes, 10_000);
        let _ = huffman::decompress::<u8>(&bytes, 10_000);
        let _ = huffman::decompress::<u16>(&bytes, 10_000);
        let _ = huffman::decompress_pairs(&bytes, 10_000);
        let _ = range::decompress::<u8>(&bytes, 10_000);
        let _ = range::decompress::<u16>(&bytes, 10_000);
        let _ = Categorical::read_from(&bytes);
        let _ = HuffmanCode::read_from(&bytes);
        if let Ok((tables, used)) = CdfTables::read_from(&bytes) {
            let words: Vec<u16> = bytes[used..].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            if !tables.is_empty() {
                let _ = DefaultRans::decode_with(&words, 100, |i| tables.table(i % tables.len()));
            }
        }
        let words: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        let g = |i: usize| Quantized::gaussian(i as f64 * 0.1, 1.5, -20..=20, 12);
        let _ = DefaultRans::decode_with(&words, 300, g);
        if let Ok(mut dec) = RangeDecoder::new(&bytes) {
            let mut m = AdaptiveModel::new(40).unwrap();
            for _ in 0..300 {
                if dec.decode_adaptive(&mut m).is_err() { break; }
            }
            let _ = dec.finish();
        }
    }

    #[test]
    fn corrupted_streams_never_panic(symbols in skewed(50), flip in any::<(usize, u8)>()) {
        prop_assume!(!symbols.is_empty());
        for packed in [
            rans::compress(&symbols, 12).unwrap(),
            huffman::compress(&symbols, 12).unwrap(),
            range::compress(&symbols).unwrap(),
        ] {
            let mut bad = packed.clone();
            let at = flip.0 % bad.len();
            bad[at] ^= flip.1.max(1);
            let _ = rans::decompress::<u16>(&bad, 1000);
            let _ = huffman::decompress::<u16>(&bad, 1000);
            let _ = range::decompress::<u16>(&bad, 1000);
        }
    }
}

/// Two model types behind one [`EntropyModel`], for mixed per-element streams.
#[derive(Clone, Copy)]
enum Either {
    G(Quantized<tensorpress_codecs::entropy::Gaussian>),
    L(Quantized<tensorpress_codecs::entropy::Laplace>),
}

impl EntropyModel for Either {
    type Symbol = i32;

    fn precision(&self) -> u32 {
        match self {
            Either::G(m) => m.precision(),
            Either::L(m) => m.precision(),
        }
    }

    fn interval(&self, symbol: i32) -> Option<tensorpress_codecs::entropy::Interval> {
        match self {
            Either::G(m) => m.interval(symbol),
            Either::L(m) => m.interval(symbol),
        }
    }

    fn symbol_at(&self, slot: u32) -> Option<(i32, tensorpress_codecs::entropy::Interval)> {
        match self {
            Either::G(m) => m.symbol_at(slot),
            Either::L(m) => m.symbol_at(slot),
        }
    }
}
