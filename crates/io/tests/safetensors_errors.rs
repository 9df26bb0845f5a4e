//! Malformed safetensors files and shard indexes: typed errors, no panics.

use std::path::Path;

use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter, MAX_HEADER_SIZE};
use tensorpress_io::{Error, IndexProblem};
use tensorpress_tensor::DType;

/// A file from a raw JSON header and `n` data bytes.
fn file(header: &str, n: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + n, 0);
    out
}

#[track_caller]
fn err(bytes: Vec<u8>) -> Error {
    match SafetensorsModel::from_bytes(bytes) {
        Ok(_) => panic!("malformed input was accepted"),
        Err(e) => e,
    }
}

const GOOD: &str = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}}"#;

#[test]
fn good_file_parses() {
    let m = SafetensorsModel::from_bytes(file(GOOD, 12)).unwrap();
    assert_eq!(m.names(), ["a", "b"]);
    assert_eq!(m.info("b").unwrap().dtype, DType::BF16);
    assert_eq!(m.metadata()["format"], "pt");
    assert_eq!(m.view("b").unwrap().data().len(), 4);
    assert!(matches!(m.view("c"), Err(Error::TensorNotFound { .. })));
    assert!(matches!(m.to_f32("c"), Err(Error::TensorNotFound { .. })));
}

#[test]
fn header_length_checks() {
    assert!(matches!(
        err(vec![1, 2, 3]),
        Error::Truncated {
            what: "header length",
            ..
        }
    ));
    let mut big = (MAX_HEADER_SIZE + 1).to_le_bytes().to_vec();
    big.extend_from_slice(b"{}");
    assert!(matches!(
        err(big),
        Error::HeaderTooLarge {
            max: MAX_HEADER_SIZE,
            ..
        }
    ));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(err(huge), Error::HeaderTooLarge { .. }));
    let mut past_end = 100u64.to_le_bytes().to_vec();
    past_end.extend_from_slice(b"{}");
    assert!(matches!(
        err(past_end),
        Error::Truncated {
            what: "header",
            needed: 100,
            ..
        }
    ));
}

#[test]
fn every_truncation_and_extension_fails() {
    let bytes = file(GOOD, 12);
    for len in 0..bytes.len() {
        assert!(
            SafetensorsModel::from_bytes(bytes[..len].to_vec()).is_err(),
            "{len}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        err(longer),
        Error::DataLength {
            expected: 12,
            actual: 13
        }
    ));
}

#[test]
fn json_problems() {
    for header in [
        " {}",
        "[]",
        "{",
        "{\"a\":1}",
        "\u{feff}{}",
        "{\"a\":{\"dtype\":\"F32\"}}",
    ] {
        assert!(
            matches!(err(file(header, 0)), Error::HeaderJson { .. }),
            "{header:?}"
        );
    }
    let not_utf8 = {
        let mut v = 3u64.to_le_bytes().to_vec();
        v.extend_from_slice(&[b'{', 0xff, b'}']);
        v
    };
    assert!(matches!(err(not_utf8), Error::HeaderJson { .. }));
    let numeric_meta = r#"{"__metadata__":{"n":1}}"#;
    assert!(matches!(
        err(file(numeric_meta, 0)),
        Error::HeaderJson { .. }
    ));
    // Trailing spaces (the reference writer's padding) are fine.
    assert!(SafetensorsModel::from_bytes(file("{}      ", 0)).is_ok());
}

#[test]
fn tensor_problems() {
    let h = r#"{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(matches!(err(file(h, 8)), Error::UnknownDType { ref dtype, .. } if dtype == "Q4"));
    let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    assert!(matches!(
        err(file(h, 8)),
        Error::ByteCount {
            expected: 12,
            actual: 8,
            ..
        }
    ));
    let h = r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776,1099511627776],"data_offsets":[0,8]}}"#;
    assert!(matches!(err(file(h, 8)), Error::ShapeOverflow { .. }));
    // Zero elements, but ndarray could not represent the shape.
    let h = r#"{"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#;
    assert!(matches!(err(file(h, 0)), Error::ShapeOverflow { .. }));
    let h = r#"{"a":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}}"#;
    assert!(matches!(err(file(h, 0)), Error::ShapeOverflow { .. }));
    let h = r#"{"a":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}}"#;
    assert_eq!(
        SafetensorsModel::from_bytes(file(h, 0))
            .unwrap()
            .to_f32("a")
            .unwrap()
            .shape(),
        [0, 5]
    );
    let h = r#"{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}"#;
    assert!(matches!(err(file(h, 8)), Error::HeaderJson { .. }));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#;
    assert!(matches!(
        err(file(h, 8)),
        Error::ReversedOffsets {
            start: 8,
            end: 0,
            ..
        }
    ));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]}}"#;
    assert!(matches!(err(file(h, 8)), Error::ReversedOffsets { .. }));
}

#[test]
fn layout_problems() {
    // A gap before the first tensor.
    let h = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
    assert!(matches!(
        err(file(h, 4)),
        Error::NonContiguous {
            start: 2,
            expected: 0,
            ..
        }
    ));
    // Overlap.
    let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    assert!(matches!(err(file(h, 6)), Error::NonContiguous { ref tensor, .. } if tensor == "b"));
    // Missing data.
    let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        err(file(h, 3)),
        Error::DataLength {
            expected: 4,
            actual: 3
        }
    ));
    // Offsets far past the end.
    let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[1000000,1000004]}}"#;
    assert!(matches!(err(file(h, 4)), Error::NonContiguous { .. }));
}

