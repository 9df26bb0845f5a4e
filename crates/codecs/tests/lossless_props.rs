//! Property tests of the lossless float codec and its container: every round
//! trip is bit-exact (NaN payloads, infinities, subnormals, -0.0 included), and
//! every decoder answers random or damaged bytes with a value or an error,
//! never a panic.

use proptest::prelude::*;
use tensorpress_codecs::lossless::{
    float, FloatCodecConfig, FloatFormat, LosslessFile, LosslessWriter,
};
use tensorpress_tensor::DType;

/// Raw bit patterns: mostly weight-like values, with every special class mixed in.
fn bits32() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (-0.5f32..0.5).prop_map(f32::to_bits),
        1 => any::<u32>(),
        1 => prop::sample::select(vec![
            0u32, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7fa0_0001,
            0xffff_ffff, 1, 0x8000_0001, 0x007f_ffff, 0x7f7f_ffff,
        ]),
    ]
}

fn format() -> impl Strategy<Value = FloatFormat> {
    prop::sample::select(vec![FloatFormat::F32, FloatFormat::F16, FloatFormat::Bf16])
}

/// Little-endian elements of `format` from 32-bit patterns (the high half for
/// 16-bit formats, so bf16 gets real weight exponents).
fn to_bytes(format: FloatFormat, bits: &[u32]) -> Vec<u8> {
    match format {
        FloatFormat::F32 => bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
        _ => bits
            .iter()
            .flat_map(|b| ((b >> 16) as u16).to_le_bytes())
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn float_streams_round_trip_bit_exactly(
        bits in prop::collection::vec(bits32(), 0..3000),
        format in format(),
        chunk in 1usize..1200,
        precision in 8u32..=16,
    ) {
        let bytes = to_bytes(format, &bits);
        let config = FloatCodecConfig::default().chunk_elements(chunk).precision(precision);
        let s = float::encode(format, &bytes, &config).unwrap();
        let (f, back) = float::decode(&s, bytes.len()).unwrap();
        prop_assert_eq!(f, format);
        prop_assert_eq!(back, bytes);
    }

    #[test]
    fn float_decoder_survives_random_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok((format, out)) = float::decode(&data, 1 << 16) {
            // Whatever decodes re-encodes to a stream of the same contents.
            let again = float::encode(format, &out, &FloatCodecConfig::default()).unwrap();
            prop_assert_eq!(float::decode(&again, out.len()).unwrap().1, out);
        }
    }

    #[test]
    fn float_decoder_survives_damage(
        bits in prop::collection::vec(bits32(), 1..800),
        format in format(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = to_bytes(format, &bits);
        let config = FloatCodecConfig::default().chunk_elements(100);
        let s = float::encode(format, &bytes, &config).unwrap();
        let mut damaged = s.clone();
        for (i, bit) in &flips {
            let i = i.index(damaged.len());
            damaged[i] ^= 1 << bit;
        }
        let _ = float::decode(&damaged, 1 << 16);
        prop_assert!(float::decode(&s[..cut.index(s.len())], 1 << 16).is_err());
    }

    #[test]
    fn containers_round_trip_and_reject_damage(
        tensors in prop::collection::vec((bits32(), 0usize..300, 0u8..4), 0..6),
        flip in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut w = LosslessWriter::with_config(FloatCodecConfig::default().chunk_elements(64));
        let mut expect = Vec::new();
        for (i, &(seed, n, kind)) in tensors.iter().enumerate() {
            let bits: Vec<u32> = (0..n as u32).map(|j| seed.wrapping_mul(j | 1).rotate_left(j % 7) & 0xbfff_ffff).collect();
            let (dtype, bytes) = match kind {
                0 => (DType::F32, to_bytes(FloatFormat::F32, &bits)),
                1 => (DType::BF16, to_bytes(FloatFormat::Bf16, &bits)),
                2 => (DType::U8, bits.iter().map(|b| (b % 5) as u8).collect()),
                _ => (DType::I32, to_bytes(FloatFormat::F32, &bits)),
            };
            let shape = [n];
            let name = format!("t{i}");
            w.add(&name, dtype, &shape, &bytes).unwrap();
            expect.push((name, bytes));
        }
        w.add_metadata("format", "pt");
        let c = w.to_bytes().unwrap();
        let file = LosslessFile::parse(&c).unwrap();
        prop_assert_eq!(file.metadata().get("format").map(String::as_str), Some("pt"));
        for (name, bytes) in &expect {
            prop_assert_eq!(&file.decode(name).unwrap(), bytes);
        }
        // Any single bit flip is caught by a checksum (or the magic, version, lengths).
        let mut damaged = c.clone();
        let i = flip.index(damaged.len());
        damaged[i] ^= 0x04;
        let caught = match LosslessFile::parse(&damaged) {
            Err(_) => true,
            Ok(f) => f.verify().is_err() || expect.iter().any(|(n, b)| f.decode(n).ok().as_ref() != Some(b)),
        };
        prop_assert!(caught, "flip at {} went unnoticed", i);
        let cut = cut.index(c.len());
        prop_assert!(LosslessFile::parse(&c[..cut]).is_err());
    }

    #[test]
    fn container_reader_survives_random_bytes(
        table in prop::collection::vec(any::<u8>(), 0..200),
        data in prop::collection::vec(any::<u8>(), 0..200),
        raw in any::<bool>(),
    ) {
        // Raw bytes, or a random table behind a valid preamble (so the parser
        // gets past the table checksum).
        let mut bytes = Vec::new();
        if !raw {
            bytes.extend_from_slice(b"TPZLOSS\0");
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&(table.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&table).to_le_bytes());
        }
        bytes.extend_from_slice(&table);
        bytes.extend_from_slice(&data);
        if let Ok(f) = LosslessFile::parse(&bytes) {
            let f = f.with_max_tensor_bytes(1 << 16);
            for e in f.tensors().to_vec() {
                let _ = f.decode(&e.name);
            }
        }
    }
}
