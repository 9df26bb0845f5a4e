//! Payload serialization: round trips, hostile bytes, shape bounds.

use super::*;
use proptest::prelude::*;

/// Found by the `grad_payload` fuzz target: an empty sparse tensor whose
/// other axes multiply past `isize` made `to_dense` panic in ndarray.
#[test]
fn zero_axis_with_huge_other_axes_is_refused() {
    let mut bytes = vec![TAG_SPARSE, 4];
    for d in [2816u32, 0, 150_994_944, 150_994_944] {
        bytes.extend(d.to_le_bytes());
    }
    bytes.extend([0, 0]);
    match Payload::from_bytes(&bytes) {
        Err(Error::TooLarge { .. }) => {}
        Ok(p) => assert!(p.to_dense().is_err(), "{p:?}"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn samples() -> Vec<Payload> {
    vec![
        Payload::Dense {
            shape: vec![2, 3],
            values: vec![1.0, -2.0, 3.5, 0.0, 1e-3, -7.0],
        },
        Payload::Factor {
            rows: 3,
            cols: 1,
            values: vec![0.5, 0.25, -1.0],
        },
        Payload::Sparse {
            shape: vec![1000],
            indices: vec![3, 700, 999, 5],
            values: vec![1.0, 2.0, 3.0, -4.0],
        },
        Payload::Quantized {
            shape: vec![5],
            levels: 3,
            bucket: 2,
            scales: vec![2.0, 4.0, 1.0],
            codes: vec![-3, 0, 1, 3, -2],
        },
        Payload::Sign {
            shape: vec![2, 20],
            scale: 0.5,
            negative: (0..40).map(|i| i % 3 == 0).collect(),
        },
    ]
}

#[test]
fn round_trip_and_exact_length() {
    for p in samples() {
        let bytes = p.to_bytes().unwrap();
        assert_eq!(bytes.len(), p.byte_len(), "{}", p.kind());
        assert_eq!(Payload::from_bytes(&bytes).unwrap(), p);
        // Every strict prefix is rejected, not a panic.
        for cut in 0..bytes.len() {
            assert!(
                Payload::from_bytes(&bytes[..cut]).is_err(),
                "{} cut {cut}",
                p.kind()
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Payload::from_bytes(&long),
            Err(Error::TrailingBytes { extra: 1 })
        ));
    }
}

#[test]
fn decodes() {
    let d = samples()[2].to_dense().unwrap();
    assert_eq!(d[[5]], -4.0);
    assert_eq!(d[[999]], 3.0);
    assert_eq!(d.sum(), 2.0);
    let q = samples()[3].to_dense().unwrap();
    assert_eq!(
        q.as_slice().unwrap(),
        &[-2.0, 0.0, 4.0 / 3.0, 4.0, -2.0 / 3.0]
    );
    let s = samples()[4].to_dense().unwrap();
    assert_eq!(s[[0, 0]], -0.5);
    assert_eq!(s[[0, 1]], 0.5);
}

#[test]
fn bits_for_levels_is_minimal() {
    assert_eq!(bits_for_levels(1).unwrap(), 2);
    assert_eq!(bits_for_levels(3).unwrap(), 3);
    assert_eq!(bits_for_levels(4).unwrap(), 4);
    assert_eq!(bits_for_levels(127).unwrap(), 8);
    assert!(bits_for_levels(0).is_err());
    assert!(bits_for_levels(128).is_err());
}

#[test]
fn hostile_headers_are_rejected() {
    // Dense [u32::MAX, u32::MAX]: past MAX_ELEMENTS.
    let mut b = vec![TAG_DENSE, 2];
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Payload::from_bytes(&b),
        Err(Error::TooLarge { .. })
    ));
    // Sparse claiming 2^32 - 1 entries in a few bytes.
    let mut b = vec![TAG_SPARSE, 1];
    b.extend_from_slice(&10u32.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Payload::from_bytes(&b),
        Err(Error::Truncated { .. })
    ));
    // Sparse index past the end.
    let p = Payload::Sparse {
        shape: vec![4],
        indices: vec![4],
        values: vec![1.0],
    };
    assert!(matches!(p.to_bytes(), Err(Error::Malformed { .. })));
    assert!(matches!(
        Payload::from_bytes(&[9]),
        Err(Error::UnknownTag { tag: 9 })
    ));
}

#[test]
fn add_assign_checks_kind_and_shape() {
    let mut a = samples()[0].clone();
    a.add_assign(&samples()[0]).unwrap();
    assert_eq!(a.to_dense().unwrap()[[1, 2]], -14.0);
    assert!(matches!(
        a.add_assign(&samples()[1]),
        Err(Error::PayloadKind { .. })
    ));
    let other = Payload::Dense {
        shape: vec![6],
        values: vec![0.0; 6],
    };
    assert!(matches!(
        a.add_assign(&other),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut s = samples()[2].clone();
    assert!(matches!(
        s.add_assign(&samples()[2]),
        Err(Error::PayloadKind { .. })
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = Payload::from_bytes(&bytes) {
            // Whatever parses re-serializes (index varints may have been
            // non-minimal, and floats may be NaN, so compare bytes after a
            // second round trip).
            let again = p.to_bytes().unwrap();
            prop_assert_eq!(again.len(), p.byte_len());
            prop_assert_eq!(Payload::from_bytes(&again).unwrap().to_bytes().unwrap(), again);
        }
    }

    #[test]
    fn random_tagged_bytes_never_panic(
        tag in 0u8..5,
        ndim in 0u8..4,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![tag, ndim];
        bytes.extend_from_slice(&rest);
        let _ = Payload::from_bytes(&bytes);
    }

    #[test]
    fn sparse_round_trip(
        entries in proptest::collection::vec((0u32..5000, -1e3f32..1e3), 0..50),
    ) {
        let p = Payload::Sparse {
            shape: vec![50, 100],
            indices: entries.iter().map(|e| e.0).collect(),
            values: entries.iter().map(|e| e.1).collect(),
        };
        let bytes = p.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), p.byte_len());
        prop_assert_eq!(Payload::from_bytes(&bytes).unwrap(), p);
    }
}