#[test]
fn duplicates() {
    let h = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert!(matches!(err(file(h, 2)), Error::DuplicateTensor { ref name } if name == "a"));
    let h = r#"{"__metadata__":{"k":"1","k":"2"}}"#;
    assert!(matches!(err(file(h, 0)), Error::DuplicateKey { ref key } if key == "k"));
    let h = r#"{"__metadata__":{"k":"1"},"__metadata__":{"j":"2"}}"#;
    assert!(matches!(err(file(h, 0)), Error::DuplicateKey { ref key } if key == "__metadata__"));
}

#[test]
fn writer_rejects_inconsistent_input() {
    let mut w = SafetensorsWriter::new();
    assert!(matches!(
        w.add("__metadata__", DType::U8, &[1], vec![0u8]),
        Err(Error::ReservedName { .. })
    ));
    w.add("a", DType::U8, &[1], vec![0u8]).unwrap();
    assert!(matches!(
        w.add("a", DType::U8, &[1], vec![0u8]),
        Err(Error::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.add("b", DType::F16, &[3], vec![0u8; 5]),
        Err(Error::ByteCount {
            expected: 6,
            actual: 5,
            ..
        })
    ));
    assert!(matches!(
        w.add("c", DType::F64, &[usize::MAX, 2], vec![]),
        Err(Error::ShapeOverflow { .. })
    ));
    w.add_metadata("k", "v").unwrap();
    assert!(matches!(
        w.add_metadata("k", "w"),
        Err(Error::DuplicateKey { .. })
    ));
}

fn write_shards(dir: &Path) {
    let mut w = SafetensorsWriter::new();
    w.max_shard_size(8);
    for name in ["a", "b", "c"] {
        w.add(name, DType::F32, &[2], vec![1u8; 8]).unwrap();
    }
    let written = w.write_dir(dir).unwrap();
    assert_eq!(written.len(), 4);
}

fn set_index(dir: &Path, weight_map: &str) {
    let text = format!("{{\"metadata\":{{\"total_size\":24}},\"weight_map\":{weight_map}}}");
    std::fs::write(dir.join("model.safetensors.index.json"), text).unwrap();
}

#[test]
fn shard_index_problems() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_shards(d);
    assert_eq!(SafetensorsModel::open(d).unwrap().len(), 3);

    let s1 = "model-00001-of-00003.safetensors";
    let s2 = "model-00002-of-00003.safetensors";
    let s3 = "model-00003-of-00003.safetensors";
    let root = |r: Result<SafetensorsModel, Error>| match r {
        Ok(_) => panic!("bad index accepted"),
        Err(e) => e,
    };

    set_index(d, &format!(r#"{{"a":"{s2}","b":"{s2}","c":"{s3}"}}"#));
    let e = root(SafetensorsModel::open(d));
    assert!(
        matches!(
            e.root(),
            Error::IndexMismatch { problem: IndexProblem::MissingFromShard { .. }, tensor } if tensor == "a"
        ),
        "{e}"
    );

    // A shard holding a tensor the index does not list.
    let mut extra = SafetensorsWriter::new();
    extra.add("a", DType::F32, &[2], vec![1u8; 8]).unwrap();
    extra.add("x", DType::U8, &[1], vec![0u8]).unwrap();
    extra.write_file(d.join(s1)).unwrap();
    set_index(d, &format!(r#"{{"a":"{s1}","b":"{s2}","c":"{s3}"}}"#));
    let e = root(SafetensorsModel::open(d));
    assert!(
        matches!(
            e.root(),
            Error::IndexMismatch { problem: IndexProblem::NotInIndex { .. }, tensor } if tensor == "x"
        ),
        "{e}"
    );
    write_shards(d);

    // Files the index does not name are not read (like a stale shard).
    set_index(d, &format!(r#"{{"a":"{s1}","b":"{s2}"}}"#));
    assert_eq!(SafetensorsModel::open(d).unwrap().names(), ["a", "b"]);

    set_index(
        d,
        &format!(r#"{{"a":"{s1}","b":"{s2}","c":"{s3}","d":"{s3}"}}"#),
    );
    assert!(matches!(
        root(SafetensorsModel::open(d)).root(),
        Error::IndexMismatch { problem: IndexProblem::MissingFromShard { .. }, tensor } if tensor == "d"
    ));

    set_index(
        d,
        &format!(r#"{{"a":"{s1}","a":"{s1}","b":"{s2}","c":"{s3}"}}"#),
    );
    assert!(matches!(
        root(SafetensorsModel::open(d)).root(),
        Error::DuplicateTensor { .. }
    ));

    set_index(d, r#"{"a":"../model-00001-of-00003.safetensors"}"#);
    assert!(matches!(
        root(SafetensorsModel::open(d)).root(),
        Error::BadShardName { .. }
    ));

    set_index(d, r#"{"a":"missing.safetensors"}"#);
    assert!(matches!(root(SafetensorsModel::open(d)), Error::Io { .. }));

    std::fs::write(
        d.join("model.safetensors.index.json"),
        "{\"weight_map\": [1]}",
    )
    .unwrap();
    assert!(matches!(
        root(SafetensorsModel::open(d)),
        Error::Json { .. }
    ));

    // A corrupt shard names the shard.
    set_index(d, &format!(r#"{{"a":"{s1}","b":"{s2}","c":"{s3}"}}"#));
    std::fs::write(d.join(s2), b"garbage").unwrap();
    let e = root(SafetensorsModel::open(d));
    assert!(e.to_string().contains(s2), "{e}");
    assert!(matches!(e.root(), Error::Truncated { .. }));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        root(SafetensorsModel::open(empty.path())),
        Error::NoCheckpoint { .. }
    ));
}
