//! Malformed and hostile GGUF input: every case gives its typed error, none
//! panics or allocates beyond the input's size.

use tensorpress_io::gguf::{GgmlType, GgufFile, GgufHeader, GgufWriter};
use tensorpress_io::Error;

/// Builds GGUF bytes field by field.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn start(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.0.extend_from_slice(b"GGUF");
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Raw {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Raw {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Raw {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` data bytes.
    fn data(&mut self, align: usize, n: usize) -> &mut Raw {
        let pad = self.0.len().next_multiple_of(align) - self.0.len();
        self.0.resize(self.0.len() + pad + n, 0);
        self
    }
    fn parse(&self) -> Result<GgufHeader, Error> {
        GgufHeader::parse(&self.0)
    }
}

#[track_caller]
fn err(r: &Raw) -> Error {
    match r.parse() {
        Ok(_) => panic!("malformed input was accepted"),
        Err(e) => e,
    }
}

#[test]
fn valid_handmade_file_parses() {
    let mut r = Raw::start(3, 2, 1);
    r.kv_u32("a", 1)
        .tensor("x", &[4, 2], 0, 0)
        .tensor("y", &[32], 8, 32)
        .data(32, 32 + 34);
    let h = r.parse().unwrap();
    assert_eq!(h.tensors().len(), 2);
    assert_eq!(h.tensor("x").unwrap().shape(), [2, 4]);
    assert_eq!(h.tensor("y").unwrap().ggml_type(), GgmlType::Q8_0);
    assert_eq!(h.metadata().get_u32("a").unwrap(), 1);
    assert_eq!(h.data_offset() % 32, 0);
}

#[test]
fn bad_magic_and_versions() {
    assert!(matches!(
        GgufHeader::parse(b""),
        Err(Error::Truncated { what: "magic", .. })
    ));
    assert!(matches!(
        GgufHeader::parse(b"GGML\x03\0\0\0"),
        Err(Error::BadMagic { found }) if &found == b"GGML"
    ));
    for version in [0u32, 1, 4, 0x0300_0000] {
        let r = Raw::start(version, 0, 0);
        assert!(
            matches!(err(&r), Error::UnsupportedVersion { version: v } if v == version),
            "{version}"
        );
    }
    assert!(Raw::start(2, 0, 0).parse().is_ok());
}

#[test]
fn every_truncation_fails_cleanly() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.name", "t").unwrap();
    w.add_metadata("list", vec!["a", "bc"]).unwrap();
    w.add_metadata(
        "nested",
        vec![tensorpress_io::gguf::GgufArray::U16(vec![1, 2])],
    )
    .unwrap();
    w.add_tensor("a", GgmlType::F32, &[3], vec![0u8; 12])
        .unwrap();
    w.add_tensor("b", GgmlType::Q4_0, &[32], vec![0u8; 18])
        .unwrap();
    let bytes = w.to_bytes().unwrap();
    let h = GgufHeader::parse(&bytes).unwrap();
    let b = h.tensor("b").unwrap();
    let data_end = (h.data_offset() + b.offset()) as usize + b.n_bytes();
    for len in 0..bytes.len() {
        let r = GgufHeader::parse(&bytes[..len]);
        if len < data_end {
            assert!(r.is_err(), "prefix of {len} bytes accepted");
        }
    }
}

#[test]
fn hostile_counts_and_lengths_are_refused_before_allocating() {
    let r = Raw::start(3, u64::MAX, 0);
    assert!(matches!(
        err(&r),
        Error::LengthTooLarge {
            what: "tensor count",
            len: u64::MAX,
            ..
        }
    ));
    let r = Raw::start(3, 0, 1 << 40);
    assert!(matches!(
        err(&r),
        Error::LengthTooLarge {
            what: "metadata count",
            ..
        }
    ));
    // A key whose length runs past the end.
    let mut r = Raw::start(3, 0, 1);
    r.u64(1 << 62).bytes(b"abcdefghijklmnop");
    assert!(matches!(
        err(&r),
        Error::LengthTooLarge {
            what: "metadata key",
            ..
        }
    ));
    // Arrays of u32, of strings and of arrays with counts the input cannot hold.
    for (elem, count) in [
        (4u32, 1u64 << 61),
        (8, 1 << 40),
        (9, 1 << 33),
        (0, u64::MAX),
    ] {
        let mut r = Raw::start(3, 0, 1);
        r.str("k").u32(9).u32(elem).u64(count).bytes(&[0; 16]);
        assert!(
            matches!(err(&r), Error::LengthTooLarge { what: "array length", len, .. } if len == count),
            "elem type {elem}"
        );
    }
    // A string element whose length runs past the end.
    let mut r = Raw::start(3, 0, 1);
    r.str("k").u32(9).u32(8).u64(1).u64(1000).bytes(b"short");
    assert!(matches!(
        err(&r),
        Error::LengthTooLarge {
            what: "string element",
            ..
        }
    ));
    // A tensor name whose length runs past the end.
    let mut r = Raw::start(3, 1, 0);
    r.u64(u64::MAX - 3).bytes(&[0; 24]);
    assert!(matches!(
        err(&r),
        Error::LengthTooLarge {
            what: "tensor name",
            ..
        }
    ));
}

#[test]
fn bad_values() {
    let mut r = Raw::start(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(err(&r), Error::UnknownValueType { type_id: 13, ref key, .. } if key == "k"));
    let mut r = Raw::start(3, 0, 1);
    r.str("k").u32(9).u32(77).u64(0);
    assert!(matches!(
        err(&r),
        Error::UnknownValueType { type_id: 77, .. }
    ));
    let mut r = Raw::start(3, 0, 1);
    r.str("flag").u32(7).bytes(&[2]);
    assert!(matches!(err(&r), Error::InvalidBool { value: 2, .. }));
    let mut r = Raw::start(3, 0, 1);
    r.str("flags").u32(9).u32(7).u64(3).bytes(&[1, 0, 9]);
    assert!(matches!(err(&r), Error::InvalidBool { value: 9, .. }));
    let mut r = Raw::start(3, 0, 1);
    r.u64(2).bytes(&[0xff, 0xfe]).u32(4).u32(0);
    assert!(matches!(
        err(&r),
        Error::InvalidUtf8 {
            what: "metadata key",
            ..
        }
    ));
    let mut r = Raw::start(3, 0, 1);
    r.str("s").u32(8).u64(1).bytes(&[0x80]);
    assert!(matches!(
        err(&r),
        Error::InvalidUtf8 {
            what: "string value",
            ..
        }
    ));
}

#[test]
fn arrays_nest_at_most_eight_deep() {
    let nested = |depth: usize| {
        let mut r = Raw::start(3, 0, 1);
        r.str("deep").u32(9);
        for _ in 1..depth {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(1).bytes(&[7]);
        r
    };
    let ok = nested(8).parse().unwrap();
    assert!(ok.metadata().get_array("deep").is_ok());
    assert!(matches!(
        err(&nested(9)),
        Error::NestingTooDeep { max_depth: 8, .. }
    ));
    assert!(matches!(err(&nested(10_000)), Error::NestingTooDeep { .. }));
}

#[test]
fn duplicates() {
    let mut r = Raw::start(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(&r), Error::DuplicateKey { ref key } if key == "k"));
    let mut r = Raw::start(3, 2, 0);
    r.tensor("t", &[1], 0, 0)
        .tensor("t", &[1], 0, 32)
        .data(32, 36);
    assert!(matches!(err(&r), Error::DuplicateTensor { ref name } if name == "t"));
}

#[test]
fn bad_tensor_infos() {
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(32, 4);
    assert!(matches!(
        err(&r),
        Error::TooManyDims {
            n_dims: 5,
            max: 4,
            ..
        }
    ));
    let mut r = Raw::start(3, 1, 0);
    r.str("t").u32(u32::MAX).bytes(&[0; 64]);
    assert!(matches!(err(&r), Error::TooManyDims { .. }));
    for ne in [
        &[1u64 << 40, 1 << 40][..],
        &[u64::MAX],
        &[1 << 63],
        &[4, 1 << 62],
        &[0, 1 << 63],
        &[0, 1 << 40, 1 << 40],
    ] {
        let mut r = Raw::start(3, 1, 0);
        r.tensor("t", ne, 0, 0).data(32, 4);
        assert!(matches!(err(&r), Error::ShapeOverflow { .. }), "{ne:?}");
    }
    for ty in [4u32, 5, 31, 36, 1000, u32::MAX] {
        let mut r = Raw::start(3, 1, 0);
        r.tensor("t", &[32], ty, 0).data(32, 64);
        assert!(matches!(err(&r), Error::UnknownGgmlType { type_id, .. } if type_id == ty));
    }
    let mut r = Raw::start(3, 1, 0);
    r.tensor("z", &[0, 1 << 40], 0, 0).data(32, 0);
    let h = r.parse().unwrap();
    assert_eq!(h.tensor("z").unwrap().numel(), 0);
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[33, 2], 2, 0).data(32, 64);
    assert!(matches!(
        err(&r),
        Error::Quant {
            source: tensorpress_quant_core::Error::NotBlockMultiple { n: 33, .. },
            ..
        }
    ));
    let mut r = Raw::start(3, 1, 0);
    r.str("t").u32(1).u64(1); // ends inside the tensor info
    assert!(matches!(
        err(&r),
        Error::Truncated {
            what: "tensor type",
            ..
        }
    ));
}

#[test]
fn bad_tensor_offsets() {
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[1], 0, 1).data(32, 64);
    assert!(matches!(
        err(&r),
        Error::MisalignedOffset {
            offset: 1,
            alignment: 32,
            ..
        }
    ));
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[16], 0, 32).data(32, 64);
    assert!(matches!(err(&r), Error::TensorOutOfRange { .. }));
    let mut r = Raw::start(3, 1, 0);
    r.tensor("t", &[16], 0, u64::MAX - 31).data(32, 64);
    assert!(matches!(
        err(&r),
        Error::TensorOutOfRange {
            start: u64::MAX,
            ..
        }
    ));
    let mut r = Raw::start(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 96);
    assert!(
        matches!(err(&r), Error::TensorOverlap { ref first, ref second } if first == "a" && second == "b")
    );
    // Empty tensors may share an offset with anything.
    let mut r = Raw::start(3, 2, 0);
    r.tensor("a", &[16], 0, 0)
        .tensor("e", &[0], 0, 0)
        .data(32, 64);
    assert!(r.parse().is_ok());
}

#[test]
fn alignment_key() {
    let mut r = Raw::start(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("t", &[1], 0, 64)
        .data(64, 68);
    let h = r.parse().unwrap();
    assert_eq!((h.alignment(), h.data_offset() % 64), (64, 0));
    let mut r = Raw::start(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("t", &[1], 0, 32)
        .data(64, 68);
    assert!(matches!(
        err(&r),
        Error::MisalignedOffset { alignment: 64, .. }
    ));
    for bad in [0u32, 3, 48] {
        let mut r = Raw::start(3, 0, 1);
        r.kv_u32("general.alignment", bad);
        assert!(
            matches!(err(&r), Error::InvalidAlignment { alignment } if alignment == u64::from(bad))
        );
    }
    let mut r = Raw::start(3, 0, 1);
    r.str("general.alignment").u32(10).u64(32);
    assert!(
        matches!(err(&r), Error::WrongType { expected: "u32", ref found, .. } if found == "u64")
    );
}

#[test]
fn file_level_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    assert!(matches!(GgufFile::open(&missing), Err(Error::Io { .. })));
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"NOPE\x03\0\0\0").unwrap();
    let e = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(e, Error::InFile { ref path, .. } if path == &bad));
    assert!(matches!(e.root(), Error::BadMagic { .. }));
    assert!(e.to_string().contains("bad.gguf"), "{e}");
}

#[test]
fn lookups_and_unsupported_types() {
    let mut w = GgufWriter::new();
    w.add_tensor("k", GgmlType::IQ2XXS, &[256], vec![0u8; 66])
        .unwrap();
    let f = GgufFile::parse(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.tensor_bytes("k").unwrap().len(), 66);
    assert!(matches!(
        f.dequantize("k"),
        Err(Error::Quant {
            source: tensorpress_quant_core::Error::Unsupported { .. },
            ..
        })
    ));
    assert!(matches!(
        f.dequantize("nope"),
        Err(Error::TensorNotFound { .. })
    ));
    assert!(matches!(
        f.tensor_bytes("nope"),
        Err(Error::TensorNotFound { .. })
    ));
    assert!(matches!(f.get_u32("nope"), Err(Error::MissingKey { .. })));
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut w = GgufWriter::new();
    w.add_tensor("t", GgmlType::F32, &[2], vec![0u8; 8])
        .unwrap();
    assert!(matches!(
        w.add_tensor("t", GgmlType::F32, &[2], vec![0u8; 8]),
        Err(Error::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.add_tensor("u", GgmlType::F16, &[3], vec![0u8; 8]),
        Err(Error::ByteCount {
            expected: 6,
            actual: 8,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("v", GgmlType::Q8_0, &[2, 16], vec![0u8; 34]),
        Err(Error::Quant { .. })
    ));
    assert!(matches!(
        w.add_tensor("w", GgmlType::F32, &[1, 1, 1, 1, 1], vec![0u8; 4]),
        Err(Error::TooManyDims { .. })
    ));
    let long = "x".repeat(64);
    assert!(matches!(
        w.add_tensor(long, GgmlType::F32, &[1], vec![0u8; 4]),
        Err(Error::NameTooLong { max: 63, .. })
    ));
    assert!(matches!(
        w.set_alignment(24),
        Err(Error::InvalidAlignment { .. })
    ));
    assert!(matches!(
        w.add_metadata("general.alignment", 64u64),
        Err(Error::WrongType { .. })
    ));
    assert!(matches!(
        w.add_f32(
            "q",
            GgmlType::IQ2XXS,
            ndarray::Array1::zeros(256).view().into_dyn()
        ),
        Err(Error::Quant { .. })
    ));
    w.add_metadata("k", 1u8).unwrap();
    assert!(matches!(
        w.add_metadata("k", 2u8),
        Err(Error::DuplicateKey { .. })
    ));
}
